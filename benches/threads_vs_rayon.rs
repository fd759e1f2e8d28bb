//! 1,000,000 tiny items (x × 2): our threads backend with auto batching against bare rayon
//! `par_iter` on the same pool size, in one criterion group.
//!
//! `cargo bench --bench threads_vs_rayon` (or `cargo xtask bench`).

use adparallelengine::{task, Batching, Engine, Kind, Progress};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;
use std::hint::black_box;

task!(Double = |x: u64| -> u64 { x * 2 });

fn tiny_items(c: &mut Criterion) {
    let n = 1_000_000u64;
    let input: Vec<u64> = (0..n).collect();
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(workers).build().expect("pool");
    let engine =
        Engine::builder(Kind::Threads).max_workers(workers).progress(Progress::quiet()).build().expect("engine");

    let mut g = c.benchmark_group("tiny_items_1M");
    g.throughput(Throughput::Elements(n));
    g.bench_function(BenchmarkId::new("engine_threads_auto_slice", workers), |b| {
        b.iter(|| engine.map_slice(Double, black_box(&input[..])).batched(Batching::Auto).run().expect("run"))
    });
    g.bench_function(BenchmarkId::new("rayon_par_iter", workers), |b| {
        b.iter(|| pool.install(|| black_box(&input).par_iter().map(|x| x * 2).collect::<Vec<u64>>()))
    });
    g.bench_function(BenchmarkId::new("engine_threads_auto_iter", workers), |b| {
        b.iter(|| engine.map(Double, black_box(&input).iter().copied()).batched(Batching::Auto).run().expect("run"))
    });
    g.finish();
}

criterion_group!(benches, tiny_items);
criterion_main!(benches);
