//! The Dask backend as a program uses it (`Kind::Dask`, configured from the environment),
//! against a real local Dask cluster: a driver interrupted with Ctrl-C cancels its tasks and
//! leaves no native worker on the workers' side.
#![cfg(feature = "dask")]

mod common;

use adparallelengine_test_support::dask::{dask_python_or_skip, DaskCluster};
use adparallelengine_test_support::wait::wait_until;
use common::example;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn ctrl_c_cancels_the_tasks_and_ends_every_native_worker() {
    if dask_python_or_skip("ctrl_c_cancels_the_tasks_and_ends_every_native_worker").is_none() {
        return;
    }
    let cluster = DaskCluster::start(2).unwrap();
    let bin = example("interrupt_me");
    assert!(bin.exists(), "{} missing: `cargo build --example interrupt_me --features dask`", bin.display());
    let mut child = Command::new(&bin)
        .arg("dask")
        .env("ADPARALLELENGINE_DASK_SCHEDULER", cluster.address())
        .env("ADPARALLELENGINE_DASK_PYTHON", cluster.python())
        .env("ADPARALLELENGINE_DASK_PROGRAM", &bin)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("started "), "{line:?}");
    assert_eq!(cluster.native_pids().len(), 2, "two native workers, one per task");
    // SAFETY: kill(2) of our child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(wait_until(Duration::from_secs(15), || cluster.native_pids().is_empty()), "{:?}", cluster.native_pids());
    assert!(wait_until(Duration::from_secs(15), || cluster.tasks_held().is_ok_and(|n| n == 0)), "{}", cluster.logs());
}
