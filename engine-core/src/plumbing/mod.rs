//! **For backend authors**: what a backend is made of, and the machinery every backend shares.
//! Users never need this module; a backend crate needs it and the crate root (and serde).
//!
//! A backend implements [`Backend`]: the engine hands it a [`Plan`] (the items, cut lazily
//! into [`Batch`]es by the [`ItemSource`], a [`Batcher`], the job's args and init, the number
//! of workers) and receives [`Completions`]: every batch's [`BatchDone`], in any order. A
//! backend whose workers are reached through links (channels, sockets, MPI ranks) supplies only
//! [`WorkerLink`]s and hands them to [`Dispatch`], which owns pull scheduling, prefetch, the
//! reorder window, per-item timeouts and retries; its workers run [`serve_worker`] (or a
//! [`Worker`] by hand). A backend that runs batches in the calling thread can return
//! [`run_inline`]. A backend whose workers share the driver's memory may also say
//! [`Backend::splits_by_index`] and run [`IndexedJob`]s (`map` over a `Vec`, a range or a slice
//! iterator, `map_slice`): its threads claim chunks of the index range and write outputs in
//! place, with no batch cut or sent. Out-of-process backends add the wire protocol of
//! [`crate::remote`].
//!
//! # The contract
//!
//! The engine checks rules 1–3 on every job and fails it with [`Error::Backend`](crate::Error::Backend)
//! naming the backend, the batch and what is wrong; the others it cannot see, and a backend
//! that breaks them is wrong in ways no check catches.
//!
//! 1. **Every batch comes back exactly once.** Each batch cut from `plan.source` is returned in
//!    one [`BatchDone`] with the batch's `seq`, `start` and `len`, in any order; a batch never
//!    cut, a batch returned twice, or a job that ends (`next_done` returns `None`) with a batch
//!    missing or items left in the source is an error.
//! 2. **One output or one failure per item.** A batch's `outputs` holds the outputs of its
//!    items that succeeded, in input order, and `failures` those that failed, by ascending
//!    index, within the batch; in fail-fast mode (`plan.options.fail_fast`) a batch may stop
//!    at its first failure, leaving the items after it with neither.
//! 3. **Placed outputs are written first.** A batch marked [`BatchDone::placed`] has had every
//!    output written into `plan.placement`, through [`Placement::put_bytes`], before it is returned; the engine checks that the range was written.
//! 4. **Dropping the completions stops the job.** `plan.options.cancel` arrives as `None`: a
//!    backend whose workers run apart from `next_done` installs its own flag (or closes its
//!    links) and stops them when its [`Completions`] are dropped. [`Dispatch`] does this.
//! 5. **Read ahead no further than asked.** A backend with its own [`Completions`] pulls at
//!    most `plan.dispatch.max_ahead` batches beyond the oldest one not yet returned, so the
//!    engine's ordered reassembly stays bounded. [`Dispatch`] does this.
//! 6. **`init` runs on the worker**, once per worker and job, on the thread (or process) that
//!    then runs that worker's batches, before its first batch: a task's state may be `!Send`
//!    in spirit (thread-local handles, an open file). [`Worker`] and [`serve_worker`] do this.
//! 7. **At most `plan.workers` workers** run the job; zero items start none.
//!
//! The conformance kit (`conformance` feature) checks the whole contract as a user sees it.

pub(crate) mod backend;
pub(crate) mod backoff;
pub(crate) mod batch;
pub(crate) mod completions;
pub(crate) mod cuts;
pub(crate) mod dispatch;
pub(crate) mod indexed;
pub(crate) mod indexed_job;
pub(crate) mod inline;
pub(crate) mod int_range;
pub(crate) mod parcel;
pub(crate) mod placement;
pub(crate) mod plain;
pub(crate) mod room;
pub(crate) mod slots;
pub(crate) mod source;
pub(crate) mod worker;

pub use crate::batching::Batcher;
pub use crate::config::EngineConfig;
pub use backend::{Backend, BackendFactory, Plan};
pub use backoff::Backoff;
pub use batch::{Batch, BatchDone, Event};
pub use completions::Completions;
pub use dispatch::{Dispatch, DispatchConfig, DispatchParts, Respawn, WorkerLink};
pub use indexed::IndexedItems;
pub use indexed_job::IndexedJob;
pub use inline::run_inline;
pub use parcel::Parcel;
pub use placement::Placement;
pub use room::{Lender, Room};
pub use slots::ChunkedOutput;
pub use source::ItemSource;
pub use worker::{serve_worker, Worker, WorkerOptions};

/// The channels [`Dispatch`] reads worker events from (crossbeam's), re-exported so that a
/// backend needs no dependency of its own to make them.
pub mod channel {
    pub use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender, TryRecvError};
}
