//! A driver killed outright (SIGKILL: no cleanup runs) leaves nothing on the cluster: its pods
//! exit when their connection drops, the Job's TTL removes the Job, and the garbage collector
//! removes the run's Secret with it, since the Secret is owned by the Job. Against the local
//! Kubernetes API of `tools/k8s-sim`; the driver is this test binary, re-executed to run only
//! [`driver_to_be_killed`].
//!
//! Also: the run's names owe nothing to its secret.

use adparallelengine_core::Engine;
use adparallelengine_k8s::job_spec::SECRET_KEY;
use adparallelengine_k8s::K8sBuilder;
use adparallelengine_test_support::k8s_sim::{self as sim, Simulator};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

adparallelengine_core::task!(Square = |x: u64| -> u64 { x * x });

/// Set (to a kubeconfig) in the driver's environment: it runs [`driver_to_be_killed`].
const DRIVER_KUBECONFIG: &str = "ADPE_TEST_KILLED_DRIVER_KUBECONFIG";

/// The driver's part, a test that does nothing unless this binary was started as the driver:
/// a run of two pods whose Job lives one second after it finishes, a first job, then a line
/// `started <job> <namespace>` on stdout, then a wait to be killed.
#[test]
fn driver_to_be_killed() {
    let Ok(kubeconfig) = std::env::var(DRIVER_KUBECONFIG) else { return };
    let b = K8sBuilder::new(2)
        .kubeconfig(kubeconfig)
        .image("local/this-test")
        .ttl_seconds_after_finished(1)
        .start_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (job, ns) = (b.job_name().to_string(), b.namespace().to_string());
    let engine = Engine::from_backend(b);
    assert_eq!(engine.map(Square, 0..10u64).run().unwrap(), (0..10u64).map(|x| x * x).collect::<Vec<_>>());
    println!("started {job} {ns}");
    // Killed long before this ends; bounded all the same.
    std::thread::sleep(Duration::from_secs(120));
}

/// The driver's process, killed when dropped should the test fail first.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Job and the Secret named `job` and `job-secret` (each `None` once gone).
fn run_objects(sim: &Simulator, ns: &str, job: &str) -> (Option<Job>, Option<Secret>) {
    let rt = adparallelengine_k8s::runtime().unwrap();
    rt.block_on(async {
        let c = adparallelengine_k8s::client_from_kubeconfig(&sim.kubeconfig).await.unwrap();
        let j = kube::Api::<Job>::namespaced(c.clone(), ns).get_opt(job).await.unwrap();
        let s = kube::Api::<Secret>::namespaced(c, ns).get_opt(&format!("{job}-secret")).await.unwrap();
        (j, s)
    })
}

fn common_prefix(a: &str, b: &str) -> usize {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
}

#[test]
fn a_killed_drivers_secret_goes_with_its_job_and_names_owe_nothing_to_the_secret() {
    let sim = Simulator::start(&[]).unwrap();
    let mut driver = Driver(
        Command::new(std::env::current_exe().unwrap())
            .args(["driver_to_be_killed", "--exact", "--nocapture", "--test-threads=1"])
            .env(DRIVER_KUBECONFIG, &sim.kubeconfig)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = driver.0.stdout.take().unwrap();
    let started = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        // The harness's `test driver_to_be_killed ... ` may come first on the line.
        .find_map(|l| l.split_once("started ").map(|(_, rest)| rest.to_string()))
        .unwrap_or_else(|| panic!("the driver ended before its first job: {:?}", driver.0.wait()));
    let (job, ns) = started.split_once(' ').expect("`started <job> <namespace>`");
    let (job, ns) = (job.to_string(), ns.to_string());

    // The Secret is owned by the Job.
    let (Some(j), Some(secret)) = run_objects(&sim, &ns, &job) else { panic!("the run's Job and Secret exist") };
    let refs = secret.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(refs.len(), 1, "{refs:?}");
    assert_eq!((refs[0].kind.as_str(), refs[0].api_version.as_str()), ("Job", "batch/v1"));
    assert_eq!((Some(&refs[0].name), Some(&refs[0].uid)), (j.metadata.name.as_ref(), j.metadata.uid.as_ref()));

    // The run's id (in the names and the run label) is not a piece of the secret.
    let data = secret.data.clone().unwrap_or_default();
    let hex = String::from_utf8(data.get(SECRET_KEY).expect("the secret's key").0.clone()).unwrap();
    assert_eq!(hex.len(), 64, "the secret, in hex");
    let id = job.strip_prefix("adpe-").expect("a run's Job is adpe-<id>");
    assert_eq!(id.len(), 10);
    assert!(!hex.contains(id), "the run's id {id} is a piece of its secret");
    // Two independent random strings share a prefix of 6 hex digits once in 16.7 million.
    assert!(common_prefix(id, &hex) < 6, "the run's id {id} starts as its secret does");

    let selector = format!("{}={id}", adparallelengine_k8s::job_spec::RUN_LABEL);
    let driver_pid = driver.0.id() as i32;
    let pods = sim.worker_pids();
    assert_eq!(pods.len(), 2, "two pods serve the driver");
    // SAFETY: kill(2) of our child.
    unsafe { libc::kill(driver_pid, libc::SIGKILL) };
    let status = driver.0.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL), "{status}");

    assert!(sim::eventually(|| sim.worker_pids().is_empty()), "the pods exit with their driver's connection");
    assert!(
        sim::eventually(|| sim.count_objects(&ns, &selector) == 0),
        "the Job, its pods and its Secret are gone after the TTL: {:?}",
        run_objects(&sim, &ns, &job)
    );
    assert!(matches!(run_objects(&sim, &ns, &job), (None, None)), "the Job and the Secret are gone");
}
