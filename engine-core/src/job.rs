//! [`Job`]: one map of a task over items, configured then run by a terminal method.

use crate::audit::Audit;
use crate::batching::{batcher_for, Batcher, Batching};
use crate::config::EngineConfig;
use crate::error::{Error, FailureKind, ItemError, Result};
use crate::in_flight::InFlightCap;
use crate::journal::layer::Opened;
use crate::journal::skip::Skip;
use crate::journal::Journal;
use crate::on_progress::{Callback, ProgressUpdate};
use crate::order::Reorder;
use crate::plumbing::backend::{Backend, Plan};
use crate::plumbing::batch::BatchDone;
use crate::plumbing::cuts::CutLog;
use crate::plumbing::dispatch::DispatchConfig;
use crate::plumbing::indexed::IndexedItems;
use crate::plumbing::indexed_job::{ChunkReport, Chunks, IndexedJob};
use crate::plumbing::placement::Placement;
use crate::plumbing::source::ItemSource;
use crate::plumbing::worker::WorkerOptions;
use crate::progress::{Progress, Tracker};
use crate::remote::registry;
use crate::run::Running;
use crate::stats::JobStats;
use crate::stats::StatsSink;
use crate::stream::{ResultStream, UnorderedStream};
use crate::task::Task;
use std::any::Any;
use std::sync::Arc;

/// A map of `T` over the items of `I` on an engine. Configure it, then call a terminal:
/// [`run`](Job::run), [`gather`](Job::gather), [`gather_with`](Job::gather_with),
/// [`collect_results`](Job::collect_results), [`stream`](Job::stream) or
/// [`stream_unordered`](Job::stream_unordered).
#[must_use = "a job does nothing until a terminal method such as `run` is called"]
pub struct Job<'e, B: Backend, T: Task, I: Iterator<Item = T::Item>> {
    backend: &'e B,
    config: &'e EngineConfig,
    stats_sink: StatsSink,
    iter: I,
    length: Option<usize>,
    args: Option<Arc<T::Args>>,
    init: Option<Arc<T::Init>>,
    batching: Batching,
    batcher: Option<Box<dyn Batcher>>,
    item_stats: bool,
    progress: Progress,
    prefetch: usize,
    reorder_window: Option<usize>,
    max_retries: usize,
    item_timeout: Option<std::time::Duration>,
    workers: Option<usize>,
    /// `map_slice`'s items (whose `Clone + Sync` bound is known only there).
    slice: Option<IndexedItems<'e, T, I>>,
    on_progress: Option<Callback<'e>>,
    max_in_flight: Option<usize>,
    retry_errors: crate::RetryErrors,
    journal: Option<Journal>,
}

/// How a terminal consumes its job: what `Job::start` sets up for it.
#[derive(Debug, Clone, Copy)]
struct Terminal {
    /// The first failed item ends the job (all but `collect_results`).
    fail_fast: bool,
    /// Every output is kept, in order (a slice job may then be split by index).
    whole: bool,
    /// The reorder window is bounded (an ordered stream holds at most so many batches).
    bounded: bool,
    /// Plain-number outputs may be written in place by the backend (`run`).
    place: bool,
    /// A stream: its consumer takes results one by one, so by default it starts slowly.
    stream: bool,
    /// Results go out in input order (all but `stream_unordered`).
    ordered: bool,
}

impl Terminal {
    const RUN: Terminal =
        Terminal { fail_fast: true, whole: true, bounded: false, place: true, stream: false, ordered: true };
    const GATHER: Terminal = Terminal { place: false, ..Terminal::RUN };
    const COLLECT_RESULTS: Terminal =
        Terminal { fail_fast: false, whole: false, bounded: false, place: false, stream: false, ordered: true };
    const STREAM: Terminal =
        Terminal { fail_fast: true, whole: false, bounded: true, place: false, stream: true, ordered: true };
    const STREAM_UNORDERED: Terminal = Terminal { bounded: false, ordered: false, ..Terminal::STREAM };
}

/// `Arc::new(())` as an `Arc<X>` when `X` is `()`, so tasks without args need no `.args(())`.
fn unit_default<X: Any + Send + Sync>() -> Option<Arc<X>> {
    let unit: Arc<dyn Any + Send + Sync> = Arc::new(());
    unit.downcast::<X>().ok()
}

impl<'e, B: Backend, T: Task, I: Iterator<Item = T::Item>> Job<'e, B, T, I> {
    /// A job of `backend`, with the engine's `config`, whose stats go to `stats_sink`.
    pub(crate) fn new(backend: &'e B, config: &'e EngineConfig, stats_sink: StatsSink, _task: T, iter: I) -> Self {
        Job {
            backend,
            config,
            stats_sink,
            iter,
            length: None,
            args: None,
            init: None,
            batching: config.batching,
            batcher: None,
            item_stats: false,
            progress: config.progress,
            prefetch: 2,
            reorder_window: None,
            max_retries: 2,
            item_timeout: None,
            workers: None,
            slice: None,
            on_progress: None,
            max_in_flight: None,
            retry_errors: crate::RetryErrors::default(),
            journal: None,
        }
    }

    pub(crate) fn with_slice(mut self, slice: IndexedItems<'e, T, I>) -> Self {
        self.slice = Some(slice);
        self
    }

    /// Declares the number of items, for iterators without an exact size (the Python original's
    /// `length=`). The job fails with [`Error::LengthMismatch`] if the iterator yields more or
    /// fewer.
    pub fn length(mut self, n: usize) -> Self {
        self.length = Some(n);
        self
    }

    /// The args given to every call (the Python original's keyword arguments). Sent once per worker.
    pub fn args(mut self, args: T::Args) -> Self {
        self.args = Some(Arc::new(args));
        self
    }

    /// The argument of every worker's [`Task::init`] (the Python original's `init_method` kwargs).
    pub fn init(mut self, init: T::Init) -> Self {
        self.init = Some(Arc::new(init));
        self
    }

    /// Batching mode: `false`, `true`, a number of batches, or a [`Batching`].
    pub fn batched(mut self, b: impl Into<Batching>) -> Self {
        self.batching = b.into();
        self
    }

    /// A custom batch-size policy (overrides `batched`).
    pub fn batcher(mut self, b: impl Batcher + 'static) -> Self {
        self.batcher = Some(Box::new(b));
        self
    }

    /// Measure time (and memory, with [`CountingAllocator`](crate::CountingAllocator)) of
    /// every item; read them with `Engine::last_stats`. Off by default: two clock reads per
    /// item cost more than a tiny item.
    pub fn item_stats(mut self, on: bool) -> Self {
        self.item_stats = on;
        self
    }

    /// Progress reporting of this job.
    pub fn progress(mut self, p: Progress) -> Self {
        self.progress = p;
        self
    }

    /// Runs an item whose task returned `Err` or panicked again, up to `n` more times, before
    /// it fails as it would without (then its [`ItemError`]'s message ends with "(after k
    /// attempts)"). For transient failures: a network read, a busy service. The item is
    /// retried on the worker where it failed, with that worker's state, from a copy encoded
    /// before its first attempt (the task consumed the first); keeping the copy costs an
    /// encoding per item while retries are on, and such jobs are not split by index on
    /// threads. Pauses between attempts with [`retry_backoff`](Job::retry_backoff). Crashed or
    /// killed workers are [`retries`](Job::retries)' business. Which failures are retried is
    /// the task's choice: [`Task::retry_if`] (default: every `Err` and panic); one it declines
    /// fails at once.
    ///
    /// ```
    /// # use adparallelengine_core::*;
    /// # use adparallelengine_core::plumbing::*;
    /// # struct Inline;
    /// # impl Backend for Inline {
    /// #   fn name(&self) -> &'static str { "inline" }
    /// #   fn max_workers(&self) -> usize { 1 }
    /// #   fn start<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(&'a self, p: Plan<T, I>)
    /// #     -> Result<Box<dyn Completions<T::Output> + 'a>> { run_inline(p) }
    /// # }
    /// # let engine = Engine::from_backend(Inline);
    /// /// Fails every item's first attempt (the worker's state remembers it).
    /// struct Flaky;
    /// impl Task for Flaky {
    ///     type Item = u64;
    ///     type Output = u64;
    ///     type Args = ();
    ///     type Init = ();
    ///     type State = std::collections::HashSet<u64>;
    ///     fn init(_: &(), _: &()) -> std::result::Result<Self::State, BoxError> {
    ///         Ok(Default::default())
    ///     }
    ///     fn run(x: u64, _: &(), seen: &mut Self::State) -> std::result::Result<u64, BoxError> {
    ///         match seen.insert(x) {
    ///             true => Err("a transient failure".into()),
    ///             false => Ok(x),
    ///         }
    ///     }
    /// }
    /// register_task!(Flaky);
    /// assert_eq!(engine.map(Flaky, 0..5u64).retry_errors(1).run()?, vec![0, 1, 2, 3, 4]);
    /// let err = engine.map(Flaky, 10..15u64).run().unwrap_err().to_string();
    /// assert!(err.contains("item 0") && err.contains("transient"), "{err}");
    /// # Ok::<(), Error>(())
    /// ```
    pub fn retry_errors(mut self, n: u32) -> Self {
        self.retry_errors.retries = n;
        self
    }

    /// The pause before an item's second attempt under [`retry_errors`](Job::retry_errors),
    /// doubled before each next one, at most a minute (default: none).
    pub fn retry_backoff(mut self, first: std::time::Duration) -> Self {
        self.retry_errors.backoff = first;
        self
    }

    /// Appends every finished item's output to a results journal as it comes back, and skips
    /// the items the journal holds already: rerun after a crash (or run again after it
    /// finished), the job walks its iterator (a generator cannot seek) but sends only the
    /// items the journal lacks, and returns every result, old and new, in input order, as an
    /// uninterrupted run would — streams too; `stream_unordered` gives the journal's first.
    /// `JobStats::resumed` counts the items read back.
    ///
    /// The journal's header identifies the job: the task's name, its item and output types,
    /// a [`version`](Journal::version) you may give, hashes of the args, the init argument
    /// and the shared values (their content), and the length when known. A journal of
    /// another job is [`Error::JournalMismatch`], naming what differs (or emptied, with
    /// [`Journal::discard_mismatched`]); a file that is not a journal is never touched; a
    /// journal in use by another job is an error. Args are hashed through their encoding:
    /// a `HashMap` in them encodes in another order in every process, use a `BTreeMap`.
    ///
    /// Each batch's outputs are one write (postcard; Arrow data as IPC), checksummed, so a
    /// crash tears at most the last record, which the next run ignores. Failed items are
    /// not journaled: a rerun runs them again. Forced to disk per [`JournalSync`](crate::JournalSync)
    /// (default: at most once a second). A journaled job is not split by index nor written
    /// in place (its outputs go through the journal).
    ///
    /// ```
    /// # use adparallelengine_core::*;
    /// # use adparallelengine_core::plumbing::*;
    /// # adparallelengine_core::task!(Sq = |x: u64| -> u64 { x * x });
    /// # struct Inline;
    /// # impl Backend for Inline {
    /// #   fn name(&self) -> &'static str { "inline" }
    /// #   fn max_workers(&self) -> usize { 1 }
    /// #   fn start<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(&'a self, p: Plan<T, I>)
    /// #     -> Result<Box<dyn Completions<T::Output> + 'a>> { run_inline(p) }
    /// # }
    /// # let engine = Engine::from_backend(Inline);
    /// let path = std::env::temp_dir().join(format!("doc-{}.journal", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let first = engine.map(Sq, 0..1000u64).batched(10).journal(&*path).run()?;
    /// assert_eq!(engine.last_stats().map(|s| s.resumed), Some(0));
    /// // Run again: every result comes from the journal, nothing runs.
    /// let again = engine.map(Sq, 0..1000u64).batched(10).journal(&*path).run()?;
    /// assert_eq!(again, first);
    /// assert_eq!(engine.last_stats().map(|s| (s.resumed, s.items_done)), Some((1000, 0)));
    /// // Other items are another job: refused, with the reason.
    /// let err = engine.map(Sq, 0..999u64).journal(&*path).run().unwrap_err();
    /// assert!(matches!(err, Error::JournalMismatch { .. }), "{err}");
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok::<(), Error>(())
    /// ```
    pub fn journal(mut self, journal: impl Into<Journal>) -> Self {
        self.journal = Some(journal.into());
        self
    }

    /// Takes at most `n` items from the iterator that the consumer has not been given back
    /// yet: items being batched, sent, run, or held in order behind a slower one. A stream's
    /// consumer gets an item back when the stream yields it; `run`, `gather`, `gather_with`
    /// and `collect_results` when it lands in order in their result. So a stream over an
    /// endless generator never pulls more than `n` items ahead of the caller, whatever the
    /// batching: batches are cut smaller when the cap is near (Auto batching's sizes, the
    /// prefetch and the reorder window all give way to it). A small cap costs throughput
    /// (batches of at most `n` items, workers idle while the consumer is slow). The default:
    /// no cap for `run`, `gather`, `gather_with` and `collect_results`; a slow start for
    /// streams, which pull at most 4,096 items ahead at first and then at most as many as
    /// their consumer has taken (so a stream's first results do not wait behind tens of
    /// thousands of items pulled for batches Auto grew meanwhile, and a long stream soon runs
    /// as fast as uncapped). Jobs over a slice or a `Vec` split by index are not pulled lazily, so with a
    /// cap they are cut like any iterator.
    ///
    /// ```
    /// # use adparallelengine_core::*;
    /// # use adparallelengine_core::plumbing::*;
    /// # adparallelengine_core::task!(Sq = |x: u64| -> u64 { x * x });
    /// # struct Inline;
    /// # impl Backend for Inline {
    /// #   fn name(&self) -> &'static str { "inline" }
    /// #   fn max_workers(&self) -> usize { 1 }
    /// #   fn start<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(&'a self, p: Plan<T, I>)
    /// #     -> Result<Box<dyn Completions<T::Output> + 'a>> { run_inline(p) }
    /// # }
    /// # let engine = Engine::from_backend(Inline);
    /// use std::cell::Cell;
    /// let pulled = Cell::new(0u64);
    /// let endless = std::iter::from_fn(|| {
    ///     pulled.set(pulled.get() + 1);
    ///     Some(pulled.get())
    /// });
    /// let mut stream = engine.map(Sq, endless).max_in_flight(8).stream()?;
    /// for taken in 1..=100u64 {
    ///     assert_eq!(stream.next().transpose()?, Some(taken * taken));
    ///     assert!(pulled.get() <= taken + 8);
    /// }
    /// # Ok::<(), Error>(())
    /// ```
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = Some(n.max(1));
        self
    }

    /// Calls `f` on the driver (the thread that consumes the results) with the job's
    /// progress: items done and failed, the length if known, the time since the start. It is
    /// called when a batch comes back, at most once per `every` (the first batch back is
    /// always told), and once more at the end of the job if the counts moved since, so its
    /// last call has the final counts. Counts never go down. Besides the log lines and the bar
    /// of [`progress`](Job::progress), for a program's own UI or metrics.
    ///
    /// ```
    /// # use adparallelengine_core::*;
    /// # use adparallelengine_core::plumbing::*;
    /// # adparallelengine_core::task!(Sq = |x: u64| -> u64 { x * x });
    /// # struct Inline;
    /// # impl Backend for Inline {
    /// #   fn name(&self) -> &'static str { "inline" }
    /// #   fn max_workers(&self) -> usize { 1 }
    /// #   fn start<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(&'a self, p: Plan<T, I>)
    /// #     -> Result<Box<dyn Completions<T::Output> + 'a>> { run_inline(p) }
    /// # }
    /// # let engine = Engine::from_backend(Inline);
    /// let mut seen = Vec::new();
    /// let out = engine
    ///     .map(Sq, 0..100u64)
    ///     .batched(10)
    ///     .on_progress(std::time::Duration::ZERO, |p| seen.push((p.done, p.total)))
    ///     .run()?;
    /// assert_eq!(out.len(), 100);
    /// assert_eq!(seen.last(), Some(&(100, Some(100))));
    /// assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn on_progress(mut self, every: std::time::Duration, f: impl FnMut(ProgressUpdate) + 'e) -> Self {
        self.on_progress = Some(Callback::new(every, f));
        self
    }

    /// Runs this job on at most `n` of the engine's workers (at least 1), e.g. to keep some
    /// for another job, or to measure one worker's round trip.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n.max(1));
        self
    }

    /// Batches queued per worker (default 2).
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n.max(1);
        self
    }

    /// Most batches a [`stream`](Job::stream) holds back behind a slow one (default: four per
    /// worker and prefetched batch, `4 × workers × prefetch`).
    pub fn reorder_window(mut self, batches: usize) -> Self {
        self.reorder_window = Some(batches.max(1));
        self
    }

    /// How many times the items of a worker that died (a crash, a signal, an OOM kill, a lost
    /// connection) are tried again on a fresh worker before they fail (default 2). After the
    /// first loss a batch's items are retried one by one (that is the first retry), so the
    /// failure names the item that kills its worker. With `retries(0)` no item ever starts
    /// twice (at most once): the items of the batch that was running fail as lost. In-process
    /// backends have no such failure.
    pub fn retries(mut self, n: usize) -> Self {
        self.max_retries = n;
        self
    }

    /// Longest time one item may take on an out-of-process backend: past it the worker running
    /// it is killed (only that one) and the item fails with [`FailureKind::Timeout`], without a
    /// retry. A batch of `k` items may take `k × limit`; one that overruns is split like a dead
    /// worker's batch (a retry) so that the item that hangs is found. Threads cannot be
    /// killed, so in-process backends ignore it.
    pub fn item_timeout(mut self, limit: std::time::Duration) -> Self {
        self.item_timeout = Some(limit);
        self
    }

    /// Starts the job: its running batches, its declared length, and (with `place`, when the
    /// backend and the output type allow it) the [`Placement`] its outputs land in.
    #[allow(clippy::type_complexity)]
    fn start<'s>(
        self,
        terminal: Terminal,
    ) -> Result<(Running<'s, T::Output>, Option<usize>, Option<Placement<T::Output>>)>
    where
        'e: 's,
        I: 's,
    {
        let Terminal { fail_fast, whole, bounded, place, stream, ordered } = terminal;
        registry::check::<T>()?;
        let args = match self.args.or_else(unit_default::<T::Args>) {
            Some(a) => a,
            None => {
                return Err(Error::Config(format!(
                    "task `{}` takes args of type `{}`: pass them with `.args(...)`",
                    T::name(),
                    std::any::type_name::<T::Args>()
                )))
            }
        };
        let init = match self.init.or_else(unit_default::<T::Init>) {
            Some(a) => a,
            None => {
                return Err(Error::Config(format!(
                    "task `{}` has an init argument of type `{}`: pass it with `.init(...)`",
                    T::name(),
                    std::any::type_name::<T::Init>()
                )))
            }
        };
        let backend = self.backend;
        let hint = self.iter.size_hint();
        let exact = match hint {
            (lo, Some(hi)) if lo == hi => Some(lo),
            _ => None,
        };
        let declared = self.length.or(exact);
        let journal = match &self.journal {
            Some(j) => Some(Opened::open::<T>(j, &args, &init, declared)?),
            None => None,
        };
        // Split by index when the terminal keeps every result in order, the backend can, and
        // the items are reachable by index (a `Vec`, a range, a slice iterator, `map_slice`).
        let by_index = whole
            && fail_fast
            && !self.item_stats
            && backend.splits_by_index()
            && declared.is_some_and(|n| n > 0)
            && exact == declared
            // A cap on items in flight needs the lazy path, which pulls only with room; so do
            // retries of failing items (the worker loop keeps a copy of each item to retry).
            && self.max_in_flight.is_none()
            && self.retry_errors.retries == 0
            // A journal sees every output, and sends only the items it lacks.
            && journal.is_none();
        let (iter, indexed) = match (by_index, self.slice) {
            (true, Some(items)) => (None, Some(items)),
            (true, None) => match IndexedItems::recognize(self.iter) {
                Ok(items) => (None, Some(items)),
                Err(iter) => (Some(iter), None),
            },
            (false, _) => (Some(self.iter), None),
        };
        let sink = self.stats_sink;
        let mut tracker = Tracker::new(self.progress, declared, backend.name());
        let mut stats = JobStats::new(self.item_stats, declared);
        let callback = self.on_progress;
        let workers_cap = self.workers.unwrap_or(usize::MAX);
        let workers = |n: Option<usize>| backend.max_workers().min(workers_cap).min(n.unwrap_or(usize::MAX)).max(1);
        let custom_batcher = self.batcher.is_some();
        let make_batcher = |batcher: Option<Box<dyn Batcher>>, workers: usize, len: Option<usize>| match batcher {
            Some(b) => Ok(b),
            None => batcher_for(self.batching, len, workers, self.config.batch_multiplier, backend.auto_batch_target()),
        };
        let iter = match (iter, indexed) {
            (_, Some(items)) => {
                let n = items.len();
                let workers = workers(Some(n));
                // Checked as on the ordinary path (a bad batching mode is an error on both).
                make_batcher(self.batcher, workers, declared)?;
                // Chunks as the ordinary path cuts batches, so stats and progress look alike.
                let chunks = match (self.batching, custom_batcher) {
                    (Batching::None, false) => Chunks::Size(1),
                    (Batching::PerWorker, false) => Chunks::Even(workers * self.config.batch_multiplier.max(1)),
                    (Batching::Batches(k), false) => Chunks::Even(k.max(1)),
                    (Batching::ChunkSize(c), false) => Chunks::Size(c.max(1)),
                    // Sixteen chunks per worker balance uneven items; the cap keeps chunks of
                    // tiny items small enough to claim often without costing anything.
                    (Batching::Auto, _) | (_, true) => Chunks::Size(n.div_ceil(workers * 16).clamp(1, 1 << 15)),
                };
                let options =
                    WorkerOptions { fail_fast, item_stats: false, cancel: None, retry_errors: self.retry_errors };
                // The workers advance the progress as their chunks end; the job's own tracker
                // only sees the one batch at the end, so it stays quiet.
                let quiet = Tracker::new(Progress::quiet(), declared, backend.name());
                let report = Arc::new(ChunkReport::new(std::mem::replace(&mut tracker, quiet)));
                let job =
                    IndexedJob::new(backend.name(), items, chunks, workers, init, args, options, Arc::clone(&report));
                stats.workers = job.workers();
                let audit = Audit::new(backend.name(), Arc::new(CutLog::default()), Some(n), fail_fast, None);
                let completions = backend.start_indexed::<T, I>(job)?;
                let running = Running::new(Some((completions, audit)), stats, tracker, sink)
                    .with_chunks(report)
                    .with_callback(callback, declared);
                return Ok((running, declared, None));
            }
            (Some(iter), None) => iter,
            (None, None) => {
                return Err(Error::Backend { backend: "engine", message: "a job lost its items".into() });
            }
        };
        // Streams start slowly unless told otherwise (see `InFlightCap::slow_start`).
        let cap = match (self.max_in_flight, stream) {
            (Some(n), _) => Some(Arc::new(InFlightCap::new(n))),
            (None, true) => Some(Arc::new(InFlightCap::slow_start())),
            (None, false) => None,
        };
        // A journaled job sends only the items its journal lacks, numbered from 0; the
        // journal's layer puts them back in the input's numbering.
        let (leave, layer) = match journal {
            Some(opened) => {
                let held = opened.held();
                let (leave, layer) = opened.start::<T::Output>(ordered, fail_fast, declared);
                (Some((leave, held)), Some(layer))
            }
            None => (None, None),
        };
        let fresh = declared.map(|n| n - leave.as_ref().map_or(0, |(_, held)| *held));
        let skip = Skip::new(iter, leave.map(|(l, _)| l));
        let (fill, advance) = (skip.fill_fn(), skip.advance_fn());
        let mut source = ItemSource::new(skip, fresh).with_cap(cap.clone()).with_fill(fill).with_advance(advance);
        let cuts = source.cut_log();
        let empty = source.is_empty().map_err(|e| match &layer {
            Some(layer) => layer.translate(e),
            None => e,
        })?;
        if empty {
            let running =
                Running::new(None, stats, tracker, sink).with_callback(callback, declared).with_journal(layer);
            return Ok((running, declared, None));
        }
        let workers = workers(fresh);
        stats.workers = workers;
        let batcher = make_batcher(self.batcher, workers, fresh)?;
        let max_ahead = bounded.then(|| self.reorder_window.unwrap_or(4 * workers * self.prefetch));
        let placement = match (place && fail_fast && backend.places_outputs() && layer.is_none(), fresh) {
            (true, Some(n)) => Placement::new(n),
            _ => None,
        };
        let plan = Plan {
            source,
            batcher,
            args,
            init,
            workers,
            options: WorkerOptions {
                fail_fast,
                item_stats: self.item_stats,
                cancel: None,
                retry_errors: self.retry_errors,
            },
            dispatch: DispatchConfig {
                prefetch: self.prefetch,
                max_ahead,
                max_retries: self.max_retries,
                item_timeout: self.item_timeout,
            },
            placement: placement.clone(),
        };
        let audit = Audit::new(backend.name(), cuts, None, fail_fast, placement.clone());
        let completions = backend.start::<T, Skip<I>>(plan)?;
        let running = Running::new(Some((completions, audit)), stats, tracker, sink)
            .with_callback(callback, declared)
            .with_cap(cap)
            .with_journal(layer);
        Ok((running, declared, placement))
    }

    /// Runs the job and returns every output in input order. Fails fast: the first failed
    /// item stops the job and is returned as [`Error::Item`] with its index.
    pub fn run(self) -> Result<Vec<T::Output>> {
        let self_backend = self.backend.name();
        let (mut run, len, placement) = self.start(Terminal::RUN)?;
        if let Some(place) = placement {
            // Batches the backend placed are in place already; the others are moved in.
            let mut filled = 0;
            let mut misfit = false;
            in_order(&mut run, |b| {
                let n = if b.placed { b.len } else { b.outputs.len() };
                misfit |= !b.placed && !place.put(b.start, b.outputs);
                filled += n;
            })?;
            // Every writer (the backend's threads) is gone with the job.
            drop(run);
            let (backend, items) = (self_backend, place.len());
            let unfilled = || Error::Backend { backend, message: format!("{filled} outputs for {items} items") };
            if misfit || filled != items {
                return Err(unfilled());
            }
            return place.into_vec().ok_or_else(unfilled);
        }
        let mut out = Vec::new();
        in_order(&mut run, |b| {
            if out.capacity() == 0 && len.is_none_or(|n| b.outputs.len() >= n) {
                // The only batch (a slice job's output, written in place): keep it.
                out = b.outputs;
            } else {
                if out.capacity() == 0 {
                    // Allocated here, not grown from a batch's buffer: a buffer from a
                    // worker thread's allocator arena is returned to the system when freed,
                    // so every job would fault its output's pages in afresh.
                    out.reserve_exact(len.unwrap_or(b.outputs.len()));
                }
                out.extend(b.outputs)
            }
        })?;
        Ok(out)
    }

    /// Runs the job and flattens every output into one list, in input order (the Python original's
    /// `gather=True`: a pair of frames per item becomes one list of frames).
    pub fn gather(self) -> Result<Vec<<T::Output as IntoIterator>::Item>>
    where
        T::Output: IntoIterator,
    {
        let (mut run, len, _) = self.start(Terminal::GATHER)?;
        let mut out = Vec::with_capacity(len.unwrap_or(0));
        in_order(&mut run, |b| out.extend(b.outputs.into_iter().flatten()))?;
        Ok(out)
    }

    /// Runs the job and folds outputs in input order with a custom gather function.
    ///
    /// ```
    /// # use adparallelengine_core::*;
    /// # use adparallelengine_core::plumbing::*;
    /// # adparallelengine_core::task!(Sq = |x: u64| -> u64 { x * x });
    /// # struct Inline;
    /// # impl Backend for Inline {
    /// #   fn name(&self) -> &'static str { "inline" }
    /// #   fn max_workers(&self) -> usize { 1 }
    /// #   fn start<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(&'a self, p: Plan<T, I>)
    /// #     -> Result<Box<dyn Completions<T::Output> + 'a>> { run_inline(p) }
    /// # }
    /// # let engine = Engine::from_backend(Inline);
    /// let sum = engine.map(Sq, 1..=3).gather_with(0, |acc, y| acc + y)?;
    /// assert_eq!(sum, 14);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn gather_with<A>(self, init: A, mut f: impl FnMut(A, T::Output) -> A) -> Result<A> {
        let (mut run, _, _) = self.start(Terminal::GATHER)?;
        let mut acc = Some(init);
        in_order(&mut run, |b| {
            for o in b.outputs {
                acc = acc.take().map(|a| f(a, o));
            }
        })?;
        acc.ok_or_else(|| Error::Config("gather function panicked".into()))
    }

    /// Runs every item, failed or not, and returns each item's own result in input order.
    pub fn collect_results(self) -> Result<Vec<Result<T::Output, ItemError>>> {
        let (mut run, len, _) = self.start(Terminal::COLLECT_RESULTS)?;
        let mut out = Vec::with_capacity(len.unwrap_or(0));
        let mut reorder = Reorder::default();
        while let Some(b) = run.next_done() {
            reorder.push(b?);
            while let Some(b) = reorder.pop() {
                run.returned(b.len);
                let mut outputs = b.outputs.into_iter();
                let mut failures = b.failures.into_iter().peekable();
                for index in b.start..b.start + b.len {
                    if failures.peek().is_some_and(|f| f.index == index) {
                        out.extend(failures.next().map(Err));
                    } else if let Some(o) = outputs.next() {
                        out.push(Ok(o));
                    } else {
                        out.push(Err(ItemError {
                            index,
                            kind: FailureKind::Lost,
                            message: "no result came back for this item".into(),
                        }));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Streams outputs in input order, with bounded buffering (see [`ResultStream`]).
    pub fn stream<'s>(self) -> Result<ResultStream<'s, T::Output>>
    where
        'e: 's,
        I: 's,
    {
        let (run, _, _) = self.start(Terminal::STREAM)?;
        Ok(ResultStream::new(run))
    }

    /// Streams `(index, output)` pairs as items complete, in no particular order.
    pub fn stream_unordered<'s>(self) -> Result<UnorderedStream<'s, T::Output>>
    where
        'e: 's,
        I: 's,
    {
        let (run, _, _) = self.start(Terminal::STREAM_UNORDERED)?;
        Ok(UnorderedStream::new(run))
    }
}

/// Feeds completed batches to `sink` in input order; fails fast on the first failed item.
fn in_order<O>(run: &mut Running<'_, O>, mut sink: impl FnMut(BatchDone<O>)) -> Result<()> {
    let mut reorder = Reorder::default();
    while let Some(b) = run.next_done() {
        let b = b?;
        if let Some(f) = b.failures.first() {
            let e = Error::Item(f.clone());
            run.finish();
            return Err(e);
        }
        reorder.push(b);
        while let Some(b) = reorder.pop() {
            run.returned(b.len);
            sink(b);
        }
    }
    if reorder.held() > 0 {
        return Err(Error::Backend {
            backend: "engine",
            message: format!("{} batch(es) finished after a batch that never did", reorder.held()),
        });
    }
    Ok(())
}
