//! For tests of the driver: a worker rank that forges its answers. With the `testing` feature.

use adparallelengine_core::remote::testing::{serve_lying, Lie};
use adparallelengine_core::Result;

/// On a worker rank of an MPI job, plays a worker that lies as `lie` says (engine-core's
/// [`serve_lying`]) until the driver closes the engine, then finalizes MPI and exits 0, like
/// [`serve_if_worker_rank`](crate::serve_if_worker_rank); returns at once on rank 0 or
/// outside a launcher.
pub fn lie_if_worker_rank(lie: Lie) -> Result<()> {
    crate::launch::serve_worker_rank_with(|t| {
        serve_lying(t, lie);
        Ok(())
    })
}
