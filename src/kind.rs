//! [`Kind`]: which backend an engine runs on, parsed from the Python original's strings.

use adparallelengine_core::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// The engine kinds. Parse them from the Python original's strings:
///
/// ```
/// use adparallelengine::Kind;
/// assert_eq!("multithread".parse::<Kind>().unwrap(), Kind::Threads);
/// assert_eq!("multiproc".parse::<Kind>().unwrap(), Kind::Process);
/// assert_eq!("dask".parse::<Kind>().unwrap(), Kind::Dask);
/// assert!("gpu".parse::<Kind>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Every item in the calling thread (for debugging; the reference semantics).
    Serial,
    /// A pool of threads (`threads`, `multithread`).
    Threads,
    /// Worker processes running this same binary (`process`, `multiproc`).
    Process,
    /// MPI ranks under `mpirun`.
    Mpi,
    /// Pods of a Kubernetes Job.
    K8s,
    /// Native workers started by tasks of a Dask cluster.
    Dask,
    /// The tasks of a Slurm job array.
    Slurm,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 7] =
        [Kind::Serial, Kind::Threads, Kind::Process, Kind::Mpi, Kind::K8s, Kind::Dask, Kind::Slurm];

    /// The canonical name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Serial => "serial",
            Kind::Threads => "threads",
            Kind::Process => "process",
            Kind::Mpi => "mpi",
            Kind::K8s => "k8s",
            Kind::Dask => "dask",
            Kind::Slurm => "slurm",
        }
    }

    /// Whether this build can run this kind (its feature is on and its backend exists).
    pub fn is_available(&self) -> bool {
        self.unavailable_reason().is_none()
    }

    /// Every kind this build can run.
    pub fn available() -> Vec<Kind> {
        Kind::ALL.into_iter().filter(Kind::is_available).collect()
    }

    pub(crate) fn unavailable_reason(&self) -> Option<String> {
        let feature_on = match self {
            Kind::Serial => true,
            Kind::Threads => cfg!(feature = "threads"),
            Kind::Process => cfg!(feature = "process"),
            Kind::Mpi => cfg!(feature = "mpi"),
            Kind::K8s => cfg!(feature = "k8s"),
            Kind::Dask => cfg!(feature = "dask"),
            Kind::Slurm => cfg!(feature = "slurm"),
        };
        (!feature_on).then(|| {
            format!(
                "this build of adparallelengine does not enable the `{0}` feature (add `features = [\"{0}\"]` to the dependency)",
                self.as_str()
            )
        })
    }

    /// An error unless this build can run this kind.
    pub fn ensure_available(&self) -> Result<()> {
        match self.unavailable_reason() {
            None => Ok(()),
            Some(reason) => Err(Error::KindUnavailable { kind: self.as_str().into(), reason }),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Kind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "serial" => Ok(Kind::Serial),
            "threads" | "thread" | "multithread" | "multithreading" => Ok(Kind::Threads),
            "process" | "processes" | "multiproc" | "multiprocessing" => Ok(Kind::Process),
            "mpi" => Ok(Kind::Mpi),
            "k8s" | "kubernetes" => Ok(Kind::K8s),
            "dask" => Ok(Kind::Dask),
            "slurm" => Ok(Kind::Slurm),
            _ => Err(Error::UnknownKind(s.to_string())),
        }
    }
}
