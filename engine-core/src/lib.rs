//! Core of **adparallelengine**: the [`Engine`] and its [`Job`]s, the [`Task`] registry, the
//! [`Backend`], [`Batcher`] and [`SharedStore`] traits, and everything every backend shares:
//! lazy batching, the dispatch loop, ordered reassembly, gather, errors, stats and progress.
//!
//! Users depend on the `adparallelengine` facade, which re-exports this crate and picks a
//! backend from a kind; a third-party backend depends on this crate alone.
#![warn(missing_docs)]

pub mod backend;
pub mod backoff;
pub mod batch;
pub mod batching;
pub mod dispatch;
pub mod engine;
pub mod entry;
pub mod error;
pub mod fingerprint;
pub mod inline;
pub mod interrupt;
pub mod items;
pub mod job;
pub mod keepalive;
pub mod knock;
mod order;
pub mod outbox;
pub mod placement;
pub mod plain;
pub mod pooled;
pub mod progress;
pub mod registry;
pub mod remote;
mod run;
pub mod share_ctx;
pub mod shared;
pub mod slots;
pub mod source;
pub mod stats;
pub mod store;
pub mod stream;
pub mod stream_transport;
pub mod task;
#[doc(hidden)]
pub mod testing;
pub mod wire;
pub mod worker;

#[cfg(feature = "arrow")]
pub mod arrow;
#[cfg(feature = "conformance")]
pub mod conformance;

pub use backend::{Backend, BackendFactory, Completions, Plan, SlicePlan};
pub use batching::{Batcher, Batching};
pub use engine::{Engine, EngineBuilder, EngineConfig};
pub use error::{BoxError, Error, FailureKind, ItemError, Result};
pub use items::SliceItems;
pub use job::Job;
pub use placement::Placement;
pub use progress::Progress;
pub use shared::Shared;
pub use stats::{CountingAllocator, ItemStats, JobStats};
pub use store::{ShareKey, SharedBytes, SharedStore};
pub use stream::{ResultStream, UnorderedStream};
pub use task::{Payload, Task};

/// Re-exports used by this crate's macros. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use linkme;
}
