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
        let began = Instant::now();
        let Batch { seq, start, items } = batch;
        let len = items.len();
        let mut outputs = Vec::with_capacity(len);
        let mut failures = Vec::new();
        let mut item_stats = self.opts.item_stats.then(|| Vec::with_capacity(len));
        let mut items = items.into_iter();
        // Index of the item being run, kept outside the unwind boundary so a panic is pinned
        // to its item. One `catch_unwind` covers a run of items (not one per item: that would
        // cost more than a tiny item); after a panic the run resumes with the next item.
        let mut index = start;
        loop {
            let run = catch_unwind(AssertUnwindSafe(|| {
                self.run_items(&mut items, &mut index, &mut outputs, &mut failures, item_stats.as_mut())
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
            outputs,
            failures,
            worker: self.id,
            busy: began.elapsed(),
            item_stats,
            placed: false,
        }
    }

    /// Runs the items of a claimed chunk of an indexed job (`items` yields that chunk's items),
    /// writing each output in its place. Fail-fast: the first failure leaves the chunk empty
    /// and is returned.
    pub fn run_chunk(
        &mut self,
        claim: Claim<'_, T::Output>,
        items: impl Iterator<Item = T::Item>,
    ) -> Result<(), ItemError> {
        let args = self.args.as_ref();
        let state = &mut self.state;
        let start = claim.range().start;
        let mut failure = None;
        let written = std::cell::Cell::new(0);
        let outputs = items.map_while(|item| match T::run(item, args, state) {
            Ok(o) => Some(o),
            Err(e) => {
                failure = Some(e.to_string());
                None
            }
        });
        let filled = catch_unwind(AssertUnwindSafe(|| claim.fill(outputs, &written)));
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
        items: &mut std::vec::IntoIter<T::Item>,
        index: &mut usize,
        outputs: &mut Vec<T::Output>,
        failures: &mut Vec<ItemError>,
        mut stats: Option<&mut Vec<ItemStats>>,
    ) {
        let args = self.args.as_ref();
        let state = &mut self.state;
        let cancel = self.opts.cancel.as_deref();
        for item in items {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return;
            }
            let res = match stats.as_deref_mut() {
                None => T::run(item, args, state),
                Some(stats) => {
                    let mark = AllocMark::start();
                    let t0 = Instant::now();
                    let r = T::run(item, args, state);
                    stats.push(ItemStats { time: t0.elapsed(), peak_alloc: mark.peak() });
                    r
                }
            };
            match res {
                Ok(out) => outputs.push(out),
                Err(e) => {
                    failures.push(ItemError { index: *index, kind: FailureKind::Error, message: e.to_string() });
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

    #[test]
    fn a_batch_that_starts_near_the_end_of_usize_does_not_overflow() {
        let opts = WorkerOptions { fail_fast: false, item_stats: false, cancel: None };
        let mut w = Worker::<Fails>::start(0, &(), Arc::new(()), opts).expect("a worker");
        let done = w.run_batch(Batch { seq: 0, start: usize::MAX - 1, items: vec![0, 1, 2, 3] });
        assert_eq!(done.outputs, vec![0, 2, 3]);
        assert_eq!(done.failures.len(), 1);
        assert_eq!(done.failures[0].index, usize::MAX);
    }
}
