//! The objects a run creates: the worker Job, and a Secret holding the run's secret, owned
//! by the Job (so that it goes with the Job, whoever deletes it: the driver, or the TTL once
//! the driver is dead).

use crate::dial::{ENV_DRIVER, ENV_NAME, ENV_SECRET};
use crate::k8s_err;
use crate::options::K8sBuilder;
use adparallelengine_core::Result;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, LocalObjectReference, ObjectFieldSelector, PodSpec, PodTemplateSpec, Secret,
    SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;
use std::io::Read;

/// The label every object of a run carries, valued with the run's id.
pub const RUN_LABEL: &str = "adparallelengine.io/run";
/// The key of the run's secret in its Secret.
pub const SECRET_KEY: &str = "secret";

/// The names of one run's objects.
#[derive(Debug, Clone)]
pub struct RunNames {
    /// A random id (10 hex digits), in every name and in the [`RUN_LABEL`] label. Anyone who
    /// may list Jobs sees it: it owes nothing to the run's secret ([`RunNames::random`]).
    pub id: String,
    /// The Job's name.
    pub job: String,
    /// The Secret's name.
    pub secret: String,
}

impl RunNames {
    /// Names for a new run: an id of 40 random bits of its own, from the operating system
    /// (`/dev/urandom`, as for the run's secret), never derived from the secret.
    pub fn random() -> Result<Self> {
        let mut b = [0u8; 5];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(|e| k8s_err(format!("cannot read /dev/urandom for the run's name: {e}")))?;
        Ok(Self::new(&b.iter().map(|b| format!("{b:02x}")).collect::<String>()))
    }

    /// Names for the run `id`.
    pub fn new(id: &str) -> Self {
        RunNames { id: id.into(), job: format!("adpe-{id}"), secret: format!("adpe-{id}-secret") }
    }

    /// The run's labels, with the user's.
    pub fn labels(&self, user: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut l = user.clone();
        l.insert(RUN_LABEL.into(), self.id.clone());
        l.insert("app.kubernetes.io/managed-by".into(), "adparallelengine".into());
        l
    }

    /// The label selector of the run's pods.
    pub fn selector(&self) -> String {
        format!("{RUN_LABEL}={}", self.id)
    }
}

/// The Secret holding the run's secret (hex), read by the pods through `secretKeyRef`. It is
/// created after the Job, owned by it ([`owned_by`]).
pub fn run_secret(names: &RunNames, secret_hex: &str, user_labels: &BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(names.secret.clone()),
            labels: Some(names.labels(user_labels)),
            ..Default::default()
        },
        string_data: Some([(SECRET_KEY.to_string(), secret_hex.to_string())].into()),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// `secret` owned by the (created) Job `job`: the garbage collector deletes it once the Job is
/// gone, by the driver's hand or by `ttlSecondsAfterFinished` after the driver died.
///
/// Not `controller` (the Job controller manages pods, not Secrets), and not
/// `blockOwnerDeletion`: setting that needs the right to update the Job's finalizers on
/// clusters that enforce owner-reference permissions, and nothing needs the Job to wait for its
/// Secret. An error if the Job has no name or uid (it was not read back from the API).
pub fn owned_by(mut secret: Secret, job: &Job) -> Result<Secret> {
    let (Some(name), Some(uid)) = (job.metadata.name.clone(), job.metadata.uid.clone()) else {
        return Err(k8s_err(
            "the created Job came back without a name or uid: its Secret cannot be owned by it".into(),
        ));
    };
    secret.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name,
        uid,
        controller: Some(false),
        block_owner_deletion: Some(false),
    }]);
    Ok(secret)
}

/// The worker Job: `workers` pods at once (and as many completions: a pod exits 0 when the
/// driver closes its connection), never restarted in place (a failed pod is replaced by the
/// Job controller, up to `backoffLimit`), cleaned `ttlSecondsAfterFinished` after it ends.
/// The user's pod template, if any, is the base; the options are applied on top.
pub fn worker_job(opts: &K8sBuilder, names: &RunNames, driver: &str, default_command: &[String]) -> Result<Job> {
    let labels = names.labels(&opts.labels);
    let mut template = opts.pod_template.clone().unwrap_or_default();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels.get_or_insert_with(Default::default).extend(labels.clone());
    let spec = template.spec.get_or_insert_with(PodSpec::default);
    spec.restart_policy = Some("Never".into());
    if let Some(sa) = &opts.service_account {
        spec.service_account_name = Some(sa.clone());
    }
    if !opts.node_selector.is_empty() {
        spec.node_selector.get_or_insert_with(Default::default).extend(opts.node_selector.clone());
    }
    if !opts.tolerations.is_empty() {
        spec.tolerations.get_or_insert_with(Vec::new).extend(opts.tolerations.iter().cloned());
    }
    if !opts.image_pull_secrets.is_empty() {
        let refs = opts.image_pull_secrets.iter().map(|n| LocalObjectReference { name: n.clone() });
        spec.image_pull_secrets.get_or_insert_with(Vec::new).extend(refs);
    }
    let at = spec.containers.iter().position(|c| c.name == "worker").unwrap_or(0);
    if spec.containers.is_empty() {
        spec.containers.push(Container { name: "worker".into(), ..Default::default() });
    }
    let c = &mut spec.containers[at];
    if let Some(image) = &opts.image {
        c.image = Some(image.clone());
    }
    if c.image.is_none() {
        return Err(k8s_err(format!(
            "no image for the worker pods: give one with `.image(..)` or {}, built with this program inside",
            crate::options::ENV_IMAGE
        )));
    }
    match &opts.command {
        Some(cmd) => c.command = Some(cmd.clone()),
        None if c.command.is_none() => c.command = Some(default_command.to_vec()),
        None => {}
    }
    if let Some(r) = &opts.resources {
        c.resources = Some(r.clone());
    }
    let env = c.env.get_or_insert_with(Vec::new);
    env.extend(opts.env.iter().cloned());
    env.push(EnvVar { name: ENV_DRIVER.into(), value: Some(driver.into()), ..Default::default() });
    env.push(EnvVar {
        name: ENV_SECRET.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: names.secret.clone(),
                key: SECRET_KEY.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    env.push(EnvVar {
        name: ENV_NAME.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: "metadata.name".into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let workers = opts.workers as i32;
    Ok(Job {
        metadata: ObjectMeta { name: Some(names.job.clone()), labels: Some(labels), ..Default::default() },
        spec: Some(JobSpec {
            parallelism: Some(workers),
            completions: Some(workers),
            backoff_limit: Some(opts.backoff_limit.unwrap_or(workers * 3)),
            ttl_seconds_after_finished: Some(opts.ttl_seconds_after_finished),
            template: PodTemplateSpec { metadata: template.metadata, spec: template.spec },
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(job: &Job) -> Vec<EnvVar> {
        job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].env.clone().unwrap()
    }

    #[test]
    fn the_job_carries_the_run_the_driver_and_the_secret_by_reference() {
        let names = RunNames::new("0123abcdef");
        let opts = K8sBuilder::new(3).image("img:1").env("A", "1").label("team", "x").node_selector("pool", "cpu");
        let job = worker_job(&opts, &names, "10.0.0.5:7000", &["/app/prog".into()]).unwrap();
        let spec = job.spec.as_ref().unwrap();
        assert_eq!((spec.parallelism, spec.completions, spec.backoff_limit), (Some(3), Some(3), Some(9)));
        assert_eq!(spec.ttl_seconds_after_finished, Some(600));
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[RUN_LABEL], "0123abcdef");
        assert_eq!(labels["team"], "x");
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "cpu");
        assert_eq!(spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap()[RUN_LABEL], "0123abcdef");
        let c = &pod.containers[0];
        assert_eq!((c.image.as_deref(), c.command.clone()), (Some("img:1"), Some(vec!["/app/prog".to_string()])));
        let env = env_of(&job);
        let get = |n: &str| env.iter().find(|e| e.name == n).unwrap().clone();
        assert_eq!(get("A").value.as_deref(), Some("1"));
        assert_eq!(get(ENV_DRIVER).value.as_deref(), Some("10.0.0.5:7000"));
        // The secret itself is never in the Job: only a reference to the run's Secret.
        let s = get(ENV_SECRET);
        assert!(s.value.is_none());
        assert_eq!(s.value_from.unwrap().secret_key_ref.unwrap().name, names.secret);
    }

    #[test]
    fn run_names_are_random_and_the_secret_is_owned_by_the_job() {
        let (a, b) = (RunNames::random().unwrap(), RunNames::random().unwrap());
        assert_ne!(a.id, b.id);
        assert!(a.id.len() == 10 && a.id.chars().all(|c| c.is_ascii_hexdigit()), "{}", a.id);
        assert_eq!((a.job.clone(), a.secret.clone()), (format!("adpe-{}", a.id), format!("adpe-{}-secret", a.id)));

        let secret = run_secret(&a, "ab", &BTreeMap::new());
        let opts = K8sBuilder::new(1).image("img:1");
        let mut job = worker_job(&opts, &a, "h:1", &["/p".into()]).unwrap();
        let err = owned_by(secret.clone(), &job).unwrap_err().to_string();
        assert!(err.contains("without a name or uid"), "{err}");
        job.metadata.uid = Some("1234-uid".into());
        let owned = owned_by(secret, &job).unwrap();
        let refs = owned.metadata.owner_references.unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(
            (refs[0].api_version.as_str(), refs[0].kind.as_str(), refs[0].name.as_str(), refs[0].uid.as_str()),
            ("batch/v1", "Job", a.job.as_str(), "1234-uid")
        );
        assert_eq!((refs[0].controller, refs[0].block_owner_deletion), (Some(false), Some(false)));
    }

    #[test]
    fn a_pod_template_is_the_base_and_an_image_is_required() {
        let names = RunNames::new("r");
        let err = worker_job(&K8sBuilder::new(1), &names, "h:1", &["/p".into()]).unwrap_err().to_string();
        assert!(err.contains("no image"), "{err}");
        let template = PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![
                    Container { name: "sidecar".into(), image: Some("proxy".into()), ..Default::default() },
                    Container {
                        name: "worker".into(),
                        image: Some("mine:2".into()),
                        command: Some(vec!["/bin/app".into()]),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
        };
        let job = worker_job(&K8sBuilder::new(2).pod_template(template), &names, "h:1", &["/p".into()]).unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.containers[0].env, None, "the sidecar is left alone");
        let w = &pod.containers[1];
        assert_eq!((w.image.as_deref(), w.command.clone()), (Some("mine:2"), Some(vec!["/bin/app".to_string()])));
        assert!(w.env.as_ref().unwrap().iter().any(|e| e.name == ENV_DRIVER));
    }
}
