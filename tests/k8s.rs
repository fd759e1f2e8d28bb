//! The Kubernetes backend as a program uses it (`Kind::K8s`, configured from the
//! environment), against the local Kubernetes API of `tools/k8s-sim` whose pods are local
//! processes: a driver interrupted with Ctrl-C deletes its Job, pods and Secret and leaves no
//! worker; a driver killed outright leaves no worker either (pods exit when their connection
//! drops; the Job's TTL removes it).
#![cfg(feature = "k8s")]

mod common;

use adparallelengine_test_support::k8s_sim::{self as sim, Simulator};
use common::example;
use std::io::BufRead;
use std::process::{Command, Stdio};

/// Objects every run labels itself with.
const MANAGED: &str = "app.kubernetes.io/managed-by=adparallelengine";

/// Starts `interrupt_me k8s` against `sim`, waits for its first result, and sends `signal`;
/// returns its exit status once the driver's worker pods are all there.
fn interrupt(sim: &Simulator, signal: i32) -> (std::process::ExitStatus, Vec<i32>) {
    let bin = example("interrupt_me");
    assert!(bin.exists(), "{} missing: `cargo build --example interrupt_me --features k8s`", bin.display());
    let mut child = Command::new(&bin)
        .arg("k8s")
        .env("KUBECONFIG", &sim.kubeconfig)
        .env("ADPARALLELENGINE_K8S_IMAGE", "local/interrupt-me")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("started "), "{line:?}");
    let workers = sim.worker_pids();
    assert_eq!(workers.len(), 2, "two worker pods running: {workers:?}");
    assert_eq!(sim.count_objects("default", MANAGED), 4, "the Job, 2 pods and the Secret");
    // SAFETY: kill(2) of our child.
    unsafe { libc_kill(child.id() as i32, signal) };
    (child.wait().unwrap(), workers)
}

unsafe fn libc_kill(pid: i32, sig: i32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: kill(2) takes plain integers; the caller vouches for the pid.
    unsafe { kill(pid, sig) };
}

#[test]
fn ctrl_c_deletes_the_job_its_pods_and_the_secret() {
    let sim = Simulator::start(&[]).unwrap();
    let (status, _) = interrupt(&sim, 2);
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(sim::eventually(|| sim.count_objects("default", MANAGED) == 0), "the run's objects outlived Ctrl-C");
    assert!(sim::eventually(|| sim.worker_pids().is_empty()), "a worker outlived Ctrl-C");
}

#[test]
fn pods_exit_when_their_driver_dies() {
    let sim = Simulator::start(&[]).unwrap();
    let (status, _) = interrupt(&sim, 9);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{status}");
    assert!(sim::eventually(|| sim.worker_pids().is_empty()), "a worker outlived its driver");
}

adparallelengine::task!(Double = |x: u64| -> u64 { 2 * x });

/// Pods running another build of the program (here: the `complete` example, another build
/// ID) refuse at the handshake: the first job fails at once, naming both builds, instead of
/// waiting for the start timeout.
#[test]
fn pods_of_another_build_fail_the_first_job_at_once_naming_both_builds() {
    use adparallelengine::backends::k8s::K8sBuilder;
    use adparallelengine::{Batching, Engine};
    use std::time::{Duration, Instant};
    let sim = Simulator::start(&[]).unwrap();
    let other = example("complete").to_string_lossy().into_owned();
    let backend = K8sBuilder::new(2)
        .kubeconfig(&sim.kubeconfig)
        .image("local/another-build")
        .command([other])
        .start_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let engine: Engine<_> = Engine::from_backend(backend);
    let t0 = Instant::now();
    let err = engine.map(Double, 0..100u64).batched(Batching::ChunkSize(10)).run().unwrap_err().to_string();
    assert!(err.contains("another build of the program (worker build-id-"), "{err}");
    assert!(err.contains(", driver build-id-"), "{err}");
    // Not a speed assert: the start timeout (120 s) is not waited for.
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}: {err}", t0.elapsed());
    drop(engine);
    assert!(sim::eventually(|| sim.count_objects("default", MANAGED) == 0), "the run's objects are deleted");
}
