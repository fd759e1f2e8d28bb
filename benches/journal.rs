//! What a results journal costs (issue 15): the same job with and without `.journal(path)`,
//! turn by turn in one run, and the time to resume a finished 1,000,000-item journal (every
//! result read back, nothing run).
//!
//! `cargo bench --bench journal --features threads,process,arrow`. Prints one line per figure:
//! the median of `ADPE_JOURNAL_RUNS` (default 5) runs each, the ratio journal / plain, and the
//! floor: a buffer of the journal's size written into a new file in the same directory, in
//! the same turns (what any journal of those outputs costs at least).
//! The journal goes to `ADPE_JOURNAL_DIR` (default the temporary directory).

use adparallelengine::arrow::Frame;
use adparallelengine::{task, Batching, Engine, Kind, Progress};
use arrow_array::{ArrayRef, Float64Array, RecordBatch};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

task!(Double = |x: u64| -> u64 { x * 2 });
task!(
    /// About a microsecond of arithmetic, then `x * 2`: an item that does some work.
    Microsecond = |x: u64| -> u64 {
        let mut h = x;
        for _ in 0..400 {
            h = std::hint::black_box(h.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
        }
        std::hint::black_box(h);
        x * 2
    }
);
task!(
    MiB = |x: u64| -> Frame {
        let rows = (1 << 20) / 8;
        let a: ArrayRef = Arc::new(Float64Array::from_iter_values((0..rows).map(|i| (i as u64 ^ x) as f64)));
        Frame(RecordBatch::try_from_iter([("a", a)]).expect("batch"))
    }
);

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn dir() -> PathBuf {
    std::env::var_os("ADPE_JOURNAL_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir)
}

/// Writes `bytes` into a new file next to the journals, in one `write`: the floor of any
/// journal of that size (the kernel's page cache, no encoding, no check, no sync).
fn write_floor(bytes: &[u8]) -> Duration {
    let path = dir().join(format!("adpe-bench-floor-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let t = Instant::now();
    std::fs::write(&path, bytes).expect("write the floor's file");
    let took = t.elapsed();
    let _ = std::fs::remove_file(&path);
    took
}

/// Times `plain` and `journaled` turn by turn (`journaled` gets a fresh journal each time),
/// and, in the same turns, the write of a buffer of the journal's size into a new file.
fn pair(name: &str, runs: usize, mut plain: impl FnMut(), mut journaled: impl FnMut(&PathBuf)) {
    let path = dir().join(format!("adpe-bench-{}.journal", std::process::id()));
    let (mut a, mut b, mut f) = (Vec::new(), Vec::new(), Vec::new());
    let mut buffer = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        plain();
        a.push(t.elapsed());
        let _ = std::fs::remove_file(&path);
        let t = Instant::now();
        journaled(&path);
        b.push(t.elapsed());
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as usize;
        buffer.resize(size, 1u8);
        f.push(write_floor(&buffer));
    }
    let size = buffer.len();
    let _ = std::fs::remove_file(&path);
    let (a, b, f) = (median(a), median(b), median(f));
    println!(
        "{name}: plain {a:.2?}, journaled {b:.2?}, ratio {:.3}; journal {:.1} MiB, its bytes written alone {f:.2?} \
         (the journal's cost over plain: {:.2}x that write)",
        b.as_secs_f64() / a.as_secs_f64(),
        size as f64 / (1 << 20) as f64,
        (b.as_secs_f64() - a.as_secs_f64()) / f.as_secs_f64().max(1e-9),
    );
}

fn main() {
    let runs: usize = std::env::var("ADPE_JOURNAL_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let threads = Engine::builder(Kind::Threads).max_workers(2).progress(Progress::quiet()).build().expect("threads");
    let process = Engine::builder(Kind::Process).max_workers(2).progress(Progress::quiet()).build().expect("process");
    let n = 1_000_000u64;
    // A generator: the path a journaled job takes (it is never split by index).
    let lazy = || (0..n).filter(|_| true);
    pair(
        "threads, 1M tiny items, generator",
        runs,
        || drop(threads.map(Double, lazy()).length(n as usize).run().expect("run")),
        |p| drop(threads.map(Double, lazy()).length(n as usize).journal(&**p).run().expect("run")),
    );
    pair(
        "threads, 1M tiny items, map(0..n) (split by index without a journal)",
        runs,
        || drop(threads.map(Double, 0..n).run().expect("run")),
        |p| drop(threads.map(Double, 0..n).journal(&**p).run().expect("run")),
    );
    pair(
        "process, 1M tiny items, map(0..n)",
        runs,
        || drop(process.map(Double, 0..n).run().expect("run")),
        |p| drop(process.map(Double, 0..n).journal(&**p).run().expect("run")),
    );
    pair(
        "threads, 1M items of ~1 us, generator",
        runs.min(3),
        || drop(threads.map(Microsecond, lazy()).length(n as usize).run().expect("run")),
        |p| drop(threads.map(Microsecond, lazy()).length(n as usize).journal(&**p).run().expect("run")),
    );
    let frames: u64 = std::env::var("ADPE_JOURNAL_FRAMES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    pair(
        &format!("threads, {frames} x 1 MiB Arrow outputs"),
        runs.min(3),
        || drop(threads.map(MiB, 0..frames).batched(Batching::ChunkSize(16)).run().expect("run")),
        |p| drop(threads.map(MiB, 0..frames).batched(Batching::ChunkSize(16)).journal(&**p).run().expect("run")),
    );
    // Resume: a finished 1M-item journal read back, nothing run.
    let path = dir().join(format!("adpe-bench-resume-{}.journal", std::process::id()));
    let _ = std::fs::remove_file(&path);
    threads.map(Double, lazy()).length(n as usize).journal(&*path).run().expect("run");
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let out = threads.map(Double, lazy()).length(n as usize).journal(&*path).run().expect("run");
        times.push(t.elapsed());
        assert_eq!(out.len(), n as usize);
        assert_eq!(threads.last_stats().map(|s| s.resumed), Some(n as usize));
    }
    let t = Instant::now();
    drop(threads.map(Double, lazy()).length(n as usize).run().expect("run"));
    println!("resume of a finished 1M-item journal: {:.2?} (the same job run: {:.2?})", median(times), t.elapsed());
    let _ = std::fs::remove_file(&path);
}
