//! What the own-timing benches share: their tasks and how they summarize runs.

use adparallelengine::task;
use std::time::{Duration, Instant};

task!(pub Echo = |x: u64| -> u64 { x });
task!(
    /// About 50 ms of arithmetic.
    pub Spin = |seed: u64| -> u64 {
        let mut x = seed;
        let until = Instant::now() + Duration::from_millis(50);
        while Instant::now() < until {
            for _ in 0..1000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            }
        }
        x
    }
);

/// The median of some runs.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `a / b`.
pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}
