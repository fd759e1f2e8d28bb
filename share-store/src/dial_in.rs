//! The stores of a dial-in worker (a pod, a Dask task's process): values sent over its
//! connection go to a private directory on its local disk ([`local_dir_store`]), and a job
//! that names a directory the worker sees (a volume mounted at the driver's `path_shared`)
//! is read from there ([`open_dir_view`]).

use crate::{local_dir_store, open_dir_view};

/// If this process is a dial-in worker (its environment names a driver), serves it with this
/// crate's stores and exits; otherwise returns at once. Dial-in backends register it as their
/// pre-`main` entry (`adparallelengine_core::worker_entry!(adparallelengine_store::dial_in_worker)`).
pub fn dial_in_worker() {
    let open_volume = |dir: &str| {
        open_dir_view(dir).map_err(|e| {
            adparallelengine_core::Error::Store(format!(
                "the shared directory {dir} is not mounted where this worker runs: {e}"
            ))
        })
    };
    adparallelengine_core::remote::dial_in::dial_in_if_asked(&open_volume, &local_dir_store);
}
