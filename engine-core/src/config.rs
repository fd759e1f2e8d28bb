//! [`EngineConfig`]: the settings every job of an engine shares.

use crate::batching::Batching;
use crate::progress::Progress;
use std::path::PathBuf;

/// Settings shared by every job of an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most workers per job. `None`: the available parallelism (or the MPI world size).
    pub max_workers: Option<usize>,
    /// Where out-of-process backends write shared values. `None`: a fresh private directory
    /// under the system temp dir.
    pub path_shared: Option<PathBuf>,
    /// Workers do not see the driver's file system: shared values are sent to each worker
    /// over its connection (once) instead of read from `path_shared`. Honoured by the MPI
    /// backend; worker processes always share the driver's machine.
    pub ship_shared: bool,
    /// With [`Batching::PerWorker`], batches per worker (the Python original's `batched=True` is 1).
    pub batch_multiplier: usize,
    /// Progress lines and bar.
    pub progress: Progress,
    /// Default batching of jobs.
    pub batching: Batching,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_workers: None,
            path_shared: None,
            ship_shared: false,
            batch_multiplier: 1,
            progress: Progress::default(),
            batching: Batching::Auto,
        }
    }
}

impl EngineConfig {
    /// `max_workers`, or the machine's available parallelism.
    pub fn workers_or_default(&self) -> usize {
        self.max_workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
    }
}
