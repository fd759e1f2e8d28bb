//! [`Skip`]: the user's iterator, walked in full (a generator cannot seek), with the items a
//! journal holds left out.

use crate::plumbing::int_range::{advance, is_int_range};
use crate::plumbing::source::{fill, AdvanceFn, FillFn};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What a resumed job leaves out: the journal's records as `(start, end)` ranges, in order.
pub(crate) struct Leave {
    ranges: Vec<(usize, usize)>,
    next: usize,
    index: usize,
    /// Items walked so far, for the job's length checks.
    walked: Arc<AtomicUsize>,
}

impl Leave {
    pub(crate) fn new(ranges: Vec<(usize, usize)>, walked: Arc<AtomicUsize>) -> Self {
        Leave { ranges, next: 0, index: 0, walked }
    }

    /// Whether the next item of the input is left out.
    #[inline]
    fn leaves_next(&mut self) -> bool {
        let i = self.index;
        self.index += 1;
        self.walked.store(self.index, Ordering::Relaxed);
        while self.ranges.get(self.next).is_some_and(|&(_, end)| end <= i) {
            self.next += 1;
        }
        self.ranges.get(self.next).is_some_and(|&(start, _)| start <= i)
    }
}

/// The items of `inner` but those `leave` names (all of them without a journal).
pub(crate) struct Skip<I> {
    inner: I,
    leave: Option<Leave>,
}

impl<I> Skip<I> {
    pub(crate) fn new(inner: I, leave: Option<Leave>) -> Self {
        Skip { inner, leave }
    }
}

impl<I: Iterator> Skip<I> {
    /// How a cut fills a batch from this iterator: without a journal, straight from the
    /// user's iterator. The plain loop over `Skip` asks for the journal at every item, and
    /// the compiler then keeps the inner iterator in memory, not in registers: on a range,
    /// a million-item cut took 4 cycles an item, the worker's whole pass over them 1.
    /// (`leave` is set once, here, and never changes: the choice holds for the job.)
    pub(crate) fn fill_fn(&self) -> FillFn<Self> {
        match self.leave {
            None => Self::fill_inner,
            Some(_) => fill::<Self>,
        }
    }

    /// How a cut moves this iterator past items without making them, when it is a range of
    /// integers without a journal: its batches then travel as their first item and length
    /// (see `plumbing::int_range`). `None` otherwise, or with a journal (which must see each
    /// item's index go by).
    pub(crate) fn advance_fn(&self) -> Option<AdvanceFn<Self>> {
        (self.leave.is_none() && is_int_range::<I>()).then_some(Self::advance_inner)
    }

    /// [`AdvanceFn`] for a `Skip` without a journal.
    fn advance_inner(this: &mut Self, k: usize) -> usize {
        debug_assert!(this.leave.is_none(), "advance_inner is for a Skip without a journal");
        advance(&mut this.inner, k)
    }

    /// [`FillFn`] for a `Skip` without a journal.
    ///
    /// # Safety
    ///
    /// As [`FillFn`]: `dst` must be valid for writes of `want` items and aligned for them.
    unsafe fn fill_inner(this: &mut Self, dst: *mut I::Item, want: usize, written: &mut usize) {
        debug_assert!(this.leave.is_none(), "fill_inner is for a Skip without a journal");
        // SAFETY: the caller's promise, passed on.
        unsafe { fill(&mut this.inner, dst, want, written) }
    }
}

impl<I: Iterator> Iterator for Skip<I> {
    type Item = I::Item;

    #[inline]
    fn next(&mut self) -> Option<I::Item> {
        loop {
            let x = self.inner.next()?;
            match self.leave.as_mut() {
                None => return Some(x),
                Some(leave) => {
                    if !leave.leaves_next() {
                        return Some(x);
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.leave {
            None => self.inner.size_hint(),
            Some(_) => (0, self.inner.size_hint().1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_out_the_ranges_and_counts_what_it_walked() {
        let walked = Arc::new(AtomicUsize::new(0));
        let leave = Leave::new(vec![(0, 2), (5, 6), (6, 8)], Arc::clone(&walked));
        let kept: Vec<u32> = Skip::new(0..10u32, Some(leave)).collect();
        assert_eq!(kept, vec![2, 3, 4, 8, 9]);
        assert_eq!(walked.load(Ordering::Relaxed), 10);
        assert_eq!(Skip::new(0..3u32, None).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    /// A cut fills from the inner iterator without a journal, through `Skip` with one, and
    /// both stop at `want` or at the iterator's end.
    #[test]
    fn fill_fn_walks_the_inner_iterator_only_without_a_journal() {
        let mut buf = [0u32; 8];
        let mut plain = Skip::new(0..10u32, None);
        let fill = plain.fill_fn();
        let mut n = 0;
        // SAFETY: `buf` has room for 8 items.
        unsafe { fill(&mut plain, buf.as_mut_ptr(), 4, &mut n) };
        assert_eq!((n, buf[..4].to_vec()), (4, vec![0, 1, 2, 3]));
        let mut n = 0;
        // SAFETY: as above.
        unsafe { fill(&mut plain, buf.as_mut_ptr(), 8, &mut n) };
        assert_eq!((n, buf[..6].to_vec()), (6, vec![4, 5, 6, 7, 8, 9]), "stops at the end");

        let walked = Arc::new(AtomicUsize::new(0));
        let mut resumed = Skip::new(0..10u32, Some(Leave::new(vec![(1, 3), (6, 9)], Arc::clone(&walked))));
        let fill = resumed.fill_fn();
        let mut n = 0;
        // SAFETY: as above.
        unsafe { fill(&mut resumed, buf.as_mut_ptr(), 8, &mut n) };
        assert_eq!((n, buf[..5].to_vec()), (5, vec![0, 3, 4, 5, 9]));
        assert_eq!(walked.load(Ordering::Relaxed), 10);
    }
}
