//! The worker side: `init` once, then batches. Shared by every backend, in-process or not.

use crate::error::{panic_message, Error, FailureKind, ItemError, Result};
use crate::plumbing::batch::{Batch, BatchDone};
use crate::plumbing::slots::Claim;
use crate::stats::{AllocMark, ItemStats};
use crate::task::Task;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How a worker runs its batches.
#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    /// Stop a batch at its first failed item (default); otherwise run every item.
    pub fail_fast: bool,
    /// Measure time and memory of every item.
    pub item_stats: bool,
    /// Set by the driver to stop a job early: checked before every item.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Retries of items whose task returned `Err` or panicked (default: none).
    pub retry_errors: crate::RetryErrors,
}

/// Where a worker puts a batch's outputs: a vector, or memory the driver reads them from
/// ([`crate::plumbing::plain::WriteInPlace`]).
pub(crate) trait Outputs<O> {
    /// Room for `n` more outputs, if that helps.
    fn reserve(&mut self, _n: usize) {}
    /// The next output.
    fn push(&mut self, o: O);
}

impl<O> Outputs<O> for Vec<O> {
    fn reserve(&mut self, n: usize) {
        Vec::reserve(self, n)
    }
    #[inline]
    fn push(&mut self, o: O) {
        Vec::push(self, o)
    }
}

/// One worker's state for one job: the task's per-worker state and the job's args.
pub struct Worker<T: Task, A: AsRef<T::Args> = Arc<<T as Task>::Args>> {
    id: usize,
    args: A,
    state: T::State,
    opts: WorkerOptions,
}

impl<T: Task, A: AsRef<T::Args>> Worker<T, A> {
    /// Runs the task's `init` (catching a panic) and returns the ready worker.
    pub fn start(id: usize, init: &T::Init, args: A, opts: WorkerOptions) -> Result<Self> {
        let state = match catch_unwind(AssertUnwindSafe(|| T::init(init, args.as_ref()))) {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Error::Init { worker: id, message: e.to_string() }),
            Err(p) => return Err(Error::Init { worker: id, message: format!("panicked: {}", panic_message(&*p)) }),
        };
        Ok(Worker { id, args, state, opts })
    }

    /// The worker's number.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Runs one batch. Failures are reported per item, with their index; a panic in one item
    /// does not take the worker down.
    pub fn run_batch(&mut self, batch: Batch<T::Item>) -> BatchDone<T::Output> {
        let Batch { seq, start, items } = batch;
        let mut outputs = Vec::with_capacity(items.len());
        let mut done = self.run_items_of(seq, start, items.into_iter(), &mut outputs);
        done.outputs = outputs;
        done
    }

    /// Runs the batch `seq` of `items` (consecutive from index `start`), pushing the outputs
    /// of those that succeed to `outputs` (which the caller may reuse from batch to batch:
    /// no fresh pages per batch); the returned record's own `outputs` is empty.
    pub(crate) fn run_items_of(
        &mut self,
        seq: u64,
        start: usize,
        items: impl ExactSizeIterator<Item = T::Item>,
        outputs: &mut impl Outputs<T::Output>,
    ) -> BatchDone<T::Output> {
        let began = Instant::now();
        let len = items.len();
        outputs.reserve(len);
        let mut failures = Vec::new();
        let mut item_stats = self.opts.item_stats.then(|| Vec::with_capacity(len));
        let mut items = items;
        // Index of the item being run, kept outside the unwind boundary so a panic is pinned
        // to its item. One `catch_unwind` covers a run of items (not one per item: that would
        // cost more than a tiny item); after a panic the run resumes with the next item.
        let mut index = start;
        loop {
            let run = catch_unwind(AssertUnwindSafe(|| {
                self.run_items(&mut items, &mut index, outputs, &mut failures, item_stats.as_mut())
            }));
            match run {
                Ok(()) => break,
                Err(p) => {
                    if let Some(stats) = item_stats.as_mut() {
                        // The panicking item's stats were not pushed.
                        stats.push(ItemStats { time: Default::default(), peak_alloc: None });
                    }
                    failures.push(ItemError { index, kind: FailureKind::Panic, message: panic_message(&*p) });
                    index = index.saturating_add(1);
                    if self.opts.fail_fast {
                        break;
                    }
                }
            }
        }
        BatchDone {
            seq,
            start,
            len,
            outputs: Vec::new(),
            failures,
            worker: self.id,
            busy: began.elapsed(),
            item_stats,
            placed: false,
        }
    }

    /// [`Worker::run_items_of`] for plain items read where they are (`items`: their bytes,
    /// checked by [`read_in_place`](crate::plumbing::plain::read_in_place), or a range's) and
    /// plain outputs written to `out`. A first pass runs the items while they succeed, with
    /// nothing per item but the call, the read and the write (a loop of tiny items compiles to
    /// a few instructions each, vectorised where the task allows: the general loop's
    /// bookkeeping cost more than `x * 2`); from a failure or a panic on, the general loop
    /// runs the rest.
    pub(crate) fn run_plain(
        &mut self,
        seq: u64,
        start: usize,
        items: impl crate::plumbing::plain::PlainItems<T::Item>,
        out: &mut crate::plumbing::plain::WriteInPlace<'_, T::Output>,
    ) -> BatchDone<T::Output>
    where
        T::Item: 'static,
    {
        if self.opts.item_stats || self.opts.cancel.is_some() || self.opts.retry_errors.retries > 0 {
            return self.run_items_of(seq, start, items.rest(0), out);
        }
        let began = Instant::now();
        let osize = std::mem::size_of::<T::Output>();
        let len = items.len();
        // Items run and written, kept outside the unwind boundary: a panic is the next one's.
        let mut ran = 0usize;
        let first = {
            let (args, state) = (self.args.as_ref(), &mut self.state);
            let room = out.spare();
            let n = len.min(room.len() / osize.max(1));
            let dst = room.as_mut_ptr();
            catch_unwind(AssertUnwindSafe(|| {
                for i in 0..n {
                    // SAFETY: `i < n <= items.len()`.
                    let x = unsafe { items.get(i) };
                    match T::run(x, args, state) {
                        // SAFETY: `i < n`, so the `size_of::<T::Output>()` bytes at `i * osize`
                        // lie in `room`, and the output is plain (`WriteInPlace` is made only
                        // for a plain type): no padding, no drop; an unaligned write needs no
                        // alignment.
                        Ok(o) => unsafe { dst.add(i * osize).cast::<T::Output>().write_unaligned(o) },
                        Err(e) => return Some(e),
                    }
                    ran += 1;
                }
                None
            }))
        };
        out.advance(ran);
        let mut failures = Vec::new();
        let index = start.saturating_add(ran);
        let resume = match first {
            Ok(None) => ran,
            Ok(Some(e)) => {
                failures.push(ItemError { index, kind: FailureKind::Error, message: e.to_string() });
                ran + 1
            }
            Err(p) => {
                failures.push(ItemError { index, kind: FailureKind::Panic, message: panic_message(&*p) });
                ran + 1
            }
        };
        let stopped = self.opts.fail_fast && !failures.is_empty();
        if resume < len && !stopped {
            failures.extend(self.run_items_of(seq, start.saturating_add(resume), items.rest(resume), out).failures);
        }
        BatchDone {
            seq,
            start,
            len,
            outputs: Vec::new(),
            failures,
            worker: self.id,
            busy: began.elapsed(),
            item_stats: None,
            placed: false,
        }
    }

    /// Runs the items of a claimed chunk of an indexed job (`items` yields that chunk's items),
    /// writing each output in its place. Fail-fast: the first failure leaves the chunk empty
    /// and is returned.
    pub fn run_chunk(
        &mut self,
        claim: Claim<'_, T::Output>,
        mut items: impl Iterator<Item = T::Item>,
    ) -> Result<(), ItemError> {
        self.run_chunk_with(claim, |_, _| items.next())
    }

    /// [`run_chunk`](Self::run_chunk) for items known to be enough: the loop checks no
    /// iterator's end, so that an infallible task over items read by index vectorises. A
    /// short `items` is still an error, found before the first item runs.
    ///
    /// # Safety
    /// `items.size_hint().0` must be a lower bound of what `items` yields (true of std's
    /// `TrustedLen` iterators and of the crate's own chunk iterators).
    pub unsafe fn run_exact_chunk(
        &mut self,
        claim: Claim<'_, T::Output>,
        mut items: impl Iterator<Item = T::Item>,
    ) -> Result<(), ItemError> {
        if items.size_hint().0 < claim.len() {
            return self.run_chunk(claim, items);
        }
        // SAFETY: `fill_with` calls this at most `claim.len()` times, and `items` yields that
        // many at least (the caller's promise on its size hint, checked just above).
        self.run_chunk_with(claim, |_, _| Some(unsafe { items.next().unwrap_unchecked() }))
    }

    /// [`run_chunk`](Self::run_chunk) with items from `next_item`, which is told the offset
    /// in the chunk and the address of the slot the item's output goes to (see
    /// [`Claim::fill_with`]).
    pub(crate) fn run_chunk_with(
        &mut self,
        claim: Claim<'_, T::Output>,
        mut next_item: impl FnMut(usize, *const std::mem::MaybeUninit<T::Output>) -> Option<T::Item>,
    ) -> Result<(), ItemError> {
        let args = self.args.as_ref();
        let state = &mut self.state;
        let start = claim.range().start;
        let mut failure = None;
        let written = std::cell::Cell::new(0);
        let next = |i, slot| {
            let item = next_item(i, slot)?;
            match T::run(item, args, state) {
                Ok(o) => Some(o),
                Err(e) => {
                    failure = Some(e.to_string());
                    None
                }
            }
        };
        let filled = catch_unwind(AssertUnwindSafe(|| claim.fill_with(next, &written)));
        let index = start.saturating_add(written.get());
        match filled {
            Ok(true) => Ok(()),
            Ok(false) => Err(match failure {
                Some(message) => ItemError { index, kind: FailureKind::Error, message },
                None => {
                    ItemError { index, kind: FailureKind::Lost, message: "chunk had fewer items than slots".into() }
                }
            }),
            Err(p) => Err(ItemError { index, kind: FailureKind::Panic, message: panic_message(&*p) }),
        }
    }

    /// The hot loop: runs items until the batch ends, an item fails (fail-fast) or the job is
    /// cancelled. `index` is the index of the item being run.
    fn run_items(
        &mut self,
        items: &mut impl Iterator<Item = T::Item>,
        index: &mut usize,
        outputs: &mut impl Outputs<T::Output>,
        failures: &mut Vec<ItemError>,
        mut stats: Option<&mut Vec<ItemStats>>,
    ) {
        let args = self.args.as_ref();
        let state = &mut self.state;
        let cancel = self.opts.cancel.as_deref();
        if self.opts.retry_errors.retries == 0 && stats.is_none() {
            return run_plain_items::<T>(items, index, outputs, failures, args, state, cancel, self.opts.fail_fast);
        }
        // Here the job has retries, or per-item stats, or both.
        for item in items {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return;
            }
            let res = match stats.as_deref_mut() {
                // Stats without retries: each item timed and its allocations counted.
                Some(stats) if self.opts.retry_errors.retries == 0 => {
                    let mark = AllocMark::start();
                    let t0 = Instant::now();
                    let r = T::run(item, args, state);
                    stats.push(ItemStats { time: t0.elapsed(), peak_alloc: mark.peak() });
                    r.map_err(|e| (FailureKind::Error, e.to_string()))
                }
                // Retries: each attempt under its own catch_unwind, so a panic is retried too
                // (no stats of an item's attempts).
                stats => {
                    let r = crate::retry::run_retrying::<T>(item, args, state, self.opts.retry_errors);
                    if let Some(stats) = stats {
                        stats.push(ItemStats { time: Default::default(), peak_alloc: None });
                    }
                    r
                }
            };
            match res {
                Ok(out) => outputs.push(out),
                Err((kind, message)) => {
                    failures.push(ItemError { index: *index, kind, message });
                    if self.opts.fail_fast {
                        *index = index.saturating_add(1);
                        return;
                    }
                }
            }
            *index = index.saturating_add(1);
        }
    }
}

/// [`Worker::run_items`] without retries or per-item stats, the common case, in a loop of
/// its own: per item, nothing is asked but the cancel flag (a job cancelled stops at its next
/// item). A function of its own (never inlined), so that its `&mut` arguments are `noalias`
/// and the loop no longer tests the retry and stats options at every item (with the direct
/// fill of lazy batches, `ItemSource::next_batch`, a million `x * 2` items from a generator
/// went from 4.5–5.8 ms to 1.9–3.0 ms on threads). A panic still finds `index` at its item:
/// a call that may unwind sees it stored.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn run_plain_items<T: Task>(
    items: &mut impl Iterator<Item = T::Item>,
    index: &mut usize,
    outputs: &mut impl Outputs<T::Output>,
    failures: &mut Vec<ItemError>,
    args: &T::Args,
    state: &mut T::State,
    cancel: Option<&AtomicBool>,
    fail_fast: bool,
) {
    for item in items {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return;
        }
        match T::run(item, args, state) {
            Ok(out) => outputs.push(out),
            Err(e) => {
                failures.push(ItemError { index: *index, kind: FailureKind::Error, message: e.to_string() });
                if fail_fast {
                    *index = index.saturating_add(1);
                    return;
                }
            }
        }
        *index = index.saturating_add(1);
    }
}

/// A worker's whole life for one job: `init`, then batches from `recv` until it returns
/// `None` (or the job is cancelled), each result given to `send` (which returns `false` once
/// the driver is gone). Every backend's worker runs this loop, whatever carries the messages.
pub fn serve_worker<T: Task, A: AsRef<T::Args>>(
    id: usize,
    init: &T::Init,
    args: A,
    opts: WorkerOptions,
    mut recv: impl FnMut() -> Option<Batch<T::Item>>,
    mut send: impl FnMut(crate::plumbing::batch::Event<T::Output>) -> bool,
) {
    use crate::plumbing::batch::Event;
    let cancel = opts.cancel.clone();
    let mut worker = match Worker::<T, A>::start(id, init, args, opts) {
        Ok(w) => w,
        Err(e) => {
            let message = match e {
                Error::Init { message, .. } => message,
                other => other.to_string(),
            };
            send(Event::InitFailed { worker: id, message });
            return;
        }
    };
    if !send(Event::Ready { worker: id }) {
        return;
    }
    while let Some(batch) = recv() {
        if cancel.as_deref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            break;
        }
        let done = worker.run_batch(batch);
        if !send(Event::Done(done)) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::task!(
        Fails = |x: u64| -> u64 {
            if x == 1 {
                panic!("one");
            }
            x
        }
    );

    crate::try_task!(
        ErrsAtThree = |x: u64| -> u32 {
            if x % 4 == 3 {
                return Err("three".into());
            }
            Ok(x as u32 * 10)
        }
    );

    #[test]
    fn plain_batches_run_in_place_like_any_batch_failures_and_panics_included() {
        use crate::plumbing::plain::{as_bytes, read_in_place, WriteInPlace};
        let items: Vec<u64> = (0..10).collect();
        let bytes = as_bytes(&items).unwrap();
        for fail_fast in [false, true] {
            let opts = WorkerOptions { fail_fast, item_stats: false, cancel: None, retry_errors: Default::default() };
            // Errors, in the fast first pass and in the general loop after it.
            let mut w = Worker::<ErrsAtThree>::start(0, &(), Arc::new(()), opts.clone()).unwrap();
            let want = w.run_batch(Batch { seq: 4, start: 100, items: items.clone() });
            let mut room = [0u8; 40];
            let mut out = WriteInPlace::<u32>::new(&mut room).unwrap();
            let done = w.run_plain(4, 100, read_in_place(bytes, 10).unwrap().unwrap(), &mut out);
            let n = out.count();
            let got: Vec<u32> = read_in_place(&room[..n * 4], n).unwrap().unwrap().collect();
            assert_eq!(got, want.outputs, "fail_fast {fail_fast}");
            let idx = |d: &BatchDone<u32>| d.failures.iter().map(|f| (f.index, f.kind)).collect::<Vec<_>>();
            assert_eq!(idx(&done), idx(&want));
            assert_eq!((done.seq, done.start, done.len), (4, 100, 10));
            // A panic.
            let mut w = Worker::<Fails>::start(0, &(), Arc::new(()), opts).unwrap();
            let want = w.run_batch(Batch { seq: 0, start: 0, items: items.clone() });
            let mut room = [0u8; 80];
            let mut out = WriteInPlace::<u64>::new(&mut room).unwrap();
            let done = w.run_plain(0, 0, read_in_place(bytes, 10).unwrap().unwrap(), &mut out);
            let n = out.count();
            assert_eq!(read_in_place::<u64>(&room[..n * 8], n).unwrap().unwrap().collect::<Vec<_>>(), want.outputs);
            assert_eq!(done.failures[0].kind, FailureKind::Panic);
            assert_eq!(done.failures.iter().map(|f| f.index).collect::<Vec<_>>(), vec![1]);
        }
    }

    #[test]
    fn a_batch_that_starts_near_the_end_of_usize_does_not_overflow() {
        let opts =
            WorkerOptions { fail_fast: false, item_stats: false, cancel: None, retry_errors: Default::default() };
        let mut w = Worker::<Fails>::start(0, &(), Arc::new(()), opts).expect("a worker");
        let done = w.run_batch(Batch { seq: 0, start: usize::MAX - 1, items: vec![0, 1, 2, 3] });
        assert_eq!(done.outputs, vec![0, 2, 3]);
        assert_eq!(done.failures.len(), 1);
        assert_eq!(done.failures[0].index, usize::MAX);
    }
}
