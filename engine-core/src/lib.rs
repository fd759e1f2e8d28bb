//! Core of **adparallelengine**: the [`Engine`] and its [`Job`]s, [`Task`]s and their
//! registry, batching, [`Shared`] values, errors, stats and progress — and, for backend
//! authors, the contract every backend keeps.
//!
//! Users depend on the `adparallelengine` facade, which re-exports this crate and picks a
//! backend from a kind. The crate has three public tiers:
//!
//! - **the root**: what users write (this page);
//! - [`plumbing`]: what a backend author needs — the [`Backend`](plumbing::Backend) trait, the
//!   contract it keeps, and the dispatch loop and worker loop every backend shares;
//! - [`remote`]: what a backend whose workers run in other processes needs — the wire protocol,
//!   pooled and dial-in workers.
#![warn(missing_docs)]

mod audit;
mod batching;
mod config;
mod engine;
mod error;
mod in_flight;
mod job;
mod journal;
mod on_progress;
mod order;
mod progress;
mod retry;
mod run;
mod share_ctx;
mod shared;
mod stats;
mod store;
mod stream;
mod task;

pub mod plumbing;
pub mod remote;

#[cfg(feature = "arrow")]
pub mod arrow;
#[cfg(feature = "conformance")]
pub mod conformance;

pub use batching::{Batcher, Batching, FixedSize};
pub use config::EngineConfig;
pub use engine::{Engine, EngineBuilder};
pub use error::{BoxError, Error, FailureKind, ItemError, Result};
pub use job::Job;
pub use journal::{Journal, JournalSync};
pub use on_progress::ProgressUpdate;
pub use progress::{Progress, ProgressBar};
pub use remote::registry::{is_registered, registered_names};
pub use retry::{FailedAttempt, RetryErrors};
pub use shared::Shared;
pub use stats::{BatchStat, CountingAllocator, ItemStats, JobStats};
pub use store::{KeyHasher, ShareKey, SharedBytes, SharedStore};
pub use stream::{ResultStream, UnorderedStream};
pub use task::{Payload, Task};

/// What this crate's macros expand to. Not public API: free to change.
#[doc(hidden)]
pub mod __private {
    pub use crate::remote::entry::WORKER_ENTRIES;
    pub use crate::remote::registry::{TaskEntry, TASKS};
    pub use crate::remote::serve_job::serve_job;
    pub use linkme;
}
