//! [`SliceItems`]: items held in a slice, which in-process backends split by index instead of
//! cutting them from an iterator one at a time.

use crate::error::ItemError;
use crate::plumbing::slots::Claim;
use crate::plumbing::worker::Worker;
use crate::task::Task;
use std::sync::Arc;

type RunChunk<T> = fn(
    &mut Worker<T, Arc<<T as Task>::Args>>,
    Claim<'_, <T as Task>::Output>,
    &[<T as Task>::Item],
) -> Result<(), ItemError>;

/// The items of a `map_slice` job: readable by index, so a backend whose workers share the
/// driver's memory splits them as rayon does and writes each result straight into place.
pub struct SliceItems<'a, T: Task> {
    slice: &'a [T::Item],
    run: RunChunk<T>,
}

impl<T: Task> Clone for SliceItems<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Task> Copy for SliceItems<'_, T> {}

impl<'a, T: Task> SliceItems<'a, T>
where
    T::Item: Clone + Sync,
{
    /// Wraps a slice of `Clone + Sync` items.
    pub fn new(slice: &'a [T::Item]) -> Self {
        SliceItems { slice, run: |w, claim, items| w.run_chunk_cloned(claim, items) }
    }
}

impl<T: Task> SliceItems<'_, T> {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.slice.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slice.is_empty()
    }
    /// Runs the items of `claim` on `worker` (cloning each from the slice as it runs) and
    /// fills the claim with their outputs. Fail-fast: the first failure is returned.
    pub fn run_chunk(
        &self,
        worker: &mut Worker<T, Arc<T::Args>>,
        claim: Claim<'_, T::Output>,
    ) -> Result<(), ItemError> {
        let r = claim.range();
        (self.run)(worker, claim, &self.slice[r])
    }
}

// SAFETY: the only constructor, `SliceItems::new`, requires `T::Item: Sync`, so the slice may
// be read from any thread; the function pointer is plain code. Stating it here (instead of
// deriving it from the item type) lets backends hold a `SliceItems<T>` without the bound.
unsafe impl<T: Task> Sync for SliceItems<'_, T> {}
// SAFETY: as above: sending a shared reference to `Sync` data is sound.
unsafe impl<T: Task> Send for SliceItems<'_, T> {}
