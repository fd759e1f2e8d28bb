//! Profiling aid: runs process Auto (or a fixed chunk size) on 1,000,000 tiny items in a loop
//! and prints the median time. `tiny_loop [auto|chunk:N] [runs] [items]`.

use adparallelengine_core::{task, Batching, Engine, EngineConfig, Progress};
use adparallelengine_process::ProcessBackend;
use std::time::{Duration, Instant};

task!(Double = |x: u64| -> u64 { x * 2 });

fn main() {
    let mut args = std::env::args().skip(1);
    let mode: Batching = args.next().unwrap_or_else(|| "auto".into()).parse().expect("batching");
    let runs: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let config = EngineConfig { progress: Progress::quiet(), ..EngineConfig::default() };
    let engine = Engine::with_config(ProcessBackend::new(2).expect("backend"), config);
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        let out = engine.map(Double, 0..n).batched(mode).run().expect("run");
        times.push(t0.elapsed());
        assert_eq!(out[n as usize - 1], 2 * (n - 1));
    }
    times.sort();
    let q = |f: f64| times[((runs - 1) as f64 * f) as usize];
    println!(
        "{mode}: min {:?} p10 {:?} p25 {:?} median {:?} p75 {:?} p90 {:?}",
        q(0.0),
        q(0.1),
        q(0.25),
        q(0.5),
        q(0.75),
        q(0.9)
    );
}
