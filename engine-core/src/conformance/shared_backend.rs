//! [`SharedBackend`]: one backend behind every engine the kit makes.

use crate::plumbing::{Backend, Completions, IndexedJob, Plan};
use crate::{Engine, Result, Task};
use std::sync::Arc;
use std::time::Duration;

/// One backend shared by every engine the kit makes, each engine capped at the workers the
/// kit asks for. For backends that exist once per process (MPI: one world, initialized once)
/// or are costly to start (a cluster's pods), where a maker cannot build a fresh backend for
/// each engine.
///
/// ```
/// # struct MyBackend;
/// # impl adparallelengine_core::plumbing::Backend for MyBackend {
/// #   fn name(&self) -> &'static str { "mine" }
/// #   fn max_workers(&self) -> usize { 2 }
/// #   fn start<'a, T: adparallelengine_core::Task, I: Iterator<Item = T::Item> + 'a>(&'a self, p: adparallelengine_core::plumbing::Plan<T, I>)
/// #     -> adparallelengine_core::Result<Box<dyn adparallelengine_core::plumbing::Completions<T::Output> + 'a>> { adparallelengine_core::plumbing::run_inline(p) }
/// # }
/// use adparallelengine_core::conformance::{Kit, SharedBackend};
/// let kit = Kit::new(SharedBackend::maker(MyBackend));
/// ```
pub struct SharedBackend<B> {
    backend: Arc<B>,
    workers: usize,
}

impl<B: Backend> SharedBackend<B> {
    /// A maker for [`Kit::new`](super::Kit::new): engines over `backend`, each with
    /// `min(workers, backend.max_workers())` workers (at least 1).
    pub fn maker(backend: B) -> impl Fn(usize) -> Result<Engine<SharedBackend<B>>> {
        let backend = Arc::new(backend);
        move |workers| {
            let workers = workers.clamp(1, backend.max_workers().max(1));
            Ok(Engine::from_backend(SharedBackend { backend: Arc::clone(&backend), workers }))
        }
    }
}

impl<B: Backend> Backend for SharedBackend<B> {
    fn name(&self) -> &'static str {
        self.backend.name()
    }
    fn max_workers(&self) -> usize {
        self.workers
    }
    fn auto_batch_target(&self) -> Duration {
        self.backend.auto_batch_target()
    }
    fn places_outputs(&self) -> bool {
        self.backend.places_outputs()
    }
    fn start<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(
        &'a self,
        plan: Plan<T, I>,
    ) -> Result<Box<dyn Completions<T::Output> + 'a>> {
        self.backend.start(plan)
    }
    fn splits_by_index(&self) -> bool {
        self.backend.splits_by_index()
    }
    fn start_indexed<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(
        &'a self,
        job: IndexedJob<'a, T, I>,
    ) -> Result<Box<dyn Completions<T::Output> + 'a>> {
        self.backend.start_indexed(job)
    }
}
