//! [`SentBatches`]: the batches a driver sent to one worker and that worker has not answered,
//! so that every answer is checked against what was really sent before it is decoded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// The batches sent to one worker and not answered yet, shared by the link that sends them
/// and the reader that hears the answers. A worker runs its batches in the order it got them,
/// so its next answer must be about the oldest one; anything else — a batch never sent to it,
/// one answered before, shifted items, another length — is refused, and the worker with it.
#[derive(Debug, Clone, Default)]
pub struct SentBatches {
    sent: Arc<Mutex<VecDeque<(u64, usize, usize)>>>,
}

impl SentBatches {
    fn lock(&self) -> MutexGuard<'_, VecDeque<(u64, usize, usize)>> {
        // Each update is one push or pop: consistent through a panic elsewhere.
        self.sent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Batch `seq` (items `start..start + len`) was sent to the worker.
    pub fn record(&self, seq: u64, start: usize, len: usize) {
        self.lock().push_back((seq, start, len));
    }

    /// The worker answered batch `seq` as items `start..start + len`: the oldest batch sent
    /// and not answered must be exactly that one, and it is answered now; else why not.
    pub fn answer(&self, seq: u64, start: usize, len: usize) -> Result<(), String> {
        let mut sent = self.lock();
        match sent.front().copied() {
            Some(oldest) if oldest == (seq, start, len) => {
                sent.pop_front();
                Ok(())
            }
            Some((s, a, n)) => Err(format!(
                "it answered batch {seq} (items {start}..{}) but its oldest batch is {s} (items {a}..{})",
                start.saturating_add(len),
                a + n
            )),
            None => Err(format!("it answered batch {seq} but was sent no batch it had not answered")),
        }
    }

    /// The batches sent and not answered, oldest first, as (sequence number, first item,
    /// length); `None` when the list is busy this moment (a report written from a signal's
    /// cleanup must not wait for a lock a job holds).
    pub fn try_pending(&self) -> Option<Vec<(u64, usize, usize)>> {
        let sent = match self.sent.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(sent.iter().copied().collect())
    }

    /// Forgets every batch (the worker's job is over or it is gone).
    pub fn clear(&self) {
        self.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_must_match_the_oldest_batch_sent() {
        let s = SentBatches::default();
        s.record(0, 0, 10);
        s.record(3, 30, 10);
        assert!(s.answer(3, 30, 10).is_err(), "not the oldest");
        assert!(s.answer(0, 1, 10).is_err(), "shifted");
        assert!(s.answer(0, 0, 11).is_err(), "longer");
        assert_eq!(s.answer(0, 0, 10), Ok(()));
        assert!(s.answer(0, 0, 10).is_err(), "answered twice");
        assert_eq!(s.answer(3, 30, 10), Ok(()));
        assert!(s.answer(7, 70, 1).unwrap_err().contains("no batch it had not answered"));
        s.record(8, 80, 2);
        s.record(9, 82, 2);
        assert_eq!(s.answer(8, 80, 2), Ok(()));
        assert_eq!(s.try_pending(), Some(vec![(9, 82, 2)]));
        s.clear();
        assert_eq!(s.try_pending(), Some(vec![]));
    }
}
