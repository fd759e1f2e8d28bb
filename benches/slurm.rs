//! The Slurm backend on a private one-node Slurm cluster (`test-support`'s `SlurmCluster`:
//! munged, slurmctld, slurmd), each figure against a baseline of the same run:
//!
//! - (c) the time from building the engine to its first result (sbatch, the array's tasks
//!   scheduled and started, the dial-in), and of its second job (the tasks kept);
//! - (a) per-item round trip, unbatched, 1 worker: a Slurm task over TCP vs the process
//!   backend (a worker process over a socket pair);
//! - (b) 64 CPU-bound items of about 50 ms on 2 array tasks: speedup over serial.
//!
//! `cargo bench --bench slurm --features slurm,process` (or `cargo xtask bench`).

mod common;

use adparallelengine::backends::slurm::SlurmBuilder;
use adparallelengine::backends::ProcessBackend;
use adparallelengine::Engine;
use adparallelengine_test_support::slurm::{slurm_installed, SlurmCluster};
use common::{median, ratio, Echo, Spin};
use std::time::{Duration, Instant};

fn round_trip<B: adparallelengine::plumbing::Backend>(engine: &Engine<B>, n: usize) -> Duration {
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

fn main() {
    if !slurm_installed() {
        println!("slurm bench skipped: slurmctld, slurmd or munged is not installed (see .ci/run)");
        return;
    }
    SlurmCluster::shared().expect("a local Slurm cluster");
    let exe = std::env::current_exe().expect("exe");
    let slurm = |workers: usize| SlurmBuilder::new(workers).program_path(&exe).build().expect("slurm backend");

    let t0 = Instant::now();
    let one = Engine::from_backend(slurm(1));
    one.map(Echo, 0..1u64).run().expect("first job");
    let first = t0.elapsed();
    let t0 = Instant::now();
    one.map(Echo, 0..1u64).run().expect("second job");
    let second = t0.elapsed();
    println!("(c) a new Slurm engine's first result {first:.2?}; its second job's {second:.2?}");

    let n = 5_000;
    let over_slurm = round_trip(&one, n);
    drop(one);
    let process = Engine::from_backend(ProcessBackend::new(1).expect("process backend"));
    let over_process = round_trip(&process, n);
    drop(process);
    println!("(a) per-item round trip, unbatched, prefetch 1, 1 worker, {n} items");
    println!("    process backend (socket pair)  {over_process:>10.2?}   1.00x");
    println!(
        "    slurm task (TCP, loopback)     {over_slurm:>10.2?}   {:.2}x the process backend",
        ratio(over_slurm, over_process)
    );

    let serial = Engine::from_backend(adparallelengine::backends::SerialBackend);
    let two = Engine::from_backend(slurm(2));
    two.map(Echo, 0..8u64).run().expect("warm-up");
    let (mut s, mut d) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t0 = Instant::now();
        let a = serial.map(Spin, 0..64u64).run().expect("serial");
        s.push(t0.elapsed());
        let t0 = Instant::now();
        let b = two.map(Spin, 0..64u64).run().expect("slurm");
        d.push(t0.elapsed());
        // Spin's value depends on how far it got in its 50 ms: only the count is checked.
        assert_eq!((a.len(), b.len()), (64, 64));
    }
    let (s, d) = (median(s), median(d));
    println!(
        "(b) 64 x 50 ms CPU-bound items: serial {s:.2?}, 2 Slurm array tasks {d:.2?}: {:.2}x speedup",
        ratio(s, d)
    );
}
