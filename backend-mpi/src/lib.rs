//! The MPI backend: the same program under `mpirun -n N`; rank 0 drives, ranks `1..N` serve.
//!
//! Every rank runs the user's `main`. A worker rank that builds an MPI engine serves the
//! driver from there ([`serve_if_worker_rank`]) and exits when the driver drops its engine (MPI
//! finalized, status 0), so code after the engine's construction runs on rank 0 only.
//!
//! The worker protocol and the scheduler are engine-core's: this crate supplies worker links
//! over MPI messages (the `endpoint` module on rank 0, `transport` on the others). MPI libraries
//! cannot wake a thread when a message arrives, so the dispatch loop polls
//! ([`Dispatch::with_pump`]) with a backoff that keeps an idle driver off the CPU.
//!
//! Shared values go through a directory under `path_shared`, which must be on a file system
//! every rank sees (the temp dir, on one machine).
//!
//! ```no_run
//! use adparallelengine_core::Engine;
//! use adparallelengine_mpi::MpiBackend;
//! adparallelengine_core::task!(Sq = |x: u64| -> u64 { x * x });
//! // Under `mpirun -n 3`: ranks 1 and 2 serve inside `new` and never get here.
//! let engine = Engine::from_backend(MpiBackend::new(None)?);
//! assert_eq!(engine.map(Sq, 0..5u64).run()?, vec![0, 1, 4, 9, 16]);
//! # Ok::<(), adparallelengine_core::Error>(())
//! ```
#![warn(missing_docs)]

mod endpoint;
mod launch;
mod link;
#[cfg(feature = "testing")]
pub mod testing;
mod transport;

pub use launch::{launched, serve_if_worker_rank, world};
/// The rsmpi crate this backend is built on, for programs that also talk MPI themselves
/// (before building the engine: from then on the worker ranks serve the engine).
pub use mpi as rsmpi;

use adparallelengine_core::plumbing::Event;
use adparallelengine_core::plumbing::{Backend, Completions, Plan};
use adparallelengine_core::plumbing::{Dispatch, DispatchParts, Respawn, WorkerLink};
use adparallelengine_core::remote::{encode_msg, EncodedBatch};
use adparallelengine_core::remote::{hear, Heard, Incoming, JobSpec, ToWorker};
use adparallelengine_core::{Error, Result, SharedStore, Task};
use adparallelengine_store::LazyDirStore;
use crossbeam_channel::unbounded;
use endpoint::Endpoint;
use link::{JobRanks, RankLink};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Whether an MPI backend exists in this process: there is one MPI world, so one backend.
static IN_USE: AtomicBool = AtomicBool::new(false);

/// Worker ranks of an `mpirun` job, driven from rank 0.
pub struct MpiBackend {
    endpoint: Arc<Endpoint>,
    workers: usize,
    store: Arc<LazyDirStore>,
    /// Shared values go to the ranks over MPI instead of through `path_shared`.
    ship: bool,
    /// The interrupt cleanup that reports the items in flight.
    report_id: u64,
}

impl std::fmt::Debug for MpiBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiBackend").field("workers", &self.workers).field("ranks", &self.endpoint.ranks()).finish()
    }
}

impl MpiBackend {
    /// The backend of this MPI job. On a worker rank this serves and never returns. On rank 0
    /// it uses `workers` worker ranks per job (default: all of them, the world size minus
    /// one). Outside `mpirun`, or with a single rank, it is a clear error.
    pub fn new(workers: Option<usize>) -> Result<Self> {
        if !launched() {
            return Err(Error::Config(
                "kind mpi runs under an MPI launcher: `mpirun -n N <program> ...` with N >= 2 \
                 (rank 0 drives, the other ranks serve)"
                    .into(),
            ));
        }
        serve_if_worker_rank()?;
        let (_, size) = launch::init()?;
        if size < 2 {
            return Err(Error::Config(
                "this MPI job has a single rank, so no worker: run it with `mpirun -n N`, N >= 2".into(),
            ));
        }
        if IN_USE.swap(true, Ordering::AcqRel) {
            return Err(Error::Config("an MPI engine already exists in this process: use that one".into()));
        }
        let endpoint = Arc::new(Endpoint::new(size));
        let workers = workers.unwrap_or(size - 1).clamp(1, size - 1);
        // When one rank dies, mpirun ends every other (SIGTERM, then SIGKILL): say which
        // items were lost with it before going.
        let report_id = adparallelengine_core::remote::cleanup_id();
        let ledger = endpoint.ledger();
        adparallelengine_core::remote::register_cleanup(report_id, move || {
            eprintln!(
                "adparallelengine: the MPI job is being ended (mpirun ends every rank when one dies or is \
                 interrupted); items sent to worker ranks and not returned: {}",
                ledger.describe()
            );
        });
        Ok(MpiBackend { endpoint, workers, store: Arc::new(LazyDirStore::new(None)), ship: false, report_id })
    }

    /// Puts shared values in a private directory under `dir` (the Python original's `path_shared`),
    /// which every rank must see, instead of the system temp dir.
    pub fn path_shared(mut self, dir: Option<PathBuf>) -> Self {
        self.store = Arc::new(LazyDirStore::new(dir));
        self
    }

    /// With `true`, the ranks do not see the driver's file system: every shared value is
    /// sent to each rank over MPI (once per rank, before the first job that may need it) and
    /// kept on the rank's local disk, removed when it exits.
    pub fn ship_shared(mut self, ship: bool) -> Self {
        self.ship = ship;
        self
    }
}

impl Drop for MpiBackend {
    /// Closes every worker rank (they finalize and exit 0), then finalizes MPI here.
    fn drop(&mut self) {
        adparallelengine_core::remote::unregister_cleanup(self.report_id);
        self.endpoint.shutdown(Duration::from_secs(10));
        launch::finalize();
    }
}

impl Backend for MpiBackend {
    fn name(&self) -> &'static str {
        "mpi"
    }

    fn max_workers(&self) -> usize {
        self.workers
    }

    /// A message costs a few microseconds, more when the driver backs off: aim at 20 ms.
    fn auto_batch_target(&self) -> Duration {
        Duration::from_millis(20)
    }

    /// Outputs arrive as bytes: plain numbers are copied straight into the result.
    fn places_outputs(&self) -> bool {
        true
    }

    fn start<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(
        &'a self,
        plan: Plan<T, I>,
    ) -> Result<Box<dyn Completions<T::Output> + 'a>> {
        let share_dir = || self.store.dir().map(|d| d.to_string_lossy().into_owned());
        let spec = JobSpec::for_plan(&plan, self.store.clone(), share_dir, self.ship)?;
        let job = encode_msg(&ToWorker::Job(spec))?;
        let (inbox, arrived) = unbounded::<(i32, Vec<u8>)>();
        let (events, events_rx) = unbounded::<Event<T::Output>>();
        let ship: Option<&dyn SharedStore> = if self.ship { Some(&*self.store) } else { None };
        let taken = self.endpoint.take(plan.workers, true, &inbox, &job, ship)?;
        let ranks = JobRanks::default();
        let (endpoint, lost, held) = (Arc::clone(&self.endpoint), events.clone(), ranks.clone());
        let link = move |worker: usize, rank: i32| -> Box<dyn WorkerLink<EncodedBatch> + 'a> {
            Box::new(RankLink::new(rank, worker, Arc::clone(&endpoint), lost.clone(), held.clone()))
        };
        let links = taken.iter().enumerate().map(|(w, &rank)| link(w, rank)).collect();
        // A rank given up after an item timeout is replaced by an idle one, if any.
        let respawn: Respawn<'a, EncodedBatch> =
            Box::new(move |w| match self.endpoint.take(1, false, &inbox, &job, ship) {
                Ok(r) if !r.is_empty() => Ok(link(w, r[0])),
                Ok(_) => Err(launch::mpi_err("no idle worker rank to replace the lost one")),
                Err(e) => Err(e),
            });
        let endpoint = Arc::clone(&self.endpoint);
        let placement = plan.placement;
        let pump = Box::new(move || {
            endpoint.poll();
            while let Ok((rank, bytes)) = arrived.try_recv() {
                // A rank the job let go of (its link closed): what it still says is not for
                // this job.
                let Some((w, sent)) = ranks.get(rank) else { continue };
                // Every answer is checked against the batches sent to that rank, as for any
                // worker: mpirun starts this program, but a rank can still be of another
                // program (MPMD) or misbehave.
                let incoming = Incoming { payload: &bytes, bulk: None };
                match hear::<T::Output>(w, incoming, placement.as_ref(), Some(&sent)) {
                    Heard::Event(ev) => {
                        let _ = events.send(ev);
                    }
                    Heard::Misbehaved(why) => {
                        // Nothing it said is used. A rank cannot be killed: it is ended and
                        // never used again; its batches run on the others, counted as a retry.
                        tracing::warn!(rank, worker = w, %why, "worker rank misbehaved; it serves no more jobs");
                        ranks.let_go(rank);
                        endpoint.ban(rank);
                        let reason = format!("MPI rank {rank} misbehaved: {why}");
                        let _ = events.send(Event::Lost { worker: w, reason });
                    }
                    Heard::JobEnded | Heard::Nothing => {}
                }
            }
        });
        let dispatch = Dispatch::with_parcels(DispatchParts {
            backend: "mpi",
            source: plan.source,
            batcher: plan.batcher,
            prepare: Box::new(EncodedBatch::encode),
            links,
            respawn: Some(respawn),
            events: events_rx,
            config: plan.dispatch,
        })
        .with_ranges(EncodedBatch::range::<T::Item>)
        .with_pump(pump);
        Ok(Box::new(dispatch))
    }
}
