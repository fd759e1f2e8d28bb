//! The figures of a backend whose workers a cluster starts (Dask, Slurm), each against a
//! baseline of the same run: (c) a new engine's first result and its second job's, (a) the
//! per-item round trip against the process backend, (b) 64 × 50 ms items on 2 workers against
//! serial. Included by the benches that need it (`#[path]`), next to `common`.

use super::common::{median, ratio, Echo, Spin};
use adparallelengine::backends::ProcessBackend;
use adparallelengine::plumbing::Backend;
use adparallelengine::Engine;
use std::time::{Duration, Instant};

fn round_trip<B: Backend>(engine: &Engine<B>, n: usize) -> Duration {
    engine.map(Echo, 0..64u64).batched(false).run().expect("warm-up");
    median(
        (0..5)
            .map(|_| {
                let t0 = Instant::now();
                engine.map(Echo, 0..n as u64).batched(false).prefetch(1).run().expect("run");
                t0.elapsed() / n as u32
            })
            .collect(),
    )
}

/// Prints (c), (a) and (b) for engines of `make(workers)`; `what` names one worker
/// (`"slurm task"`) and `how` its link (`"TCP, loopback"`) in the table.
pub fn print_figures<B: Backend>(name: &str, what: &str, make: impl Fn(usize) -> B) {
    let t0 = Instant::now();
    let one = Engine::from_backend(make(1));
    one.map(Echo, 0..1u64).run().expect("first job");
    let first = t0.elapsed();
    let t0 = Instant::now();
    one.map(Echo, 0..1u64).run().expect("second job");
    let second = t0.elapsed();
    println!("(c) a new {name} engine's first result {first:.2?}; its second job's {second:.2?}");

    let n = 5_000;
    let over_cluster = round_trip(&one, n);
    drop(one);
    let process = Engine::from_backend(ProcessBackend::new(1).expect("process backend"));
    let over_process = round_trip(&process, n);
    drop(process);
    println!("(a) per-item round trip, unbatched, prefetch 1, 1 worker, {n} items");
    println!("    process backend (socket pair)  {over_process:>10.2?}   1.00x");
    println!(
        "    {:<30} {over_cluster:>10.2?}   {:.2}x the process backend",
        format!("{what} (TCP, loopback)"),
        ratio(over_cluster, over_process)
    );

    let serial = Engine::from_backend(adparallelengine::backends::SerialBackend);
    let two = Engine::from_backend(make(2));
    two.map(Echo, 0..8u64).run().expect("warm-up");
    let (mut s, mut d) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t0 = Instant::now();
        let a = serial.map(Spin, 0..64u64).run().expect("serial");
        s.push(t0.elapsed());
        let t0 = Instant::now();
        let b = two.map(Spin, 0..64u64).run().expect(name);
        d.push(t0.elapsed());
        // Spin's value depends on how far it got in its 50 ms: only the count is checked.
        assert_eq!((a.len(), b.len()), (64, 64));
    }
    let (s, d) = (median(s), median(d));
    println!("(b) 64 x 50 ms CPU-bound items: serial {s:.2?}, 2 {name} workers {d:.2?}: {:.2}x speedup", ratio(s, d));
}
