//! [`InFlightCap`]: the bound of [`Job::max_in_flight`](crate::Job::max_in_flight) on the items
//! taken from the user's iterator and not yet returned to the consumer.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Shared by the job's item source, which may pull only while there is room, and its
/// terminal, which counts the items it returns (to the caller of a stream, or in order into
/// a result).
#[derive(Debug)]
pub(crate) struct InFlightCap {
    cap: usize,
    returned: AtomicUsize,
}

impl InFlightCap {
    /// A cap of `cap` items (at least 1, so that a job can always move).
    pub(crate) fn new(cap: usize) -> Self {
        InFlightCap { cap: cap.max(1), returned: AtomicUsize::new(0) }
    }

    /// `n` more items were returned to the consumer.
    pub(crate) fn returned(&self, n: usize) {
        // Relaxed: the source and the consumer run on the one driver thread; the atomic only
        // makes the cap shareable with a backend's own driver thread, where no other memory
        // is published through it.
        self.returned.fetch_add(n, Ordering::Relaxed);
    }

    /// How many more items may be pulled when `pulled` have been.
    pub(crate) fn room(&self, pulled: usize) -> usize {
        (self.returned.load(Ordering::Relaxed) + self.cap).saturating_sub(pulled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_follows_what_was_returned() {
        let cap = InFlightCap::new(4);
        assert_eq!(cap.room(0), 4);
        assert_eq!(cap.room(4), 0);
        cap.returned(3);
        assert_eq!(cap.room(4), 3);
        assert_eq!(cap.room(9), 0);
        assert_eq!(InFlightCap::new(0).room(0), 1);
    }
}
