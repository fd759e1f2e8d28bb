//! [`ChunkedOutput`]: the output of a slice job, written in place by workers claiming chunks.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// `n` output slots cut into chunks (of a fixed size, or a number of nearly equal ones);
/// workers [`claim`](Self::claim) chunks (each exactly once, in order) and fill them in place,
/// so results land in input order with no reassembly and no copy.
pub struct ChunkedOutput<O> {
    buf: Vec<O>,
    /// `buf.as_mut_ptr()`, taken once: claims write through it while the owner holds `&self`.
    base: *mut O,
    n: usize,
    /// Items per chunk, or `None`: `chunks` nearly equal chunks.
    chunk: Option<usize>,
    next: AtomicUsize,
    done: Box<[AtomicBool]>,
    stop: AtomicBool,
}

// SAFETY: workers only reach the buffer through `Claim`s, and `claim` hands each chunk out
// once (an atomic counter), so no two threads ever touch the same slot. Outputs are moved in
// from the claiming thread and out on the owner's, hence `O: Send`.
unsafe impl<O: Send> Sync for ChunkedOutput<O> {}
// SAFETY: it owns its outputs like a `Vec<O>` does.
unsafe impl<O: Send> Send for ChunkedOutput<O> {}
// SAFETY: a claim is the one way to its chunk's slots, as a `&mut [MaybeUninit<O>]` would be
// (which is `Send` for `O: Send`); its raw pointer is only there so that items read from the
// same memory are not behind a `&mut`.
unsafe impl<O: Send> Send for Claim<'_, O> {}

/// One chunk of slots, claimed by one worker.
///
/// The slots are reached through a raw pointer, never a `&mut` slice: when the output is
/// written into the input's own buffer ([`ChunkedOutput::new_in`]), the chunk's items are
/// read through another pointer into the same memory while its outputs are written, and a
/// `&mut` over the whole chunk would claim it was the only way in.
pub struct Claim<'a, O> {
    start: usize,
    slots: *mut MaybeUninit<O>,
    len: usize,
    done: &'a AtomicBool,
    _slots: std::marker::PhantomData<&'a mut [MaybeUninit<O>]>,
}

impl<O> ChunkedOutput<O> {
    /// Slots for `n` outputs in chunks of `chunk` (at least 1).
    pub fn new(n: usize, chunk: usize) -> Self {
        Self::new_in(n, chunk, None)
    }

    /// Slots for `n` outputs in `chunks` chunks (at least 1, at most `n`) whose sizes differ
    /// by at most one, as [`Batching::Batches`](crate::Batching::Batches) cuts batches.
    pub fn even(n: usize, chunks: usize) -> Self {
        Self::even_in(n, chunks, None)
    }

    /// [`new`](Self::new), in `buf` (empty, of a capacity of `n` at least) if given: the
    /// outputs of a `Vec`'s items written into the `Vec`'s own buffer.
    pub(crate) fn new_in(n: usize, chunk: usize, buf: Option<Vec<O>>) -> Self {
        let chunk = chunk.max(1);
        Self::with_layout(n, Some(chunk), n.div_ceil(chunk), buf)
    }

    /// [`even`](Self::even), in `buf` if given (see [`new_in`](Self::new_in)).
    pub(crate) fn even_in(n: usize, chunks: usize, buf: Option<Vec<O>>) -> Self {
        Self::with_layout(n, None, chunks.clamp(1, n.max(1)).min(n), buf)
    }

    fn with_layout(n: usize, chunk: Option<usize>, chunks: usize, buf: Option<Vec<O>>) -> Self {
        let mut buf = match buf {
            Some(b) if b.is_empty() && b.capacity() >= n => b,
            Some(b) => {
                // Never freed here: a lent buffer still holds the items it was lent by (a
                // leak, never a use after free). `IndexedItems` lends the `Vec`'s own
                // capacity, which always fits.
                std::mem::forget(b);
                Vec::with_capacity(n)
            }
            None => Vec::with_capacity(n),
        };
        let base = buf.as_mut_ptr();
        ChunkedOutput {
            buf,
            base,
            n,
            chunk,
            next: AtomicUsize::new(0),
            done: (0..chunks).map(|_| AtomicBool::new(false)).collect(),
            stop: AtomicBool::new(false),
        }
    }

    /// Number of chunks.
    pub fn chunks(&self) -> usize {
        self.done.len()
    }

    /// Items of chunk `c` (`c <= chunks`; chunk `chunks` is the empty range at `n`).
    fn bounds(&self, c: usize) -> Range<usize> {
        let at = |c: usize| match self.chunk {
            Some(chunk) => c.saturating_mul(chunk).min(self.n),
            // Widened: `c * n` can pass `usize::MAX` for huge jobs cut into many chunks.
            None => ((c as u128 * self.n as u128) / self.done.len().max(1) as u128) as usize,
        };
        at(c)..at(c + 1)
    }

    /// The next unclaimed chunk, or `None` when all are claimed or [`stop`](Self::stop) was
    /// called.
    pub fn claim(&self) -> Option<Claim<'_, O>> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let c = self.next.fetch_add(1, Ordering::Relaxed);
        if c >= self.done.len() {
            return None;
        }
        let Range { start, end } = self.bounds(c);
        // SAFETY: `start <= n`, within the buffer's capacity: the pointer stays in bounds.
        // Chunk `c` is handed out once, so `start..end` is written through this claim only.
        let slots = unsafe { (self.base as *mut MaybeUninit<O>).add(start) };
        Some(Claim { start, slots, len: end - start, done: &self.done[c], _slots: std::marker::PhantomData })
    }

    /// Whether a chunk is left to claim (another thread may claim it first).
    pub fn has_unclaimed(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && self.next.load(Ordering::Relaxed) < self.done.len()
    }

    /// End of the claimed prefix of the items: chunks are claimed in order, so items
    /// `0..claimed_end()` belong to chunks that were handed out.
    pub fn claimed_end(&self) -> usize {
        let claimed = self.next.load(Ordering::Acquire).min(self.done.len());
        self.bounds(claimed).start
    }

    /// No more claims (a chunk failed): the others finish the chunk they hold and stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// All outputs in order, when every chunk was filled.
    pub fn into_vec(mut self) -> Option<Vec<O>> {
        if !self.done.iter().all(|d| d.load(Ordering::Acquire)) {
            return None;
        }
        // SAFETY: every chunk was filled (`Claim::fill_with` sets the flag only after writing every
        // slot of its chunk), so all `n` slots are initialised.
        unsafe { self.buf.set_len(self.n) };
        for d in self.done.iter() {
            d.store(false, Ordering::Relaxed);
        }
        Some(std::mem::take(&mut self.buf))
    }
}

impl<O> Drop for ChunkedOutput<O> {
    fn drop(&mut self) {
        // Drop the outputs of filled chunks; the buffer itself is freed by `Vec`'s drop
        // (its length stays 0).
        let base = self.base;
        for (c, d) in self.done.iter().enumerate() {
            if d.load(Ordering::Acquire) {
                let Range { start, end } = self.bounds(c);
                // SAFETY: a set flag means `start..end` was fully written and not moved out.
                unsafe { std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(base.add(start), end - start)) };
            }
        }
    }
}

impl<O> Claim<'_, O> {
    /// Index range (in the input) of this chunk.
    pub fn range(&self) -> Range<usize> {
        self.start..self.start + self.len
    }

    /// Fills the chunk with the outputs `next` gives, in order: it is called once per slot
    /// (never more), with the slot's offset in the chunk and its address (a `Vec`'s items, in
    /// place, are read from there: the compiler then sees one pointer, not two that may
    /// overlap, and vectorises), and the chunk stays empty when it returns `None` first (or panics), those
    /// written being dropped. Unless the chunk is filled, `written` tells how many outputs
    /// came before the `None` or the panic, that is the offset of the item that stopped it.
    ///
    /// A counted loop with one exit per output: when `next` cannot fail (an infallible task,
    /// inlined, over items read by index) the compiler vectorises it. Each output is written
    /// once `next` has given it, so a `next` reading its item from the slot the output goes to
    /// (a `Vec`'s items, in place) has read it by then.
    pub fn fill_with(
        self,
        mut next: impl FnMut(usize, *const MaybeUninit<O>) -> Option<O>,
        written: &Cell<usize>,
    ) -> bool {
        struct Guard<'g, O> {
            slots: *mut MaybeUninit<O>,
            written: usize,
            report: &'g Cell<usize>,
        }
        impl<O> Drop for Guard<'_, O> {
            fn drop(&mut self) {
                // Reported here (also while unwinding), not per item: a store per item would
                // put a memory dependency in the hot loop.
                self.report.set(self.written);
                // SAFETY: the first `written` slots were initialised by `fill_with` and are
                // owned by this unfilled chunk alone.
                unsafe {
                    std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(self.slots as *mut O, self.written))
                };
            }
        }
        let mut g = Guard { slots: self.slots, written: 0, report: written };
        for i in 0..self.len {
            // SAFETY: `i < len`: a slot of this claim's chunk, which no one else writes.
            let slot = unsafe { g.slots.add(i) };
            let Some(o) = next(i, slot) else { return false };
            // SAFETY: as above.
            unsafe { slot.write(MaybeUninit::new(o)) };
            g.written = i + 1;
        }
        std::mem::forget(g);
        self.done.store(true, Ordering::Release);
        true
    }

    /// Address of the first slot.
    pub(crate) fn first_slot(&self) -> *const MaybeUninit<O> {
        self.slots
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the chunk has no slot (never: a claimed chunk has one at least).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn chunks_are_claimed_once_and_land_in_order() {
        let out = ChunkedOutput::<String>::new(10, 3);
        assert_eq!(out.chunks(), 4);
        let mut claims = vec![];
        while let Some(c) = out.claim() {
            claims.push(c);
        }
        assert_eq!(claims.iter().map(|c| c.range()).collect::<Vec<_>>(), vec![0..3, 3..6, 6..9, 9..10]);
        for c in claims.into_iter().rev() {
            let r = c.range();
            let mut outputs = r.map(|i| i.to_string());
            assert!(c.fill_with(|_, _| outputs.next(), &Cell::new(0)));
        }
        let v = out.into_vec().unwrap();
        assert_eq!(v, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    }

    #[test]
    fn even_chunks_differ_by_at_most_one() {
        let out = ChunkedOutput::<u8>::even(100, 16);
        assert_eq!(out.chunks(), 16);
        let mut sizes = vec![];
        let mut next = 0;
        while let Some(c) = out.claim() {
            assert_eq!(c.range().start, next);
            next = c.range().end;
            sizes.push(c.range().len());
            assert_eq!(out.claimed_end(), next);
        }
        assert_eq!(next, 100);
        assert!(sizes.iter().all(|s| *s == 6 || *s == 7), "{sizes:?}");
        assert_eq!(ChunkedOutput::<u8>::even(3, 16).chunks(), 3);
    }

    #[test]
    fn partial_and_failed_chunks_leak_nothing() {
        let token = Arc::new(());
        let out = ChunkedOutput::<Arc<()>>::new(6, 2);
        let a = out.claim().unwrap();
        let mut two = std::iter::repeat_n(token.clone(), 2);
        assert!(a.fill_with(|_, _| two.next(), &Cell::new(0)));
        let b = out.claim().unwrap();
        let written = Cell::new(0);
        let mut one = std::iter::repeat_n(token.clone(), 1);
        assert!(!b.fill_with(|_, _| one.next(), &written), "too few outputs");
        assert_eq!(written.get(), 1);
        out.stop();
        assert!(out.claim().is_none());
        assert_eq!(Arc::strong_count(&token), 3, "only the filled chunk holds outputs");
        assert!(out.into_vec().is_none());
        assert_eq!(Arc::strong_count(&token), 1, "dropping the buffer dropped the filled chunk");
    }
}
