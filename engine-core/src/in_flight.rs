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
    /// The cap grows to what the consumer has taken so far (a stream's default).
    grows: bool,
}

/// A stream's default cap before its consumer has taken anything: the items it may pull
/// ahead at first. It then grows with what the consumer takes ([`STREAM_GROWTH`] times as
/// many in flight as taken so far), so a stream's first results never wait behind tens of
/// thousands of items pulled for batches that Auto grew while the first one ran, and a long
/// stream soon runs uncapped (its batches, prefetch and reorder window bound it then).
pub(crate) const STREAM_START: usize = 4096;

/// How fast a stream's default cap grows: items in flight per item its consumer took.
/// Measured on 10,000,000 tiny items through a process stream: growing one for one cost 2x
/// the time of no cap (workers waited while the consumer drained each batch); sixteen for
/// one lets Auto's largest batches fill every slot after about 16,000 items taken.
pub(crate) const STREAM_GROWTH: usize = 16;

impl InFlightCap {
    /// A cap of `cap` items (at least 1, so that a job can always move).
    pub(crate) fn new(cap: usize) -> Self {
        InFlightCap { cap: cap.max(1), returned: AtomicUsize::new(0), grows: false }
    }

    /// A stream's default: [`STREAM_START`] items ahead at first, then [`STREAM_GROWTH`]
    /// times as many as the consumer has taken.
    pub(crate) fn slow_start() -> Self {
        InFlightCap { grows: true, ..InFlightCap::new(STREAM_START) }
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
        let returned = self.returned.load(Ordering::Relaxed);
        let cap = if self.grows { self.cap.max(returned.saturating_mul(STREAM_GROWTH)) } else { self.cap };
        returned.saturating_add(cap).saturating_sub(pulled)
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

    #[test]
    fn a_slow_start_grows_with_what_was_taken() {
        let cap = InFlightCap::slow_start();
        assert_eq!(cap.room(0), STREAM_START);
        cap.returned(10);
        assert_eq!(cap.room(STREAM_START), 10, "the start holds until 16 x taken passes it");
        cap.returned(STREAM_START - 10);
        // Taken as many as the start: sixteen times that may be in flight.
        assert_eq!(cap.room(STREAM_START), STREAM_GROWTH * STREAM_START);
    }
}
