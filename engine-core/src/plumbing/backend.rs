//! The [`Backend`] trait: what runs a job's batches. Serial, threads, processes, MPI and
//! Kubernetes implement it; so can a crate outside this workspace.

use super::completions::Completions;
use crate::batching::Batcher;
use crate::error::Result;
use crate::plumbing::dispatch::DispatchConfig;
use crate::plumbing::indexed_job::IndexedJob;
use crate::plumbing::source::ItemSource;
use crate::plumbing::worker::WorkerOptions;
use crate::task::Task;
use std::sync::Arc;
use std::time::Duration;

/// Everything a backend needs to run one job.
pub struct Plan<T: Task, I: Iterator<Item = T::Item>> {
    /// The items, cut lazily into batches.
    pub source: ItemSource<I>,
    /// Sizes the batches.
    pub batcher: Box<dyn Batcher>,
    /// The job's args, given once to each worker.
    pub args: Arc<T::Args>,
    /// The argument of every worker's `init`.
    pub init: Arc<T::Init>,
    /// How many workers to start (already capped to the number of items when known).
    pub workers: usize,
    /// How workers run their batches.
    pub options: WorkerOptions,
    /// Prefetch and reorder-window settings for the dispatch loop.
    pub dispatch: DispatchConfig,
    /// Where outputs may be written straight to their place, when the backend asked for it
    /// ([`Backend::places_outputs`]) and the job is a `run` of plain-number outputs.
    pub placement: Option<crate::plumbing::Placement<T::Output>>,
}

/// An engine backend.
///
/// `start` receives the lazily-cut items and returns the completed batches. Out-of-process
/// backends usually only create worker links and hand them to
/// [`Dispatch`](crate::plumbing::dispatch::Dispatch), which owns scheduling, prefetch, and the reorder
/// window, so those live once for every backend.
pub trait Backend: Send + Sync {
    /// The backend's name, as in errors and logs ("serial", "threads", ...).
    fn name(&self) -> &'static str;
    /// The most workers a job may use.
    fn max_workers(&self) -> usize;
    /// Target duration of one batch for [`Batching::Auto`](crate::Batching::Auto): long enough
    /// to hide the cost of one message.
    fn auto_batch_target(&self) -> Duration {
        Duration::from_millis(5)
    }
    /// Whether this backend receives outputs as bytes and can copy plain-number outputs
    /// straight into the result ([`Plan::placement`]) instead of decoding them first.
    fn places_outputs(&self) -> bool {
        false
    }
    /// Starts a job. Dropping the returned value cancels what is left of it.
    fn start<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(
        &'a self,
        plan: Plan<T, I>,
    ) -> Result<Box<dyn Completions<T::Output> + 'a>>;

    /// Whether this backend's workers share the driver's memory and can split a job's items
    /// by index ([`start_indexed`](Self::start_indexed)). Default `false`: every job comes
    /// through [`start`](Self::start).
    fn splits_by_index(&self) -> bool {
        false
    }

    /// Starts a job whose items are reached by index (`map` over a `Vec`, a range or a slice
    /// iterator, and `map_slice`) and whose every result is kept in order (`run`, `gather`,
    /// `gather_with`), fail-fast, without per-item stats. Called only when
    /// [`splits_by_index`](Self::splits_by_index) says so: run [`IndexedJob::work`] on up to
    /// [`IndexedJob::workers`] threads, then return [`IndexedJob::finish`] as the job's only
    /// batch. The default refuses.
    fn start_indexed<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(
        &'a self,
        job: IndexedJob<'a, T, I>,
    ) -> Result<Box<dyn Completions<T::Output> + 'a>> {
        drop(job);
        Err(crate::error::Error::Backend {
            backend: self.name(),
            message: "this backend does not split jobs by index".into(),
        })
    }
}

/// Builds a backend from the engine's configuration. The facade's `Kind` implements it; a
/// third-party backend can too, or be passed ready-made to `Engine::from_backend`.
pub trait BackendFactory {
    /// The backend built.
    type Backend: Backend;
    /// Builds it.
    fn create(self, config: &crate::config::EngineConfig) -> Result<Self::Backend>;
}
