//! A running job: pulls completed batches from the backend and keeps stats and progress.

use crate::audit::Audit;
use crate::error::Result;
use crate::in_flight::InFlightCap;
use crate::journal::layer::JournalLayer;
use crate::on_progress::{Callback, ProgressUpdate};
use crate::plumbing::batch::BatchDone;
use crate::plumbing::indexed_job::ChunkReport;
use crate::plumbing::Completions;
use crate::progress::Tracker;
use crate::stats::{BatchStat, JobStats};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A job under way. Dropping it cancels the backend's work and publishes the stats.
pub(crate) struct Running<'a, O> {
    inner: Option<Box<dyn Completions<O> + 'a>>,
    stats: JobStats,
    started: Instant,
    tracker: Tracker,
    sink: Arc<Mutex<Option<JobStats>>>,
    /// Checks every batch the backend hands back (`None`: a job with no items).
    audit: Option<Audit<O>>,
    /// The job's progress callback, and the counts it is told.
    callback: Option<Callback<'a>>,
    failed: usize,
    total: Option<usize>,
    /// The job's cap on items in flight, told of every item its terminal returns.
    cap: Option<Arc<InFlightCap>>,
    /// An indexed job's chunks, which stand for its one batch in the stats (their workers
    /// advance the progress themselves).
    chunks: Option<Arc<ChunkReport>>,
    /// The job's results journal: batches are journaled, renumbered and merged with the
    /// journal's results before the terminal sees them.
    journal: Option<JournalLayer<O>>,
}

impl<'a, O> Running<'a, O> {
    pub(crate) fn new(
        inner: Option<(Box<dyn Completions<O> + 'a>, Audit<O>)>,
        stats: JobStats,
        tracker: Tracker,
        sink: Arc<Mutex<Option<JobStats>>>,
    ) -> Self {
        let (inner, audit) = inner.unzip();
        Running {
            inner,
            stats,
            started: Instant::now(),
            tracker,
            sink,
            audit,
            callback: None,
            failed: 0,
            total: None,
            cap: None,
            chunks: None,
            journal: None,
        }
    }

    /// Calls `callback` with the job's progress as batches come back (the job's length,
    /// if known, is `total`).
    pub(crate) fn with_callback(mut self, callback: Option<Callback<'a>>, total: Option<usize>) -> Self {
        self.callback = callback;
        self.total = total;
        self
    }

    /// Tells `cap` of the items the terminal returns ([`Running::returned`]).
    pub(crate) fn with_cap(mut self, cap: Option<Arc<InFlightCap>>) -> Self {
        self.cap = cap;
        self
    }

    /// Journals the job's batches in `journal` (whose results count as resumed).
    pub(crate) fn with_journal(mut self, journal: Option<JournalLayer<O>>) -> Self {
        if let Some(j) = &journal {
            self.stats.resumed = j.held();
            self.tracker.advance(j.held());
        }
        self.journal = journal;
        self
    }

    /// The terminal returned `n` more items to its consumer: the source may pull as many.
    #[inline]
    pub(crate) fn returned(&mut self, n: usize) {
        if let Some(cap) = &self.cap {
            // A journaled job's terminal also returns the journal's results: only the items
            // pulled from the iterator count.
            let n = match self.journal.as_mut() {
                Some(j) => j.returned(n),
                None => n,
            };
            cap.returned(n);
        }
    }

    /// Offers the callback the counts so far (`last`: the job is over).
    fn tell(&mut self, last: bool) {
        if let Some(cb) = self.callback.as_mut() {
            let update = ProgressUpdate {
                done: self.stats.items_done + self.stats.resumed,
                failed: self.failed,
                total: self.total,
                elapsed: self.started.elapsed(),
            };
            cb.offer(update, last);
        }
    }

    /// An indexed job, whose chunks its workers report to `chunks`.
    pub(crate) fn with_chunks(mut self, chunks: Arc<ChunkReport>) -> Self {
        self.chunks = Some(chunks);
        self
    }

    /// The next completed batch (completion order; input order for a journaled job whose
    /// terminal keeps the order); `None` at the end.
    pub(crate) fn next_done(&mut self) -> Option<Result<BatchDone<O>>> {
        if self.journal.is_none() {
            let done = self.next_from_backend();
            if let Some(Ok(b)) = &done {
                self.progressed(b.len);
            }
            return done;
        }
        loop {
            let journal = self.journal.as_mut()?;
            if let Some(piece) = journal.pop() {
                let mut piece = match piece {
                    Ok(p) => p,
                    Err(e) => {
                        self.finish();
                        return Some(Err(e));
                    }
                };
                if self.stats.first_result.is_none() && !piece.outputs.is_empty() {
                    self.stats.first_result = Some(self.started.elapsed());
                }
                self.stats.record_items(piece.start, piece.item_stats.take());
                return Some(Ok(piece));
            }
            if journal.is_over() {
                self.finish();
                return None;
            }
            let arrived = match self.next_from_backend() {
                // Progress is told once the batch is in the journal: a driver killed right
                // after a "done" line has journaled what that line counted.
                Some(Ok(b)) => {
                    let len = b.len;
                    let arrived = self.journal.as_mut().map(|j| j.arrive(b));
                    if let Some(Ok(())) = arrived {
                        self.progressed(len);
                    }
                    arrived
                }
                Some(Err(e)) => Some(Err(match self.journal.as_ref() {
                    Some(j) => j.translate(e),
                    None => e,
                })),
                None => self.journal.as_mut().map(|j| j.end()),
            };
            if let Some(Err(e)) = arrived {
                self.finish();
                return Some(Err(e));
            }
        }
    }

    /// The next batch the backend hands back, checked and counted in the stats (the caller
    /// tells the progress: [`Running::progressed`]).
    fn next_from_backend(&mut self) -> Option<Result<BatchDone<O>>> {
        let inner = self.inner.as_mut()?;
        let done = inner.next_done();
        // The backend's word is checked before anyone acts on it: a batch missing, repeated,
        // invented or short is an error here, never fewer results.
        let checked = match (&done, self.audit.as_mut()) {
            (Some(Ok(b)), Some(audit)) => audit.check(b),
            (None, Some(audit)) => audit.check_end(),
            _ => Ok(()),
        };
        if let Err(e) = checked {
            self.finish();
            return Some(Err(e));
        }
        match done {
            Some(Ok(mut b)) => {
                if self.stats.first_result.is_none() && (b.placed || !b.outputs.is_empty()) {
                    self.stats.first_result = Some(self.started.elapsed());
                }
                self.stats.items_done += if b.placed { b.len } else { b.outputs.len() };
                self.failed += b.failures.len();
                match &self.chunks {
                    Some(chunks) => self.stats.batches.extend(chunks.take_batches()),
                    None => self.stats.batches.push(BatchStat {
                        start: self.journal.as_ref().map_or(b.start, |j| j.to_input(b.start)),
                        len: b.len,
                        worker: b.worker,
                        busy: b.busy,
                    }),
                }
                if self.journal.is_none() {
                    // A journaled job's are recorded by piece, in the input's numbering.
                    self.stats.record_items(b.start, b.item_stats.take());
                }
                Some(Ok(b))
            }
            other => {
                self.finish();
                other
            }
        }
    }

    /// `n` more items are done: the progress line or bar and the callback hear of them.
    fn progressed(&mut self, n: usize) {
        self.tracker.advance(n);
        self.tell(false);
    }

    /// Stops the backend (cancelling what is left) and publishes the stats.
    pub(crate) fn finish(&mut self) {
        if self.inner.take().is_some() || self.stats.wall.is_zero() {
            self.stats.wall = self.started.elapsed();
            self.tracker.finish();
            if let Some(chunks) = &self.chunks {
                chunks.finish();
            }
            if let Some(journal) = self.journal.as_mut() {
                journal.finish();
            }
            self.tell(true);
            if let Ok(mut g) = self.sink.lock() {
                *g = Some(self.stats.clone());
            }
        }
    }
}

impl<O> Drop for Running<'_, O> {
    fn drop(&mut self) {
        self.finish();
    }
}
