//! The process backend: worker processes running **this same executable**, re-executed (never
//! forked from a multi-threaded parent). A re-executed copy becomes a worker in a hook that
//! runs before `main` (see [`hook`]), so it costs the user nothing and never runs their `main`,
//! in binaries, examples and `cargo test` binaries alike.
//!
//! A job runs on `min(max_workers, items)` workers, each connected by a socketpair; messages
//! are engine-core's frames. Workers start with the first job that needs them and stay up
//! between jobs (see the `pool` module for why) until the backend is dropped. The pool,
//! each job's reader threads and links, scheduling, retries of a dead worker's batches, item
//! timeouts and ordering are engine-core's [`pooled`](adparallelengine_core::remote) workers, shared
//! with the Kubernetes backend: this crate only spawns processes and gives them shared
//! memory. A worker whose driver dies gets SIGKILL from
//! the kernel, and Ctrl-C (SIGINT/SIGTERM) kills every worker before the driver exits.
//!
//! ```no_run
//! use adparallelengine_core::Engine;
//! use adparallelengine_process::ProcessBackend;
//! adparallelengine_core::task!(Sq = |x: u64| -> u64 { x * x });
//! let engine = Engine::from_backend(ProcessBackend::new(2)?);
//! assert_eq!(engine.map(Sq, 0..5u64).run()?, vec![0, 1, 4, 9, 16]);
//! # Ok::<(), adparallelengine_core::Error>(())
//! ```
#![warn(missing_docs)]

mod cleanup;
pub mod hook;
mod lent;
mod pool;
mod shm;
mod started;
#[cfg(feature = "testing")]
pub mod testing;
mod worker;

pub use adparallelengine_core::remote::{register_cleanup, unregister_cleanup};
pub use cleanup::{kill_all_and_clean, live_workers};
pub use hook::become_worker_if_asked;

use adparallelengine_core::plumbing::{Backend, Completions, Plan};
use adparallelengine_core::remote::{start_pooled, Pool};
use adparallelengine_core::{Error, Result, Task};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Worker processes running this executable. Dropping it ends every worker it started: idle
/// ones are closed and reaped, and those a leaked job (`mem::forget` of a stream) still holds
/// are killed.
pub struct ProcessBackend {
    pool: Arc<Pool<pool::Proc>>,
    workers: usize,
    store: Arc<adparallelengine_store::LazyDirStore>,
    /// Every worker started and not dropped, idle or in a job.
    started: Arc<started::Started>,
}

impl std::fmt::Debug for ProcessBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessBackend").field("workers", &self.workers).field("share_dir", &self.store.dir()).finish()
    }
}

impl ProcessBackend {
    /// A backend of up to `workers` worker processes (at least 1).
    pub fn new(workers: usize) -> Result<Self> {
        // Serve here if this process is a worker whose pre-main hook did not run; this also
        // keeps the hook linked in.
        adparallelengine_core::remote::become_worker_if_asked();
        let exe = std::env::current_exe()
            .map_err(|e| Error::Backend { backend: "process", message: format!("cannot find this executable: {e}") })?;
        let workers = workers.max(1);
        let started = Arc::new(started::Started::default());
        Ok(ProcessBackend {
            pool: Arc::new(Pool::new(workers, pool::ProcSource::new(exe, Arc::clone(&started)))),
            workers,
            store: Arc::new(adparallelengine_store::LazyDirStore::new(None)),
            started,
        })
    }

    /// Puts shared values in a private directory under `dir` (the Python original's `path_shared`)
    /// instead of the system temp dir.
    pub fn path_shared(mut self, dir: Option<PathBuf>) -> Self {
        self.store = Arc::new(adparallelengine_store::LazyDirStore::new(dir));
        self
    }

    /// Worker processes idle between jobs, kept for the next one (at most `workers`).
    pub fn idle_workers(&self) -> usize {
        self.pool.idle_count()
    }

    /// The share store's directory, once something was shared.
    pub fn share_dir(&self) -> Option<PathBuf> {
        self.store.dir()
    }
}

impl Drop for ProcessBackend {
    fn drop(&mut self) {
        // Idle workers are closed and reaped. A job borrows the backend, so one still holding
        // workers now was leaked: its workers are killed (and reaped by its reader threads,
        // which then end), or they would run until the driver exits.
        self.pool.retire_idle();
        let leaked = self.started.kill_all(Duration::from_secs(2));
        if leaked > 0 {
            tracing::debug!(workers = leaked, "killed the workers of a leaked job");
        }
    }
}

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn max_workers(&self) -> usize {
        self.workers
    }

    /// A message costs a few microseconds more than on threads: aim at 20 ms batches.
    fn auto_batch_target(&self) -> Duration {
        Duration::from_millis(20)
    }

    /// Outputs arrive as bytes: plain numbers are copied straight into the result.
    fn places_outputs(&self) -> bool {
        true
    }

    fn start<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(
        &'a self,
        plan: Plan<T, I>,
    ) -> Result<Box<dyn Completions<T::Output> + 'a>> {
        // Shared values in args and init go to the store, once; only their keys travel.
        let share_dir = || self.store.dir().map(|d| d.to_string_lossy().into_owned());
        start_pooled(
            "process",
            &self.pool,
            plan,
            self.store.clone(),
            share_dir,
            false,
            adparallelengine_core::remote::LOCAL_MAX_FRAME,
        )
    }
}
