//! Waiting for something that cannot wake us (a message an MPI library only notices when
//! polled): spin briefly, then yield, then sleep longer and longer, up to 1 ms.
//!
//! Spinning first keeps a fast reply fast; the sleeps keep a long wait from burning a core
//! that workers compute on (on a machine with as many ranks as cores, a driver polling at
//! 100 % would halve their speed). The cost is up to 1 ms of latency after a long wait.

use std::time::{Duration, Instant};

/// How long [`Backoff`] spins before it yields. Measured on MPI (3 ranks on 2 cores): with
/// 30 µs a strict round trip often outlived the spin and paid a sleep (21 µs a round trip);
/// with 200 µs it is 6 µs. A driver waiting for long batches spins 200 µs per wait, then
/// sleeps: under 1 % of a core for 50 ms items.
pub const SPIN: Duration = Duration::from_micros(200);

/// One wait's backoff state: call [`Backoff::wait`] between polls.
///
/// ```
/// let mut backoff = adparallelengine_core::plumbing::Backoff::new();
/// let mut polls = 0;
/// while polls < 100 {
///     polls += 1; // poll here
///     backoff.wait();
/// }
/// assert!(backoff.elapsed() > std::time::Duration::ZERO);
/// ```
#[derive(Debug)]
pub struct Backoff {
    began: Instant,
    idle: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// A wait starting now.
    pub fn new() -> Self {
        Backoff { began: Instant::now(), idle: 0 }
    }

    /// Time since the wait began.
    pub fn elapsed(&self) -> Duration {
        self.began.elapsed()
    }

    /// Pauses before the next poll: a spin for the first 200 µs, then 16 yields, then sleeps
    /// from 20 µs doubling every four up to 1 ms.
    pub fn wait(&mut self) {
        if self.began.elapsed() < SPIN {
            std::hint::spin_loop();
        } else if self.idle < 16 {
            self.idle += 1;
            std::thread::yield_now();
        } else {
            let nap = Duration::from_micros(20u64 << ((self.idle - 16) / 4).min(6)).min(Duration::from_millis(1));
            self.idle += 1;
            std::thread::sleep(nap);
        }
    }
}
