//! A pod and its driver cut off from each other by the network (a node lost, a partition)
//! send each other nothing; TCP keepalive on both ends of their connection
//! ([`adparallelengine_core::keepalive`]) turns that silence into an error within about
//! [`DEAD_AFTER`]: the pod exits instead of running for ever, and the driver counts the pod as
//! lost instead of waiting for its results.
//!
//! The network is real: each pod runs in a network namespace of its own (its command is
//! `ip netns exec NS <this test>`), joined to the driver's by a veth pair, and the test takes
//! the pod's end of the link down. That needs root and iproute2; CI has both (`.ci/run`). On a
//! machine without them the tests say so and pass, except under `CI=true`, where they fail.

use adparallelengine_core::remote::DEAD_AFTER;
use adparallelengine_core::Engine;
use adparallelengine_k8s::{K8sBackend, K8sBuilder};
use adparallelengine_test_support::k8s_sim::{self as sim, Simulator};
use std::process::Command;
use std::time::{Duration, Instant};

adparallelengine_core::task!(
    /// Squares after a nap of `ms` milliseconds.
    Nap = |x: u64, ms: &u64| -> u64 {
        std::thread::sleep(Duration::from_millis(*ms));
        x * x
    }
);

/// A network namespace for pods, joined to this one by a veth pair; removed when dropped.
struct PodNet {
    ns: String,
    pod_if: String,
    host_if: String,
    /// The driver's address on the link, which pods dial.
    host_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run `ip`: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())),
    }
}

impl PodNet {
    /// Makes one, or says why it cannot be made here (not root, no iproute2): under `CI=true`
    /// that fails the test.
    fn new(index: u8) -> Option<PodNet> {
        let pid = std::process::id();
        let net = PodNet {
            ns: format!("adpe-{pid}-{index}"),
            pod_if: format!("adp{}{index}", pid % 100_000),
            host_if: format!("adh{}{index}", pid % 100_000),
            host_ip: format!("10.{}.{}.1", 100 + index, pid % 256),
        };
        let pod_ip = format!("10.{}.{}.2/30", 100 + index, pid % 256);
        let made = ip(&["netns", "add", &net.ns])
            .and_then(|_| ip(&["link", "add", &net.host_if, "type", "veth", "peer", "name", &net.pod_if]))
            .and_then(|_| ip(&["link", "set", &net.pod_if, "netns", &net.ns]))
            .and_then(|_| ip(&["addr", "add", &format!("{}/30", net.host_ip), "dev", &net.host_if]))
            .and_then(|_| ip(&["link", "set", &net.host_if, "up"]))
            .and_then(|_| ip(&["-n", &net.ns, "addr", "add", &pod_ip, "dev", &net.pod_if]))
            .and_then(|_| ip(&["-n", &net.ns, "link", "set", &net.pod_if, "up"]))
            .and_then(|_| ip(&["-n", &net.ns, "link", "set", "lo", "up"]));
        match made {
            Ok(()) => Some(net),
            Err(why) => {
                assert!(std::env::var("CI").is_err(), "CI=true but no network namespace can be made: {why}");
                eprintln!("skipped: no network namespace can be made here (needs root and iproute2): {why}");
                None
            }
        }
    }

    /// Takes the pod's end of the link down: from now on the two sides hear nothing.
    fn cut(&self) {
        ip(&["-n", &self.ns, "link", "set", &self.pod_if, "down"]).unwrap();
    }

    /// Brings it back up.
    fn mend(&self) {
        ip(&["-n", &self.ns, "link", "set", &self.pod_if, "up"]).unwrap();
    }

    /// A backend whose pods run in this namespace and dial the driver across the link.
    fn backend(&self, sim: &Simulator, workers: usize) -> K8sBackend {
        let exe = std::env::current_exe().unwrap().to_string_lossy().into_owned();
        K8sBuilder::new(workers)
            .kubeconfig(&sim.kubeconfig)
            .image("local/this-test")
            .command(["ip".to_string(), "netns".into(), "exec".into(), self.ns.clone(), exe])
            .advertise(self.host_ip.clone())
            .start_timeout(Duration::from_secs(90))
            .build()
            .unwrap()
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        // Deleting the namespace deletes the pod's end of the pair, and with it the host's.
        let _ = ip(&["netns", "del", &self.ns]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

/// Waits until `cond` holds, for at most `limit`; how long it took.
fn within(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed()
}

/// The run's pods that failed, and their exit codes.
fn failed_pods(sim: &Simulator, ns: &str, selector: &str) -> Vec<(String, i32)> {
    use k8s_openapi::api::core::v1::Pod;
    let rt = adparallelengine_k8s::runtime().unwrap();
    rt.block_on(async {
        let c = adparallelengine_k8s::client_from_kubeconfig(&sim.kubeconfig).await.unwrap();
        let lp = kube::api::ListParams::default().labels(selector);
        let pods = kube::Api::<Pod>::namespaced(c, ns).list(&lp).await.unwrap();
        let code = |p: &Pod| {
            let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
            Some(statuses.first()?.state.as_ref()?.terminated.as_ref()?.exit_code)
        };
        pods.items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
            .map(|p| (p.metadata.name.clone().unwrap_or_default(), code(p).unwrap_or(-1)))
            .collect()
    })
}

#[test]
fn a_pod_cut_off_from_its_driver_exits_and_its_replacement_rejoins_once_the_network_is_back() {
    let Some(net) = PodNet::new(0) else { return };
    let sim = Simulator::start(&[]).unwrap();
    let b = net.backend(&sim, 1);
    let (driver, selector, ns) = (b.driver_address().to_string(), b.selector(), b.namespace().to_string());
    let engine = Engine::from_backend(b);
    let pods = || sim::worker_pids(&format!("ADPARALLELENGINE_DRIVER={driver}"));
    assert_eq!(engine.map(Nap, 0..4u64).args(10).run().unwrap(), vec![0, 1, 4, 9]);
    let first = pods();
    assert_eq!(first.len(), 1, "one pod, idle between jobs, across the link");
    net.cut();
    // Without keepalive the idle pod would wait in a read for ever: no FIN ever comes.
    let took = within(DEAD_AFTER * 3, "the cut-off pod exits", || !pods().contains(&first[0]));
    eprintln!("the cut-off pod exited {took:?} after the cut (keepalive: {DEAD_AFTER:?})");
    // It failed (its driver went silent, it did not close): the Job controller replaces it.
    within(Duration::from_secs(10), "the cut-off pod is Failed", || !failed_pods(&sim, &ns, &selector).is_empty());
    let failed = failed_pods(&sim, &ns, &selector);
    assert!(failed.iter().all(|(_, code)| *code != 0), "{failed:?}");
    net.mend();
    // The next job finds the old connection dead (the driver's probes failed too), and the
    // replacement dials in.
    assert_eq!(engine.map(Nap, 0..4u64).args(10).run().unwrap(), vec![0, 1, 4, 9]);
    let now = pods();
    assert_eq!(now.len(), 1);
    assert_ne!(now, first, "a replacement pod served the next job");
    drop(engine);
    assert!(sim::eventually(|| sim.count_objects(&ns, &selector) == 0), "the run's objects are deleted");
    assert!(sim::eventually(|| pods().is_empty()), "no worker process is left");
}

#[test]
fn a_pod_cut_off_mid_item_is_counted_lost_and_its_items_run_on_its_replacement() {
    let Some(net) = PodNet::new(1) else { return };
    let sim = Simulator::start(&[]).unwrap();
    let b = net.backend(&sim, 1);
    let driver = b.driver_address().to_string();
    let engine = Engine::from_backend(b);
    let pods = || sim::worker_pids(&format!("ADPARALLELENGINE_DRIVER={driver}"));
    assert_eq!(engine.map(Nap, 0..4u64).args(10).run().unwrap(), vec![0, 1, 4, 9]);
    let first = pods();
    assert_eq!(first.len(), 1);
    // One item in flight at a time, so what the driver sent has been received when the link
    // goes down (data still unacknowledged is TCP's to retry, for up to ~15 minutes).
    let mut stream = engine.map(Nap, 0..6u64).args(1500).batched(false).prefetch(1).stream().unwrap();
    let t0 = Instant::now();
    let mut got = vec![stream.next().unwrap().unwrap()];
    std::thread::sleep(Duration::from_millis(300));
    net.cut();
    let cut = Instant::now();
    // The driver hears nothing from the pod: keepalive fails the connection, the pod is
    // counted lost and deleted (the simulator kills its process), and the Job controller
    // starts a replacement, which can dial in once the link is back.
    let lost = within(DEAD_AFTER * 3, "the driver deletes the silent pod", || {
        let now = pods();
        !now.contains(&first[0])
    });
    eprintln!("the driver gave up on the cut-off pod {lost:?} after the cut (keepalive: {DEAD_AFTER:?})");
    net.mend();
    got.extend(stream.by_ref().map(|r| r.unwrap()));
    assert_eq!(got, (0..6u64).map(|x| x * x).collect::<Vec<_>>(), "every item, in order, none lost");
    assert!(cut.elapsed() < DEAD_AFTER * 3 + Duration::from_secs(30), "the job took {:?}", t0.elapsed());
    let now = pods();
    assert_eq!(now.len(), 1, "the replacement serves: {now:?}");
    assert_ne!(now, first);
}
