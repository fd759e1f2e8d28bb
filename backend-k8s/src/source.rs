//! Where a run's workers come from: the Job is created with the first job, and its pods
//! dial in through the [`Listener`]. Waiting for them is bounded by the start timeout, and
//! the pods' states are looked at meanwhile, so a pod that cannot start is named with its
//! reason instead of a hang.

use crate::cluster::{Cluster, PodState};
use crate::conn::PodConn;
use crate::k8s_err;
use crate::listener::{Arrival, Listener};
use adparallelengine_core::remote::ConnSource;
use adparallelengine_core::Result;
use crossbeam_channel::RecvTimeoutError;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the pods' states are read while waiting for them.
const LOOK_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct PodSource {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) listener: Listener,
    /// The address pods dial (for errors).
    pub(crate) driver: String,
    /// Whether the run's Secret and Job are created yet, or the run failed.
    pub(crate) state: Mutex<RunState>,
    pub(crate) start_timeout: Duration,
    /// Connected pods.
    pub(crate) live: Arc<AtomicUsize>,
    /// Pods that dialed in (by name), for the error that names the missing ones.
    pub(crate) arrived: Mutex<HashSet<String>>,
}

/// Where a run's objects are.
pub(crate) enum RunState {
    /// Not created yet (they are with the first job).
    ToCreate(Box<(Secret, Job)>),
    /// Created.
    Created,
    /// Pods could not start: the objects were deleted, and later jobs fail with this at once.
    Failed(String),
}

impl PodSource {
    fn ensure_created(&self) -> Result<()> {
        let mut g = self.state.lock().map_err(|_| k8s_err("the run's state is poisoned".into()))?;
        match &*g {
            RunState::Created => {}
            RunState::Failed(why) => {
                return Err(k8s_err(format!("the run's worker pods could not start, so it was ended: {why}")))
            }
            RunState::ToCreate(objects) => {
                let (secret, job) = (**objects).clone();
                tracing::info!(
                    job = self.cluster.names.job,
                    namespace = self.cluster.namespace,
                    "creating the worker Job"
                );
                self.cluster.create(secret, job)?;
                *g = RunState::Created;
            }
        }
        Ok(())
    }

    /// Waits for a pod with the run's whole patience: failing that, the run is ended (its Job
    /// and Secret deleted, so pods that cannot start do not retry for ever) and the reason
    /// kept for later jobs.
    fn wait_or_end(&self, worker: usize) -> Result<PodConn> {
        let got = self.wait_for(worker, self.start_timeout);
        if let Err(e) = &got {
            if let Ok(mut g) = self.state.lock() {
                if matches!(*g, RunState::Created) {
                    *g = RunState::Failed(e.to_string());
                    drop(g);
                    self.cluster.delete();
                }
            }
        }
        got
    }

    /// The next pod to dial in, within `wait`.
    fn wait_for(&self, worker: usize, wait: Duration) -> Result<PodConn> {
        self.ensure_created()?;
        let began = Instant::now();
        let mut next_look = began + LOOK_EVERY;
        let mut seen: Vec<PodState> = Vec::new();
        loop {
            let left = wait.saturating_sub(began.elapsed());
            match self.listener.arrivals().recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(a) => return Ok(self.admit(worker, a)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(k8s_err("the driver's listener stopped".into())),
            }
            if Instant::now() >= next_look {
                next_look = Instant::now() + LOOK_EVERY;
                // An API call that fails (a flaky API server) only leaves the pods unread.
                if let Some(why) = self.cluster.job_failure().unwrap_or(None) {
                    let pods = self.cluster.pods().unwrap_or_default();
                    return Err(k8s_err(format!(
                        "the worker Job {} failed ({why}); {}",
                        self.cluster.names.job,
                        self.describe_missing(&pods)
                    )));
                }
                seen = self.cluster.pods().unwrap_or(seen);
            }
            if began.elapsed() >= wait {
                let seen = self.cluster.pods().unwrap_or(seen);
                let refused = match self.listener.refused() {
                    0 => String::new(),
                    n => format!("; {n} connection(s) refused (wrong secret or not a worker)"),
                };
                return Err(k8s_err(format!(
                    "worker {worker}: no pod dialed in to {} within {wait:?}; {}{refused}",
                    self.driver,
                    self.describe_missing(&seen)
                )));
            }
        }
    }

    /// A pod that dialed in, as a connection of the run.
    fn admit(&self, worker: usize, a: Arrival) -> PodConn {
        self.live.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut g) = self.arrived.lock() {
            g.insert(a.name.clone());
        }
        tracing::debug!(worker, pod = a.name, peer = %a.peer, "pod joined");
        PodConn {
            stream: Arc::new(a.stream),
            pod: a.name,
            peer: a.peer,
            cluster: Arc::clone(&self.cluster),
            live: Arc::clone(&self.live),
        }
    }

    /// The pods that have not dialed in, and what the cluster says of them.
    fn describe_missing(&self, pods: &[PodState]) -> String {
        let arrived = self.arrived.lock().map(|g| g.clone()).unwrap_or_default();
        let missing: Vec<String> =
            pods.iter().filter(|p| !arrived.contains(&p.name)).map(ToString::to_string).collect();
        match missing.is_empty() {
            true => format!("the Job {} has no pod waiting to start", self.cluster.names.job),
            false => missing.join("; "),
        }
    }
}

impl ConnSource<PodConn> for PodSource {
    fn connect(&self, worker: usize) -> Result<PodConn> {
        self.wait_or_end(worker)
    }

    /// A replacement for a pod lost mid-job: while other pods work, only one that has dialed
    /// in already (the dispatch loop asks again every 250 ms, so the Job controller's
    /// replacement joins the running job); when none is left, up to the start timeout.
    fn replace(&self, worker: usize) -> Result<PodConn> {
        match self.live.load(Ordering::Acquire) {
            0 => self.wait_or_end(worker),
            _ => match self.listener.arrivals().try_recv() {
                Ok(a) => Ok(self.admit(worker, a)),
                Err(_) => Err(k8s_err("no replacement pod has dialed in yet".into())),
            },
        }
    }
}
