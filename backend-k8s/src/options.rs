//! What the engine asks of the cluster: the worker pods' image and settings, and how the
//! driver is reached. Every option has a builder method on [`K8sBuilder`]; the common ones
//! also come from the environment ([`K8sBuilder::from_env`]), so that `Kind::K8s` runs
//! the Python original's programs unchanged.

use crate::k8s_err;
use adparallelengine_core::Result;
use k8s_openapi::api::core::v1::{EnvVar, PodTemplateSpec, ResourceRequirements, Toleration};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The worker pods' image (the user's program, built into it).
pub const ENV_IMAGE: &str = "ADPARALLELENGINE_K8S_IMAGE";
/// The namespace of the worker Job (default: the kubeconfig's).
pub const ENV_NAMESPACE: &str = "ADPARALLELENGINE_K8S_NAMESPACE";
/// The program's path in the image (default: this executable's path).
pub const ENV_COMMAND: &str = "ADPARALLELENGINE_K8S_COMMAND";
/// The driver's address as pods reach it: `host` or `host:port`.
pub const ENV_ADVERTISE: &str = "ADPARALLELENGINE_K8S_ADVERTISE";
/// Seconds the worker pods have to start and dial in.
pub const ENV_START_TIMEOUT: &str = "ADPARALLELENGINE_K8S_START_TIMEOUT";
/// The worker pods' service account.
pub const ENV_SERVICE_ACCOUNT: &str = "ADPARALLELENGINE_K8S_SERVICE_ACCOUNT";
/// An image pull secret for the worker pods.
pub const ENV_PULL_SECRET: &str = "ADPARALLELENGINE_K8S_PULL_SECRET";

/// Settings of a Kubernetes engine. Start from [`K8sBuilder::new`] or
/// [`K8sBuilder::from_env`], then [`build`](K8sBuilder::build).
///
/// ```no_run
/// use adparallelengine_k8s::K8sBuilder;
/// use std::time::Duration;
/// let backend = K8sBuilder::new(8)
///     .image("registry.example.com/team/backtest:1.4")
///     .command(["/usr/local/bin/backtest"])
///     .namespace("research")
///     .env("RUST_LOG", "info")
///     .node_selector("pool", "compute")
///     .start_timeout(Duration::from_secs(300))
///     .build()?;
/// # Ok::<(), adparallelengine_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct K8sBuilder {
    pub(crate) workers: usize,
    pub(crate) kubeconfig: Option<PathBuf>,
    pub(crate) namespace: Option<String>,
    pub(crate) image: Option<String>,
    pub(crate) command: Option<Vec<String>>,
    pub(crate) service_account: Option<String>,
    pub(crate) resources: Option<ResourceRequirements>,
    pub(crate) env: Vec<EnvVar>,
    pub(crate) node_selector: BTreeMap<String, String>,
    pub(crate) tolerations: Vec<Toleration>,
    pub(crate) image_pull_secrets: Vec<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) pod_template: Option<PodTemplateSpec>,
    pub(crate) advertise: Option<String>,
    pub(crate) listen: String,
    pub(crate) start_timeout: Duration,
    pub(crate) ttl_seconds_after_finished: i32,
    pub(crate) backoff_limit: Option<i32>,
    pub(crate) path_shared: Option<PathBuf>,
    pub(crate) shared_volume: bool,
}

impl K8sBuilder {
    /// An engine of up to `workers` pods (at least 1).
    pub fn new(workers: usize) -> Self {
        K8sBuilder {
            workers: workers.max(1),
            kubeconfig: None,
            namespace: None,
            image: None,
            command: None,
            service_account: None,
            resources: None,
            env: Vec::new(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            image_pull_secrets: Vec::new(),
            labels: BTreeMap::new(),
            pod_template: None,
            advertise: None,
            listen: "0.0.0.0".into(),
            start_timeout: Duration::from_secs(180),
            ttl_seconds_after_finished: 600,
            backoff_limit: None,
            path_shared: None,
            shared_volume: false,
        }
    }

    /// [`new`](Self::new), with the options the environment gives: `ADPARALLELENGINE_K8S_IMAGE`,
    /// `_NAMESPACE`, `_COMMAND` (the program's path in the image), `_ADVERTISE`,
    /// `_START_TIMEOUT` (seconds), `_SERVICE_ACCOUNT`, `_PULL_SECRET`; the cluster is
    /// `KUBECONFIG`'s (or the pod's own, in a cluster). A malformed value is an error.
    pub fn from_env(workers: usize) -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut b = K8sBuilder::new(workers);
        b.image = var(ENV_IMAGE);
        b.namespace = var(ENV_NAMESPACE);
        b.command = var(ENV_COMMAND).map(|c| c.split_whitespace().map(str::to_string).collect());
        b.advertise = var(ENV_ADVERTISE);
        b.service_account = var(ENV_SERVICE_ACCOUNT);
        b.image_pull_secrets.extend(var(ENV_PULL_SECRET));
        if let Some(t) = var(ENV_START_TIMEOUT) {
            let secs: f64 = t
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s > 0.0)
                .ok_or_else(|| k8s_err(format!("{ENV_START_TIMEOUT}={t:?} is not a positive number of seconds")))?;
            b.start_timeout = Duration::from_secs_f64(secs);
        }
        Ok(b)
    }

    /// The kubeconfig to use (default: `KUBECONFIG`, `~/.kube/config`, or in a pod its
    /// service account).
    pub fn kubeconfig(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }

    /// The namespace of the worker Job and its Secret (default: the kubeconfig's).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    /// The worker pods' image: this program, built into it (required unless the
    /// [`pod_template`](Self::pod_template) names one).
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// The program's path in the image and its arguments (default: this executable's path;
    /// a worker never runs `main`, so arguments do not matter).
    pub fn command<S: Into<String>>(mut self, command: impl IntoIterator<Item = S>) -> Self {
        self.command = Some(command.into_iter().map(Into::into).collect());
        self
    }

    /// The worker pods' service account.
    pub fn service_account(mut self, name: impl Into<String>) -> Self {
        self.service_account = Some(name.into());
        self
    }

    /// The worker container's resource requests and limits.
    pub fn resources(mut self, r: ResourceRequirements) -> Self {
        self.resources = Some(r);
        self
    }

    /// An environment variable of every worker.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push(EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() });
        self
    }

    /// A node label the worker pods must run on.
    pub fn node_selector(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.node_selector.insert(key.into(), value.into());
        self
    }

    /// Tolerations of the worker pods.
    pub fn tolerations(mut self, t: impl IntoIterator<Item = Toleration>) -> Self {
        self.tolerations.extend(t);
        self
    }

    /// An image pull secret of the worker pods.
    pub fn image_pull_secret(mut self, name: impl Into<String>) -> Self {
        self.image_pull_secrets.push(name.into());
        self
    }

    /// A label of the Job and its pods (besides the run's own).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// A full pod template for anything else (volumes, affinity, sidecars...). The worker is
    /// its container named `worker`, else its first; the options above are applied on top.
    pub fn pod_template(mut self, t: PodTemplateSpec) -> Self {
        self.pod_template = Some(t);
        self
    }

    /// The driver's address as pods reach it: `host` (any free port) or `host:port` (that
    /// port is listened on). Default: this machine's address on its route to the API server,
    /// which is the pod IP when the driver runs in the cluster.
    pub fn advertise(mut self, addr: impl Into<String>) -> Self {
        self.advertise = Some(addr.into());
        self
    }

    /// The address the driver listens on (default `0.0.0.0`, every interface).
    pub fn listen(mut self, host: impl Into<String>) -> Self {
        self.listen = host.into();
        self
    }

    /// How long pods have to start and dial in before the job fails naming each missing pod
    /// and why (default 180 s).
    pub fn start_timeout(mut self, t: Duration) -> Self {
        self.start_timeout = t;
        self
    }

    /// Seconds the Job is kept after it finished, should the driver die without deleting it
    /// (default 600).
    pub fn ttl_seconds_after_finished(mut self, s: i32) -> Self {
        self.ttl_seconds_after_finished = s;
        self
    }

    /// Failed pods the Job controller replaces before it gives up (default: 3 per worker).
    pub fn backoff_limit(mut self, n: i32) -> Self {
        self.backoff_limit = Some(n);
        self
    }

    /// Where the driver keeps shared values (the Python original's `path_shared`; default: the system
    /// temp dir). They are sent to each pod over its connection, unless
    /// [`shared_volume`](Self::shared_volume) says pods see this directory.
    pub fn path_shared(mut self, dir: Option<PathBuf>) -> Self {
        self.path_shared = dir;
        self
    }

    /// Pods see [`path_shared`](Self::path_shared) at the same path (a volume mounted in the
    /// driver and, through the [`pod_template`](Self::pod_template), in every pod): shared
    /// values are read from it, not sent.
    pub fn shared_volume(mut self, on: bool) -> Self {
        self.shared_volume = on;
        self
    }

    /// Connects to the cluster. Nothing is created until the first job.
    pub fn build(self) -> Result<crate::K8sBackend> {
        crate::K8sBackend::from_builder(self)
    }
}
