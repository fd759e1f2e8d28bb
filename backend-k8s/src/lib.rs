//! The Kubernetes backend, under construction: worker pods of one `batch/v1` Job that dial
//! back to the driver over TCP (engine-core's `knock` and `StreamTransport`). This version
//! holds what is built and tested so far: a kube-rs client for a kubeconfig (plain HTTP for a
//! local API, rustls for real clusters), the Job the driver creates, and the [`listener`]
//! that admits only workers knocking with the run's secret. `Kind::K8s` still reports that
//! the backend is not built.

pub mod dial;
pub mod listener;

use engine_core::{Error, Result};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

fn k8s_err(message: String) -> Error {
    Error::Backend { backend: "k8s", message }
}

/// A single-threaded tokio runtime for the driver's calls to the API server (the engine
/// itself is synchronous; its calls are few: create, watch, delete).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| k8s_err(format!("cannot start the Kubernetes client's runtime: {e}")))
}

/// A client for the cluster of the kubeconfig at `path`, its current context.
pub async fn client_from_kubeconfig(path: &std::path::Path) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| k8s_err(format!("cannot read the kubeconfig {}: {e}", path.display())))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| k8s_err(format!("bad kubeconfig {}: {e}", path.display())))?;
    kube::Client::try_from(config).map_err(|e| k8s_err(format!("cannot make a Kubernetes client: {e}")))
}

/// What the worker pods run and how many.
#[derive(Debug, Clone)]
pub struct WorkerJob {
    /// The Job's name.
    pub name: String,
    /// The container image (the user's program, built into it).
    pub image: String,
    /// The command (the program's path in the image) and its arguments.
    pub command: Vec<String>,
    /// Environment of every worker (how to reach the driver, the run's secret...).
    pub env: Vec<(String, String)>,
    /// Pods at once: the engine's `max_workers`.
    pub parallelism: i32,
    /// Labels of the Job and its pods (the run's, to find and clean up).
    pub labels: BTreeMap<String, String>,
    /// Seconds the Job is kept after it finished (its pods exit when the driver goes).
    pub ttl_seconds_after_finished: i32,
}

impl WorkerJob {
    /// The `batch/v1` Job: `parallelism` pods, never restarted in place (a failed pod is
    /// replaced by the Job controller, up to `backoffLimit`).
    pub fn to_job(&self) -> Job {
        let env =
            self.env.iter().map(|(k, v)| EnvVar { name: k.clone(), value: Some(v.clone()), ..Default::default() });
        let container = Container {
            name: "worker".into(),
            image: Some(self.image.clone()),
            command: Some(self.command.clone()),
            env: Some(env.collect()),
            ..Default::default()
        };
        Job {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(self.labels.clone()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                parallelism: Some(self.parallelism),
                completions: Some(self.parallelism),
                backoff_limit: Some(self.parallelism * 3),
                ttl_seconds_after_finished: Some(self.ttl_seconds_after_finished),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta { labels: Some(self.labels.clone()), ..Default::default() }),
                    spec: Some(PodSpec {
                        containers: vec![container],
                        restart_policy: Some("Never".into()),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}
