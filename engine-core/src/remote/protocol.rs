//! The messages between a driver and its out-of-process workers (processes, MPI ranks,
//! pods) and the job's spec: what travels, not how (see [`Transport`](super::Transport)).

use crate::error::{Error, ItemError, Result};
use crate::remote::wire::{encode_msg, ByteBuf};
use crate::stats::ItemStats;
use crate::store::{ShareKey, SharedStore};
use crate::task::Task;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Driver to worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// First message: who the worker is and the driver's build fingerprint.
    Hello {
        /// The driver's [`fingerprint`](crate::remote::fingerprint).
        fingerprint: String,
        /// The worker's number.
        worker: usize,
    },
    /// A job starts.
    Job(JobSpec),
    /// A batch of the current job; its `count` items are the message's tail, as
    /// [`crate::remote::wire::encode_items`] writes them.
    Batch {
        /// Sequence number.
        seq: u64,
        /// Index of the first item.
        start: usize,
        /// Number of items.
        count: usize,
    },
    /// A batch of the current job whose items are consecutive integers (the job maps over a
    /// range): `first, first + 1, …`, `count` of them. The message's tail is `first`, as
    /// [`crate::remote::wire::encode_items`] writes one item.
    Range {
        /// Sequence number.
        seq: u64,
        /// Index of the first item.
        start: usize,
        /// Number of items.
        count: usize,
    },
    /// The current job is over.
    EndJob,
    /// A shared value, for a worker that cannot reach the driver's store: the message's tail
    /// is the value's bytes, kept in a store of the worker's own (see [`JobSpec::shipped`]).
    /// Each value is sent once per worker, before the first job that may need it.
    Blob {
        /// The value's key (the hash of the tail, checked on arrival).
        key: ShareKey,
    },
}

/// A job, as sent to a worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobSpec {
    /// The task's registered name.
    pub task: String,
    /// The encoded args.
    pub args: ByteBuf,
    /// The encoded init argument.
    pub init: ByteBuf,
    /// Fail-fast mode.
    pub fail_fast: bool,
    /// Per-item stats.
    pub item_stats: bool,
    /// Retries of items that fail.
    pub retry_errors: crate::RetryErrors,
    /// Where the job's shared values are stored (a directory, a URL...), for the worker's
    /// store opener.
    pub share_dir: Option<String>,
    /// The job's shared values came over this connection (`Blob` messages) into the worker's
    /// own store, instead of from `share_dir`: for workers without the driver's file system.
    pub shipped: bool,
}

impl JobSpec {
    /// The spec of a job from its plan. Its args and init are encoded once here; the shared
    /// values in them go to `store` (once: only their keys travel). `share_dir`, asked after
    /// encoding (a store may make its directory on its first value), tells workers where to
    /// read that store; `shipped`, that its values come over the connection instead.
    pub fn for_plan<T: Task, I: Iterator<Item = T::Item>>(
        plan: &crate::plumbing::backend::Plan<T, I>,
        store: Arc<dyn SharedStore>,
        share_dir: impl FnOnce() -> Option<String>,
        shipped: bool,
    ) -> Result<JobSpec> {
        let encode = |what: &str, bytes: Result<Vec<u8>>| {
            bytes.map(ByteBuf).map_err(|e| Error::Codec(format!("cannot encode the job's {what}: {e}")))
        };
        let (args, init) = crate::share_ctx::with_store(store, || {
            Ok::<_, Error>((
                encode("args", encode_msg(&*plan.args))?,
                encode("init argument", encode_msg(&*plan.init))?,
            ))
        })?;
        Ok(JobSpec {
            task: T::name().to_string(),
            args,
            init,
            fail_fast: plan.options.fail_fast,
            item_stats: plan.options.item_stats,
            retry_errors: plan.options.retry_errors,
            share_dir: if shipped { None } else { share_dir() },
            shipped,
        })
    }
}

/// Worker to driver.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// Handshake answer.
    Hello {
        /// The worker's fingerprint (equal to the driver's, or the worker refuses).
        fingerprint: String,
        /// Its process id.
        pid: u32,
    },
    /// The worker cannot serve: another build, an unknown task, a protocol error.
    Refused {
        /// Why.
        reason: String,
    },
    /// The job's `init` succeeded.
    Ready,
    /// The job's `init` (or decoding its args) failed.
    InitFailed {
        /// Why.
        message: String,
    },
    /// A batch is done; the outputs of the items that succeeded are the message's tail.
    Done {
        /// Sequence number.
        seq: u64,
        /// Index of its first item.
        start: usize,
        /// Number of items.
        len: usize,
        /// Number of outputs in the tail.
        count: usize,
        /// Items that failed.
        failures: Vec<ItemError>,
        /// Time spent.
        busy: Duration,
        /// Per-item stats, when asked for.
        item_stats: Option<Vec<ItemStats>>,
    },
    /// The job is over on this worker.
    JobEnded,
}
