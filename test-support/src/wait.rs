//! Waiting for what a test expects to happen soon (a process gone, a task cancelled), bounded:
//! a test fails instead of hanging, and asserts no timing.

use std::time::{Duration, Instant};

/// Whether `cond` became true within `limit` (asked every 100 ms).
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while !cond() {
        if t0.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}
