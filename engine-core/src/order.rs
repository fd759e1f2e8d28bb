//! Ordered reassembly: batches come back in completion order and leave in input order.

use crate::plumbing::batch::BatchDone;
use std::collections::BTreeMap;

/// Holds batches that finished before an earlier one.
pub struct Reorder<O> {
    next: u64,
    waiting: BTreeMap<u64, BatchDone<O>>,
}

impl<O> Default for Reorder<O> {
    fn default() -> Self {
        Reorder { next: 0, waiting: BTreeMap::new() }
    }
}

impl<O> Reorder<O> {
    /// Adds a finished batch.
    pub fn push(&mut self, b: BatchDone<O>) {
        self.waiting.insert(b.seq, b);
    }

    /// The next batch in input order, once it is here.
    pub fn pop(&mut self) -> Option<BatchDone<O>> {
        let b = self.waiting.remove(&self.next)?;
        self.next += 1;
        Some(b)
    }

    /// Batches held back, waiting for an earlier one.
    pub fn held(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn b(seq: u64) -> BatchDone<u64> {
        BatchDone {
            seq,
            start: seq as usize,
            len: 1,
            outputs: vec![seq],
            failures: vec![],
            worker: 0,
            busy: Duration::ZERO,
            item_stats: None,
            placed: false,
        }
    }

    #[test]
    fn releases_in_sequence() {
        let mut r = Reorder::default();
        r.push(b(2));
        r.push(b(1));
        assert!(r.pop().is_none());
        r.push(b(0));
        let order: Vec<u64> = std::iter::from_fn(|| r.pop()).map(|b| b.seq).collect();
        assert_eq!(order, vec![0, 1, 2]);
        assert_eq!(r.held(), 0);
    }
}
