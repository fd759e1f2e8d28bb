//! The threads backend: one worker loop per thread of a private rayon pool of `max_workers`
//! threads (never more: the Python original's multithread kind ignored `max_workers`). Items, results and
//! args move between threads without serialization; args and [`Shared`](adparallelengine_core::Shared)
//! values are borrowed through an `Arc`, never copied.
//!
//! Scheduling is engine-core's [`Dispatch`]: this crate only supplies channel links.
//!
//! ```
//! use adparallelengine_core::Engine;
//! use adparallelengine_threads::ThreadsBackend;
//! adparallelengine_core::task!(Sq = |x: u64| -> u64 { x * x });
//! let engine = Engine::from_backend(ThreadsBackend::new(2)?);
//! assert_eq!(engine.map(Sq, 0..5u64).run()?, vec![0, 1, 4, 9, 16]);
//! # Ok::<(), adparallelengine_core::Error>(())
//! ```
#![warn(missing_docs)]

mod indexed;

use adparallelengine_core::plumbing::{serve_worker, WorkerOptions};
use adparallelengine_core::plumbing::{Backend, Completions, IndexedJob, Plan};
use adparallelengine_core::plumbing::{Batch, Event};
use adparallelengine_core::plumbing::{Dispatch, WorkerLink};
use adparallelengine_core::{Error, Result, Task};
use crossbeam_channel::{unbounded, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Worker loops on a rayon thread pool.
pub struct ThreadsBackend {
    pool: rayon::ThreadPool,
    workers: usize,
}

impl ThreadsBackend {
    /// A pool of `workers` threads (at least 1).
    pub fn new(workers: usize) -> Result<Self> {
        let workers = workers.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("adparallelengine-worker-{i}"))
            .build()
            .map_err(|e| Error::Backend {
                backend: "threads",
                message: format!("cannot start the thread pool: {e}"),
            })?;
        Ok(ThreadsBackend { pool, workers })
    }
}

impl std::fmt::Debug for ThreadsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadsBackend").field("workers", &self.workers).finish()
    }
}

struct ThreadLink<I> {
    tx: Option<Sender<Batch<I>>>,
    cancel: Arc<AtomicBool>,
}

impl<I: Send> WorkerLink<Batch<I>> for ThreadLink<I> {
    fn send(&mut self, batch: Batch<I>) -> Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::Backend { backend: "threads", message: "batch sent to a closed worker".into() })?;
        tx.send(batch).map_err(|_| Error::Backend { backend: "threads", message: "a worker thread stopped".into() })
    }

    fn close(&mut self) {
        self.tx = None;
    }

    fn cancel(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.tx = None;
    }
}

impl Backend for ThreadsBackend {
    fn name(&self) -> &'static str {
        "threads"
    }

    fn max_workers(&self) -> usize {
        self.workers
    }

    fn start<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(
        &'a self,
        plan: Plan<T, I>,
    ) -> Result<Box<dyn Completions<T::Output> + 'a>> {
        let cancel = Arc::new(AtomicBool::new(false));
        let (events_tx, events_rx) = unbounded::<Event<T::Output>>();
        let mut links: Vec<Box<dyn WorkerLink<Batch<T::Item>> + 'a>> = Vec::with_capacity(plan.workers);
        for id in 0..plan.workers {
            let (tx, rx) = unbounded::<Batch<T::Item>>();
            let args = Arc::clone(&plan.args);
            let init = Arc::clone(&plan.init);
            let opts = WorkerOptions { cancel: Some(Arc::clone(&cancel)), ..plan.options.clone() };
            let events = events_tx.clone();
            self.pool.spawn(move || {
                serve_worker::<T, _>(id, &init, args, opts, || rx.recv().ok(), |ev| events.send(ev).is_ok());
            });
            links.push(Box::new(ThreadLink { tx: Some(tx), cancel: Arc::clone(&cancel) }));
        }
        drop(events_tx);
        tracing::debug!(workers = plan.workers, "threads job started");
        Ok(Box::new(Dispatch::new("threads", plan.source, plan.batcher, links, events_rx, plan.dispatch)))
    }

    fn splits_by_index(&self) -> bool {
        true
    }

    fn start_indexed<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(
        &'a self,
        job: IndexedJob<'a, T, I>,
    ) -> Result<Box<dyn Completions<T::Output> + 'a>> {
        tracing::debug!(workers = job.workers(), items = job.len(), "threads indexed job started");
        Ok(Box::new(indexed::IndexedRun { pool: &self.pool, job: Some(job) }))
    }
}
