//! The Dask backend on a real local Dask cluster (`dask scheduler` and two `dask worker
//! --nworkers 1 --nthreads 1`, from the python with `distributed`: `ADPARALLELENGINE_DASK_PYTHON`
//! or `target/dask-venv`), each figure against a baseline of the same run:
//!
//! - (a) per-item round trip, unbatched, 1 worker: Dask (a native worker over TCP) vs the
//!   process backend (a worker process over a socket pair);
//! - (b) 64 CPU-bound items of about 50 ms on 2 Dask workers: speedup over serial;
//! - (c) the time to the first result of a new engine (the helper, the tasks, the dial-in) and
//!   of its second job (the workers kept).
//!
//! `cargo bench --bench dask --features dask` (or `cargo xtask bench`).

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use adparallelengine::backends::dask::DaskBuilder;
use adparallelengine_test_support::dask::{dask_python, DaskCluster};

fn main() {
    if dask_python().is_none() {
        println!("dask bench skipped: no python with `distributed` (make target/dask-venv, see the README)");
        return;
    }
    let cluster = DaskCluster::start(2).expect("a local Dask cluster");
    let exe = std::env::current_exe().expect("exe");
    cluster::print_figures("Dask", "dask worker", |workers: usize| {
        DaskBuilder::new(workers)
            .scheduler(cluster.address())
            .python(cluster.python())
            .program_path(&exe)
            .build()
            .expect("dask backend")
    });
}
