//! engine-core's dial-in layer at scale, with local processes dialing over loopback (no
//! cluster): the per-item cost of 1,000,000 tiny items on 2 to 128 workers (the 2-worker run
//! is the baseline, in the same run), 1,000 items of 10 ms on 128 workers against the ideal,
//! and the driver's threads and memory meanwhile.
//!
//! `cargo bench --bench dial_in` (or `cargo xtask bench`).

mod common;

use adparallelengine::{task, Engine};
use adparallelengine_test_support::local_dial_in::LocalDialIn;
use common::{median, ratio};
use std::time::{Duration, Instant};

task!(Double = |x: u64| -> u64 { x * 2 });
task!(
    Nap = |x: u64| -> u64 {
        std::thread::sleep(Duration::from_millis(10));
        x
    }
);

fn status(field: &str) -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; a worker process never gets here.
    let n: u64 = 1_000_000;
    let mut base = None;
    for workers in [2usize, 8, 32, 128] {
        let engine = Engine::from_backend(LocalDialIn::new(workers).expect("backend"));
        // Every worker in, before timing.
        engine.map(Double, 0..(64 * workers as u64)).run().expect("warm-up");
        let time = |n: u64| {
            median(
                (0..5)
                    .map(|_| {
                        let t = Instant::now();
                        let out = engine.map(Double, 0..n).run().expect("tiny items");
                        let took = t.elapsed();
                        assert!(out.iter().enumerate().all(|(i, &v)| v == 2 * i as u64));
                        took
                    })
                    .collect(),
            )
        };
        // The cost of a job is a fixed part (every worker told of the job, and its end
        // awaited) and a part per item: the slope between jobs of n and 4n items.
        let (one, four, fixed) = (time(n), time(4 * n), time(workers as u64));
        let slope = (four.saturating_sub(one)).as_nanos() as f64 / (3 * n) as f64;
        let base_ns = *base.get_or_insert(slope);
        println!(
            "tiny items, {workers:>3} workers: 1M in {one:?}, 4M in {four:?}: {slope:5.1} ns/item marginal \
             ({:.2}x the 2-worker cost), a job of {workers} items {fixed:?}; driver threads {}, RSS {} KiB",
            slope / base_ns,
            status("Threads:"),
            status("VmRSS:")
        );
        if workers == 128 {
            let t = Instant::now();
            let out = engine.map(Nap, 0..1000u64).run().expect("naps");
            let took = t.elapsed();
            assert_eq!(out, (0..1000u64).collect::<Vec<_>>());
            let ideal = Duration::from_millis(10) * 1000u32.div_ceil(workers as u32);
            println!(
                "1,000 x 10 ms on {workers} workers: {took:?} ({:.2}x the ideal {ideal:?}, {:.0} us/item above it); \
                 driver threads {}, RSS {} KiB",
                ratio(took, ideal),
                (took.saturating_sub(ideal)).as_secs_f64() * 1e6 / 1000.0,
                status("Threads:"),
                status("VmRSS:")
            );
        }
    }
}
