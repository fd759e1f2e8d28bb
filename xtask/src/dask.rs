//! The Dask cluster the `dask` cells run against: one real local cluster (`dask scheduler` and
//! two `dask worker --nworkers 1 --nthreads 1`, from `test-support`'s harness and the python
//! with `distributed`: `ADPARALLELENGINE_DASK_PYTHON`, else `target/dask-venv`), started before
//! the first `dask` cell and ended after the last. Each cell's driver reaches it through
//! `ADPARALLELENGINE_DASK_SCHEDULER`, and its workers run the example from its path here
//! (`ADPARALLELENGINE_DASK_PROGRAM`: the cluster is on this machine, so nothing is uploaded; the
//! backend's own tests cover the upload).

use adparallelengine_test_support::dask::{dask_python, python_candidate, DaskCluster};
use std::path::Path;
use std::process::Command;

/// The cluster of the `dask` cells, or why there is none.
pub enum Cluster {
    /// Up.
    Up(DaskCluster),
    /// No python with `distributed` here (an error under CI).
    Missing(String),
}

impl Cluster {
    /// Starts the cluster (on the calling thread, which must outlive it: its processes die
    /// with the thread that started them).
    pub fn start() -> Result<Cluster, String> {
        if dask_python().is_none() {
            let why = format!("{} has no `distributed` (.ci/run makes target/dask-venv)", python_candidate().display());
            if crate::mpi::required() {
                return Err(format!("CI=true but {why}"));
            }
            return Ok(Cluster::Missing(why));
        }
        DaskCluster::start(2).map(Cluster::Up).map_err(|e| format!("cannot start the local Dask cluster: {e}"))
    }

    /// Sets what a driver needs to find the cluster, and, given `bin`, the program its
    /// workers run (else the driver's default: its own executable, uploaded).
    pub fn launch_env(&self, cmd: &mut Command, bin: Option<&Path>) {
        match self {
            Cluster::Up(c) => {
                cmd.env("ADPARALLELENGINE_DASK_SCHEDULER", c.address()).env("ADPARALLELENGINE_DASK_PYTHON", c.python());
                if let Some(bin) = bin {
                    cmd.env("ADPARALLELENGINE_DASK_PROGRAM", bin);
                }
            }
            // The driver then fails naming the missing scheduler: the kind's probe says why.
            Cluster::Missing(_) => {}
        }
    }
}
