//! The Kubernetes backend: the tasks run in the pods of one `batch/v1` Job, the same program
//! built into a container image, and each pod dials back to the driver over TCP.
//!
//! - The first job creates a Job of `max_workers` pods (named and labelled with a random run
//!   id of its own, `ttlSecondsAfterFinished`) running this program, then a Secret owned by
//!   the Job holding a random 256-bit secret for the run (it goes with the Job).
//!   A pod becomes a worker before `main` ([`dial`]): it connects to the driver's advertised
//!   address, knocks with the secret, and serves jobs until the driver closes its connection.
//!   The driver's door (engine-core's [`dial_in`](adparallelengine_core::remote::dial_in)
//!   layer, which this backend brings a [`Launcher`](adparallelengine_core::remote::dial_in::Launcher)
//!   to) refuses (and logs) any connection without the secret within one deadline, reads
//!   every knock on one thread and caps the connections waiting to knock, and frames are
//!   bounded in size both ways.
//! - Pods are engine-core's [`pooled`](adparallelengine_core::remote) workers, like worker processes:
//!   they stay connected between jobs; scheduling, retries of a lost pod's items, item
//!   timeouts and ordering are engine-core's. A pod lost mid-item has its items re-run on the
//!   others; the Job controller starts a replacement, which joins the running job as soon as
//!   it dials in.
//! - `Shared` values are sent once to each pod over its connection, into a private directory
//!   on the pod's disk ([`K8sBuilder::shared_volume`] reads them from a mounted volume
//!   instead).
//! - The engine deletes the Job (foreground propagation: its pods first) and the Secret when
//!   it is dropped, on error, and on Ctrl-C. If the driver dies, pods exit when their
//!   connection drops and the TTL removes the Job, and with it its Secret (owned by the Job).
//!   A peer gone silent (a node lost, a partition) is noticed by TCP keepalive on both ends within about
//!   [`DEAD_AFTER`](adparallelengine_core::remote::DEAD_AFTER): the driver counts the pod lost, and
//!   the pod exits non-zero, so that the Job controller replaces it.
//! - Pods that do not dial in within the start timeout fail the job with an error naming each
//!   missing pod and what the cluster says of it (`ErrImagePull`, `Unschedulable`,
//!   `CrashLoopBackOff`, an exit code); a Job that exhausted its `backoffLimit` fails it at
//!   once. Either ends the run: its Job and Secret are deleted at once (pods that cannot start
//!   would retry for ever), and later jobs of the engine fail with the same reason.
//!
//! ```no_run
//! use adparallelengine_k8s::K8sBuilder;
//! use adparallelengine_core::Engine;
//! adparallelengine_core::task!(Sq = |x: u64| -> u64 { x * x });
//! let backend = K8sBuilder::new(4).image("registry.example.com/me/sq:1").command(["/app/sq"]).build()?;
//! let engine = Engine::from_backend(backend);
//! assert_eq!(engine.map(Sq, 0..5u64).run()?, vec![0, 1, 4, 9, 16]);
//! # Ok::<(), adparallelengine_core::Error>(())
//! ```
#![warn(missing_docs)]

pub mod api;
pub mod cluster;
pub mod dial;
pub mod job_spec;
pub mod options;

pub use api::{client_from_kubeconfig, runtime};
pub use options::K8sBuilder;

use adparallelengine_core::remote::dial_in::{advertised, DialIn, OverDialIn, ShareVia};
use adparallelengine_core::{Error, Result};
use std::sync::{Arc, Mutex};

fn k8s_err(message: String) -> Error {
    Error::Backend { backend: "k8s", message }
}

/// Worker pods of a Kubernetes Job. Build it with [`K8sBuilder`].
pub struct K8sBackend {
    /// The pods, over the dial-in layer (dropped first: it stops the run's Job).
    pods: DialIn,
    cluster: Arc<cluster::Cluster>,
}

impl std::fmt::Debug for K8sBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("K8sBackend")
            .field("workers", &self.pods.max_workers())
            .field("namespace", &self.cluster.namespace)
            .field("job", &self.cluster.names.job)
            .field("driver", &self.pods.address())
            .finish()
    }
}

impl K8sBackend {
    fn from_builder(opts: K8sBuilder) -> Result<K8sBackend> {
        // Serve here if this process is a worker pod whose pre-main entry did not run.
        adparallelengine_core::remote::become_worker_if_asked();
        if opts.shared_volume && opts.path_shared.is_none() {
            return Err(Error::Config("`shared_volume` needs `path_shared`: the directory pods see".into()));
        }
        let api = api::Api::start(opts.kubeconfig.as_deref())?;
        let namespace = opts.namespace.clone().unwrap_or_else(|| api.config.default_namespace.clone());
        let url = &api.config.cluster_url;
        let toward = (url.host().unwrap_or("localhost"), url.port_u16().unwrap_or(443));
        let (bind, host) = advertised("k8s", opts.advertise.as_deref(), &opts.listen, toward)?;
        let listening = DialIn::listen("k8s", &bind, &host)?;
        // The names are seen by anyone who may list Jobs: their randomness is their own.
        let names = job_spec::RunNames::random()?;
        let driver = listening.address().to_string();
        let exe = std::env::current_exe()
            .map_err(|e| k8s_err(format!("cannot find this executable (the pods' default command): {e}")))?;
        let job = job_spec::worker_job(&opts, &names, &driver, &[exe.to_string_lossy().into_owned()])?;
        let run_secret = job_spec::run_secret(&names, &listening.secret().to_hex(), &opts.labels);
        let cluster = Arc::new(cluster::Cluster {
            api,
            namespace,
            names,
            to_create: Mutex::new(Some(Box::new((run_secret, job)))),
        });
        let store = Arc::new(adparallelengine_store::LazyDirStore::new(opts.path_shared.clone()));
        let share = match opts.shared_volume {
            false => ShareVia::ship(store),
            true => ShareVia::directory(store.clone(), move || store.dir().map(|d| d.to_string_lossy().into_owned())),
        };
        let pods = listening.serve(cluster.clone(), opts.workers, opts.start_timeout, share);
        Ok(K8sBackend { pods, cluster })
    }

    /// The run's Job (created with the first job).
    pub fn job_name(&self) -> &str {
        &self.cluster.names.job
    }

    /// The namespace of the run's Job and Secret.
    pub fn namespace(&self) -> &str {
        &self.cluster.namespace
    }

    /// The label selector of the run's Job and pods.
    pub fn selector(&self) -> String {
        self.cluster.names.selector()
    }

    /// The address pods dial.
    pub fn driver_address(&self) -> &str {
        self.pods.address()
    }

    /// Connections refused so far (no knock, or a wrong secret).
    pub fn refused_connections(&self) -> usize {
        self.pods.refused_connections()
    }

    /// Pods connected and idle between jobs.
    pub fn idle_workers(&self) -> usize {
        self.pods.idle_workers()
    }
}

/// Everything of `Backend` is the dial-in layer's: pods are dial-in workers.
impl OverDialIn for K8sBackend {
    fn dial_in(&self) -> &DialIn {
        &self.pods
    }
}
