//! [`AnyBackend`]: the built-in backends behind one type, chosen at run time from a [`Kind`].

use crate::kind::Kind;
use adparallelengine_core::plumbing::{Backend, BackendFactory, Completions, IndexedJob, Plan};
use adparallelengine_core::{EngineConfig, Result, Task};
use std::time::Duration;

/// One of the built-in backends.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyBackend {
    /// In the calling thread.
    Serial(adparallelengine_serial::SerialBackend),
    /// A rayon thread pool.
    #[cfg(feature = "threads")]
    Threads(adparallelengine_threads::ThreadsBackend),
    /// Worker processes running this executable.
    #[cfg(feature = "process")]
    Process(adparallelengine_process::ProcessBackend),
    /// The other ranks of an `mpirun` job.
    #[cfg(feature = "mpi")]
    Mpi(adparallelengine_mpi::MpiBackend),
    /// The pods of a Kubernetes Job.
    #[cfg(feature = "k8s")]
    K8s(adparallelengine_k8s::K8sBackend),
    /// Native workers started by the tasks of a Dask cluster.
    #[cfg(feature = "dask")]
    Dask(adparallelengine_dask::DaskBackend),
    /// The tasks of a Slurm job array.
    #[cfg(feature = "slurm")]
    Slurm(adparallelengine_slurm::SlurmBackend),
}

impl AnyBackend {
    /// The kind actually running (`Serial` when `max_workers = 1` was asked of another kind).
    pub fn kind(&self) -> Kind {
        match self {
            AnyBackend::Serial(_) => Kind::Serial,
            #[cfg(feature = "threads")]
            AnyBackend::Threads(_) => Kind::Threads,
            #[cfg(feature = "process")]
            AnyBackend::Process(_) => Kind::Process,
            #[cfg(feature = "mpi")]
            AnyBackend::Mpi(_) => Kind::Mpi,
            #[cfg(feature = "k8s")]
            AnyBackend::K8s(_) => Kind::K8s,
            #[cfg(feature = "dask")]
            AnyBackend::Dask(_) => Kind::Dask,
            #[cfg(feature = "slurm")]
            AnyBackend::Slurm(_) => Kind::Slurm,
        }
    }
}

macro_rules! each {
    ($self:expr, $b:ident => $e:expr) => {
        match $self {
            AnyBackend::Serial($b) => $e,
            #[cfg(feature = "threads")]
            AnyBackend::Threads($b) => $e,
            #[cfg(feature = "process")]
            AnyBackend::Process($b) => $e,
            #[cfg(feature = "mpi")]
            AnyBackend::Mpi($b) => $e,
            #[cfg(feature = "k8s")]
            AnyBackend::K8s($b) => $e,
            #[cfg(feature = "dask")]
            AnyBackend::Dask($b) => $e,
            #[cfg(feature = "slurm")]
            AnyBackend::Slurm($b) => $e,
        }
    };
}

impl Backend for AnyBackend {
    fn name(&self) -> &'static str {
        each!(self, b => b.name())
    }
    fn max_workers(&self) -> usize {
        each!(self, b => b.max_workers())
    }
    fn auto_batch_target(&self) -> Duration {
        each!(self, b => b.auto_batch_target())
    }
    fn places_outputs(&self) -> bool {
        each!(self, b => b.places_outputs())
    }
    fn start<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(
        &'a self,
        plan: Plan<T, I>,
    ) -> Result<Box<dyn Completions<T::Output> + 'a>> {
        each!(self, b => b.start(plan))
    }
    fn splits_by_index(&self) -> bool {
        each!(self, b => b.splits_by_index())
    }
    fn start_indexed<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(
        &'a self,
        job: IndexedJob<'a, T, I>,
    ) -> Result<Box<dyn Completions<T::Output> + 'a>> {
        each!(self, b => b.start_indexed(job))
    }
}

/// `max_workers = 1` runs serially, on any kind, as in the Python original, except MPI: the ranks exist
/// whatever `max_workers` says, and must be served and released, so one of them runs the job.
impl BackendFactory for Kind {
    type Backend = AnyBackend;
    fn create(self, config: &EngineConfig) -> Result<AnyBackend> {
        // Safety net: a worker process whose pre-main hook did not run serves here, before
        // anything else of `main` can start more workers.
        adparallelengine_core::remote::become_worker_if_asked();
        self.ensure_available()?;
        // A worker rank serves here and never returns; rank 0 gets the ranks' backend.
        #[cfg(feature = "mpi")]
        if self == Kind::Mpi {
            return Ok(AnyBackend::Mpi(
                adparallelengine_mpi::MpiBackend::new(config.max_workers)?
                    .path_shared(config.path_shared.clone())
                    .ship_shared(config.ship_shared),
            ));
        }
        let workers = config.workers_or_default();
        if self == Kind::Serial || workers == 1 {
            return Ok(AnyBackend::Serial(adparallelengine_serial::SerialBackend));
        }
        match self {
            #[cfg(feature = "threads")]
            Kind::Threads => Ok(AnyBackend::Threads(adparallelengine_threads::ThreadsBackend::new(workers)?)),
            #[cfg(feature = "process")]
            Kind::Process => Ok(AnyBackend::Process(
                adparallelengine_process::ProcessBackend::new(workers)?.path_shared(config.path_shared.clone()),
            )),
            // The cluster and the pods' image come from the environment (KUBECONFIG,
            // ADPARALLELENGINE_K8S_IMAGE...): the program itself is unchanged.
            #[cfg(feature = "k8s")]
            Kind::K8s => Ok(AnyBackend::K8s(
                adparallelengine_k8s::K8sBuilder::from_env(workers)?.path_shared(config.path_shared.clone()).build()?,
            )),
            // The scheduler (and the helper's Python) come from the environment
            // (ADPARALLELENGINE_DASK_SCHEDULER...): the program itself is unchanged.
            #[cfg(feature = "dask")]
            Kind::Dask => Ok(AnyBackend::Dask(
                adparallelengine_dask::DaskBuilder::from_env(workers)?
                    .path_shared(config.path_shared.clone())
                    .build()?,
            )),
            // The partition, account, time limit... come from the environment
            // (ADPARALLELENGINE_SLURM_*): the program itself is unchanged.
            #[cfg(feature = "slurm")]
            Kind::Slurm => Ok(AnyBackend::Slurm(
                adparallelengine_slurm::SlurmBuilder::from_env(workers)?
                    .path_shared(config.path_shared.clone())
                    .build()?,
            )),
            other => Err(adparallelengine_core::Error::KindUnavailable {
                kind: other.as_str().into(),
                reason: "no backend for this kind in this build".into(),
            }),
        }
    }
}
