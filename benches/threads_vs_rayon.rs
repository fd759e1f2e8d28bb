//! Tiny items (x × 2), our threads backend against bare rayon on a pool of the same size, each
//! pair in one criterion group: `map` over a `Vec`, a range, `iter().copied()` and `.cloned()` (split by
//! index) against rayon's indexed parallel iterators; `map` over a generator without a length
//! (`from_fn`, cut into batches) against rayon's `par_bridge`; `map_slice` against
//! `par_iter`. At 100,000 and 1,000,000 items. Then the first job of a fresh engine against
//! rayon's first job on a fresh pool.
//!
//! `cargo bench --bench threads_vs_rayon` (or `cargo xtask bench`). Ratios are rayon's time
//! over ours (higher is better for us).

use adparallelengine::{task, Engine, Kind, Progress};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Duration;

task!(Double = |x: u64| -> u64 { x * 2 });

fn workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

fn engine(workers: usize) -> Engine {
    Engine::builder(Kind::Threads).max_workers(workers).progress(Progress::quiet()).build().expect("engine")
}

fn pool(workers: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(workers).build().expect("pool")
}

/// `0..n` as a generator that does not know its length.
fn generator(n: u64) -> impl Iterator<Item = u64> {
    let mut i = 0;
    std::iter::from_fn(move || {
        let x = i;
        i += 1;
        (x < n).then_some(x)
    })
}

fn tiny_items(c: &mut Criterion) {
    let workers = workers();
    let pool = pool(workers);
    let engine = engine(workers);
    for (label, n) in [("100k", 100_000u64), ("1M", 1_000_000)] {
        let input: Vec<u64> = (0..n).collect();
        let mut g = c.benchmark_group(format!("tiny_items_{label}"));
        g.throughput(Throughput::Elements(n));
        g.sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
        // The Vec is moved into the job: both sides get a fresh clone, made outside the timing.
        g.bench_function(BenchmarkId::new("rayon_vec", workers), |b| {
            b.iter_batched(
                || input.clone(),
                |v| pool.install(|| v.into_par_iter().map(|x| x * 2).collect::<Vec<u64>>()),
                BatchSize::LargeInput,
            )
        });
        g.bench_function(BenchmarkId::new("engine_vec", workers), |b| {
            b.iter_batched(|| input.clone(), |v| engine.map(Double, v).run().expect("run"), BatchSize::LargeInput)
        });
        g.bench_function(BenchmarkId::new("rayon_range", workers), |b| {
            b.iter(|| pool.install(|| (0..black_box(n)).into_par_iter().map(|x| x * 2).collect::<Vec<u64>>()))
        });
        g.bench_function(BenchmarkId::new("engine_range", workers), |b| {
            b.iter(|| engine.map(Double, 0..black_box(n)).run().expect("run"))
        });
        g.bench_function(BenchmarkId::new("rayon_copied", workers), |b| {
            b.iter(|| pool.install(|| black_box(&input).par_iter().copied().map(|x| x * 2).collect::<Vec<u64>>()))
        });
        g.bench_function(BenchmarkId::new("engine_copied", workers), |b| {
            b.iter(|| engine.map(Double, black_box(&input).iter().copied()).run().expect("run"))
        });
        g.bench_function(BenchmarkId::new("rayon_cloned", workers), |b| {
            b.iter(|| pool.install(|| black_box(&input).par_iter().cloned().map(|x| x * 2).collect::<Vec<u64>>()))
        });
        g.bench_function(BenchmarkId::new("engine_cloned", workers), |b| {
            b.iter(|| engine.map(Double, black_box(&input).iter().cloned()).run().expect("run"))
        });
        g.bench_function(BenchmarkId::new("rayon_slice", workers), |b| {
            b.iter(|| pool.install(|| black_box(&input).par_iter().map(|x| x * 2).collect::<Vec<u64>>()))
        });
        g.bench_function(BenchmarkId::new("engine_slice", workers), |b| {
            b.iter(|| engine.map_slice(Double, black_box(&input[..])).run().expect("run"))
        });
        // No length: rayon bridges the generator (results in no particular order), we cut
        // batches from it (in order).
        g.bench_function(BenchmarkId::new("rayon_par_bridge", workers), |b| {
            b.iter(|| pool.install(|| generator(black_box(n)).par_bridge().map(|x| x * 2).collect::<Vec<u64>>()))
        });
        g.bench_function(BenchmarkId::new("engine_from_fn", workers), |b| {
            b.iter(|| engine.map(Double, generator(black_box(n))).run().expect("run"))
        });
        g.finish();
    }
}

/// The first job of a fresh engine (its pool just built) against rayon's first job on a fresh
/// pool: 100,000 tiny items over a range. Building and dropping are outside the timing.
fn first_job(c: &mut Criterion) {
    let workers = workers();
    let n = 100_000u64;
    let mut g = c.benchmark_group("first_job_100k");
    g.sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    g.bench_function(BenchmarkId::new("rayon_fresh_pool", workers), |b| {
        b.iter_batched(
            || pool(workers),
            |pool| {
                let out = pool.install(|| (0..n).into_par_iter().map(|x| x * 2).collect::<Vec<u64>>());
                (pool, out)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function(BenchmarkId::new("engine_fresh", workers), |b| {
        b.iter_batched(
            || engine(workers),
            |engine| {
                let out = engine.map(Double, 0..n).run().expect("run");
                (engine, out)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, tiny_items, first_job);
criterion_main!(benches);
