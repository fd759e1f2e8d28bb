//! [`Completions`]: what a running job hands back to the engine, batch by batch.

use super::batch::BatchDone;
use crate::error::Result;

/// Completed batches of a running job, in completion order.
pub trait Completions<O> {
    /// The next completed batch; `None` when the job is done. After an `Err` the job is over.
    fn next_done(&mut self) -> Option<Result<BatchDone<O>>>;
}
