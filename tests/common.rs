//! Helpers shared by the integration tests (included with `mod common;`).
#![allow(dead_code)]

use adparallelengine::{Engine, Kind, Progress};

/// Every in-process engine a behaviour must hold on: serial, and threads with 2 and 4
/// workers (4 > cores, so scheduling interleaves for real).
pub fn engines() -> Vec<(String, Engine)> {
    let mut v = vec![];
    for (kind, workers) in [(Kind::Serial, None), (Kind::Threads, Some(2)), (Kind::Threads, Some(4))] {
        let e = Engine::builder(kind).max_workers_opt(workers).progress(Progress::quiet()).build().expect("engine");
        v.push((format!("{kind}/{}", workers.map_or("default".to_string(), |w| w.to_string())), e));
    }
    v
}

pub fn threads(workers: usize) -> Engine {
    Engine::builder(Kind::Threads).max_workers(workers).progress(Progress::quiet()).build().expect("engine")
}
