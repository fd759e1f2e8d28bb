//! [`IndexedJob`]: a job whose items are split by index among workers that share the driver's
//! memory. The backend only supplies the threads: each calls [`IndexedJob::work`], which
//! starts that worker (`init`), then claims chunks of the index range until none is left and
//! writes every output straight into its place (a [`ChunkedOutput`]). No driver walks the
//! items and no result is copied: this is how rayon's indexed iterators work.

use crate::error::{Error, Result};
use crate::plumbing::batch::BatchDone;
use crate::plumbing::indexed::IndexedItems;
use crate::plumbing::slots::ChunkedOutput;
use crate::plumbing::worker::{Worker, WorkerOptions};
use crate::progress::Tracker;
use crate::stats::BatchStat;
use crate::task::Task;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What [`Backend::start_indexed`](crate::plumbing::Backend::start_indexed) runs: call
/// [`work`](Self::work) for ids `0..workers` (each once, from threads of the backend: one per
/// id, or fork-join tasks), then [`finish`](Self::finish) once they have all returned.
///
/// Compared with [`Dispatch`](crate::plumbing::Dispatch): the job is fail-fast and keeps every
/// output in order (`run`, `gather`, `gather_with`); each chunk is a batch for progress and
/// stats (reported as it ends, from the worker's thread); a failure stops the other workers
/// at their next chunk.
pub struct IndexedJob<'a, T: Task, I: Iterator<Item = T::Item>> {
    // `items` before `out`: fields drop in this order, and the items still owned must be
    // dropped before `out` frees the buffer they may lie in (lent to it).
    items: IndexedItems<'a, T, I>,
    out: ChunkedOutput<T::Output>,
    init: Arc<T::Init>,
    args: Arc<T::Args>,
    options: WorkerOptions,
    workers: usize,
    first_error: Mutex<Option<Error>>,
    /// Nanoseconds the workers spent, summed.
    busy: AtomicU64,
    backend: &'static str,
    report: Arc<ChunkReport>,
}

/// How an indexed job's items are cut into chunks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Chunks {
    /// Chunks of this many items (the last one shorter).
    Size(usize),
    /// This many chunks of nearly equal size.
    Even(usize),
}

/// What the workers of an indexed job report as each chunk ends, for the engine's stats and
/// progress (the driver's thread is waiting for the whole job meanwhile).
pub(crate) struct ChunkReport {
    batches: Mutex<Vec<BatchStat>>,
    tracker: Mutex<Tracker>,
    /// Whether the tracker shows progress: then each chunk advances it as it ends; if not,
    /// each worker tells its chunks once, when it is done (two locks a chunk were a tenth of
    /// a 100,000-item job).
    live: bool,
    /// The driver's `tracing` dispatcher: progress lines logged from the workers' threads go
    /// where the driver's would (a scoped subscriber is the calling thread's only).
    dispatch: tracing::Dispatch,
}

impl ChunkReport {
    /// A report whose progress goes to `tracker`; call it on the driver's thread.
    pub(crate) fn new(tracker: Tracker) -> Self {
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let live = tracker.is_live();
        ChunkReport { batches: Mutex::new(Vec::new()), tracker: Mutex::new(tracker), live, dispatch }
    }

    /// A worker's chunk ended: told now if progress is shown, else kept in `done` until the
    /// worker tells them all ([`ChunkReport::worker_done`]).
    fn chunk_done(&self, stat: BatchStat, done: &mut Vec<BatchStat>) {
        if !self.live {
            done.push(stat);
            return;
        }
        self.batches.lock().unwrap_or_else(|p| p.into_inner()).push(stat);
        let mut tracker = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
        tracing::dispatcher::with_default(&self.dispatch, || tracker.advance(stat.len));
    }

    /// A worker is done: the chunks it kept are told at once.
    fn worker_done(&self, done: Vec<BatchStat>) {
        if done.is_empty() {
            return;
        }
        let items = done.iter().map(|b| b.len).sum();
        self.batches.lock().unwrap_or_else(|p| p.into_inner()).extend(done);
        self.tracker.lock().unwrap_or_else(|p| p.into_inner()).advance(items);
    }

    /// The chunks reported since the last call.
    pub(crate) fn take_batches(&self) -> Vec<BatchStat> {
        std::mem::take(&mut *self.batches.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Clears the progress bar, if one is drawn.
    pub(crate) fn finish(&self) {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner()).finish();
    }
}

impl<'a, T: Task, I: Iterator<Item = T::Item>> IndexedJob<'a, T, I> {
    /// A job over `items` in `chunks`, on at most `workers` workers, reporting to `report`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        backend: &'static str,
        items: IndexedItems<'a, T, I>,
        chunks: Chunks,
        workers: usize,
        init: Arc<T::Init>,
        args: Arc<T::Args>,
        options: WorkerOptions,
        report: Arc<ChunkReport>,
    ) -> Self {
        let mut items = items;
        // A `Vec`'s outputs go where its items were, when they have the same layout: no
        // second buffer, no fresh pages to fault in (rayon allocates one).
        // SAFETY: the buffer goes to `out`, which is dropped after `items` (field order) and
        // after `drop_untaken` in `finish`; a claim's worker writes output `i` after taking
        // item `i` (`IndexedItems::run_chunk` feeds `Claim::fill_with` one item at a time).
        let buf = unsafe { items.lend_buffer::<T::Output>() };
        let out = match chunks {
            Chunks::Size(size) => ChunkedOutput::new_in(items.len(), size, buf),
            Chunks::Even(k) => ChunkedOutput::even_in(items.len(), k, buf),
        };
        let workers = workers.min(out.chunks()).max(1);
        IndexedJob {
            items,
            out,
            init,
            args,
            options,
            workers,
            first_error: Mutex::new(None),
            busy: AtomicU64::new(0),
            backend,
            report,
        }
    }

    /// How many workers to run (never more chunks than that, never more than the job allows).
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn fail(&self, e: Error) {
        self.out.stop();
        let mut g = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        g.get_or_insert(e);
    }

    /// Worker `id`'s share of the job, on the calling thread: `init`, then chunks until none
    /// is left or the job failed. An id at or past [`workers`](Self::workers) does nothing,
    /// and so does a worker that finds every chunk claimed already: it does not start (no
    /// `init`), so a backend may run the workers as fork-join tasks that others steal (the
    /// calling thread runs the ones not stolen after its own, and they find nothing left).
    pub fn work(&self, id: usize) {
        if id >= self.workers || !self.out.has_unclaimed() {
            return;
        }
        let t0 = Instant::now();
        let mut done = Vec::new();
        match Worker::<T, _>::start(id, &self.init, Arc::clone(&self.args), self.options.clone()) {
            Ok(mut worker) => {
                while let Some(claim) = self.out.claim() {
                    let r = claim.range();
                    let began = Instant::now();
                    if let Err(e) = self.items.run_chunk(&mut worker, claim) {
                        self.fail(Error::Item(e));
                        break;
                    }
                    let busy = began.elapsed();
                    self.report.chunk_done(BatchStat { start: r.start, len: r.len(), worker: id, busy }, &mut done);
                }
            }
            Err(e) => self.fail(e),
        }
        self.report.worker_done(done);
        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy.fetch_add(ns, Ordering::Relaxed);
    }

    /// The job's outcome once every [`work`](Self::work) call has returned: every output in
    /// input order as one batch, or the first failure.
    pub fn finish(mut self) -> Result<BatchDone<T::Output>> {
        let n = self.items.len();
        if let Some(e) = self.first_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        // Every claimed chunk's items were taken; the rest (none, when all is well) are
        // dropped before the output, which may own their buffer, can be.
        self.items.forget_taken(self.out.claimed_end());
        self.items.drop_untaken();
        let out = std::mem::replace(&mut self.out, ChunkedOutput::new(0, 1));
        let outputs = out.into_vec().ok_or_else(|| Error::Backend {
            backend: self.backend,
            message: "a chunk of the job was never run (was `work` called?)".into(),
        })?;
        Ok(BatchDone {
            seq: 0,
            start: 0,
            len: n,
            outputs,
            failures: Vec::new(),
            worker: 0,
            busy: std::time::Duration::from_nanos(self.busy.load(Ordering::Relaxed)),
            item_stats: None,
            placed: false,
        })
    }
}

impl<T: Task, I: Iterator<Item = T::Item>> Drop for IndexedJob<'_, T, I> {
    fn drop(&mut self) {
        // Every `work` has returned (they borrow the job): the items of claimed chunks were
        // taken, the others are still owned by `items`, which drops them. (After `finish`,
        // `out` is an empty stand-in; `forget_taken` only ever moves forward.)
        self.items.forget_taken(self.out.claimed_end());
    }
}
