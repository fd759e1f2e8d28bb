//! [`IndexedItems`]: a job's items when they can be reached by index, so that a backend whose
//! workers share the driver's memory splits them as rayon's indexed iterators do, instead of
//! having a driver cut them from the iterator one at a time.
//!
//! `Engine::map` takes any iterator; stable Rust has no specialization, so the iterators that
//! can be split are recognized at run time by their type:
//!
//! - a `Vec` (`map(task, v)`, a `vec::IntoIter`): its items are moved out by index;
//! - a range of integers (`0..n`, `0..=n`): item `i` is `start + i`;
//! - `slice.iter().copied()` and `slice.iter().cloned()` of numbers, `bool` or `char`: the
//!   slice is read by index;
//! - `map_slice` (any `Clone + Sync` item), whose bounds are known where it is built.
//!
//! Ranges and slice iterators are reached through the iterator itself: a worker clones it and
//! moves it to the start of its chunk with `nth`, which is O(1) for these types. Slice
//! iterators are accepted only for item types known to be `Sync` (several workers read the
//! slice at once, and a run-time check cannot see a trait bound); other items take the
//! ordinary path.
//!
//! # Why the type checks are sound
//!
//! std's `TypeId` needs `'static` types, and a slice iterator borrows; `typeid::of` gives the
//! identity of a type with its lifetimes erased. Equal identities mean the same type up to
//! lifetimes. Every lifetime inside an item type is fixed by `I: Iterator<Item = T::Item>`
//! (each recognized iterator yields exactly its type parameter), so a `vec::IntoIter` or a
//! range recognized here *is* the type named; the only lifetime left free is the borrow of a
//! slice iterator, which is covariant: a view of it at the shorter lifetime of a borrow of the
//! iterator is a plain subtyping, and a clone of it reads the same slice, valid as long as the
//! original.

use crate::error::ItemError;
use crate::plumbing::slots::Claim;
use crate::plumbing::worker::Worker;
use crate::task::Task;
use std::any::TypeId;
use std::iter::{Cloned, Copied};
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::{Range, RangeInclusive};
use std::sync::Arc;

type RunSlice<T> = fn(
    &mut Worker<T, Arc<<T as Task>::Args>>,
    Claim<'_, <T as Task>::Output>,
    &[<T as Task>::Item],
) -> Result<(), ItemError>;

/// A job's items, readable by index range. Built by the engine (from `map` over a `Vec`, a
/// range or a slice iterator, or from `map_slice`); a backend hands it to
/// [`IndexedJob`](crate::plumbing::IndexedJob) and never reads it itself.
pub struct IndexedItems<'a, T: Task, I> {
    len: usize,
    src: Src<'a, T, I>,
}

enum Src<'a, T: Task, I> {
    /// A `Vec` moved into the job.
    Owned(Owned<T::Item>),
    /// The job's own iterator, cloned and moved to a chunk's start in O(1) (`dup` is only
    /// stored for the types recognized by [`IndexedItems::recognize`]).
    Seek { iter: I, dup: unsafe fn(&I) -> I },
    /// `map_slice`'s slice, with the cloning loop built where `T::Item: Clone` is known.
    Slice { slice: &'a [T::Item], run: RunSlice<T> },
}

/// `a` as a `B`.
///
/// # Safety
/// `A` and `B` must be the same type (lifetimes included).
unsafe fn same_type<A, B>(a: A) -> B {
    let a = ManuallyDrop::new(a);
    // SAFETY: the caller guarantees `A` is `B`: same size, same layout, same validity; `a` is
    // never dropped, so the value moves into the result exactly once.
    unsafe { std::ptr::read(&*a as *const A as *const B) }
}

/// A clone of `it`, an `I` that is `C` up to lifetimes.
///
/// # Safety
/// `I` must be `C` with its lifetimes possibly longer, all of them covariant, and a clone of a
/// `C` must be valid for as long as the value it was cloned from (true of ranges and of
/// iterators over a borrowed slice: the clone reads the same memory).
unsafe fn dup_as<I, C: Clone>(it: &I) -> I {
    // SAFETY: `I` is `C` with longer (covariant) lifetimes, so a `&I` is a `&C`: subtyping.
    let view = unsafe { &*(it as *const I as *const C) };
    let copy = ManuallyDrop::new(view.clone());
    // SAFETY: the clone is a `C` that is valid for as long as `it` (the caller's guarantee),
    // hence an `I`; it is read out once and never dropped as a `C`.
    unsafe { std::ptr::read(&*copy as *const C as *const I) }
}

/// [`dup_as`] for `Copied<slice::Iter<X>>`, at the borrow's lifetime.
unsafe fn dup_copied<'r, I, X: 'static>(it: &'r I) -> I {
    // SAFETY: passed on from the caller: `I` is `Copied<slice::Iter<'a, X>>` with `'a: 'r`.
    unsafe { dup_as::<I, Copied<std::slice::Iter<'r, X>>>(it) }
}

/// [`dup_as`] for `Cloned<slice::Iter<X>>`, at the borrow's lifetime.
unsafe fn dup_cloned<'r, I, X: 'static>(it: &'r I) -> I {
    // SAFETY: passed on from the caller: `I` is `Cloned<slice::Iter<'a, X>>` with `'a: 'r`.
    unsafe { dup_as::<I, Cloned<std::slice::Iter<'r, X>>>(it) }
}

/// Whether `X` is a type that a slice of may be read from several threads (`Sync`) and whose
/// clone is a copy of its bits: the numbers, `bool` and `char`.
fn is_sync_scalar<X: 'static>() -> bool {
    let t = TypeId::of::<X>();
    macro_rules! any_of {
        ($($ty:ty),*) => { false $(|| t == TypeId::of::<$ty>())* };
    }
    any_of!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64, bool, char)
}

impl<'a, T: Task, I: Iterator<Item = T::Item>> IndexedItems<'a, T, I> {
    /// The items of `iter` by index, when its type is one that can be split (see the module
    /// docs) and its length is exact; otherwise `iter`, untouched.
    pub(crate) fn recognize(iter: I) -> Result<Self, I> {
        let len = match iter.size_hint() {
            (lo, Some(hi)) if lo == hi => lo,
            _ => return Err(iter),
        };
        let id = typeid::of::<I>();
        if id == TypeId::of::<std::vec::IntoIter<T::Item>>() {
            // SAFETY: same identity up to lifetimes, and `vec::IntoIter<X>` yields `X`, so
            // `I: Iterator<Item = T::Item>` fixes its item type exactly (module docs).
            let v: std::vec::IntoIter<T::Item> = unsafe { same_type(iter) };
            // Collecting an unadvanced `vec::IntoIter` reuses its buffer: no item is copied.
            return Ok(Self::owned(v.collect()));
        }
        macro_rules! ranges {
            ($($t:ty),*) => { $(
                if id == TypeId::of::<Range<$t>>() {
                    // SAFETY (of calling `dup` later): `I` is `Range<$t>` exactly (no lifetimes).
                    return Ok(IndexedItems { len, src: Src::Seek { iter, dup: dup_as::<I, Range<$t>> } });
                }
                if id == TypeId::of::<RangeInclusive<$t>>() {
                    // SAFETY (of calling `dup` later): as above.
                    return Ok(IndexedItems { len, src: Src::Seek { iter, dup: dup_as::<I, RangeInclusive<$t>> } });
                }
            )* };
        }
        ranges!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);
        if is_sync_scalar::<T::Item>() {
            if id == typeid::of::<Copied<std::slice::Iter<'static, T::Item>>>() {
                // SAFETY (of calling `dup` later): `I` is `Copied<slice::Iter<'a, T::Item>>`
                // for some `'a` outliving every borrow of `iter` (module docs).
                return Ok(IndexedItems { len, src: Src::Seek { iter, dup: dup_copied::<I, T::Item> } });
            }
            if id == typeid::of::<Cloned<std::slice::Iter<'static, T::Item>>>() {
                // SAFETY (of calling `dup` later): as above, for `Cloned`.
                return Ok(IndexedItems { len, src: Src::Seek { iter, dup: dup_cloned::<I, T::Item> } });
            }
        }
        Err(iter)
    }
}

impl<T: Task, I> IndexedItems<'_, T, I> {
    /// The items of a `Vec`, moved out one chunk at a time.
    fn owned(v: Vec<T::Item>) -> Self {
        IndexedItems { len: v.len(), src: Src::Owned(Owned::new(v)) }
    }
}

impl<'a, T: Task, I> IndexedItems<'a, T, I>
where
    T::Item: Clone + Sync,
{
    /// The items of a slice (`map_slice`), cloned as they run.
    pub(crate) fn slice(slice: &'a [T::Item]) -> Self {
        IndexedItems {
            len: slice.len(),
            src: Src::Slice {
                slice,
                run: |w, claim, items| {
                    if items.len() < claim.len() {
                        return w.run_chunk(claim, items.iter().cloned());
                    }
                    // By index, not through the slice's iterator, whose end check the
                    // compiler keeps (and then does not vectorise).
                    w.run_chunk_with(claim, |i, _| {
                        // SAFETY: `i < claim.len() <= items.len()` (checked above).
                        Some(unsafe { items.get_unchecked(i) }.clone())
                    })
                },
            },
        }
    }
}

impl<T: Task, I: Iterator<Item = T::Item>> IndexedItems<'_, T, I> {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Runs the items of `claim` on `worker` and fills the claim with their outputs.
    /// Fail-fast: the first failure is returned. A claim is handed out once per chunk, so each
    /// item is taken (moved, for a `Vec`) at most once.
    pub(crate) fn run_chunk(
        &self,
        worker: &mut Worker<T, Arc<T::Args>>,
        claim: Claim<'_, T::Output>,
    ) -> Result<(), ItemError> {
        let r = claim.range();
        match &self.src {
            Src::Owned(o) => {
                // SAFETY: `claim` is the only claim of `r` (`ChunkedOutput::claim` hands out
                // each chunk once), and the owner of these items is told which were taken
                // (`forget_taken`) before it drops the rest.
                let mut items = unsafe { o.take(r) };
                if items.len() < claim.len() {
                    return worker.run_chunk(claim, items);
                }
                // Outputs written where the items were (a lent buffer): each item is read
                // from the slot its output goes to, so the loop sees one pointer.
                let in_place = std::ptr::eq(claim.first_slot().cast::<T::Item>(), items.ptr)
                    && std::mem::size_of::<T::Output>() == std::mem::size_of::<T::Item>();
                worker.run_chunk_with(claim, |_, slot| {
                    // SAFETY: called once per slot, `claim.len()` times at most, and `items`
                    // holds that many (checked above): `take_next` reads each once. In place,
                    // `slot` is the address `items.ptr` holds (both start at the chunk's first
                    // item and step by one element of the same size), read as an item before
                    // the output is written there.
                    Some(unsafe { items.take_next(in_place.then_some(slot as *const T::Item)) })
                })
            }
            Src::Seek { iter, dup } => {
                // SAFETY: `dup` was stored by `recognize` for exactly this `I`.
                let it = unsafe { dup(iter) };
                // Zipped with a range, the two move to the chunk's start in O(1): std's `Zip`
                // of random-access iterators (slice iterators, `Copied`, `Cloned`, ranges)
                // skips by index, where `Cloned`'s own `nth` would clone every item it passes.
                let mut it = it.zip(0..self.len);
                if r.start > 0 {
                    let _ = it.nth(r.start - 1);
                }
                // SAFETY: `I` is one of the std iterators `recognize` accepts (ranges of
                // integers, `Copied`/`Cloned` slice iterators), all `TrustedLen` in std, as
                // are `Zip`, `Take` and `Map` of them: their size hints are exact.
                unsafe { worker.run_exact_chunk(claim, it.take(r.len()).map(|(x, _)| x)) }
            }
            Src::Slice { slice, run } => run(worker, claim, &slice[r]),
        }
    }

    /// Items `0..end` were taken by claims (moved out, for a `Vec`): only the others are
    /// dropped with these items. Called once every claim has run; it never moves back.
    pub(crate) fn forget_taken(&mut self, end: usize) {
        if let Src::Owned(o) = &mut self.src {
            o.live_from = o.live_from.max(end.min(o.len));
        }
    }

    /// Drops the items not taken yet, now: before the buffer they lie in is freed, when it
    /// was lent to the output ([`lend_buffer`](Self::lend_buffer)).
    pub(crate) fn drop_untaken(&mut self) {
        if let Src::Owned(o) = &mut self.src {
            o.drop_untaken();
        }
    }

    /// The buffer of a `Vec`'s items, for their outputs, when an output has the layout of
    /// an item (see `Owned::lend`); `None` for other sources and layouts.
    ///
    /// # Safety
    /// The `Vec` returned frees the items' buffer: it must outlive every use of these items
    /// and be dropped only after [`drop_untaken`](Self::drop_untaken) (or the drop of these
    /// items); output `i` may be written only once item `i` was taken (a claim's chunk).
    pub(crate) unsafe fn lend_buffer<O>(&mut self) -> Option<Vec<O>> {
        match &mut self.src {
            // SAFETY: passed on from the caller.
            Src::Owned(o) => unsafe { o.lend() },
            _ => None,
        }
    }
}

// SAFETY: every kind of source may be read from several threads at once: a `Vec`'s items are
// moved out (so `Send` items, which `Payload` requires, suffice) through disjoint claims; a
// `Seek` source holds an iterator that `recognize` accepted only over ranges of integers and
// slices of numbers, `bool` or `char`, all `Sync`; a `Slice` source is built only for
// `T::Item: Sync`. Stating it here lets backends hold an `IndexedItems` without bounds on `I`.
unsafe impl<T: Task, I> Sync for IndexedItems<'_, T, I> {}
// SAFETY: as above: the iterators kept are over `Sync` data, the owned items are `Send`.
unsafe impl<T: Task, I> Send for IndexedItems<'_, T, I> {}

/// A `Vec`'s items, moved out by index range; those never taken are dropped with it.
struct Owned<X> {
    /// The allocation, with length 0: the items are owned by this struct, not the `Vec`,
    /// which only frees the buffer when dropped; `None` once lent to the job's output
    /// ([`Owned::lend`]), which frees it then.
    buf: Option<Vec<X>>,
    /// `buf.as_mut_ptr()`, taken once: claims read through it while the owner holds `&self`.
    base: *mut X,
    len: usize,
    /// Items from here on are still owned here (`forget_taken` moves it past taken chunks).
    live_from: usize,
}

impl<X> Owned<X> {
    fn new(mut v: Vec<X>) -> Self {
        let len = v.len();
        let base = v.as_mut_ptr();
        // SAFETY: 0 <= len; the items stay initialised in the buffer, owned by `Owned`.
        unsafe { v.set_len(0) };
        Owned { buf: Some(v), base, len, live_from: 0 }
    }

    /// The allocation, as an empty `Vec<O>` of the same capacity, when an `O` has the layout
    /// of an `X` (same size, same alignment, not zero-sized): the outputs are then written
    /// where the items were, each once its item was moved out, and no second buffer is
    /// allocated (std's `vec.into_iter().map(f).collect()` does the same).
    ///
    /// # Safety
    /// The `Vec` returned frees the allocation: it must be dropped only after this `Owned`
    /// has dropped the items it still owns (then dropping it drops nothing more), and slot
    /// `i` may be written only once item `i` was taken.
    unsafe fn lend<O>(&mut self) -> Option<Vec<O>> {
        let same = std::mem::size_of::<O>() == std::mem::size_of::<X>()
            && std::mem::align_of::<O>() == std::mem::align_of::<X>()
            && std::mem::size_of::<X>() != 0;
        if !same {
            return None;
        }
        let buf = self.buf.take()?;
        let capacity = buf.capacity();
        std::mem::forget(buf);
        // SAFETY: `base` was allocated by a `Vec<X>` of this capacity; an `O` has the size and
        // alignment of an `X`, so the same capacity of `O`s is the same layout and the `Vec<O>`
        // frees it as it was allocated. Its length is 0: it owns no item yet. The `Vec<X>`
        // was forgotten (its length was 0: nothing leaks), so only the new one frees it.
        Some(unsafe { Vec::from_raw_parts(self.base as *mut O, 0, capacity) })
    }

    /// Drops the items still owned now (none, once every chunk was taken).
    fn drop_untaken(&mut self) {
        let from = self.live_from.min(self.len);
        self.live_from = self.len;
        // SAFETY: items `from..len` were never taken (`forget_taken`), so they are still
        // initialised and owned here; `live_from` moves past them, so they are dropped once.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(self.base.add(from), self.len - from));
        }
    }

    /// Moves items `r` out.
    ///
    /// # Safety
    /// No index of `r` may be taken twice, and `live_from` must be moved past every range
    /// taken before this is dropped.
    unsafe fn take(&self, r: Range<usize>) -> OwnedChunk<'_, X> {
        let end = r.end.min(self.len);
        let start = r.start.min(end);
        // SAFETY: `start..end` lies within the `len` initialised items of the buffer.
        let (ptr, end) = unsafe { (self.base.add(start), self.base.add(end)) };
        OwnedChunk { ptr, end, _items: PhantomData }
    }
}

impl<X> Drop for Owned<X> {
    fn drop(&mut self) {
        // The buffer itself is freed by the `Vec` (length 0), or by the output it was lent to.
        self.drop_untaken();
    }
}

/// Items moved out of an [`Owned`] one by one; those not reached are dropped with it (a
/// failed or panicking item stops a chunk half-way).
struct OwnedChunk<'o, X> {
    ptr: *mut X,
    end: *mut X,
    _items: PhantomData<&'o Owned<X>>,
}

impl<X> OwnedChunk<'_, X> {
    /// Items left.
    fn len(&self) -> usize {
        // SAFETY: both pointers are within (or one past) the same allocation, `ptr <= end`.
        unsafe { self.end.offset_from(self.ptr) as usize }
    }

    /// Moves the next item out, read from `at` if given (the address `ptr` holds, reached
    /// another way), without checking the end.
    ///
    /// # Safety
    /// An item must be left, and `at`, if given, must be the address `ptr` holds.
    #[inline]
    unsafe fn take_next(&mut self, at: Option<*const X>) -> X {
        // SAFETY: the caller's promises: `ptr` (or `at`, the same address) is an item of this
        // chunk, initialised and not read yet; `ptr` moves past it, so it is read once.
        unsafe {
            let x = std::ptr::read(at.unwrap_or(self.ptr));
            self.ptr = self.ptr.add(1);
            x
        }
    }
}

impl<X> Iterator for OwnedChunk<'_, X> {
    type Item = X;

    #[inline]
    fn next(&mut self) -> Option<X> {
        if self.ptr == self.end {
            return None;
        }
        // SAFETY: `ptr` is within this chunk's range, whose items are initialised and belong
        // to this chunk alone; it moves past the item read, so each is read once.
        unsafe {
            let x = std::ptr::read(self.ptr);
            self.ptr = self.ptr.add(1);
            Some(x)
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.len(), Some(self.len()))
    }
}

impl<X> Drop for OwnedChunk<'_, X> {
    fn drop(&mut self) {
        // SAFETY: the items from `ptr` to `end` were not read: still initialised, owned here.
        unsafe {
            let n = self.end.offset_from(self.ptr) as usize;
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(self.ptr, n));
        }
    }
}
