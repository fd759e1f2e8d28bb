//! The Slurm cluster the `slurm` cells run against: `test-support`'s private one-node cluster
//! (munged, slurmctld and slurmd with their own config, spool and ports), started before the
//! first `slurm` cell and ended with this process. Its config is exported as `SLURM_CONF` in
//! this process's environment, so each cell's driver (a child) submits its job array to it;
//! the array's tasks run the example from its path here, which the node shares.

use adparallelengine_test_support::slurm::{slurm_installed, SlurmCluster};
use std::process::Command;

/// The cluster of the `slurm` cells, or why there is none.
pub enum Cluster {
    /// Up (it lives as long as the process).
    Up(&'static SlurmCluster),
    /// Slurm is not installed here (an error under CI).
    Missing(String),
}

impl Cluster {
    /// Starts the cluster, or says why there is none.
    pub fn start() -> Result<Cluster, String> {
        if !slurm_installed() {
            let why = "slurmctld, slurmd or munged is not installed (.ci/run installs them)".to_string();
            if crate::mpi::required() {
                return Err(format!("CI=true but {why}"));
            }
            return Ok(Cluster::Missing(why));
        }
        SlurmCluster::shared().map(Cluster::Up).map_err(|e| format!("cannot start the local Slurm cluster: {e}"))
    }

    /// Points a `slurm` cell's driver at the cluster.
    pub fn launch_env(&self, cmd: &mut Command) {
        match self {
            Cluster::Up(c) => {
                cmd.env(adparallelengine_test_support::slurm::SLURM_CONF, c.conf());
            }
            // The driver then fails naming sbatch's complaint: the kind's probe says why.
            Cluster::Missing(_) => {}
        }
    }
}
