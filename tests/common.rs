//! Helpers shared by the integration tests (included with `mod common;`).
#![allow(dead_code)]

use adparallelengine::{Engine, Kind, Progress};

/// Every engine a behaviour must hold on: serial, threads with 2 and 4 workers (4 > cores, so
/// scheduling interleaves for real), and worker processes (this test binary, re-executed).
pub fn engines() -> Vec<(String, Engine)> {
    let mut v = in_process_engines();
    v.extend(build(&[(Kind::Process, Some(2)), (Kind::Process, Some(3))]));
    v
}

/// The in-process engines, for tests that observe workers through this process's memory
/// (statics, addresses, thread names).
pub fn in_process_engines() -> Vec<(String, Engine)> {
    build(&[(Kind::Serial, None), (Kind::Threads, Some(2)), (Kind::Threads, Some(4))])
}

fn build(kinds: &[(Kind, Option<usize>)]) -> Vec<(String, Engine)> {
    let mut v = vec![];
    for &(kind, workers) in kinds {
        let e = Engine::builder(kind).max_workers_opt(workers).progress(Progress::quiet()).build().expect("engine");
        v.push((format!("{kind}/{}", workers.map_or("default".to_string(), |w| w.to_string())), e));
    }
    v
}

/// A quiet threads engine of `workers` workers.
pub fn threads(workers: usize) -> Engine {
    Engine::builder(Kind::Threads).max_workers(workers).progress(Progress::quiet()).build().expect("engine")
}

/// A quiet process engine of `workers` workers.
pub fn processes(workers: usize) -> Engine {
    Engine::builder(Kind::Process).max_workers(workers).progress(Progress::quiet()).build().expect("engine")
}

/// The path of example `name`, built with this test binary (`cargo test` builds examples;
/// `cargo test --test X` alone does not: then run `cargo build --example NAME` first).
pub fn example(name: &str) -> std::path::PathBuf {
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("this test's path");
    let profile_dir = exe.parent().and_then(std::path::Path::parent).expect("a target directory");
    profile_dir.join("examples").join(name)
}
