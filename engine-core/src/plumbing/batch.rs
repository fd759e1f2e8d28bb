//! The messages between the driver and a worker: a batch of items, and its results.

use crate::error::ItemError;
use crate::stats::ItemStats;
use std::time::Duration;

/// A batch of consecutive items.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Batch<I> {
    /// Sequence number: batches are cut in input order, numbered from 0.
    pub seq: u64,
    /// Index of the first item in the input.
    pub start: usize,
    /// The items.
    pub items: Vec<I>,
}

/// What a worker sends back for one batch.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BatchDone<O> {
    /// The batch's sequence number.
    pub seq: u64,
    /// Index of its first item.
    pub start: usize,
    /// Number of items in the batch.
    pub len: usize,
    /// Outputs of the items that succeeded, in input order.
    pub outputs: Vec<O>,
    /// Items that failed, by ascending index. In fail-fast mode the worker stops the batch at
    /// the first failure, so items after it have neither an output nor a failure.
    pub failures: Vec<ItemError>,
    /// The worker that ran it.
    pub worker: usize,
    /// Time the worker spent on the batch.
    pub busy: Duration,
    /// Per-item stats, when asked for.
    pub item_stats: Option<Vec<ItemStats>>,
    /// The outputs were written straight to their place in the job's
    /// [`Placement`](crate::plumbing::Placement) (then `outputs` is empty and every item succeeded).
    /// Never set on the parts of a split batch (single items), so merging parts never mixes
    /// placed and carried outputs.
    pub placed: bool,
}

/// What a worker reports to the driver.
#[derive(Debug)]
pub enum Event<O> {
    /// The worker's `init` succeeded: from now on a death is charged to the item it runs.
    Ready {
        /// The worker's number.
        worker: usize,
    },
    /// A batch is done.
    Done(BatchDone<O>),
    /// The worker's `init` failed; it runs nothing.
    InitFailed {
        /// The worker's number.
        worker: usize,
        /// The error or panic message.
        message: String,
    },
    /// The worker cannot work for this job (another build, an unknown task): it is not
    /// replaced, its batches go to the other workers, and the job fails only when none is left.
    Fatal {
        /// The worker's number.
        worker: usize,
        /// What it said.
        message: String,
    },
    /// The worker is gone (exited, killed, connection lost) with batches in flight.
    Lost {
        /// The worker's number.
        worker: usize,
        /// What happened.
        reason: String,
    },
}
