//! Slice jobs on threads: each pool thread starts its worker, then claims chunks of the slice
//! and writes their outputs straight into place (engine-core's `ChunkedOutput`). No driver
//! walks the items, no result is copied: this is how rayon's indexed iterators work, and why
//! `map_slice` keeps up with bare rayon on tiny items.

use adparallelengine_core::plumbing::BatchDone;
use adparallelengine_core::plumbing::ChunkedOutput;
use adparallelengine_core::plumbing::Worker;
use adparallelengine_core::plumbing::{Completions, Plan, SlicePlan};
use adparallelengine_core::{Error, Result, Task};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs the whole slice on the first `next_done` (so dropping an unpolled job runs nothing).
pub(crate) struct SliceRun<'a, T: Task, I: Iterator<Item = T::Item>> {
    pub(crate) pool: &'a rayon::ThreadPool,
    pub(crate) plan: Option<Plan<T, I>>,
    pub(crate) slice: SlicePlan<'a, T>,
}

impl<T: Task, I: Iterator<Item = T::Item>> SliceRun<'_, T, I> {
    fn run(&self, plan: Plan<T, I>) -> Result<BatchDone<T::Output>> {
        let items = self.slice.items;
        let n = items.len();
        let out = ChunkedOutput::<T::Output>::new(n, self.slice.chunk);
        let workers = plan.workers.min(out.chunks());
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        let fail = |e: Error| {
            out.stop();
            if let Ok(mut g) = first_error.lock() {
                g.get_or_insert(e);
            }
        };
        let (init, args, options) = (&*plan.init, &plan.args, &plan.options);
        let busy: Vec<Duration> = self.pool.broadcast(|ctx| {
            let id = ctx.index();
            if id >= workers {
                return Duration::ZERO;
            }
            let t0 = Instant::now();
            let mut worker = match Worker::<T, _>::start(id, init, Arc::clone(args), options.clone()) {
                Ok(w) => w,
                Err(e) => {
                    fail(e);
                    return t0.elapsed();
                }
            };
            while let Some(claim) = out.claim() {
                if let Err(e) = items.run_chunk(&mut worker, claim) {
                    fail(Error::Item(e));
                    break;
                }
            }
            t0.elapsed()
        });
        if let Some(e) = first_error.into_inner().ok().flatten() {
            return Err(e);
        }
        let outputs = out.into_vec().ok_or_else(|| Error::Backend {
            backend: "threads",
            message: "a chunk of the slice was never filled".into(),
        })?;
        Ok(BatchDone {
            seq: 0,
            start: 0,
            len: n,
            outputs,
            failures: Vec::new(),
            worker: 0,
            busy: busy.into_iter().sum(),
            item_stats: None,
            placed: false,
        })
    }
}

impl<T: Task, I: Iterator<Item = T::Item>> Completions<T::Output> for SliceRun<'_, T, I> {
    fn next_done(&mut self) -> Option<Result<BatchDone<T::Output>>> {
        let plan = self.plan.take()?;
        Some(self.run(plan))
    }
}
