//! [`ItemSource`]: cuts batches lazily from the user's iterator and checks its length.

use crate::error::{Error, Result};
use crate::in_flight::InFlightCap;
use crate::plumbing::batch::Batch;
use crate::plumbing::cuts::CutLog;
use std::sync::Arc;

/// The error of a job whose consumer holds its `max_in_flight` items without taking them
/// back, with no batch in flight to free room: a loop waiting then would wait forever.
pub(crate) fn no_room() -> Error {
    Error::Backend {
        backend: "engine",
        message: "the job's max_in_flight is reached with no batch in flight: its consumer must take results \
                  back before more items are pulled"
            .into(),
    }
}

/// The user's iterator, cut into batches only when a worker needs one. Never collected.
///
/// With a declared length (`.length(n)` or an exact size hint) it checks that the iterator
/// yields exactly that many items: fewer or more is [`Error::LengthMismatch`], never a silent
/// truncation.
pub struct ItemSource<I: Iterator> {
    iter: I,
    declared: Option<usize>,
    pulled: usize,
    lookahead: Option<I::Item>,
    exhausted: bool,
    next_seq: u64,
    /// What was cut, for the engine's audit of the backend.
    log: Arc<CutLog>,
    /// The job's bound on items pulled and not yet returned to its consumer, if any.
    cap: Option<Arc<InFlightCap>>,
    /// How [`next_batch_into`](ItemSource::next_batch_into) moves items out of `iter`.
    fill: FillFn<I>,
    /// How [`next_range`](ItemSource::next_range) moves `iter` past items, when it is a
    /// range of integers (see `plumbing::int_range`).
    advance: Option<AdvanceFn<I>>,
}

/// Moves an iterator past its next `k` items (fewer at its end) without making them: how
/// many it passed. O(1) on a range ([`crate::plumbing::int_range::advance`]).
pub(crate) type AdvanceFn<I> = fn(&mut I, usize) -> usize;

/// A batch cut from a range ([`ItemSource::next_range`]): `count` consecutive integers from
/// `first`.
#[derive(Debug, PartialEq)]
pub(crate) struct RangeCut<X> {
    /// Sequence number.
    pub(crate) seq: u64,
    /// Index of the first item.
    pub(crate) start: usize,
    /// Number of items.
    pub(crate) count: usize,
    /// The first item.
    pub(crate) first: X,
}

/// How a cut moves at most `want` items from an iterator to `dst`: the `k`-th item pulled
/// goes to `dst + k`, and `written` grows by one as each is written (so a caller that
/// unwinds from a panicking iterator knows what to drop). A plain loop ([`fill`]) unless the
/// iterator knows a faster way (a job's `Skip` without a journal walks the user's iterator
/// itself, see `Skip::fill_fn`).
///
/// # Safety
///
/// `dst` must be valid for writes of `want` items and aligned for them.
pub(crate) type FillFn<I> = unsafe fn(&mut I, *mut <I as Iterator>::Item, usize, &mut usize);

/// Counts the items written past a vector's length, and sets its length to that on drop
/// (also when a panic unwinds through it), as std's own `extend` does.
struct SetLenOnDrop<'a, T> {
    items: &'a mut Vec<T>,
    len: usize,
}

impl<T> Drop for SetLenOnDrop<'_, T> {
    fn drop(&mut self) {
        // SAFETY: items `..len` are initialised: those before the fill were, and `fill`
        // counts each item it writes (into reserved capacity) only once it is written.
        unsafe { self.items.set_len(self.len) };
    }
}

impl<I: Iterator> ItemSource<I> {
    /// Wraps an iterator. `declared` is the length the caller promises, if any.
    pub fn new(iter: I, declared: Option<usize>) -> Self {
        ItemSource {
            iter,
            declared,
            pulled: 0,
            lookahead: None,
            exhausted: false,
            next_seq: 0,
            log: Arc::default(),
            cap: None,
            fill: fill::<I>,
            advance: None,
        }
    }

    /// Cuts batches as ranges ([`next_range`](ItemSource::next_range)) with `advance`, for an
    /// iterator over consecutive integers.
    pub(crate) fn with_advance(mut self, advance: Option<AdvanceFn<I>>) -> Self {
        self.advance = advance;
        self
    }

    /// Whether [`next_range`](ItemSource::next_range) cuts this source's batches.
    pub(crate) fn cuts_ranges(&self) -> bool {
        self.advance.is_some()
    }

    /// Cuts into a batch's memory with `fill` instead of the plain loop.
    pub(crate) fn with_fill(mut self, fill: FillFn<I>) -> Self {
        self.fill = fill;
        self
    }

    /// Pulls only while `cap` has room (`Job::max_in_flight`).
    pub(crate) fn with_cap(mut self, cap: Option<Arc<InFlightCap>>) -> Self {
        self.cap = cap;
        self
    }

    /// How many more items may be pulled from the iterator now: unbounded (`usize::MAX`)
    /// unless the job caps its items in flight ([`Job::max_in_flight`](crate::Job::max_in_flight)),
    /// then what the consumer has taken back frees. A loop that finds no room waits for
    /// batches to come back instead of cutting one; [`next_batch`](ItemSource::next_batch)
    /// cuts at most this many new items.
    pub fn room(&self) -> usize {
        match &self.cap {
            None => usize::MAX,
            Some(cap) => cap.room(self.pulled),
        }
    }

    /// The declared length.
    pub fn declared(&self) -> Option<usize> {
        self.declared
    }

    /// Items cut so far.
    pub fn cut(&self) -> usize {
        self.pulled - usize::from(self.lookahead.is_some())
    }

    /// Items not cut yet, when the length is known.
    pub fn remaining(&self) -> Option<usize> {
        self.declared.map(|d| d.saturating_sub(self.cut()))
    }

    /// Number of batches cut so far (the next batch's sequence number).
    pub fn batches_cut(&self) -> u64 {
        self.next_seq
    }

    fn pull(&mut self) -> Result<Option<I::Item>> {
        if let Some(x) = self.lookahead.take() {
            return Ok(Some(x));
        }
        if self.exhausted {
            return Ok(None);
        }
        if let Some(d) = self.declared {
            if self.pulled == d {
                // Check that the iterator really ends here.
                self.exhausted = true;
                return match self.iter.next() {
                    None => Ok(None),
                    Some(_) => Err(Error::LengthMismatch { declared: d, actual: format!("more than {d}") }),
                };
            }
        }
        match self.iter.next() {
            Some(x) => {
                self.pulled += 1;
                Ok(Some(x))
            }
            None => {
                self.exhausted = true;
                match self.declared {
                    Some(d) if self.pulled < d => {
                        Err(Error::LengthMismatch { declared: d, actual: self.pulled.to_string() })
                    }
                    _ => Ok(None),
                }
            }
        }
    }

    /// Whether the iterator has no item at all (pulls at most one item, kept for later).
    pub fn is_empty(&mut self) -> Result<bool> {
        if self.cut() > 0 {
            return Ok(false);
        }
        match self.pull()? {
            Some(x) => {
                self.lookahead = Some(x);
                Ok(false)
            }
            None => Ok(true),
        }
    }

    /// Cuts the next batch of at most `size` items (and at most [`room`](ItemSource::room) new
    /// ones); `None` when the iterator is done, or when there is no room and no item kept.
    pub fn next_batch(&mut self, size: usize) -> Result<Option<Batch<I::Item>>> {
        let size = size.max(1);
        let mut items = Vec::with_capacity(size.min(self.remaining().unwrap_or(size)).max(1));
        let fill = self.fill;
        let cut = self.cut_with(size, |first, iter, want| {
            items.extend(first);
            items.reserve(want);
            // The items land past `len` and count once the fill returns; if the iterator
            // panics meanwhile, the guard counts those written so far, so they are dropped
            // with the vector, not leaked.
            let mut guard = SetLenOnDrop { len: items.len(), items: &mut items };
            let at = guard.len;
            let dst = guard.items.spare_capacity_mut().as_mut_ptr().cast::<I::Item>();
            // SAFETY: `reserve(want)` left room for `want` items past `len`, and `dst` is
            // that room's start; `fill` counts in `guard.len` each item as it writes it.
            unsafe { fill(iter, dst, want, &mut guard.len) };
            debug_assert!(guard.len - at <= want);
            drop(guard);
            items.len()
        })?;
        Ok(cut.map(|(seq, start, _)| Batch { seq, start, items }))
    }

    /// Cuts the next batch of at most `size` items straight into `dst` (one pass, no
    /// vector): its sequence number, first index and length; `None` when the iterator is done.
    ///
    /// # Safety
    ///
    /// `dst` must be valid for writes of `size` items and aligned for them. The items written
    /// are not dropped here: call this only for items without drop glue (plain numbers).
    pub(crate) unsafe fn next_batch_into(
        &mut self,
        size: usize,
        dst: *mut I::Item,
    ) -> Result<Option<(u64, usize, usize)>> {
        let size = size.max(1);
        let fill = self.fill;
        self.cut_with(size, |first, iter, want| {
            let mut n = 0;
            if let Some(x) = first {
                // SAFETY: `first` and `want` together are at most `size` (see `cut_with`),
                // which `dst` has room for (the caller's promise).
                unsafe { dst.write(x) };
                n = 1;
            }
            // SAFETY: as above: `n + want <= size`, and `fill` writes from `dst + n` on.
            // (Plain numbers have no drop glue: nothing to drop if the iterator panics.)
            unsafe { fill(iter, dst.add(n), want, &mut n) };
            n
        })
    }

    /// Cuts the next batch of at most `size` items of a range without making any but the
    /// first: its sequence number, first index, length and first item (the others follow it
    /// one by one); `None` when the iterator is done, or when this source is not a range
    /// ([`cuts_ranges`](ItemSource::cuts_ranges)).
    pub(crate) fn next_range(&mut self, size: usize) -> Result<Option<RangeCut<I::Item>>> {
        let Some(advance) = self.advance else { return Ok(None) };
        let mut head = None;
        let cut = self.cut_with(size.max(1), |first, iter, want| {
            head = first;
            let mut want = want;
            if head.is_none() && want > 0 {
                head = iter.next();
                want -= 1;
            }
            match head {
                Some(_) => 1 + advance(iter, want),
                None => 0,
            }
        })?;
        Ok(cut.and_then(|(seq, start, count)| head.map(|first| RangeCut { seq, start, count, first })))
    }

    /// The bookkeeping of a cut: `pull` receives the lookahead item (if any), the iterator
    /// and how many more items to take from it, and returns how many items it holds in all
    /// (at most `size`).
    fn cut_with(
        &mut self,
        size: usize,
        pull: impl FnOnce(Option<I::Item>, &mut I, usize) -> usize,
    ) -> Result<Option<(u64, usize, usize)>> {
        let start = self.cut();
        let first = self.lookahead.take();
        let had = usize::from(first.is_some());
        let want = match self.declared {
            Some(d) => (size - had).min(d - self.pulled),
            None => size - had,
        }
        .min(self.room());
        let want = if self.exhausted { 0 } else { want };
        let len = pull(first, &mut self.iter, want);
        let got = len - had;
        self.pulled += got;
        if got < want {
            self.exhausted = true;
            if let Some(d) = self.declared {
                return Err(Error::LengthMismatch { declared: d, actual: self.pulled.to_string() });
            }
        }
        // At the declared length, look one further so "too many items" surfaces with the last
        // batch rather than after it.
        // The probe for an item past the declared length is a pull too: it waits for room.
        if self.declared == Some(self.pulled) && self.lookahead.is_none() && !self.exhausted && self.room() > 0 {
            if let Some(x) = self.pull()? {
                self.lookahead = Some(x);
            }
        }
        if self.is_done() {
            self.log.finish();
        }
        if len == 0 {
            return Ok(None);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.log.record(start, len);
        Ok(Some((seq, start, len)))
    }

    /// Whether every item has been cut.
    pub fn is_done(&self) -> bool {
        self.exhausted && self.lookahead.is_none()
    }

    /// The record of what this source cut, shared with the engine's audit.
    pub(crate) fn cut_log(&self) -> Arc<CutLog> {
        Arc::clone(&self.log)
    }
}

/// Moves at most `want` items of `iter` to `dst`, counting each in `written`: the plain
/// [`FillFn`]. A function of its own (never inlined), so that `iter` is a `noalias`
/// argument: the compiler may keep the iterator's state in registers for the whole loop.
/// (Inlined into [`ItemSource::cut_with`], it stored the iterator back after every item.)
///
/// # Safety
///
/// `dst` must be valid for writes of `want` items and aligned for them.
#[inline(never)]
pub(crate) unsafe fn fill<I: Iterator>(iter: &mut I, dst: *mut I::Item, want: usize, written: &mut usize) {
    let mut n = 0;
    while n < want {
        let Some(x) = iter.next() else { break };
        // SAFETY: `n < want`, and `dst` has room for `want` items (the caller's promise).
        unsafe { dst.add(n).write(x) };
        n += 1;
        *written += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items an iterator yielded before it panicked in a cut are dropped once each, with the
    /// batch's vector: not leaked, not dropped twice.
    /// A range is cut as its first item and length, in order, its lookahead item (kept by
    /// `is_empty`) first; a declared length it does not have is an error, as for any cut.
    #[test]
    fn a_range_is_cut_as_its_first_item_and_length() {
        let adv: AdvanceFn<std::ops::Range<u64>> = crate::plumbing::int_range::advance;
        let mut s = ItemSource::new(10u64..25, Some(15)).with_advance(Some(adv));
        assert!(s.cuts_ranges());
        assert!(!s.is_empty().unwrap());
        let cut = |seq, start, count, first| Some(RangeCut { seq, start, count, first });
        assert_eq!(s.next_range(4).unwrap(), cut(0, 0, 4, 10));
        assert_eq!(s.next_range(10).unwrap(), cut(1, 4, 10, 14));
        assert_eq!(s.next_range(10).unwrap(), cut(2, 14, 1, 24));
        assert_eq!(s.next_range(10).unwrap(), None);
        assert!(s.is_done() && s.cut() == 15);
        let adv: AdvanceFn<std::ops::Range<u8>> = crate::plumbing::int_range::advance;
        let mut short = ItemSource::new(0u8..10, Some(12)).with_advance(Some(adv));
        assert!(matches!(short.next_range(100), Err(Error::LengthMismatch { declared: 12, .. })));
        let mut long = ItemSource::new(0u8..10, Some(8)).with_advance(Some(adv));
        assert!(matches!(long.next_range(100), Err(Error::LengthMismatch { declared: 8, .. })));
        assert!(!ItemSource::new(0u8..10, None).cuts_ranges());
    }

    #[test]
    fn a_panicking_iterator_leaves_no_item_behind() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        struct Counted;
        impl Drop for Counted {
            fn drop(&mut self) {
                DROPS.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut k = 0;
        let iter = std::iter::from_fn(move || {
            k += 1;
            assert!(k <= 5, "the iterator fails at its sixth item");
            Some(Counted)
        });
        let mut s = ItemSource::new(iter, None);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.next_batch(100)));
        assert!(r.is_err());
        assert_eq!(DROPS.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn cuts_lazily_and_in_order() {
        let mut s = ItemSource::new(0..10, Some(10));
        let b = s.next_batch(4).unwrap().unwrap();
        assert_eq!((b.seq, b.start, b.items), (0, 0, vec![0, 1, 2, 3]));
        let b = s.next_batch(4).unwrap().unwrap();
        assert_eq!((b.seq, b.start, b.items), (1, 4, vec![4, 5, 6, 7]));
        let b = s.next_batch(4).unwrap().unwrap();
        assert_eq!((b.seq, b.start, b.items), (2, 8, vec![8, 9]));
        assert!(s.next_batch(4).unwrap().is_none());
        assert!(s.is_done());
    }

    #[test]
    fn cuts_straight_into_memory_like_into_vectors() {
        let mut s = ItemSource::new(0..10u64, Some(10));
        assert!(!s.is_empty().unwrap(), "the first item waits as lookahead");
        let mut buf = [0u64; 4];
        // SAFETY: room for 4 aligned u64s.
        let cut = unsafe { s.next_batch_into(4, buf.as_mut_ptr()) }.unwrap();
        assert_eq!((cut, buf), (Some((0, 0, 4)), [0, 1, 2, 3]));
        assert_eq!(s.next_batch(4).unwrap().unwrap().items, vec![4, 5, 6, 7]);
        // SAFETY: as above.
        let cut = unsafe { s.next_batch_into(4, buf.as_mut_ptr()) }.unwrap();
        assert_eq!((cut, &buf[..2]), (Some((2, 8, 2)), &[8, 9][..]));
        // SAFETY: as above.
        assert_eq!(unsafe { s.next_batch_into(4, buf.as_mut_ptr()) }.unwrap(), None);
        assert!(s.is_done());
        let mut short = ItemSource::new(0..3u64, Some(5));
        // SAFETY: as above.
        assert!(unsafe { short.next_batch_into(4, buf.as_mut_ptr()) }.is_err(), "fewer items than declared");
    }

    #[test]
    fn too_few_items_is_an_error() {
        let mut s = ItemSource::new(0..3, Some(5));
        let e = s.next_batch(10).unwrap_err();
        assert!(e.to_string().contains("yielded 3 item(s) but the declared length is 5"), "{e}");
    }

    #[test]
    fn too_many_items_is_an_error() {
        let mut s = ItemSource::new(0..9, Some(5));
        let e = s.next_batch(5).unwrap_err();
        assert!(e.to_string().contains("more than 5"), "{e}");
        let mut s = ItemSource::new(0..9, Some(5));
        assert!(s.next_batch(2).is_ok());
        assert!(s.next_batch(2).is_ok());
        assert!(s.next_batch(2).is_err());
    }

    #[test]
    fn empty_detection_keeps_the_first_item() {
        let mut s = ItemSource::new(0..2, None);
        assert!(!s.is_empty().unwrap());
        assert_eq!(s.next_batch(5).unwrap().unwrap().items, vec![0, 1]);
        let mut e = ItemSource::new(std::iter::empty::<u8>(), None);
        assert!(e.is_empty().unwrap());
        let mut lie = ItemSource::new(std::iter::empty::<u8>(), Some(2));
        assert!(lie.is_empty().is_err());
    }
}
