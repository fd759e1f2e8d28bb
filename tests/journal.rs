//! A driver SIGKILLed half way through a 10,000-item job, rerun with the same journal: every
//! result right and in order, and no item the journal held run again — on every backend. The
//! driver is the `journaled` example (a program configured from its environment, as a user's
//! would be), run as a child, killed by the test once it has reported half of the items done;
//! its workers log every execution to a file, the side channel that counts what ran.
//!
//! Backends with a cluster run against a real one: `mpirun -n 3` (rank 0, the driver, is the
//! one killed), the local Kubernetes API of `tools/k8s-sim`, a local Dask cluster, a private
//! one-node Slurm.

mod common;

use common::example;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const N: usize = 10_000;

/// One kill-and-resume at a time: every one wants both cores, and a cluster's workers.
static SERIAL: Mutex<()> = Mutex::new(());

/// A scratch directory for one test: the journal and the execution log.
struct Scratch(PathBuf);

impl Scratch {
    fn new(kind: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("adpe-journal-kill-{kind}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn executions(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("executions")).unwrap_or_default().lines().filter_map(|l| l.parse().ok()).collect()
}

/// Waits until the execution log has been still for `quiet`: workers of a killed driver may
/// finish the batch they held before they notice.
fn settled(dir: &Path, quiet: Duration) -> usize {
    let mut last = (executions(dir).len(), Instant::now());
    let deadline = Instant::now() + Duration::from_secs(60);
    while last.1.elapsed() < quiet && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = executions(dir).len();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    last.0
}

/// The `journaled` example on `kind` in `dir`, its stdout piped; `launch` adds what the kind
/// needs (a launcher in front, the cluster's address in the environment).
fn driver(kind: &str, dir: &Path, launch: &dyn Fn(&Path) -> Command) -> Command {
    let bin = example("journaled");
    assert!(bin.exists(), "{} missing: `cargo build --example journaled`", bin.display());
    let mut c = launch(&bin);
    c.arg(kind).arg(dir).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Kills the driver (`pid`, which `first` started) once it has reported half of the items;
/// returns how many it had reported.
fn kill_at_half(first: &mut Child) -> usize {
    let mut pid = None;
    let mut seen = 0usize;
    for line in BufReader::new(first.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(p) = line.strip_prefix("driver pid ") {
            pid = Some(p.trim().parse::<i32>().unwrap());
        } else if let Some(n) = line.strip_prefix("done ") {
            seen = n.trim().parse().unwrap();
            if seen >= N / 2 {
                let pid = pid.expect("the driver printed its pid first");
                // SAFETY: kill(2) with plain integers, on the driver this test started (or the
                // rank 0 its launcher started), which is still running: it is printing.
                assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
                break;
            }
        }
    }
    seen
}

/// Runs, kills at half, reruns, and checks: every result (the example checks them), the
/// items read back, and the executions of the rerun: exactly the items the journal lacked.
fn kill_and_resume(kind: &str, launch: &dyn Fn(&Path) -> Command) {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let scratch = Scratch::new(kind);
    let dir = &scratch.0;

    let mut first = driver(kind, dir, launch).spawn().unwrap();
    let seen = kill_at_half(&mut first);
    let status = first.wait().unwrap();
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut first.stderr.take().unwrap(), &mut err);
    assert!(!status.success(), "{kind}: the first driver must have been killed (it saw {seen} items): {err}");
    assert!((N / 2..N).contains(&seen), "{kind}: killed at {seen} items: {err}");
    let before = settled(dir, Duration::from_secs(1));

    let second = driver(kind, dir, launch).output().unwrap();
    let text = String::from_utf8_lossy(&second.stdout);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{kind}: the resumed driver failed: {text}\n{err}");
    let line = text.lines().find_map(|l| l.strip_prefix("resumed ")).expect("the resumed driver's stats");
    let (resumed, ran) = line.split_once(" ran ").unwrap();
    let (resumed, ran): (usize, usize) = (resumed.parse().unwrap(), ran.trim().parse().unwrap());
    // Progress is told once a batch is journaled: what the first driver reported is there.
    assert!((seen..N).contains(&resumed), "{kind}: {resumed} items read back, the killed driver reported {seen}");
    assert_eq!(resumed + ran, N, "{kind}");
    let after = settled(dir, Duration::from_millis(300));
    let again = &executions(dir)[before..after];
    let distinct: HashSet<u64> = again.iter().copied().collect();
    assert_eq!(again.len(), N - resumed, "{kind}: the rerun ran exactly the items the journal lacked");
    assert_eq!(distinct.len(), again.len(), "{kind}: no item ran twice in the rerun");
    eprintln!("{kind}: killed at {seen} reported, {resumed} read back, {ran} run again");
}

fn plain(bin: &Path) -> Command {
    Command::new(bin)
}

#[test]
fn serial_driver_killed_and_resumed() {
    kill_and_resume("serial", &plain);
}

#[cfg(feature = "threads")]
#[test]
fn threads_driver_killed_and_resumed() {
    kill_and_resume("threads", &plain);
}

#[cfg(feature = "process")]
#[test]
fn process_driver_killed_and_resumed() {
    kill_and_resume("process", &plain);
}

/// Under `mpirun -n 3`: the driver killed is rank 0; mpirun then ends the other ranks.
#[cfg(feature = "mpi")]
#[test]
fn mpi_driver_killed_and_resumed() {
    kill_and_resume("mpi", &|bin| {
        let mut c = adparallelengine_test_support::mpi::launcher(3);
        c.arg(bin);
        c
    });
}

#[cfg(feature = "k8s")]
#[test]
fn k8s_driver_killed_and_resumed() {
    use adparallelengine_test_support::k8s_sim::{self as sim, Simulator};
    let sim = Simulator::start(&[]).unwrap();
    let kubeconfig = sim.kubeconfig.clone();
    kill_and_resume("k8s", &|bin| {
        let mut c = Command::new(bin);
        c.env("KUBECONFIG", &kubeconfig).env("ADPARALLELENGINE_K8S_IMAGE", "local/journaled");
        c
    });
    // The killed driver's pods exit when their connection drops.
    assert!(sim::eventually(|| sim.worker_pids().is_empty()), "a worker pod outlived its driver");
}

#[cfg(feature = "dask")]
#[test]
fn dask_driver_killed_and_resumed() {
    use adparallelengine_test_support::dask::{dask_python_or_skip, DaskCluster};
    use adparallelengine_test_support::wait::wait_until;
    if dask_python_or_skip("dask_driver_killed_and_resumed").is_none() {
        return;
    }
    let cluster = DaskCluster::start(2).unwrap();
    kill_and_resume("dask", &|bin| {
        let mut c = Command::new(bin);
        c.env("ADPARALLELENGINE_DASK_SCHEDULER", cluster.address())
            .env("ADPARALLELENGINE_DASK_PYTHON", cluster.python())
            .env("ADPARALLELENGINE_DASK_PROGRAM", bin);
        c
    });
    assert!(wait_until(Duration::from_secs(15), || cluster.native_pids().is_empty()), "{:?}", cluster.native_pids());
}

#[cfg(feature = "slurm")]
#[test]
fn slurm_driver_killed_and_resumed() {
    use adparallelengine_test_support::slurm::{slurm_or_skip, SLURM_CONF};
    let Some(cluster) = slurm_or_skip("slurm_driver_killed_and_resumed") else { return };
    kill_and_resume("slurm", &|bin| {
        let mut c = Command::new(bin);
        c.env(SLURM_CONF, cluster.conf()).env("ADPARALLELENGINE_SLURM_ADVERTISE", "127.0.0.1");
        c
    });
}
