//! `StdPool`: an adparallelengine backend of its own — a fixed pool of `std::thread`s, kept
//! between jobs, fed through the facade's [`plumbing`](adparallelengine::plumbing). Scheduling,
//! prefetch, ordering, retries and the audit of every batch are the engine's; this crate only
//! supplies worker links and runs each worker's loop on a thread of its pool.
//!
//! ```
//! use adparallelengine::Engine;
//! use std_pool_backend::StdPool;
//!
//! adparallelengine::task!(Square = |x: u64| -> u64 { x * x });
//!
//! let engine: Engine<StdPool> = Engine::from_backend(StdPool::new(2)?);
//! assert_eq!(engine.map(Square, 0..5u64).run()?, vec![0, 1, 4, 9, 16]);
//! # Ok::<(), adparallelengine::Error>(())
//! ```

use adparallelengine::plumbing::channel::{unbounded, Sender};
use adparallelengine::plumbing::{
    serve_worker, Backend, Batch, Completions, Dispatch, Event, Plan, WorkerLink, WorkerOptions,
};
use adparallelengine::{Error, Result, Task};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

const NAME: &str = "std-pool";

/// One worker's whole life for one job, run on a pool thread.
type Work = Box<dyn FnOnce() + Send>;

/// A fixed pool of threads; each job's workers run on it (never more than its size).
pub struct StdPool {
    queue: Option<Sender<Work>>,
    threads: Vec<JoinHandle<()>>,
}

impl StdPool {
    /// A pool of `workers` threads (at least 1).
    pub fn new(workers: usize) -> Result<StdPool> {
        let (queue, work) = unbounded::<Work>();
        let threads = (0..workers.max(1))
            .map(|i| {
                let work = work.clone();
                std::thread::Builder::new().name(format!("{NAME}-{i}")).spawn(move || work.iter().for_each(|w| w()))
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| failed(format!("cannot start the pool's threads: {e}")))?;
        Ok(StdPool { queue: Some(queue), threads })
    }
}

fn failed(message: String) -> Error {
    Error::Backend { backend: NAME, message }
}

impl Drop for StdPool {
    fn drop(&mut self) {
        self.queue = None; // the threads end once the queue is closed and drained
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The driver's end of one worker: a channel of batches, and the job's cancel flag.
struct Link<I> {
    batches: Option<Sender<Batch<I>>>,
    cancel: Arc<AtomicBool>,
}

impl<I: Send> WorkerLink<Batch<I>> for Link<I> {
    fn send(&mut self, batch: Batch<I>) -> Result<()> {
        let sent = self.batches.as_ref().is_some_and(|tx| tx.send(batch).is_ok());
        sent.then_some(()).ok_or_else(|| failed("a worker stopped".into()))
    }
    fn close(&mut self) {
        self.batches = None;
    }
    fn cancel(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.batches = None;
    }
}

impl Backend for StdPool {
    fn name(&self) -> &'static str {
        NAME
    }

    fn max_workers(&self) -> usize {
        self.threads.len()
    }

    fn start<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(
        &'a self,
        plan: Plan<T, I>,
    ) -> Result<Box<dyn Completions<T::Output> + 'a>> {
        let queue = self.queue.as_ref().ok_or_else(|| failed("the pool is shut down".into()))?;
        // Rule 4: `plan.options.cancel` arrives as `None`; the job's own flag stops its
        // workers when the engine drops the job (Dispatch cancels every link).
        let cancel = Arc::new(AtomicBool::new(false));
        let (events, events_rx) = unbounded::<Event<T::Output>>();
        let mut links: Vec<Box<dyn WorkerLink<Batch<T::Item>> + 'a>> = Vec::with_capacity(plan.workers);
        for id in 0..plan.workers {
            let (batches, rx) = unbounded::<Batch<T::Item>>();
            let (args, init, events) = (Arc::clone(&plan.args), Arc::clone(&plan.init), events.clone());
            let opts = WorkerOptions { cancel: Some(Arc::clone(&cancel)), ..plan.options.clone() };
            // Rule 6: `init` runs inside `serve_worker`, on the pool thread that then runs
            // this worker's batches.
            let work: Work = Box::new(move || {
                serve_worker::<T, _>(id, &init, args, opts, || rx.recv().ok(), |ev| events.send(ev).is_ok())
            });
            queue.send(work).map_err(|_| failed("the pool is shut down".into()))?;
            links.push(Box::new(Link { batches: Some(batches), cancel: Arc::clone(&cancel) }));
        }
        // Rules 1, 2, 5: Dispatch returns every batch once, and reads ahead no further than
        // `plan.dispatch` allows.
        Ok(Box::new(Dispatch::new(NAME, plan.source, plan.batcher, links, events_rx, plan.dispatch)))
    }
}
