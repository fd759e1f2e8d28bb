//! [`ProgressUpdate`]: what a job's progress callback ([`Job::on_progress`](crate::Job::on_progress))
//! is told, and the throttle that calls it.

use std::time::{Duration, Instant};

/// A job's progress, as its callback sees it. Counts only grow from one call to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressUpdate {
    /// Items whose output came back.
    pub done: usize,
    /// Items that failed (an `Err`, a panic, a lost worker past its retries, a timeout).
    pub failed: usize,
    /// The job's length, when it is known (an exact size hint or `.length(n)`).
    pub total: Option<usize>,
    /// Time since the job started.
    pub elapsed: Duration,
}

impl ProgressUpdate {
    /// Items finished either way: `done + failed`.
    pub fn finished(&self) -> usize {
        self.done + self.failed
    }
}

/// A callback and how often it may be called.
pub(crate) struct Callback<'a> {
    f: Box<dyn FnMut(ProgressUpdate) + 'a>,
    every: Duration,
    /// When it was last called (`None`: never).
    last: Option<Instant>,
    /// What it was last told, so that the final call is not a repeat.
    told: Option<(usize, usize)>,
}

impl<'a> Callback<'a> {
    pub(crate) fn new(every: Duration, f: impl FnMut(ProgressUpdate) + 'a) -> Self {
        Callback { f: Box::new(f), every, last: None, told: None }
    }

    /// Calls the callback if `every` has passed since its last call (the first batch back is
    /// always told), or if `last_call` (the job's end) and the counts moved since.
    pub(crate) fn offer(&mut self, update: ProgressUpdate, last_call: bool) {
        let now = Instant::now();
        let due = match self.last {
            None => true,
            Some(at) => now.duration_since(at) >= self.every,
        };
        let counts = (update.done, update.failed);
        let moved = self.told != Some(counts);
        if (due || last_call) && moved {
            self.last = Some(now);
            self.told = Some(counts);
            (self.f)(update);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(done: usize) -> ProgressUpdate {
        ProgressUpdate { done, failed: 0, total: Some(10), elapsed: Duration::ZERO }
    }

    #[test]
    fn throttled_then_told_at_the_end() {
        let mut seen = Vec::new();
        {
            let mut cb = Callback::new(Duration::from_secs(3600), |u: ProgressUpdate| seen.push(u.done));
            for done in 1..=10 {
                cb.offer(update(done), false);
            }
            cb.offer(update(10), true);
            // The end repeats nothing already told.
            cb.offer(update(10), true);
        }
        assert_eq!(seen, vec![1, 10]);
    }

    #[test]
    fn every_change_when_not_throttled() {
        let mut seen = Vec::new();
        {
            let mut cb = Callback::new(Duration::ZERO, |u: ProgressUpdate| seen.push(u.finished()));
            for done in [1, 1, 2, 5] {
                cb.offer(update(done), false);
            }
        }
        assert_eq!(seen, vec![1, 2, 5]);
    }
}
