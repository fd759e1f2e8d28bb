//! What a dial-in backend brings: how its workers are started, seen and stopped. Everything
//! else (the door, waiting for workers with a deadline, replacing lost ones, the jobs) is
//! [`DialIn`](super::DialIn)'s.

use super::RunEnd;
use crate::error::Result;

/// A worker as its launcher sees it while the driver waits for it to dial in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    /// The name it knocks with (a pod's name, a Dask task's key).
    pub name: String,
    /// What the launcher says of it, in words: `pod adpe-x-7hq2k (Pending): ErrImagePull:
    /// ...`, `task adpe-x-1 (pending): no worker has the resources {"ADPE": 1}`.
    pub state: String,
}

/// Starts, watches and stops the workers of one dial-in run (a Kubernetes Job, Dask tasks).
///
/// Each worker runs this same program with [`ENV_DRIVER`](super::ENV_DRIVER),
/// [`ENV_SECRET`](super::ENV_SECRET) and, where it has a name of its own,
/// [`ENV_NAME`](super::ENV_NAME) in its environment; the program's pre-`main` entry then
/// dials the driver ([`dial_in_if_asked`](super::dial_in_if_asked)). A launcher never counts
/// results: a worker started twice (a task rerun, a pod replaced) is just a new connection,
/// and items are accounted for by the engine alone.
///
/// ```
/// use adparallelengine_core::remote::dial_in::{Launcher, RunEnd, WorkerStatus};
/// /// Workers started by someone else, e.g. by hand: nothing to start or stop.
/// struct ByHand;
/// impl Launcher for ByHand {
///     fn launch(&self, _end: RunEnd) -> adparallelengine_core::Result<()> { Ok(()) }
///     fn failure(&self) -> Option<String> { None }
///     fn workers(&self) -> Vec<WorkerStatus> { Vec::new() }
///     fn stop_worker(&self, _name: &str) {}
///     fn stop(&self) {}
/// }
/// ```
pub trait Launcher: Send + Sync + 'static {
    /// The workers in words, for errors and logs (`"pod"`, `"Dask task"`).
    fn noun(&self) -> &'static str {
        "worker"
    }

    /// Starts the run's workers (once, with the first job). `end` fails the run from the
    /// launcher's side later, e.g. when a watcher sees the cluster go (see [`RunEnd`]).
    fn launch(&self, end: RunEnd) -> Result<()>;

    /// Why the run's workers can no longer come, if they cannot (a Job out of retries, a
    /// scheduler gone): the wait for workers fails at once with this.
    fn failure(&self) -> Option<String>;

    /// The workers the launcher knows of now, for the error that names the missing ones;
    /// empty when it cannot tell.
    fn workers(&self) -> Vec<WorkerStatus>;

    /// Stops one worker now, by the name it knocked with (an item overran its time, or it
    /// misbehaved); its connection is shut already. The launcher may start a replacement.
    fn stop_worker(&self, name: &str);

    /// Ends the run's workers and removes what the launcher made. Called when the engine is
    /// dropped and when the run fails; may be called more than once.
    fn stop(&self);

    /// What ends the run from the cleanup that runs on Ctrl-C, when the process is about to
    /// exit and the launcher's own threads may be stuck; `None` (the default) if
    /// [`stop`](Self::stop) is enough, or nothing outlives the driver anyway.
    fn emergency_stop(&self) -> Option<Box<dyn Fn() + Send + Sync>> {
        None
    }
}
