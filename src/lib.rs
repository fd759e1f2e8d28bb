//! **adparallelengine** maps one function over an iterator on the engine of your choice:
//! serial (for debugging), threads, worker processes, MPI on a cluster, or pods on
//! Kubernetes. One program, unchanged, on every backend.
//!
//! ```
//! use adparallelengine::{Engine, Kind};
//!
//! adparallelengine::task!(
//!     /// Doubles a number.
//!     pub Double = |x: u64| -> u64 { 2 * x }
//! );
//!
//! let engine = Engine::builder(Kind::Threads).max_workers(2).build()?;
//! let out = engine.map(Double, 0..6u64).batched(true).run()?;
//! assert_eq!(out, vec![0, 2, 4, 6, 8, 10]); // always in input order
//! # Ok::<(), adparallelengine::Error>(())
//! ```
//!
//! Kinds are parsed from the Python original's strings (`"serial"`, `"multithread"`, `"multiproc"`,
//! `"mpi"`, `"k8s"`, `"dask"`); a kind this build cannot run is a clear [`Error::KindUnavailable`].
//! See the README for the tour.
#![warn(missing_docs)]

mod any_backend;
mod kind;

pub use any_backend::AnyBackend;
pub use kind::Kind;

pub use adparallelengine_core::{
    is_registered, register_task, registered_names, task, try_task, worker_entry, BatchStat, Batcher, Batching,
    BoxError, CountingAllocator, EngineBuilder, EngineConfig, Error, FailedAttempt, FailureKind, FixedSize, ItemError,
    ItemStats, Job, JobStats, Journal, JournalSync, KeyHasher, Payload, Progress, ProgressBar, ProgressUpdate, Result,
    ResultStream, RetryErrors, ShareKey, Shared, SharedBytes, SharedStore, Task, UnorderedStream,
};

/// For backend authors: the [`Backend`](plumbing::Backend) trait, its contract, and the
/// dispatch and worker loops every backend shares.
pub use adparallelengine_core::plumbing;

/// For out-of-process backend authors: the wire protocol, pooled and dial-in workers.
pub use adparallelengine_core::remote;

/// Arrow data as items, results and shared values: [`Frame`](arrow::Frame) (a
/// `RecordBatch`, the Python original's DataFrame) and [`Series`](arrow::Series) (an array).
#[cfg(feature = "arrow")]
pub use adparallelengine_core::arrow;

/// The conformance kit: checks of the whole user-visible contract that any backend runs from
/// its own tests (`adparallelengine::conformance::run_all(|n| ...)`).
#[cfg(feature = "conformance")]
pub use adparallelengine_core::conformance;

/// The engine. `Engine` alone runs the built-in backends ([`AnyBackend`], chosen by
/// [`Kind`]); `Engine<MyBackend>` runs a third-party one.
pub type Engine<B = AnyBackend> = adparallelengine_core::Engine<B>;

/// The backends, for direct use.
pub mod backends {
    /// The Dask backend: [`DaskBuilder`](adparallelengine_dask::DaskBuilder) for every option.
    #[cfg(feature = "dask")]
    pub use adparallelengine_dask as dask;
    /// The Kubernetes backend: [`K8sBuilder`](adparallelengine_k8s::K8sBuilder) for every option.
    #[cfg(feature = "k8s")]
    pub use adparallelengine_k8s as k8s;
    /// The MPI backend, and MPI itself for a program's own messages before its engine.
    #[cfg(feature = "mpi")]
    pub use adparallelengine_mpi as mpi;
    #[cfg(feature = "process")]
    pub use adparallelengine_process::{live_workers, ProcessBackend};
    pub use adparallelengine_serial::SerialBackend;
    /// The Slurm backend: [`SlurmBuilder`](adparallelengine_slurm::SlurmBuilder) for every option.
    #[cfg(feature = "slurm")]
    pub use adparallelengine_slurm as slurm;
    #[cfg(feature = "threads")]
    pub use adparallelengine_threads::ThreadsBackend;
}

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Shared-store implementations.
pub mod stores {
    pub use adparallelengine_store::MemoryStore;
}
