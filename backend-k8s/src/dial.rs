//! A worker pod's side: the program, started in a pod with the driver's address and the
//! run's secret in its environment, becomes a dial-in worker before `main` (engine-core's
//! [`dial_in`](adparallelengine_core::remote::dial_in)) and never runs the user's `main`.
//!
//! Shared values reach a pod over its connection into a private directory on its local disk,
//! removed when it exits: pods do not see the driver's file system, unless a volume is
//! mounted at the driver's `path_shared` (`shared_volume`).

pub use adparallelengine_core::remote::dial_in::{DIAL_PATIENCE, ENV_DRIVER, ENV_NAME, ENV_SECRET};
pub use adparallelengine_store::dial_in_worker as dial_in_if_asked;

adparallelengine_core::worker_entry!(adparallelengine_store::dial_in_worker);
