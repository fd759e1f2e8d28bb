//! Writing a shared Arrow table to the share store, against the disk's limit in the same run.
//!
//! Criterion group `share_write/<size>` (throughput in bytes of the IPC file, so criterion
//! prints GB/s), for a 400 MB and a 1 GiB table of two f64 columns:
//!
//! - `fs_write`: `std::fs::write` of a buffer of the file's size into the same directory — the
//!   baseline, what the disk (its page cache) takes at best;
//! - `hash_only`: the content key of a buffer of that size ([`ShareKey::of`]), for how much of
//!   a put is hashing;
//! - `ipc_to_file`: `write_ipc_file` into a plain buffered file, no hashing, no store: the cost
//!   of the encoding on the way to the disk;
//! - `streamed_put`: `DirStore::put_with(write_ipc_file)`, what the engine does since 0.x: the
//!   IPC encoding streamed into the store file while it is hashed;
//! - `streamed_put_stored`: the same when the store already holds the table (the file is
//!   streamed and hashed, then dropped: a put cannot know its key before the last byte);
//! - `in_memory_put`: `to_ipc_file` then `DirStore::put`, what it did before (the file built in
//!   memory, hashed, then written).
//!
//! Then, for each size, one fresh process (this binary re-run) shares the table with 2 process
//! workers through an engine, and reports the first job's time to its first result and the
//! driver's peak RSS during the job over the table's own (VmHWM, reset with `clear_refs` once
//! the table is built).
//!
//! `cargo bench --bench share_write`; `ADPE_SHARE_SIZES=400000000,1073741824` sets the sizes.

use adparallelengine::arrow::ipc_file::{to_ipc_file, write_ipc_file};
use adparallelengine::arrow::Frame;
use adparallelengine::{try_task, Engine, Kind, Progress, ShareKey, Shared, SharedStore};
use adparallelengine_store::DirStore;
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch};
use criterion::{BenchmarkId, Criterion, Throughput};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROBE_ENV: &str = "ADPE_SHARE_PROBE_BYTES";

try_task!(
    /// Sums column `col` of the shared table.
    SumCol = |col: usize, t: &Shared<Frame>| -> f64 {
        let c = t.column(col).as_any().downcast_ref::<Float64Array>().ok_or("f64")?;
        Ok(c.values().iter().sum())
    }
);

/// A table of `bytes` bytes: two f64 columns.
fn table(bytes: usize) -> RecordBatch {
    let rows = bytes / 16;
    let a: ArrayRef = Arc::new(Float64Array::from_iter_values((0..rows).map(|i| (i % 1000) as f64)));
    let b: ArrayRef = Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64)));
    RecordBatch::try_from_iter([("a", a), ("b", b)]).expect("batch")
}

fn sizes() -> Vec<usize> {
    std::env::var("ADPE_SHARE_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![400_000_000, 1 << 30])
}

fn label(bytes: usize) -> String {
    if bytes % (1 << 30) == 0 {
        format!("{}GiB", bytes >> 30)
    } else {
        format!("{}MB", bytes / 1_000_000)
    }
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adpe-share-write-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn writes(c: &mut Criterion) {
    let dir = scratch();
    for bytes in sizes() {
        let batch = [table(bytes)];
        let file_len = to_ipc_file(&batch).expect("encode").len();
        let mut g = c.benchmark_group(format!("share_write/{}", label(bytes)));
        g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
        g.throughput(Throughput::Bytes(file_len as u64));
        let plain = vec![7u8; file_len];
        let path = dir.join("plain.bin");
        g.bench_function(BenchmarkId::from_parameter("fs_write"), |b| {
            b.iter(|| {
                std::fs::write(&path, &plain).expect("write");
                std::fs::remove_file(&path).expect("remove");
            })
        });
        g.bench_function(BenchmarkId::from_parameter("hash_only"), |b| b.iter(|| ShareKey::of(&plain)));
        drop(plain);
        g.bench_function(BenchmarkId::from_parameter("ipc_to_file"), |b| {
            b.iter(|| {
                let mut file =
                    std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).expect("create"));
                write_ipc_file(&batch, &mut file).expect("write");
                drop(file);
                std::fs::remove_file(&path).expect("remove");
            })
        });
        let store = DirStore::create(Some(&dir)).expect("store");
        g.bench_function(BenchmarkId::from_parameter("streamed_put"), |b| {
            b.iter(|| {
                store.put_with(&mut |out| write_ipc_file(&batch, out)).expect("put");
                store.clear().expect("clear");
            })
        });
        store.put_with(&mut |out| write_ipc_file(&batch, out)).expect("put");
        g.bench_function(BenchmarkId::from_parameter("streamed_put_stored"), |b| {
            b.iter(|| store.put_with(&mut |out| write_ipc_file(&batch, out)).expect("put"))
        });
        store.clear().expect("clear");
        g.bench_function(BenchmarkId::from_parameter("in_memory_put"), |b| {
            b.iter(|| {
                store.put(&to_ipc_file(&batch).expect("encode")).expect("put");
                store.clear().expect("clear");
            })
        });
        g.finish();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// One process: builds the table, resets the peak RSS, runs the first job of a fresh process
/// engine sharing it, and prints what it measured.
fn probe(bytes: usize) {
    let dir = scratch();
    let engine = Engine::builder(Kind::Process)
        .max_workers(2)
        .path_shared(&dir)
        .progress(Progress::quiet())
        .build()
        .expect("engine");
    // The workers start before the table exists, as in a program that builds its engine first.
    engine.map(SumCol, Vec::<usize>::new()).args(Shared::new(Frame(table(16)))).run().expect("warm-up");
    let shared = Shared::new(Frame(table(bytes)));
    // "5" resets VmHWM to the current RSS (proc(5), clear_refs).
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    let base = status_kib("VmRSS:");
    let t0 = Instant::now();
    let mut results = engine.map(SumCol, [0usize, 1]).args(shared.clone()).batched(false).stream().expect("stream");
    results.next().expect("a result").expect("ok");
    let first = t0.elapsed();
    results.next().expect("a result").expect("ok");
    let peak = status_kib("VmHWM:");
    drop(results);
    println!(
        "probe bytes={bytes} table_kib={} base_kib={base} peak_kib={peak} over_base_kib={} first_result_ms={:.1}",
        bytes / 1024,
        peak.saturating_sub(base),
        first.as_secs_f64() * 1e3
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    if let Some(bytes) = std::env::var(PROBE_ENV).ok().and_then(|b| b.parse().ok()) {
        probe(bytes);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    writes(&mut c);
    c.final_summary();
    // Each size in a fresh process, so that the peak is this job's.
    let exe = std::env::current_exe().expect("this binary");
    for bytes in sizes() {
        let out = std::process::Command::new(&exe).env(PROBE_ENV, bytes.to_string()).output().expect("probe");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.starts_with("probe ")).unwrap_or("probe failed");
        let field = |k: &str| -> f64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
                .unwrap_or(f64::NAN)
        };
        println!(
            "share_write/{}: first job, 2 process workers: first result {:.0} ms; driver peak RSS {:.1} MiB over \
             the table's {:.1} MiB ({:.1}% of it){}",
            label(bytes),
            field("first_result_ms"),
            field("over_base_kib") / 1024.0,
            field("table_kib") / 1024.0,
            100.0 * field("over_base_kib") / field("table_kib"),
            if out.status.success() { String::new() } else { format!(" [probe failed: {}]", out.status) }
        );
    }
}
