//! Running a job's batches in the calling thread, lazily, one batch per `next_done`: the
//! reference semantics, used by the serial backend and by `max_workers = 1`.

use crate::batching::Batcher;
use crate::error::Result;
use crate::plumbing::batch::BatchDone;
use crate::plumbing::source::ItemSource;
use crate::plumbing::worker::Worker;
use crate::plumbing::{Completions, Plan};
use crate::task::Task;
use std::sync::Arc;

/// Runs `plan` in the calling thread: `init` once, then one batch per call to `next_done`.
pub fn run_inline<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(
    plan: Plan<T, I>,
) -> Result<Box<dyn Completions<T::Output> + 'a>> {
    let worker = Worker::<T, Arc<T::Args>>::start(0, &plan.init, plan.args, plan.options)?;
    Ok(Box::new(Inline { source: plan.source, batcher: plan.batcher, worker, over: false }))
}

struct Inline<T: Task, I: Iterator<Item = T::Item>> {
    source: ItemSource<I>,
    batcher: Box<dyn Batcher>,
    worker: Worker<T, Arc<T::Args>>,
    over: bool,
}

impl<T: Task, I: Iterator<Item = T::Item>> Completions<T::Output> for Inline<T, I> {
    fn next_done(&mut self) -> Option<Result<BatchDone<T::Output>>> {
        if self.over {
            return None;
        }
        let size = self.batcher.next_size(self.source.remaining());
        match self.source.next_batch(size) {
            Ok(Some(batch)) => {
                let n = batch.items.len();
                let per_item = std::mem::size_of::<T::Item>() + std::mem::size_of::<T::Output>();
                self.batcher.observe_bytes(n, n * per_item);
                let done = self.worker.run_batch(batch);
                self.batcher.observe(done.len, done.busy);
                Some(Ok(done))
            }
            Ok(None) if !self.source.is_done() => {
                // No room under the job's max_in_flight: inline, every batch is back before
                // the next is cut, so the consumer holds the cap's worth of items without
                // taking them, and nothing would free it.
                self.over = true;
                Some(Err(crate::plumbing::source::no_room()))
            }
            Ok(None) => {
                self.over = true;
                None
            }
            Err(e) => {
                self.over = true;
                Some(Err(e))
            }
        }
    }
}
