//! Process backend benchmarks, each against a baseline measured in the same run:
//!
//! - (a) unbatched per-item round trip vs a raw `UnixStream` ping-pong between two processes;
//! - (b) 1,000,000 tiny items with auto batching: process vs threads;
//! - (c) a large Arrow table shared to 2 workers that each sum one column: time to first
//!   result and memory added per worker, vs an empty table and vs the table as a plain arg;
//! - (d) 64 CPU-bound items of about 50 ms: speedup over serial with 2 workers;
//! - (e) `tiny_items_1M`, a criterion group: 1,000,000 tiny items (x*2) on 2 workers, bare
//!   rayon `into_par_iter` on the same items (the baseline), process Auto, process
//!   `ChunkSize(10_000)` and threads `map`, and the ratio of process Auto to rayon.
//!
//! `cargo bench --bench process` (or `cargo xtask bench`); `cargo bench --bench process -- e`
//! runs (e) alone. `ADPE_BENCH_GIB` sets the table size of (c) in GiB (default 1).

mod common;

use common::{median, ratio, Echo, Spin};

use adparallelengine::arrow::Frame;
use adparallelengine::backends::ProcessBackend;
use adparallelengine::{task, try_task, Batching, Engine, Kind, Progress, Shared};
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

task!(Double = |x: u64| -> u64 { x * 2 });

const PING_ENV: &str = "ADPE_BENCH_PINGPONG_FD";

fn quiet(kind: Kind, workers: usize) -> Engine {
    Engine::builder(kind).max_workers(workers).progress(Progress::quiet()).build().expect("engine")
}

/// (a) Raw ping-pong: this binary re-executed as an echo server on a socketpair.
fn raw_round_trip(n: usize) -> Duration {
    use std::os::unix::io::AsRawFd;
    use std::os::unix::process::CommandExt;
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    let fd = theirs.as_raw_fd();
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("exe"));
    cmd.env(PING_ENV, "3");
    // SAFETY: dup2 between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd != 3 && libc_dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("echo server");
    drop(theirs);
    let mut buf = [0u8; 8];
    let t0 = Instant::now();
    for i in 0..n as u64 {
        ours.write_all(&i.to_le_bytes()).expect("write");
        ours.read_exact(&mut buf).expect("read");
    }
    let took = t0.elapsed();
    drop(ours);
    let _ = child.wait();
    took / n as u32
}

extern "C" {
    fn dup2(old: i32, new: i32) -> i32;
}
fn libc_dup2(old: i32, new: i32) -> i32 {
    // SAFETY: plain dup2(2).
    unsafe { dup2(old, new) }
}

fn echo_server() -> ! {
    use std::os::unix::io::FromRawFd;
    // SAFETY: the parent put our socket on fd 3.
    let mut s = unsafe { UnixStream::from_raw_fd(3) };
    let mut buf = [0u8; 8];
    while s.read_exact(&mut buf).is_ok() {
        if s.write_all(&buf).is_err() {
            break;
        }
    }
    std::process::exit(0)
}

fn bench_a() {
    let n = 20_000;
    let raw: Vec<Duration> = (0..5).map(|_| raw_round_trip(n)).collect();
    let raw = median(raw);
    let engine = Engine::from_backend(ProcessBackend::new(1).expect("backend"));
    let mut strict = vec![];
    let mut pipelined = vec![];
    for _ in 0..5 {
        let t0 = Instant::now();
        engine.map(Echo, 0..n as u64).batched(false).prefetch(1).run().expect("run");
        strict.push(t0.elapsed() / n as u32);
        let t0 = Instant::now();
        engine.map(Echo, 0..n as u64).batched(false).run().expect("run");
        pipelined.push(t0.elapsed() / n as u32);
    }
    let (strict, pipelined) = (median(strict), median(pipelined));
    println!("(a) per-item round trip, unbatched, 1 worker process, {n} items");
    println!("    raw UnixStream ping-pong       {raw:>10.2?}   1.00x");
    println!("    engine, prefetch 1 (strict)    {strict:>10.2?}   {:.2}x raw", ratio(strict, raw));
    println!("    engine, prefetch 2 (default)   {pipelined:>10.2?}   {:.2}x raw", ratio(pipelined, raw));
}

fn bench_b() {
    let n = 1_000_000u64;
    let threads = quiet(Kind::Threads, 2);
    let process = quiet(Kind::Process, 2);
    // Both engines warm (threads started, worker processes up), then timed turn by turn so
    // that drift in the machine's speed hits both alike, with a pause before each run: rayon's
    // idle threads spin for a while after a job, which would bill the next job for the CPU
    // they take.
    let once = |e: &Engine| {
        std::thread::sleep(Duration::from_millis(5));
        let t0 = Instant::now();
        let out = e.map(Double, 0..n).batched(Batching::Auto).run().expect("run");
        let took = t0.elapsed();
        assert_eq!(out.len(), n as usize);
        assert_eq!(out[n as usize - 1], 2 * (n - 1));
        took
    };
    once(&threads);
    once(&process);
    let (mut t, mut p) = (vec![], vec![]);
    for _ in 0..21 {
        t.push(once(&threads));
        p.push(once(&process));
    }
    let (t, p) = (median(t), median(p));
    println!("(b) 1,000,000 tiny items (x*2), auto batching, 2 workers");
    println!("    threads                        {t:>10.2?}   1.00x");
    println!("    process                        {p:>10.2?}   {:.2}x threads' speed", ratio(t, p));
}

#[derive(Serialize, Deserialize)]
enum Table {
    Shared(Shared<Frame>),
    Plain(Frame),
}

impl Table {
    fn frame(&self) -> &Frame {
        match self {
            Table::Shared(s) => s,
            Table::Plain(f) => f,
        }
    }
}

try_task!(
    /// Sums one column of the table (or, for `usize::MAX - col`, only reads its first value) and
    /// reports the worker's anonymous resident memory.
    SumCol = |col: usize, t: &Table| -> (f64, u64) {
        let f = t.frame();
        let (col, touch_only) = if col >= 1 << 20 { (usize::MAX - col, true) } else { (col, false) };
        let sum = if f.num_rows() == 0 {
            0.0
        } else {
            let c = f.column(col).as_any().downcast_ref::<Float64Array>().ok_or("f64")?;
            if touch_only {
                c.value(0)
            } else {
                c.values().iter().sum()
            }
        };
        Ok((sum, rss_anon_kib()))
    }
);

fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("RssAnon:")).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn table(bytes: usize) -> Frame {
    let rows = bytes / 16;
    let a: ArrayRef = Arc::new(Float64Array::from_iter_values((0..rows).map(|i| (i % 1000) as f64)));
    let b: ArrayRef = Arc::new(Float64Array::from_iter_values((0..rows).map(|_| 1.0)));
    Frame(RecordBatch::try_from_iter([("a", a), ("b", b)]).expect("batch"))
}

fn bench_c() {
    let gib: f64 = std::env::var("ADPE_BENCH_GIB").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let bytes = (gib * (1u64 << 30) as f64) as usize;
    let engine = quiet(Kind::Process, 2);
    let big = Shared::new(table(bytes));
    let empty = Shared::new(table(0));
    // First job with the big table pays for writing it once.
    let t0 = Instant::now();
    engine.map(SumCol, [0usize, 1]).args(Table::Shared(big.clone())).batched(false).run().expect("run");
    let first_write = t0.elapsed();
    let first_result = |args: Table| first_result_of(&engine, args, [0, 1]);
    let touch = |args: Table| first_result_of(&engine, args, [usize::MAX, usize::MAX - 1]).0;
    let (mut te, mut ts) = (vec![], vec![]);
    for _ in 0..5 {
        te.push(touch(Table::Shared(empty.clone())));
        ts.push(touch(Table::Shared(big.clone())));
    }
    let (te, ts) = (median(te), median(ts));

    let (mut e, mut s) = (vec![], vec![]);
    let mut rss = (0, 0);
    for _ in 0..5 {
        let (t, r) = first_result(Table::Shared(empty.clone()));
        e.push(t);
        rss.0 = r;
        let (t, r) = first_result(Table::Shared(big.clone()));
        s.push(t);
        rss.1 = r;
    }
    let t0 = Instant::now();
    let (plain, plain_rss) = {
        let (t, r) = first_result(Table::Plain((*big).clone()));
        (t, r)
    };
    let _ = t0;
    let (e, s) = (median(e), median(s));
    let table_kib = (bytes / 1024) as u64;
    println!("(c) a {gib} GiB Arrow table shared with 2 worker processes, each summing one column");
    println!("    written once to the store (first job)        {first_write:>10.2?}");
    println!("    time to first result, empty table            {e:>10.2?}");
    println!("    time to first result, shared table           {s:>10.2?}   +{:.2?} over empty", s.saturating_sub(e));
    println!("    time to first result, table as a plain arg   {plain:>10.2?}");
    println!("    first result, reading one value, empty       {te:>10.2?}");
    println!(
        "    first result, reading one value, shared      {ts:>10.2?}   +{:.2?} over empty (sharing overhead alone)",
        ts.saturating_sub(te)
    );
    println!(
        "    worker anonymous RSS: empty {} KiB, shared {} KiB (+{:.3}% of the table), plain arg {} KiB",
        rss.0,
        rss.1,
        100.0 * rss.1.saturating_sub(rss.0) as f64 / table_kib as f64,
        plain_rss
    );
}

/// Time to the first result of a two-item job, and the larger worker RSS of its two items.
fn first_result_of(engine: &Engine, args: Table, items: [usize; 2]) -> (Duration, u64) {
    let t0 = Instant::now();
    let mut s = engine.map(SumCol, items).args(args).batched(false).stream().expect("stream");
    let first = s.next().expect("one").expect("ok");
    let ttfr = t0.elapsed();
    let second = s.next().expect("two").expect("ok");
    (ttfr, first.1.max(second.1))
}

fn bench_d() {
    let serial = quiet(Kind::Serial, 1);
    let process = quiet(Kind::Process, 2);
    let threads = quiet(Kind::Threads, 2);
    let t0 = Instant::now();
    serial.map(Spin, 0..64u64).batched(false).run().expect("run");
    let s = t0.elapsed();
    let t0 = Instant::now();
    process.map(Spin, 0..64u64).batched(Batching::Auto).run().expect("run");
    let p = t0.elapsed();
    let t0 = Instant::now();
    threads.map(Spin, 0..64u64).batched(Batching::Auto).run().expect("run");
    let t = t0.elapsed();
    println!("(d) 64 CPU-bound items of ~50 ms, 2 workers");
    println!("    serial                         {s:>10.2?}   1.00x");
    println!("    process                        {p:>10.2?}   {:.2}x speedup", ratio(s, p));
    println!("    threads                        {t:>10.2?}   {:.2}x speedup", ratio(s, t));
}

/// (e) The criterion group: bare rayon, process Auto and ChunkSize(10_000), threads, on the
/// same 1,000,000 items, each warm; then process Auto's speed as a fraction of rayon's, from
/// criterion's own estimates.
fn bench_e() {
    use criterion::{BenchmarkId, Criterion, Throughput};
    use rayon::prelude::*;
    use std::hint::black_box;
    let n = 1_000_000u64;
    let workers = 2;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(workers).build().expect("pool");
    let process = quiet(Kind::Process, workers);
    let threads = quiet(Kind::Threads, workers);
    let check = |out: Vec<u64>| {
        assert_eq!(out.len(), n as usize);
        assert_eq!(out[n as usize - 1], 2 * (n - 1));
    };
    check(process.map(Double, 0..n).batched(Batching::Auto).run().expect("run"));
    let mut c = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    let mut g = c.benchmark_group("tiny_items_1M");
    g.throughput(Throughput::Elements(n));
    g.bench_function(BenchmarkId::new("rayon_into_par_iter", workers), |b| {
        b.iter(|| pool.install(|| (0..black_box(n)).into_par_iter().map(|x| x * 2).collect::<Vec<u64>>()))
    });
    g.bench_function(BenchmarkId::new("process_auto", workers), |b| {
        b.iter(|| process.map(Double, 0..black_box(n)).batched(Batching::Auto).run().expect("run"))
    });
    g.bench_function(BenchmarkId::new("process_chunk_10000", workers), |b| {
        b.iter(|| process.map(Double, 0..black_box(n)).batched(Batching::ChunkSize(10_000)).run().expect("run"))
    });
    g.bench_function(BenchmarkId::new("threads_map_auto", workers), |b| {
        b.iter(|| threads.map(Double, 0..black_box(n)).batched(Batching::Auto).run().expect("run"))
    });
    g.finish();
    let mean = |id: &str| -> Option<f64> {
        let path = format!("target/criterion/tiny_items_1M/{id}/{workers}/new/estimates.json");
        let dir = std::env::var("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| "target".into());
        let path = dir.join(path.trim_start_matches("target/"));
        let text = std::fs::read_to_string(path).ok()?;
        let at = text.find("\"median\"")?;
        let rest = &text[at..];
        let p = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
        rest[p..].split([',', '}']).next()?.trim().parse().ok()
    };
    if let (Some(r), Some(a), Some(c10k), Some(t)) =
        (mean("rayon_into_par_iter"), mean("process_auto"), mean("process_chunk_10000"), mean("threads_map_auto"))
    {
        println!("(e) 1,000,000 tiny items (x*2), 2 workers, medians, speed as a fraction of bare rayon's");
        println!("    rayon into_par_iter            {:>10.2?}   1.00x", Duration::from_nanos(r as u64));
        println!("    process Auto                   {:>10.2?}   {:.2}x rayon", Duration::from_nanos(a as u64), r / a);
        println!(
            "    process ChunkSize(10_000)      {:>10.2?}   {:.2}x rayon",
            Duration::from_nanos(c10k as u64),
            r / c10k
        );
        println!("    threads map, Auto              {:>10.2?}   {:.2}x rayon", Duration::from_nanos(t as u64), r / t);
    }
}

fn main() {
    if std::env::var_os(PING_ENV).is_some() {
        echo_server();
    }
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |k: &str| only.as_deref().is_none_or(|o| o == k);
    if want("a") {
        bench_a();
    }
    if want("b") {
        bench_b();
    }
    if want("c") {
        bench_c();
    }
    if want("d") {
        bench_d();
    }
    if want("e") {
        bench_e();
    }
}
