//! A worker pod's side: the program, started in a pod with the driver's address and the
//! run's secret in its environment, becomes a dial-in worker before `main` (engine-core's
//! [`dial_in`](adparallelengine_core::remote::dial_in)) and never runs the user's `main`.
//!
//! Shared values reach a pod over its connection into a private directory on its local disk,
//! removed when it exits: pods do not see the driver's file system, unless a volume is
//! mounted at the driver's `path_shared` (`shared_volume`).

pub use adparallelengine_core::remote::dial_in::{DIAL_PATIENCE, ENV_DRIVER, ENV_NAME, ENV_SECRET};

adparallelengine_core::worker_entry!(dial_in_if_asked);

/// If this process is a worker pod (its environment names a driver), serves it and exits;
/// otherwise returns at once.
pub fn dial_in_if_asked() {
    let open_volume = |dir: &str| {
        adparallelengine_store::open_dir_view(dir).map_err(|e| {
            adparallelengine_core::Error::Store(format!("the shared volume {dir} is not mounted in this pod: {e}"))
        })
    };
    adparallelengine_core::remote::dial_in::dial_in_if_asked(&open_volume, &adparallelengine_store::local_dir_store);
}
