//! [`CutLog`]: the batches an [`ItemSource`](super::ItemSource) cut that have not come back
//! yet, shared with the engine's audit of the backend (`crate::audit`).
//!
//! Batches are cut in `seq` order, so the log keeps only those from the oldest one still out:
//! its memory is bounded by what is in flight, not by the job's length (a ten-million-item
//! generator cut one item a batch must not cost the driver a record per item).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

/// Why a batch that came back does not match the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// Its `seq` was never cut.
    NeverCut,
    /// It came back before.
    Twice,
    /// It was cut as other items: `(start, len)` as cut.
    Items(usize, usize),
}

/// One batch cut and not yet retired.
#[derive(Debug, Clone, Copy)]
struct Cut {
    start: usize,
    len: usize,
    back: bool,
}

#[derive(Debug, Default)]
struct Log {
    /// `seq` of `out.front()`.
    base: u64,
    /// Batches from the oldest one not back yet, in `seq` order.
    out: VecDeque<Cut>,
    /// Batches cut in all.
    cut: u64,
    /// The source has no item left.
    done: bool,
}

/// The record of cut batches (see the module docs). One lock per batch, cut or returned.
#[derive(Debug, Default)]
pub(crate) struct CutLog {
    log: Mutex<Log>,
}

impl CutLog {
    fn lock(&self) -> MutexGuard<'_, Log> {
        // A panic while holding this lock leaves the log as consistent as any other state.
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The source cut batch `seq` (the next one) as items `start..start + len`.
    pub(crate) fn record(&self, start: usize, len: usize) {
        let mut g = self.lock();
        g.out.push_back(Cut { start, len, back: false });
        g.cut += 1;
    }

    /// The source has no item left.
    pub(crate) fn finish(&self) {
        self.lock().done = true;
    }

    /// Batch `seq` came back as items `start..start + len`: retired, or why not.
    pub(crate) fn retire(&self, seq: u64, start: usize, len: usize) -> Result<(), Mismatch> {
        let mut g = self.lock();
        if seq < g.base {
            return Err(Mismatch::Twice);
        }
        let at = usize::try_from(seq - g.base).map_err(|_| Mismatch::NeverCut)?;
        let Some(cut) = g.out.get_mut(at) else { return Err(Mismatch::NeverCut) };
        if cut.back {
            return Err(Mismatch::Twice);
        }
        if (cut.start, cut.len) != (start, len) {
            return Err(Mismatch::Items(cut.start, cut.len));
        }
        cut.back = true;
        while g.out.front().is_some_and(|c| c.back) {
            g.out.pop_front();
            g.base += 1;
        }
        Ok(())
    }

    /// Whether no batch was cut (a slice job whose backend split the items itself).
    pub(crate) fn is_untouched(&self) -> bool {
        self.lock().cut == 0
    }

    /// `(batches cut, the source is done, the oldest batch not back: (seq, start, len), how
    /// many are not back)`.
    pub(crate) fn summary(&self) -> (u64, bool, Option<(u64, usize, usize)>, usize) {
        let g = self.lock();
        let missing = g.out.iter().filter(|c| !c.back).count();
        let oldest = g.out.iter().zip(g.base..).find(|(c, _)| !c.back).map(|(c, seq)| (seq, c.start, c.len));
        (g.cut, g.done, oldest, missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_what_is_out() {
        let log = CutLog::default();
        for i in 0..1000 {
            log.record(i * 2, 2);
        }
        assert_eq!(log.retire(1, 2, 2), Ok(()));
        assert_eq!(log.retire(0, 0, 2), Ok(()));
        assert_eq!(log.lock().out.len(), 998, "retired batches are forgotten");
        assert_eq!(log.retire(0, 0, 2), Err(Mismatch::Twice));
        assert_eq!(log.retire(5, 10, 2), Ok(()));
        assert_eq!(log.retire(5, 10, 2), Err(Mismatch::Twice));
        assert_eq!(log.retire(6, 12, 3), Err(Mismatch::Items(12, 2)));
        assert_eq!(log.retire(1000, 2000, 2), Err(Mismatch::NeverCut));
        assert_eq!(log.retire(u64::MAX, 0, 1), Err(Mismatch::NeverCut));
        log.finish();
        assert_eq!(log.summary(), (1000, true, Some((2, 4, 2)), 997));
    }
}
