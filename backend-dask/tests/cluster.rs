//! The Dask backend on a real Dask cluster: a `dask scheduler` and two `dask worker`
//! processes (`--nworkers 1 --nthreads 1`) on loopback, started for each test
//! (`test-support`'s `DaskCluster`), the native workers being this test binary. Faults are
//! real: worker processes and the scheduler SIGKILLed, a driver killed outright.

use adparallelengine_core::conformance::{Kit, SharedBackend};
use adparallelengine_core::{task, try_task, Engine};
use adparallelengine_dask::{DaskBackend, DaskBuilder};
use adparallelengine_test_support::dask::{dask_python_or_skip, DaskCluster};
use adparallelengine_test_support::wait::wait_until;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

task!(Sq = |x: u64| -> u64 { x * x });
task!(
    Slow = |x: u64| -> u64 {
        std::thread::sleep(Duration::from_millis(100));
        x + 1
    }
);
try_task!(
    FailsAtFive = |x: u64| -> u64 {
        if x == 5 {
            return Err("five is refused".into());
        }
        Ok(x)
    }
);
task!(
    PanicsAtThree = |x: u64| -> u64 {
        assert!(x != 3, "three panics");
        x
    }
);

// Item 7 takes its native worker down (abort) when `ADPE_TEST_CRASH_MARK` names a file that
// does not exist yet (made first: once), or always when it names none.
task!(
    CrashesAtSeven = |x: u64| -> u64 {
        if x == 7 {
            match std::env::var("ADPE_TEST_CRASH_MARK") {
                Ok(mark) => {
                    if std::fs::OpenOptions::new().write(true).create_new(true).open(mark).is_ok() {
                        std::process::abort();
                    }
                }
                Err(_) => std::process::abort(),
            }
        }
        x
    }
);

/// One cluster at a time: they are costly on two cores, and the tests count processes.
static SERIAL: Mutex<()> = Mutex::new(());

/// The env var that turns this test binary into a driver to be killed (see
/// `driver_to_be_killed`).
const DRIVER_OF: &str = "ADPE_TEST_DASK_DRIVER_OF";

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn exe() -> PathBuf {
    std::env::current_exe().unwrap()
}

/// A backend on `cluster`, the workers running this test binary from its path here (the
/// cluster is on this machine: no upload).
fn builder(cluster: &DaskCluster, workers: usize) -> DaskBuilder {
    DaskBuilder::new(workers)
        .scheduler(cluster.address())
        .python(cluster.python())
        .program_path(exe())
        .start_timeout(Duration::from_secs(60))
}

/// Runs `f` on a thread, failing the test (instead of hanging it) if it takes past `limit`.
fn bounded<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("did not end within {limit:?}: a hang"))
}

fn cluster(what: &str) -> Option<DaskCluster> {
    dask_python_or_skip(what)?;
    Some(DaskCluster::start(2).unwrap_or_else(|e| panic!("{what}: {e}")))
}

#[test]
fn dask_passes_the_conformance_kit() {
    let _g = lock();
    let Some(cluster) = cluster("dask_passes_the_conformance_kit") else { return };
    // The program is uploaded to each worker (the default), as on a cluster of other machines.
    let backend = DaskBuilder::new(2)
        .scheduler(cluster.address())
        .python(cluster.python())
        .start_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let report = Kit::new(SharedBackend::maker(backend)).run();
    assert!(report.is_ok(), "{report}\n{}", cluster.logs());
    // Nothing is left on the workers' side once the engines are gone.
    assert!(wait_until(Duration::from_secs(15), || cluster.native_pids().is_empty()), "{:?}", cluster.native_pids());
}

#[test]
fn a_failing_or_panicking_item_is_an_error_naming_its_index() {
    let _g = lock();
    let Some(cluster) = cluster("a_failing_or_panicking_item_is_an_error_naming_its_index") else { return };
    let engine = Engine::from_backend(builder(&cluster, 2).build().unwrap());
    let err = engine.map(FailsAtFive, 0..10u64).run().unwrap_err().to_string();
    assert!(err.contains("item 5") && err.contains("five is refused"), "{err}");
    let err = engine.map(PanicsAtThree, 0..10u64).run().unwrap_err().to_string();
    assert!(err.contains("item 3") && err.contains("three panics"), "{err}");
    // The workers are still there for the next job.
    assert_eq!(engine.map(Sq, 0..20u64).run().unwrap(), (0..20u64).map(|x| x * x).collect::<Vec<_>>());
}

#[test]
fn a_dask_worker_killed_mid_item_loses_nothing_and_leaves_no_orphan() {
    let _g = lock();
    let Some(cluster) = cluster("a_dask_worker_killed_mid_item_loses_nothing_and_leaves_no_orphan") else { return };
    let engine = Engine::from_backend(builder(&cluster, 2).build().unwrap());
    assert_eq!(engine.map(Sq, 0..4u64).run().unwrap(), vec![0, 1, 4, 9]);
    let natives = cluster.native_pids();
    assert_eq!(natives.len(), 2, "one native worker per task: {natives:?}");
    let killed = std::thread::scope(|s| {
        let killer = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(800));
            cluster.kill_worker(0).unwrap()
        });
        let out = engine.map(Slow, 0..60u64).run().unwrap();
        assert_eq!(out, (1..=60u64).collect::<Vec<_>>(), "every item once, in order");
        killer.join().unwrap()
    });
    // The native worker of the killed Dask worker died with it (PR_SET_PDEATHSIG).
    let orphan_gone = wait_until(Duration::from_secs(5), || {
        let now = cluster.native_pids();
        natives.iter().filter(|p| now.contains(p)).count() == 1
    });
    assert!(orphan_gone, "killed Dask worker {killed}: natives before {natives:?}, now {:?}", cluster.native_pids());
    // Dask reruns the task on the restarted worker (or a replacement is submitted): it dials
    // in and the next job has both workers again.
    assert!(wait_until(Duration::from_secs(60), || cluster.native_pids().len() == 2), "{}", cluster.logs());
    assert_eq!(engine.map(Sq, 0..100u64).run().unwrap(), (0..100u64).map(|x| x * x).collect::<Vec<_>>());
    drop(engine);
    assert!(wait_until(Duration::from_secs(15), || cluster.native_pids().is_empty()), "{:?}", cluster.native_pids());
}

#[test]
fn the_scheduler_killed_mid_job_is_a_clear_error_and_leaves_no_native_worker() {
    let _g = lock();
    let Some(mut cluster) = cluster("the_scheduler_killed_mid_job_is_a_clear_error_and_leaves_no_native_worker") else {
        return;
    };
    let backend = builder(&cluster, 2).build().unwrap();
    let engine = Engine::from_backend(backend);
    assert_eq!(engine.map(Sq, 0..4u64).run().unwrap(), vec![0, 1, 4, 9]);
    let engine = std::sync::Arc::new(engine);
    let job = {
        let engine = std::sync::Arc::clone(&engine);
        std::thread::spawn(move || engine.map(Slow, 0..400u64).run())
    };
    std::thread::sleep(Duration::from_millis(700));
    cluster.kill_scheduler();
    let got = bounded(Duration::from_secs(60), move || job.join().unwrap());
    let err = got.expect_err("a job whose scheduler is gone fails").to_string();
    assert!(err.contains("scheduler"), "the error names the scheduler: {err}");
    drop(engine);
    assert!(wait_until(Duration::from_secs(15), || cluster.native_pids().is_empty()), "{:?}", cluster.native_pids());
}

#[test]
fn a_crashed_native_worker_is_replaced_by_a_new_task_up_to_the_relaunch_limit() {
    let _g = lock();
    let Some(cluster) = cluster("a_crashed_native_worker_is_replaced_by_a_new_task_up_to_the_relaunch_limit") else {
        return;
    };
    // Once: the crashed worker's items are re-run, and a new task brings a new worker.
    let mark = cluster.dir().join("crashed-once");
    let engine =
        Engine::from_backend(builder(&cluster, 2).env("ADPE_TEST_CRASH_MARK", mark.to_string_lossy()).build().unwrap());
    let out = engine.map(CrashesAtSeven, 0..40u64).batched(false).run().unwrap();
    assert_eq!(out, (0..40u64).collect::<Vec<_>>(), "every item once, in order");
    assert!(mark.exists(), "item 7 did crash its worker");
    assert!(wait_until(Duration::from_secs(30), || cluster.native_pids().len() == 2), "{}", cluster.logs());
    assert_eq!(engine.map(Sq, 0..20u64).run().unwrap(), (0..20u64).map(|x| x * x).collect::<Vec<_>>());
    drop(engine);
    // Always, with no replacement allowed: the run ends naming how the task ended.
    let engine = Engine::from_backend(builder(&cluster, 2).max_relaunches(0).build().unwrap());
    let err = engine.map(CrashesAtSeven, 0..40u64).batched(false).retries(5).run().unwrap_err().to_string();
    assert!(err.contains("signal 6") || err.contains("Dask tasks ended"), "{err}");
    drop(engine);
    assert!(wait_until(Duration::from_secs(15), || cluster.native_pids().is_empty()), "{:?}", cluster.native_pids());
}

#[test]
fn a_wrong_secret_is_refused_and_counted_and_the_job_goes_on() {
    let _g = lock();
    let Some(cluster) = cluster("a_wrong_secret_is_refused_and_counted_and_the_job_goes_on") else { return };
    let engine = Engine::from_backend(builder(&cluster, 2).build().unwrap());
    let mut stranger = std::net::TcpStream::connect(engine.backend().driver_address()).unwrap();
    adparallelengine_core::remote::knock(&mut stranger, &adparallelengine_core::remote::Secret::random().unwrap(), "x")
        .unwrap();
    assert_eq!(engine.map(Sq, 0..50u64).run().unwrap(), (0..50u64).map(|x| x * x).collect::<Vec<_>>());
    assert!(wait_until(Duration::from_secs(5), || engine.backend().refused_connections() == 1));
}

#[test]
fn missing_resources_an_unreachable_scheduler_and_a_python_without_dask_are_named() {
    let _g = lock();
    let Some(cluster) = cluster("missing_resources_an_unreachable_scheduler_and_a_python_without_dask_are_named")
    else {
        return;
    };
    // No worker has a GPU: the start timeout names the cause, from the scheduler.
    let engine = Engine::from_backend(
        builder(&cluster, 1).resource("GPU", 1.0).start_timeout(Duration::from_secs(5)).build().unwrap(),
    );
    let err = engine.map(Sq, 0..3u64).run().unwrap_err().to_string();
    assert!(err.contains("no worker has the resources") && err.contains("GPU"), "{err}");
    drop(engine);
    // Nothing listens on port 1.
    let t0 = Instant::now();
    let engine = Engine::from_backend(
        builder(&cluster, 1).scheduler("tcp://127.0.0.1:1").connect_timeout(Duration::from_secs(2)).build().unwrap(),
    );
    let err = engine.map(Sq, 0..3u64).run().unwrap_err().to_string();
    assert!(err.contains("scheduler-unreachable") && err.contains("127.0.0.1:1"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(60), "not a hang");
    drop(engine);
    // A Python without `distributed`: the cluster's own, with its site-packages off.
    let dir = std::env::temp_dir().join(format!("adpe-nodask-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("python");
    std::fs::write(&fake, format!("#!/bin/sh\nexec {} -S \"$@\"\n", cluster.python().display())).unwrap();
    let mut perms = std::fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake, perms).unwrap();
    let engine = Engine::from_backend(builder(&cluster, 1).python(&fake).build().unwrap());
    let err = engine.map(Sq, 0..3u64).run().unwrap_err().to_string();
    assert!(err.contains("no-distributed") && err.contains("distributed"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    // A Python that does not exist at all.
    let engine = Engine::from_backend(builder(&cluster, 1).python("/nonexistent/python3").build().unwrap());
    let err = engine.map(Sq, 0..3u64).run().unwrap_err().to_string();
    assert!(err.contains("/nonexistent/python3"), "{err}");
}

/// Not a test of its own: the driver `a_killed_driver_leaves_no_native_worker_and_no_task`
/// starts (this binary, with [`DRIVER_OF`] set) and kills.
#[test]
fn driver_to_be_killed() {
    let Ok(scheduler) = std::env::var(DRIVER_OF) else { return };
    let python = std::env::var("ADPE_TEST_DASK_PYTHON").unwrap();
    let backend: DaskBackend = DaskBuilder::new(2)
        .scheduler(scheduler)
        .python(python)
        .program_path(exe())
        .start_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let engine = Engine::from_backend(backend);
    assert_eq!(engine.map(Sq, 0..4u64).run().unwrap(), vec![0, 1, 4, 9]);
    println!("started");
    let _ = engine.map(Slow, 0..100_000u64).run();
}

#[test]
fn a_killed_driver_leaves_no_native_worker_and_no_task() {
    let _g = lock();
    let Some(cluster) = cluster("a_killed_driver_leaves_no_native_worker_and_no_task") else { return };
    let mut driver = std::process::Command::new(exe())
        .args(["--exact", "driver_to_be_killed", "--nocapture", "--test-threads=1"])
        .env(DRIVER_OF, cluster.address())
        .env("ADPE_TEST_DASK_PYTHON", cluster.python())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(driver.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("started") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0, "the driver ended early");
    }
    assert_eq!(cluster.native_pids().len(), 2);
    driver.kill().unwrap();
    driver.wait().unwrap();
    // The native workers see their connection drop and exit; the helper sees its stdin close
    // and cancels the tasks.
    assert!(wait_until(Duration::from_secs(15), || cluster.native_pids().is_empty()), "{:?}", cluster.native_pids());
    assert!(wait_until(Duration::from_secs(15), || cluster.tasks_held().is_ok_and(|n| n == 0)), "{}", cluster.logs());
}
