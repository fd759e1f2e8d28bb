//! The MPI backend under a real `mpirun -n 3`: results, the errors of a task, a rank that
//! dies, a driver that dies, and the kind used without a launcher. Each scenario is the
//! `mpi_faults` example (cargo builds examples for tests); every run has a time limit, so a
//! hang fails the test instead of holding it.
#![cfg(feature = "mpi")]

mod common;

use adparallelengine::{Engine, Kind};
use adparallelengine_test_support::mpi::{self, launcher, Run};
use std::time::{Duration, Instant};

use common::example;

/// Runs `mpi_faults MODE` on 3 ranks; kills the launcher after `limit`.
fn run(mode: &str, limit: Duration) -> Run {
    run_example("mpi_faults", &[mode], limit)
}

/// Runs example `name` with `args` on 3 ranks; kills the launcher after `limit`.
fn run_example(name: &str, args: &[&str], limit: Duration) -> Run {
    let mut cmd = launcher(3);
    cmd.arg(example(name)).args(args);
    mpi::run(cmd, limit)
}

/// Processes still running the example (none may outlive a run).
fn leftovers() -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if first.ends_with(b"examples/mpi_faults") {
            n += 1;
        }
    }
    n
}

fn assert_no_leftovers(what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while leftovers() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(leftovers(), 0, "{what}: ranks left running");
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(feature = "conformance")]
#[test]
fn the_mpi_backend_passes_the_conformance_kit() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let r = run_example("conformance_mpi", &[], Duration::from_secs(600));
    assert_eq!(r.code, Some(0), "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains(" passed, 0 failure(s), 0 check(s) skipped"), "{}", r.stdout);
    assert!(!r.stdout.contains("conformance kit: 0 passed"), "{}", r.stdout);
}

#[test]
fn jobs_on_worker_ranks_give_every_result_and_every_rank_exits_0() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let r = run("ok", Duration::from_secs(120));
    assert_eq!(r.code, Some(0), "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    // Printed once, by rank 0 only.
    assert_eq!(r.stdout.matches("rank 0: ok done").count(), 1, "{}", r.stdout);
    assert!(r.stdout.contains("rank 0: workers=2"), "{}", r.stdout);
    assert_no_leftovers("after a clean run");
}

#[test]
fn a_task_panic_or_error_reaches_the_driver_with_its_index() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let r = run("panic", Duration::from_secs(120));
    assert_eq!(r.code, Some(1), "stderr:\n{}", r.stderr);
    assert!(r.stderr.contains("Error: item 7 panicked: item seven is cursed"), "{}", r.stderr);
    let r = run("err", Duration::from_secs(120));
    assert_eq!(r.code, Some(1), "stderr:\n{}", r.stderr);
    assert!(r.stderr.contains("Error: item 7 returned an error: item seven is invalid"), "{}", r.stderr);
    assert_no_leftovers("after task errors");
}

#[test]
fn a_rank_that_dies_ends_the_run_naming_the_items_it_held() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let r = run("abort", Duration::from_secs(120));
    assert_ne!(r.code, Some(0), "stderr:\n{}", r.stderr);
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("items sent to worker ranks and not returned"))
        .unwrap_or_else(|| panic!("no report of the lost items:\n{}", r.stderr));
    assert!(line.contains("items 7..8"), "{line}");
    eprintln!("a dying rank ended the run in {:?}: {line}", r.took);
    assert_no_leftovers("after a rank died");
}

#[test]
fn a_driver_that_dies_takes_every_rank_with_it() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let r = run("driver-dies", Duration::from_secs(120));
    assert_eq!(r.code, Some(101), "stderr:\n{}", r.stderr);
    assert!(r.stderr.contains("the driver dies with its engine alive"), "{}", r.stderr);
    assert_no_leftovers("after the driver died");
}

#[test]
fn without_a_launcher_the_mpi_kind_says_how_to_run() {
    let err = Engine::builder(Kind::Mpi).build().unwrap_err();
    assert!(err.to_string().contains("mpirun -n N"), "{err}");
}

#[test]
fn shared_values_reach_ranks_through_path_shared_or_over_mpi() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tmp_before = local_stores();
    for (mode, from_driver_dir) in [("no-ship", true), ("ship", false)] {
        let r = run(mode, Duration::from_secs(120));
        assert_eq!(r.code, Some(0), "{mode}: stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
        let driver = r.stdout.lines().find_map(|l| l.strip_prefix("driver store under ")).expect("driver dir");
        let mapped: Vec<&str> = r.stdout.lines().filter_map(|l| l.split_once(": mapped ").map(|(_, m)| m)).collect();
        assert_eq!(mapped.len(), 16, "{mode}: {}", r.stdout);
        for m in mapped {
            assert!(m.ends_with(".bin"), "{mode}: the series is mapped from a store file: {m}");
            assert_eq!(m.starts_with(driver), from_driver_dir, "{mode}: mapped {m}, driver store under {driver}");
        }
    }
    // The ranks' own stores are gone with them.
    // New entries only: a store's sweep may remove what SIGKILLed runs left before.
    let left: Vec<String> = local_stores().into_iter().filter(|n| !tmp_before.contains(n)).collect();
    assert!(left.is_empty(), "rank-local stores left in the temp dir: {left:?}");
    assert_no_leftovers("after sharing");
}

/// The share directories in the system temp dir.
fn local_stores() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("adparallelengine-"))
        .collect();
    v.sort();
    v
}

#[test]
fn an_item_timeout_gives_up_on_its_rank_and_the_run_still_ends() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let r = run("timeout", Duration::from_secs(120));
    assert!(r.stdout.contains("rank 0: item 3 timed out, the 11 others came back"), "{}\n{}", r.stdout, r.stderr);
    // The rank still running item 3 cannot be closed: the engine's end aborts the MPI job
    // after its grace period instead of hanging in MPI_Finalize.
    assert_ne!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("did not finish their job"), "{}", r.stderr);
    assert!(r.took < Duration::from_secs(60), "{:?}", r.took);
    assert_no_leftovers("after an item timeout");
}

/// Worker ranks of another build (MPMD: rank 0 runs `mpi_faults`, ranks 1 and 2 another
/// program of this project, `conformance_mpi`): the first job fails at once naming both builds,
/// every rank exits, and nothing waits for the refusing ranks.
#[cfg(feature = "conformance")]
#[test]
fn worker_ranks_of_another_build_fail_the_first_job_at_once_naming_both_builds() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut cmd = launcher(1);
    cmd.arg(example("mpi_faults")).arg("ok").arg(":").args(["-n", "2"]).arg(example("conformance_mpi"));
    let t0 = Instant::now();
    let out = cmd.output().expect("start mpirun");
    let took = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Error: backend mpi: no worker can run this job"), "{stderr}");
    assert!(stderr.contains("another build of the program (worker build-id-"), "{stderr}");
    assert!(stderr.contains(", driver build-id-"), "{stderr}");
    assert!(!stderr.contains("did not finish their job"), "the refusing ranks are not waited for: {stderr}");
    // Not a speed assert: no grace period or timeout is waited for (it was 10 s).
    assert!(took < Duration::from_secs(60), "{took:?}");
}
