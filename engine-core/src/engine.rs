//! [`Engine`]: a backend plus its configuration; maps tasks over items.

use crate::batching::Batching;
use crate::config::EngineConfig;
use crate::error::{Error, Result};
use crate::job::Job;
use crate::plumbing::indexed::IndexedItems;
use crate::plumbing::{Backend, BackendFactory};
use crate::progress::Progress;
use crate::stats::JobStats;
use crate::task::Task;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Maps [`Task`]s over iterators on one backend.
///
/// Built from a kind by the facade (`adparallelengine::Engine::builder(Kind::Threads)`), or
/// from any [`Backend`] with [`Engine::from_backend`].
pub struct Engine<B: Backend> {
    backend: B,
    config: EngineConfig,
    last_stats: Arc<Mutex<Option<JobStats>>>,
}

impl<B: Backend> Engine<B> {
    /// Starts building an engine from a backend factory (such as the facade's `Kind`).
    pub fn builder<F: BackendFactory<Backend = B>>(factory: F) -> EngineBuilder<F> {
        EngineBuilder { factory, config: EngineConfig::default() }
    }

    /// An engine over a ready backend, with default settings.
    pub fn from_backend(backend: B) -> Self {
        let config = EngineConfig { max_workers: Some(backend.max_workers()), ..EngineConfig::default() };
        Self::with_config(backend, config)
    }

    /// An engine over a ready backend with these settings.
    pub fn with_config(backend: B, config: EngineConfig) -> Self {
        Engine { backend, config, last_stats: Arc::new(Mutex::new(None)) }
    }

    /// Maps `task` over `items`. Nothing runs until a terminal method of the [`Job`]
    /// (`run`, `gather`, `stream`, ...) is called.
    pub fn map<T: Task, It: IntoIterator<Item = T::Item>>(&self, task: T, items: It) -> Job<'_, B, T, It::IntoIter> {
        Job::new(&self.backend, &self.config, Arc::clone(&self.last_stats), task, items.into_iter())
    }

    /// Maps `task` over a slice of `Clone` items. Same job as [`map`](Self::map) over
    /// `items.iter().cloned()`, except that when every result is kept (`run`, `gather`,
    /// `gather_with`) a backend sharing the driver's memory (threads) splits the slice by
    /// index, as rayon does, and writes every output in its place: no item is walked by the
    /// driver, no result is copied. Other backends walk it like any iterator.
    pub fn map_slice<'a, T: Task>(
        &'a self,
        task: T,
        items: &'a [T::Item],
    ) -> Job<'a, B, T, std::iter::Cloned<std::slice::Iter<'a, T::Item>>>
    where
        T::Item: Clone + Sync,
    {
        Job::new(&self.backend, &self.config, Arc::clone(&self.last_stats), task, items.iter().cloned())
            .with_slice(IndexedItems::slice(items))
    }

    /// The most workers a job uses.
    pub fn workers(&self) -> usize {
        self.backend.max_workers()
    }

    /// The backend's name ("serial", "threads", "process", ...), as in errors and logs.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Stats of the last job that finished (or was dropped) on this engine.
    pub fn last_stats(&self) -> Option<JobStats> {
        self.last_stats.lock().ok().and_then(|g| g.clone())
    }
}

impl<B: Backend + std::fmt::Debug> std::fmt::Debug for Engine<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("backend", &self.backend).field("config", &self.config).finish()
    }
}

/// Builder of an [`Engine`].
pub struct EngineBuilder<F> {
    factory: F,
    config: EngineConfig,
}

impl<F: BackendFactory> EngineBuilder<F> {
    /// Most workers per job (the Python original's `max_workers`); 1 runs in the calling thread.
    pub fn max_workers(mut self, n: usize) -> Self {
        self.config.max_workers = Some(n);
        self
    }
    /// Most workers per job, or the default when `None`.
    pub fn max_workers_opt(mut self, n: Option<usize>) -> Self {
        self.config.max_workers = n;
        self
    }
    /// Workers do not see the driver's file system (MPI ranks on several machines without a
    /// shared file system): send each worker the shared values over its connection, once,
    /// instead of through `path_shared`.
    pub fn ship_shared(mut self, ship: bool) -> Self {
        self.config.ship_shared = ship;
        self
    }

    /// Directory for shared values of out-of-process backends (the Python original's `path_shared`).
    pub fn path_shared(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.path_shared = Some(path.into());
        self
    }
    /// Batches per worker with [`Batching::PerWorker`].
    pub fn batch_multiplier(mut self, m: usize) -> Self {
        self.config.batch_multiplier = m;
        self
    }
    /// Progress reporting.
    pub fn progress(mut self, p: Progress) -> Self {
        self.config.progress = p;
        self
    }
    /// Default batching of jobs.
    pub fn batching(mut self, b: impl Into<Batching>) -> Self {
        self.config.batching = b.into();
        self
    }
    /// Builds the engine.
    pub fn build(self) -> Result<Engine<F::Backend>> {
        if self.config.max_workers == Some(0) {
            return Err(Error::Config("max_workers must be at least 1".into()));
        }
        if self.config.batch_multiplier == 0 {
            return Err(Error::Config("batch_multiplier must be at least 1".into()));
        }
        let backend = self.factory.create(&self.config)?;
        Ok(Engine::with_config(backend, self.config))
    }
}
