//! [`Skip`]: the user's iterator, walked in full (a generator cannot seek), with the items a
//! journal holds left out.

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
}
