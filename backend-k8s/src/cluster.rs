//! One run's objects on the cluster: created with the first job (the Job, then its Secret,
//! owned by the Job), watched while pods start, deleted (the Job with foreground propagation,
//! so its pods go first) when the engine goes.

use crate::api::{runtime, Api};
use crate::job_spec::RunNames;
use adparallelengine_core::remote::dial_in::{Launcher, RunEnd, WorkerStatus};
use adparallelengine_core::Result;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api as Resource, DeleteParams, ListParams, PostParams};
use std::fmt;
use std::sync::Mutex;

/// A worker pod as the driver sees it while waiting for pods to dial in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodState {
    /// The pod's name.
    pub name: String,
    /// Its phase (`Pending`, `Running`, `Failed`...).
    pub phase: String,
    /// Why it is not running, when the cluster says: `ErrImagePull: ...`, `Unschedulable:
    /// ...`, `CrashLoopBackOff`, `exited with code 3`.
    pub problem: Option<String>,
}

impl fmt::Display for PodState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Some(p) => write!(f, "pod {} ({}): {p}", self.name, self.phase),
            None => write!(f, "pod {} ({})", self.name, self.phase),
        }
    }
}

impl PodState {
    /// A pod's state from the API's view of it.
    pub fn of(pod: &Pod) -> PodState {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let phase = status.phase.clone().unwrap_or_else(|| "Pending".into());
        let with_message = |reason: &str, message: Option<&String>| match message {
            Some(m) if !m.is_empty() => format!("{reason}: {m}"),
            _ => reason.to_string(),
        };
        let mut problem = None;
        for c in status.container_statuses.iter().flatten() {
            let Some(state) = &c.state else { continue };
            if let Some(w) = &state.waiting {
                let reason = w.reason.clone().unwrap_or_default();
                if !matches!(reason.as_str(), "" | "ContainerCreating" | "PodInitializing") {
                    problem = Some(with_message(&reason, w.message.as_ref()));
                }
            } else if let Some(t) = &state.terminated {
                let what = format!("exited with code {}", t.exit_code);
                problem = Some(match &t.reason {
                    Some(r) => format!("{what} ({})", with_message(r, t.message.as_ref())),
                    None => what,
                });
            }
        }
        if problem.is_none() {
            for c in status.conditions.iter().flatten() {
                if c.type_ == "PodScheduled" && c.status == "False" {
                    problem = Some(with_message(c.reason.as_deref().unwrap_or("Unschedulable"), c.message.as_ref()));
                }
            }
        }
        PodState { name, phase, problem }
    }
}

/// A run's objects and the calls on them; the launcher of its pods.
pub(crate) struct Cluster {
    pub(crate) api: Api,
    pub(crate) namespace: String,
    pub(crate) names: RunNames,
    /// The run's Secret and Job until they are created (with the first job).
    pub(crate) to_create: Mutex<Option<Box<(Secret, Job)>>>,
}

/// The pods of a run's Job, as the dial-in layer asks for them.
impl Launcher for Cluster {
    fn noun(&self) -> &'static str {
        "pod"
    }

    fn launch(&self, _end: RunEnd) -> Result<()> {
        let objects = self.to_create.lock().ok().and_then(|mut g| g.take());
        let Some(objects) = objects else { return Ok(()) };
        let (secret, job) = *objects;
        tracing::info!(job = self.names.job, namespace = self.namespace, "creating the worker Job");
        self.create(secret, job)
    }

    /// A Job that exhausted its `backoffLimit`. An API call that fails (a flaky API server)
    /// only leaves the Job unread.
    fn failure(&self) -> Option<String> {
        let why = self.job_failure().unwrap_or(None)?;
        Some(format!("the worker Job {} failed ({why})", self.names.job))
    }

    fn workers(&self) -> Vec<WorkerStatus> {
        let pods = self.pods().unwrap_or_default();
        pods.into_iter().map(|p| WorkerStatus { state: p.to_string(), name: p.name }).collect()
    }

    /// Deletes the pod at once; the Job controller replaces it.
    fn stop_worker(&self, name: &str) {
        self.delete_pod(name.to_string());
    }

    fn stop(&self) {
        self.delete();
    }

    fn emergency_stop(&self) -> Option<Box<dyn Fn() + Send + Sync>> {
        Some(Box::new(self.deleter()))
    }
}

impl Cluster {
    /// Creates the run's Job, then its Secret, owned by the Job (so that the garbage collector
    /// deletes it with the Job, even when the driver is dead: the TTL removes the Job). Should
    /// the Secret not be made, the Job is deleted again.
    ///
    /// The order: the Job's uid is known only once it exists, and creating the Secret with its
    /// owner needs no right beyond `create` (patching an owner in afterwards would). Pods refer
    /// to the Secret by name; one whose container is configured before the Secret exists waits
    /// (`CreateContainerConfigError`) and the kubelet retries it. In practice the Secret is
    /// there first: it is made one API call after the Job, before the Job controller, the
    /// scheduler and an image pull have brought any pod that far.
    pub(crate) fn create(&self, secret: Secret, job: Job) -> Result<()> {
        let ns = self.namespace.clone();
        let made =
            self.api.call(&format!("create the Job {} in namespace {ns}", self.names.job), move |c| async move {
                Resource::<Job>::namespaced(c, &ns).create(&PostParams::default(), &job).await
            })?;
        let owned = crate::job_spec::owned_by(secret, &made).and_then(|secret| {
            let ns = self.namespace.clone();
            self.api.call(&format!("create the Secret {} in namespace {ns}", self.names.secret), move |c| async move {
                Resource::<Secret>::namespaced(c, &ns).create(&PostParams::default(), &secret).await.map(|_| ())
            })
        });
        if owned.is_err() {
            self.delete();
        }
        owned
    }

    /// The run's pods now.
    pub(crate) fn pods(&self) -> Result<Vec<PodState>> {
        let (ns, selector) = (self.namespace.clone(), self.names.selector());
        self.api.call("list the worker pods", move |c| async move {
            let list = Resource::<Pod>::namespaced(c, &ns).list(&ListParams::default().labels(&selector)).await?;
            Ok(list.items.iter().map(PodState::of).collect())
        })
    }

    /// Why the Job failed, if it did (its pods failed more than `backoffLimit` times).
    pub(crate) fn job_failure(&self) -> Result<Option<String>> {
        let (ns, name) = (self.namespace.clone(), self.names.job.clone());
        self.api.call("read the worker Job", move |c| async move {
            let job = Resource::<Job>::namespaced(c, &ns).get_opt(&name).await?;
            let conditions = job.and_then(|j| j.status).and_then(|s| s.conditions).unwrap_or_default();
            Ok(conditions
                .into_iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
                .map(|c| format!("{}: {}", c.reason.unwrap_or_default(), c.message.unwrap_or_default())))
        })
    }

    /// Deletes a pod at once (a worker whose item overran its time); the Job controller
    /// replaces it.
    pub(crate) fn delete_pod(&self, pod: String) {
        let ns = self.namespace.clone();
        self.api.spawn(move |c| async move {
            let dp = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::background() };
            if let Err(e) = Resource::<Pod>::namespaced(c, &ns).delete(&pod, &dp).await {
                tracing::debug!(pod, error = %e, "cannot delete a worker pod");
            }
        });
    }

    /// Deletes the run's Job (foreground: its pods and Secret go first) and, should the garbage
    /// collector be slow or the Secret not be owned, the Secret itself.
    pub(crate) fn delete(&self) {
        let (ns, names) = (self.namespace.clone(), self.names.clone());
        let done = self.api.call("delete the worker Job", move |c| async move {
            delete_run(c, &ns, &names).await;
            Ok(())
        });
        if let Err(e) = done {
            tracing::warn!(job = self.names.job, error = %e, "the worker Job may be left; its TTL will remove it");
        }
    }

    /// What deletes the run when the API thread cannot (Ctrl-C): a fresh client on a fresh
    /// runtime.
    pub(crate) fn deleter(&self) -> impl Fn() + Send + Sync + 'static {
        let (config, ns, names) = (self.api.config.clone(), self.namespace.clone(), self.names.clone());
        move || {
            let Ok(rt) = runtime() else { return };
            rt.block_on(async {
                let Ok(client) = kube::Client::try_from(config.clone()) else { return };
                let _ = tokio::time::timeout(crate::api::CALL_TIMEOUT, delete_run(client, &ns, &names)).await;
            });
        }
    }
}

async fn delete_run(c: kube::Client, ns: &str, names: &RunNames) {
    let jobs = Resource::<Job>::namespaced(c.clone(), ns);
    if let Err(e) = jobs.delete(&names.job, &DeleteParams::foreground()).await {
        if !is_not_found(&e) {
            tracing::warn!(job = names.job, error = %e, "cannot delete the worker Job");
        }
    }
    if let Err(e) = Resource::<Secret>::namespaced(c, ns).delete(&names.secret, &DeleteParams::default()).await {
        if !is_not_found(&e) {
            tracing::warn!(secret = names.secret, error = %e, "cannot delete the run's Secret");
        }
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}
