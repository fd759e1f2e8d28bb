//! The Kubernetes backend end to end, with no cluster: kube-rs over HTTP to the local API of
//! `tools/k8s-sim`, whose node agent runs each worker pod as a local process of this very
//! test binary, dialing back to the driver over TCP with the run's secret.

use adparallelengine_core::{Engine, Shared};
use adparallelengine_k8s::{K8sBackend, K8sBuilder};
use adparallelengine_test_support::k8s_sim::{self as sim, Simulator};
use std::time::{Duration, Instant};

adparallelengine_core::task!(AddSum = |x: u64, args: &Shared<Vec<u64>>| -> u64 { x * x + args.iter().sum::<u64>() });
adparallelengine_core::task!(
    SlowSquare = |x: u64| -> u64 {
        std::thread::sleep(Duration::from_millis(20));
        x * x
    }
);

fn backend(sim: &Simulator, workers: usize) -> K8sBuilder {
    K8sBuilder::new(workers).kubeconfig(&sim.kubeconfig).image("local/this-test").start_timeout(Duration::from_secs(30))
}

fn worker_pids(driver: &str) -> Vec<i32> {
    sim::worker_pids(&format!("ADPARALLELENGINE_DRIVER={driver}"))
}

fn eventually(what: &str, cond: impl FnMut() -> bool) {
    assert!(sim::eventually(cond), "{what}");
}

fn run_facts(b: &K8sBackend) -> (String, String, String) {
    (b.selector(), b.namespace().to_string(), b.driver_address().to_string())
}

#[test]
fn jobs_run_on_pods_with_shared_values_and_dropping_the_engine_deletes_everything() {
    let sim = Simulator::start(&[]).unwrap();
    let b = backend(&sim, 2).build().unwrap();
    let (selector, ns, driver) = run_facts(&b);
    let engine = Engine::from_backend(b);
    let shared = Shared::new(vec![1u64, 2, 3]);
    let out = engine.map(AddSum, 0..200u64).args(shared.clone()).batched(7).run().unwrap();
    assert_eq!(out, (0..200u64).map(|x| x * x + 6).collect::<Vec<_>>());
    // A second job reuses the connected pods (the value is not sent again).
    assert_eq!(engine.backend().idle_workers(), 2);
    let out = engine.map(AddSum, [5u64, 6]).args(shared).run().unwrap();
    assert_eq!(out, vec![31, 42]);
    assert_eq!(worker_pids(&driver).len(), 2, "two pods, two processes");
    assert!(sim.count_objects(&ns, &selector) >= 4, "Job, 2 pods and Secret are there while it runs");
    drop(engine);
    eventually("the Job, its pods and the Secret are deleted", || sim.count_objects(&ns, &selector) == 0);
    eventually("no worker process is left", || worker_pids(&driver).is_empty());
}

adparallelengine_core::task!(
    /// Squares, slowly, and says which process did it.
    SquareAndPid = |x: u64| -> (u64, u32) {
        std::thread::sleep(Duration::from_millis(20));
        (x * x, std::process::id())
    }
);

#[test]
fn a_pod_killed_mid_item_loses_no_item_and_its_replacement_joins_the_job() {
    let sim = Simulator::start(&[]).unwrap();
    let b = backend(&sim, 2).build().unwrap();
    let driver = b.driver_address().to_string();
    let engine = Engine::from_backend(b);
    let mut stream = engine.map(SquareAndPid, 0..300u64).batched(3).stream().unwrap();
    let mut got = Vec::new();
    let mut first = Vec::new();
    for r in stream.by_ref() {
        got.push(r.unwrap());
        if got.len() == 10 {
            first = worker_pids(&driver);
            assert_eq!(first.len(), 2);
            // SAFETY: kill(2) of a pod's process.
            unsafe { libc::kill(first[0], libc::SIGKILL) };
        }
    }
    assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), (0..300u64).map(|x| x * x).collect::<Vec<_>>());
    let pids: std::collections::BTreeSet<u32> = got.iter().map(|r| r.1).collect();
    assert!(
        pids.iter().any(|p| !first.contains(&(*p as i32))),
        "the Job controller's replacement pod joined the running job: {pids:?}, first {first:?}"
    );
    drop(stream);
    assert_eq!(engine.map(SlowSquare, 0..20u64).run().unwrap(), (0..20u64).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(engine.backend().idle_workers(), 2);
}

#[test]
fn a_pod_that_never_starts_is_named_with_its_reason_within_the_start_timeout() {
    let sim = Simulator::start(&[]).unwrap();
    for (b, reason) in [
        (backend(&sim, 1).image("missing/no-such-image:1"), "ImagePull"),
        (backend(&sim, 1).node_selector("pool", "gpu"), "Unschedulable"),
    ] {
        let b = b.start_timeout(Duration::from_secs(3)).build().unwrap();
        let job = b.job_name().to_string();
        let (selector, ns) = (b.selector(), b.namespace().to_string());
        let engine = Engine::from_backend(b);
        let t0 = Instant::now();
        let err = engine.map(SlowSquare, 0..10u64).run().unwrap_err().to_string();
        eprintln!("after {:?}: {err}", t0.elapsed());
        assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
        assert!(err.contains(reason) && err.contains(&format!("pod {job}")), "{err}");
        // The run is ended: its objects are deleted at once, and the next job says why.
        eventually("the failed run's Job, pods and Secret are deleted", || sim.count_objects(&ns, &selector) == 0);
        let again = engine.map(SlowSquare, 0..10u64).run().unwrap_err().to_string();
        assert!(again.contains("could not start") && again.contains(reason), "{again}");
    }
}

#[test]
fn pods_that_crash_at_start_fail_the_job_past_its_backoff_limit_with_their_exit_code() {
    let sim = Simulator::start(&[]).unwrap();
    // Every pod's command exits 1 before dialing in: the Job controller replaces each failed
    // pod until the Job's backoffLimit, then marks the Job Failed; the engine says so well
    // before the start timeout.
    let b = backend(&sim, 1).command(["/bin/false"]).backoff_limit(1).start_timeout(Duration::from_secs(60));
    let b = b.build().unwrap();
    let (job, selector, ns) = (b.job_name().to_string(), b.selector(), b.namespace().to_string());
    let engine = Engine::from_backend(b);
    let t0 = Instant::now();
    let err = engine.map(SlowSquare, 0..10u64).run().unwrap_err().to_string();
    eprintln!("after {:?}: {err}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(30), "took {:?}", t0.elapsed());
    assert!(err.contains(&format!("the worker Job {job} failed")) && err.contains("BackoffLimitExceeded"), "{err}");
    assert!(err.contains("exited with code 1"), "the failed pods are named with their exit code: {err}");
    eventually("the failed run's Job, pods and Secret are deleted", || sim.count_objects(&ns, &selector) == 0);
}

#[test]
fn a_connection_with_the_wrong_secret_is_refused_while_pods_work() {
    let sim = Simulator::start(&[]).unwrap();
    let b = backend(&sim, 2).build().unwrap();
    let driver = b.driver_address().to_string();
    let engine = Engine::from_backend(b);
    assert_eq!(engine.map(SlowSquare, 0..4u64).run().unwrap(), vec![0, 1, 4, 9]);
    let mut stranger = std::net::TcpStream::connect(&driver).unwrap();
    adparallelengine_core::remote::knock(
        &mut stranger,
        &adparallelengine_core::remote::Secret::random().unwrap(),
        "intruder",
    )
    .unwrap();
    eventually("the stranger is refused", || engine.backend().refused_connections() == 1);
    assert_eq!(engine.map(SlowSquare, 0..40u64).run().unwrap(), (0..40u64).map(|x| x * x).collect::<Vec<_>>());
}

adparallelengine_core::task!(
    PanicsAtFive = |x: u64| -> u64 {
        std::thread::sleep(Duration::from_millis(5));
        assert!(x != 5, "five");
        x
    }
);

#[test]
fn a_failed_job_keeps_its_pods_for_the_next_one() {
    let sim = Simulator::start(&[]).unwrap();
    let b = backend(&sim, 2).build().unwrap();
    let driver = b.driver_address().to_string();
    let engine = Engine::from_backend(b);
    assert_eq!(engine.map(SlowSquare, 0..4u64).run().unwrap(), vec![0, 1, 4, 9]);
    let mut pods = worker_pids(&driver);
    pods.sort();
    assert_eq!(pods.len(), 2);
    // The failure cancels the job: the pods end it (their last results dropped), not killed.
    let err = engine.map(PanicsAtFive, 0..400u64).batched(2).run().unwrap_err().to_string();
    assert!(err.contains("item 5") && err.contains("five"), "{err}");
    let t0 = Instant::now();
    assert_eq!(engine.map(SlowSquare, 0..10u64).run().unwrap(), (0..10u64).map(|x| x * x).collect::<Vec<_>>());
    assert!(t0.elapsed() < Duration::from_secs(5), "the next job waited {:?} for pods", t0.elapsed());
    let mut after = worker_pids(&driver);
    after.sort();
    assert_eq!(after, pods, "the same pods served the next job");
    assert_eq!(engine.backend().idle_workers(), 2);
}

adparallelengine_core::task!(
    /// The series' sum plus `x`, and the `.bin` files this pod has mapped.
    SumAndMaps = |x: u64, s: &Shared<adparallelengine_core::arrow::Series>| -> (u64, String) {
        let col = s.0.as_any().downcast_ref::<arrow_array::Int64Array>().expect("int64");
        let sum: i64 = col.values().iter().sum();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let files: Vec<&str> =
            maps.lines().filter_map(|l| l.split_whitespace().nth(5)).filter(|p| p.ends_with(".bin")).collect();
        (x + sum as u64, files.join(","))
    }
);

#[test]
fn shared_values_are_shipped_to_pods_or_read_from_a_shared_volume() {
    let sim = Simulator::start(&[]).unwrap();
    let dir = std::env::temp_dir().join(format!("adpe-k8s-volume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let series =
        Shared::new(adparallelengine_core::arrow::Series(std::sync::Arc::new(arrow_array::Int64Array::from(vec![
            1, 2, 3,
        ]))));
    for volume in [false, true] {
        let b = backend(&sim, 2).path_shared(Some(dir.clone())).shared_volume(volume).build().unwrap();
        let engine = Engine::from_backend(b);
        let out = engine.map(SumAndMaps, 0..8u64).args(series.clone()).batched(false).run().unwrap();
        for (x, (y, maps)) in out.iter().enumerate() {
            assert_eq!(*y, x as u64 + 6);
            // Mapped zero-copy either way: from the driver's directory (the "volume") or from
            // the pod's own copy, sent over its connection.
            assert!(!maps.is_empty(), "item {x}: nothing mapped");
            let from_volume = maps.split(',').all(|m| m.starts_with(dir.to_str().unwrap()));
            assert_eq!(from_volume, volume, "item {x} (shared volume: {volume}): mapped {maps}");
        }
    }
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "the driver's shared directory is removed with its engine: {left:?}");
    let _ = std::fs::remove_dir(&dir);
}

adparallelengine_core::task!(
    /// Hangs on item 2.
    HangsOnTwo = |x: u64| -> u64 {
        if x == 2 {
            std::thread::sleep(Duration::from_secs(3600));
        }
        x
    }
);

#[test]
fn an_item_over_its_time_limit_gets_its_pod_deleted_and_fails_alone() {
    let sim = Simulator::start(&[]).unwrap();
    let b = backend(&sim, 2).build().unwrap();
    let driver = b.driver_address().to_string();
    let engine = Engine::from_backend(b);
    let t0 = Instant::now();
    let all = engine
        .map(HangsOnTwo, 0..8u64)
        .batched(false)
        .item_timeout(Duration::from_millis(500))
        .retries(1)
        .collect_results()
        .unwrap();
    for (i, r) in all.iter().enumerate() {
        match i {
            2 => {
                let err = r.as_ref().unwrap_err();
                assert_eq!(err.kind, adparallelengine_core::FailureKind::Timeout, "{err}");
            }
            _ => assert_eq!(r.as_ref().unwrap(), &(i as u64)),
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(30), "a hung item held the job for {:?}", t0.elapsed());
    // The hung pods were deleted (not left sleeping): only the replacements are running.
    eventually("the hung pods' processes are gone", || worker_pids(&driver).len() <= 2);
    assert_eq!(engine.map(SlowSquare, 0..6u64).run().unwrap(), vec![0, 1, 4, 9, 16, 25]);
}
