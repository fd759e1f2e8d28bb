//! The Slurm backend on a real one-node Slurm cluster (`munged`, `slurmctld`, `slurmd`,
//! started once for this test binary by `test-support`'s `SlurmCluster`), the workers being
//! this test binary run by the array's tasks. Faults are real: tasks `scancel`ed mid-item,
//! `sbatch` refusing, tasks that cannot start, a driver interrupted or killed outright.

use adparallelengine_core::conformance::{Kit, SharedBackend};
use adparallelengine_core::{task, try_task, Engine};
use adparallelengine_slurm::{SlurmBackend, SlurmBuilder};
use adparallelengine_test_support::slurm::{slurm_or_skip, workers_of, SlurmCluster, NODE_MEMORY_MIB, PARTITION};
use adparallelengine_test_support::wait::wait_until;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

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

/// One test at a time: the node has 2 CPUs, and the tests count tasks and processes.
static SERIAL: Mutex<()> = Mutex::new(());

/// Turns this test binary into a driver to be interrupted or killed (`driver_to_be_ended`).
const DRIVER_OF: &str = "ADPE_TEST_SLURM_DRIVER_OF";

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn builder(workers: usize) -> SlurmBuilder {
    SlurmBuilder::new(workers).advertise("127.0.0.1").start_timeout(Duration::from_secs(60))
}

/// Nothing of the run is left: no task in the queue, no worker process on the node.
fn assert_nothing_left(cluster: &SlurmCluster, job_name: &str, driver: &str) {
    let gone = wait_until(Duration::from_secs(20), || {
        cluster.queued(job_name).is_ok_and(|q| q.is_empty()) && workers_of(driver).is_empty()
    });
    assert!(gone, "left: queue {:?}, workers {:?}\n{}", cluster.queued(job_name), workers_of(driver), cluster.logs());
}

fn ended(engine: Engine<SlurmBackend>, cluster: &SlurmCluster) {
    let (name, driver) = (engine.backend().job_name().to_string(), engine.backend().driver_address().to_string());
    drop(engine);
    assert_nothing_left(cluster, &name, &driver);
}

#[test]
fn slurm_passes_the_conformance_kit() {
    let _g = lock();
    let Some(cluster) = slurm_or_skip("slurm_passes_the_conformance_kit") else { return };
    let backend = builder(2).build().unwrap();
    let (name, driver) = (backend.job_name().to_string(), backend.driver_address().to_string());
    let report = Kit::new(SharedBackend::maker(backend)).run();
    assert!(report.is_ok(), "{report}\n{}", cluster.logs());
    assert_nothing_left(cluster, &name, &driver);
}

#[test]
fn an_item_error_names_its_index_and_the_workers_stay() {
    let _g = lock();
    let Some(cluster) = slurm_or_skip("an_item_error_names_its_index_and_the_workers_stay") else { return };
    let engine = Engine::from_backend(builder(2).build().unwrap());
    let err = engine.map(FailsAtFive, 0..10u64).run().unwrap_err().to_string();
    assert!(err.contains("item 5") && err.contains("five is refused"), "{err}");
    assert_eq!(engine.map(Sq, 0..20u64).run().unwrap(), (0..20u64).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(cluster.running(engine.backend().job_name()).len(), 2);
    ended(engine, cluster);
}

#[test]
fn a_task_cancelled_mid_item_loses_nothing_and_is_replaced() {
    let _g = lock();
    let Some(cluster) = slurm_or_skip("a_task_cancelled_mid_item_loses_nothing_and_is_replaced") else { return };
    let engine = Engine::from_backend(builder(2).build().unwrap());
    assert_eq!(engine.map(Sq, 0..4u64).run().unwrap(), vec![0, 1, 4, 9]);
    let name = engine.backend().job_name().to_string();
    let running = cluster.running(&name);
    assert_eq!(running.len(), 2, "{running:?}");
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(800));
            cluster.cancel(&running[0]).unwrap();
        });
        let out = engine.map(Slow, 0..60u64).run().unwrap();
        assert_eq!(out, (1..=60u64).collect::<Vec<_>>(), "every item once, in order");
    });
    // A new task took the cancelled one's place.
    let replaced = wait_until(Duration::from_secs(30), || {
        let now = cluster.running(&name);
        now.len() == 2 && !now.contains(&running[0])
    });
    assert!(replaced, "running: {:?}\n{}", cluster.running(&name), cluster.logs());
    assert_eq!(engine.map(Sq, 0..10u64).run().unwrap(), (0..10u64).map(|x| x * x).collect::<Vec<_>>());
    ended(engine, cluster);
}

#[test]
fn sbatch_refusals_are_errors_in_slurms_own_words() {
    let _g = lock();
    let Some(cluster) = slurm_or_skip("sbatch_refusals_are_errors_in_slurms_own_words") else { return };
    let engine = Engine::from_backend(builder(2).partition("no-such-partition").build().unwrap());
    let err = engine.map(Sq, 0..4u64).run().unwrap_err().to_string();
    assert!(err.contains("sbatch refused") && err.contains("Invalid partition"), "{err}");
    ended(engine, cluster);
    // More memory per task than the node has: no task could ever start.
    let too_much = format!("{}M", NODE_MEMORY_MIB * 2);
    let engine = Engine::from_backend(builder(2).partition(PARTITION).mem_per_task(too_much).build().unwrap());
    let err = engine.map(Sq, 0..4u64).run().unwrap_err().to_string();
    assert!(err.contains("sbatch refused") && err.contains("node configuration is not available"), "{err}");
    ended(engine, cluster);
}

#[test]
fn tasks_pending_past_the_start_timeout_are_named_with_slurms_reason() {
    let _g = lock();
    let Some(cluster) = slurm_or_skip("tasks_pending_past_the_start_timeout_are_named_with_slurms_reason") else {
        return;
    };
    let backend = builder(2).sbatch_arg("--begin=now+3600").start_timeout(Duration::from_secs(3)).build().unwrap();
    let engine = Engine::from_backend(backend);
    let err = engine.map(Sq, 0..4u64).run().unwrap_err().to_string();
    assert!(err.contains("Slurm task") && err.contains("PENDING") && err.contains("BeginTime"), "{err}");
    ended(engine, cluster);
}

#[test]
fn tasks_that_fail_at_start_end_the_run_naming_exit_code_and_node() {
    let _g = lock();
    let Some(cluster) = slurm_or_skip("tasks_that_fail_at_start_end_the_run_naming_exit_code_and_node") else {
        return;
    };
    let backend = builder(2).program_path("/bin/false").max_relaunches(1).build().unwrap();
    let engine = Engine::from_backend(backend);
    let err = engine.map(Sq, 0..4u64).run().unwrap_err().to_string();
    assert!(err.contains("FAILED") && err.contains("exit code 1") && err.contains(cluster.node()), "{err}");
    assert!(err.contains("at most 1 replacements"), "{err}");
    ended(engine, cluster);
}

/// Run as a child by `a_driver_interrupted_or_killed_leaves_nothing`: a driver whose job
/// never ends, to be interrupted or killed.
#[test]
fn driver_to_be_ended() {
    if std::env::var_os(DRIVER_OF).is_none() {
        return;
    }
    let engine = Engine::from_backend(builder(2).build().unwrap());
    assert_eq!(engine.map(Sq, 0..4u64).run().unwrap(), vec![0, 1, 4, 9]);
    println!("READY {} {}", engine.backend().job_name(), engine.backend().driver_address());
    let _ = engine.map(Slow, 0..100_000u64).run();
}

fn driver_child(cluster: &SlurmCluster) -> (std::process::Child, String, String) {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["driver_to_be_ended", "--exact", "--nocapture", "--test-threads=1"])
        .env(DRIVER_OF, "1")
        .env("SLURM_CONF", cluster.conf())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    for line in out.lines() {
        let line = line.unwrap();
        // libtest prints `test driver_to_be_ended ... ` on the same line first.
        if let Some((_, rest)) = line.split_once("READY ") {
            let (name, driver) = rest.split_once(' ').unwrap();
            return (child, name.to_string(), driver.to_string());
        }
    }
    let _ = child.kill();
    let status = child.wait();
    panic!("the driver ended before its first job ({status:?})\n{}", cluster.logs());
}

#[test]
fn a_driver_interrupted_or_killed_leaves_nothing() {
    let _g = lock();
    let Some(cluster) = slurm_or_skip("a_driver_interrupted_or_killed_leaves_nothing") else { return };
    for signal in [libc::SIGINT, libc::SIGKILL] {
        let (mut child, name, driver) = driver_child(cluster);
        assert_eq!(cluster.running(&name).len(), 2, "{:?}", cluster.queued(&name));
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: kill(2) on the pid of our own child, which has not been waited for.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let status = child.wait().unwrap();
        if signal == libc::SIGINT {
            assert_eq!(status.code(), Some(130), "{status:?}");
        }
        assert_nothing_left(cluster, &name, &driver);
    }
}

adparallelengine_core::task!(
    /// The series' sum plus `x`, and the `.bin` files this task has mapped.
    SumAndMaps = |x: u64, s: &adparallelengine_core::Shared<adparallelengine_core::arrow::Series>| -> (u64, String) {
        let col = s.0.as_any().downcast_ref::<arrow_array::Int64Array>().expect("int64");
        let sum: i64 = col.values().iter().sum();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let files: Vec<&str> =
            maps.lines().filter_map(|l| l.split_whitespace().nth(5)).filter(|p| p.ends_with(".bin")).collect();
        (x + sum as u64, files.join(","))
    }
);

#[test]
fn shared_values_are_shipped_to_tasks_or_read_from_the_shared_file_system() {
    let _g = lock();
    let Some(cluster) = slurm_or_skip("shared_values_are_shipped_to_tasks_or_read_from_the_shared_file_system") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("adpe-slurm-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let series = adparallelengine_core::Shared::new(adparallelengine_core::arrow::Series(std::sync::Arc::new(
        arrow_array::Int64Array::from(vec![1, 2, 3]),
    )));
    for volume in [false, true] {
        let engine =
            Engine::from_backend(builder(2).path_shared(Some(dir.clone())).shared_volume(volume).build().unwrap());
        let out = engine.map(SumAndMaps, 0..8u64).args(series.clone()).batched(false).run().unwrap();
        for (x, (y, maps)) in out.iter().enumerate() {
            assert_eq!(*y, x as u64 + 6);
            // Mapped zero-copy either way: from the driver's directory (the shared file system)
            // or from the task's own copy, sent over its connection.
            assert!(!maps.is_empty(), "item {x}: nothing mapped");
            let from_dir = maps.split(',').all(|m| m.starts_with(dir.to_str().unwrap()));
            assert_eq!(from_dir, volume, "item {x} (shared file system: {volume}): mapped {maps}");
        }
        ended(engine, cluster);
    }
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "the driver's shared directory is emptied with its engine: {left:?}");
    let _ = std::fs::remove_dir(&dir);
}
