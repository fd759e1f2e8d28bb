//! Indexed jobs on threads: every pool thread runs its worker's share of engine-core's
//! [`IndexedJob`] (init, then chunks claimed until none is left). The job runs on the first
//! `next_done`, so dropping an unpolled job runs nothing.

use adparallelengine_core::plumbing::{BatchDone, Completions, IndexedJob};
use adparallelengine_core::{Result, Task};

pub(crate) struct IndexedRun<'a, T: Task, I: Iterator<Item = T::Item>> {
    pub(crate) pool: &'a rayon::ThreadPool,
    pub(crate) job: Option<IndexedJob<'a, T, I>>,
}

impl<T: Task, I: Iterator<Item = T::Item>> Completions<T::Output> for IndexedRun<'_, T, I> {
    fn next_done(&mut self) -> Option<Result<BatchDone<T::Output>>> {
        let job = self.job.take()?;
        // `broadcast` runs once on every thread of the pool, which has `max_workers` threads:
        // each is one worker (ids past the job's workers return at once). Work is balanced
        // by the chunks the workers claim, as rayon's stealing balances its splits.
        self.pool.broadcast(|ctx| job.work(ctx.index()));
        Some(job.finish())
    }
}
