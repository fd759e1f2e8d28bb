//! A job on pooled workers: its spec sent to each worker found, a reader thread per worker,
//! engine-core's [`Dispatch`] between them.

use super::link::ConnLink;
use super::reader::read_worker;
use super::{Conn, ConnHandle, Pool};
use crate::plumbing::batch::{BatchDone, Event};
use crate::plumbing::dispatch::{Dispatch, DispatchParts, Respawn, WorkerLink};
use crate::plumbing::{Completions, Placement, Plan};
use crate::remote::outbox::{Outbox, Tail, Threads};
use crate::remote::wire::{encode_frame, EncodedBatch};
use crate::remote::SentBatches;
use crate::remote::{blobs_to_ship, fingerprint, JobSpec, ToWorker};
use crate::{Error, Result, SharedStore, Task};
use crossbeam_channel::{unbounded, Receiver, Sender};
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex};

/// Finds the workers of one job (and their replacements), and starts each one's reader.
struct Spawner<C: Conn, O> {
    backend: &'static str,
    pool: Arc<Pool<C>>,
    /// Where plain-number outputs go straight to (`run` jobs).
    placement: Option<Placement<O>>,
    /// The job's `ToWorker::Job` frame.
    job: Vec<u8>,
    /// The store whose values are shipped to each worker first, when they are shipped.
    ship: Option<Arc<dyn SharedStore>>,
    events: Sender<Event<O>>,
    threads: Threads,
    /// Held by each worker's reading of this job until it returns (see [`PooledJob`]).
    reading: Sender<()>,
}

impl<C: Conn, O: DeserializeOwned + Send + 'static> Spawner<C, O> {
    fn err(&self, message: String) -> Error {
        Error::Backend { backend: self.backend, message }
    }

    /// Starts worker `w`: found (its handshake if new), shipped what it lacks, given the
    /// job, and read by a thread of its own.
    fn spawn(&self, w: usize, replacing: bool) -> Result<ConnLink<C::Handle>> {
        let mut p = self.pool.take(w, replacing)?;
        let handle = p.conn.handle();
        let fd = p.conn.as_fd().try_clone_to_owned().map_err(|e| self.err(format!("cannot clone a socket: {e}")))?;
        let outbox = Outbox::new(fd, format!("adparallelengine-writer-{w}"), Arc::clone(&self.threads));
        let mut start = match p.warm {
            true => Vec::new(),
            false => encode_frame(&ToWorker::Hello { fingerprint: fingerprint().to_string(), worker: w })?,
        };
        let mut sent = Ok(());
        if let Some(store) = &self.ship {
            for (head, bytes) in blobs_to_ship(&**store, &mut p.shipped)? {
                let size = (*bytes).as_ref().len();
                // A frame: its length, the Blob message, then the value, never copied.
                let len = (head.len() + size) as u64;
                start.extend_from_slice(&len.to_le_bytes());
                start.extend_from_slice(&head);
                sent = sent.and(outbox.send_parts(std::mem::take(&mut start), Some(Tail::Shared(bytes))));
            }
        }
        start.extend_from_slice(&self.job);
        sent = sent.and(outbox.send(start, None));
        let events = self.events.clone();
        let pool = Arc::clone(&self.pool);
        let placement = self.placement.clone();
        let name = handle.name();
        let batches = SentBatches::default();
        let answers = batches.clone();
        let reader = self.pool.reader_of(&mut p).map_err(|e| self.err(format!("cannot start a reader thread: {e}")))?;
        let reading = self.reading.clone();
        let job = Box::new(move || {
            read_worker(w, p, events, placement, &answers, &pool);
            drop(reading);
        });
        // A worker's reader thread ends only with the worker (or a panic, which drops the
        // worker too): one in the pool is there.
        reader.run(job).map_err(|_| self.err(format!("the reader thread of {name} is gone")))?;
        if let Err(e) = sent {
            // The reader reports the worker's end; this link is dead.
            tracing::warn!(worker = w, error = %e, "cannot send the job to {name}");
        }
        tracing::debug!(worker = w, name, "worker joined the job");
        Ok(ConnLink { backend: self.backend, outbox: Some(outbox), handle, sent: batches })
    }
}

/// Starts `plan` on workers from `pool`: the job's spec is made once (its shared values put
/// in `store`, whose directory `share_dir` names), sent to every worker, and the job runs on
/// engine-core's [`Dispatch`]. With `ship`, the store's values are sent to each worker over
/// its connection first (once per worker: a pooled worker keeps them), for workers that
/// cannot read `share_dir`. A job frame, or a shipped value, over `max_job_frame` bytes (the/// workers' limit) is refused with a clear error.
#[allow(clippy::too_many_arguments)]
pub fn start_pooled<'a, C: Conn, T: Task, I: Iterator<Item = T::Item> + 'a>(
    backend: &'static str,
    pool: &Arc<Pool<C>>,
    plan: Plan<T, I>,
    store: Arc<dyn SharedStore>,
    share_dir: impl FnOnce() -> Option<String>,
    ship: bool,
    max_job_frame: usize,
) -> Result<Box<dyn Completions<T::Output> + 'a>> {
    let spec = JobSpec::for_plan(&plan, Arc::clone(&store), share_dir, ship)?;
    let job = encode_frame(&ToWorker::Job(spec))?;
    if job.len() > max_job_frame {
        return Err(Error::Config(format!(
            "the job's args and init take {} bytes, over the {max_job_frame}-byte message limit: put large values in a Shared",
            job.len(),
        )));
    }
    if ship {
        // Checked before any worker is taken: a value over the workers' limit would end the
        // connection of each worker it is sent to.
        for key in store.keys() {
            let size = (*store.get(&key)?).as_ref().len();
            if size + 64 > max_job_frame {
                return Err(Error::Config(format!(
                    "a shared value of {size} bytes is over the {max_job_frame}-byte message limit of workers that \
                     get shared values over their connection: share it through a directory the workers see \
                     instead (a mounted volume)"
                )));
            }
        }
    }
    let (events, events_rx) = unbounded::<Event<T::Output>>();
    let threads: Threads = Arc::new(Mutex::new(Vec::new()));
    let (reading, read) = unbounded::<()>();
    let spawner = Spawner {
        backend,
        pool: Arc::clone(pool),
        placement: plan.placement,
        job,
        ship: ship.then_some(store),
        events,
        threads: Arc::clone(&threads),
        reading,
    };
    let mut links: Vec<Box<dyn WorkerLink<EncodedBatch> + 'a>> = Vec::with_capacity(plan.workers);
    for w in 0..plan.workers {
        links.push(Box::new(spawner.spawn(w, false)?));
    }
    let respawn: Respawn<'a, EncodedBatch> = Box::new(move |w| Ok(Box::new(spawner.spawn(w, true)?)));
    let dispatch = Dispatch::with_parcels(DispatchParts {
        backend,
        source: plan.source,
        batcher: plan.batcher,
        prepare: Box::new(EncodedBatch::encode),
        links,
        respawn: Some(respawn),
        events: events_rx,
        config: plan.dispatch,
    })
    .with_rooms(EncodedBatch::in_place::<T::Item>)
    .with_ranges(EncodedBatch::range::<T::Item>);
    Ok(Box::new(PooledJob { dispatch: Some(Box::new(dispatch)), threads, read }))
}

/// A job on pooled workers. Dropping it ends the job on every worker (cancelling if
/// unfinished), waits until every worker's reading of the job returned (its worker back in
/// the pool, or lost) and joins every writer thread, so nothing of the job outlives it.
pub struct PooledJob<'a, O> {
    dispatch: Option<Box<dyn Completions<O> + 'a>>,
    threads: Threads,
    /// Disconnected once every worker's reading of this job returned (each holds a sender;
    /// nothing is ever sent).
    read: Receiver<()>,
}

impl<O> Completions<O> for PooledJob<'_, O> {
    fn next_done(&mut self) -> Option<Result<BatchDone<O>>> {
        self.dispatch.as_mut()?.next_done()
    }
}

impl<O> Drop for PooledJob<'_, O> {
    fn drop(&mut self) {
        // Closes or cancels every link; the respawner (and its event sender) goes with it.
        self.dispatch = None;
        while self.read.recv().is_ok() {}
        let handles = self.threads.lock().map(|mut g| std::mem::take(&mut *g)).unwrap_or_default();
        for h in handles {
            let _ = h.join();
        }
    }
}
