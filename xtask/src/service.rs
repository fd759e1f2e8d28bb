//! The local cluster a kind's cells run against, if it needs one: Dask's scheduler and
//! workers for `dask`, a one-node Slurm for `slurm`. It is started before the kind's first
//! cell and ended after its last (Slurm's lives as long as the process).

use std::path::Path;
use std::process::Command;

/// A kind's running cluster, or why it has none.
pub enum Service {
    /// The `dask` cells' cluster.
    Dask(crate::dask::Cluster),
    /// The `slurm` cells' cluster.
    Slurm(crate::slurm::Cluster),
}

impl Service {
    /// Starts what `kind`'s cells need: `None` if they need nothing.
    pub fn start(kind: &str) -> Result<Option<Service>, String> {
        Ok(match kind {
            "dask" => Some(Service::Dask(crate::dask::Cluster::start()?)),
            "slurm" => Some(Service::Slurm(crate::slurm::Cluster::start()?)),
            _ => None,
        })
    }

    /// Why the cluster is missing (the kind is then skipped), if it is.
    pub fn missing(&self) -> Option<&str> {
        match self {
            Service::Dask(crate::dask::Cluster::Missing(why)) | Service::Slurm(crate::slurm::Cluster::Missing(why)) => {
                Some(why)
            }
            _ => None,
        }
    }

    /// Sets what a driver needs to reach the cluster (and, given `bin`, what its workers run
    /// where the kind needs to be told).
    pub fn launch_env(&self, cmd: &mut Command, bin: Option<&Path>) {
        match self {
            Service::Dask(c) => c.launch_env(cmd, bin),
            Service::Slurm(c) => c.launch_env(cmd),
        }
    }
}
