//! What the engine asks of the Dask cluster: where its scheduler is, which Python runs the
//! helper, where the program is on the workers, and how the driver is reached. Every option
//! has a builder method on [`DaskBuilder`]; the common ones also come from the environment
//! ([`DaskBuilder::from_env`]), so that `Kind::Dask` runs the Python original's programs
//! unchanged.

use crate::dask_err;
use adparallelengine_core::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The scheduler's address, e.g. `tcp://10.0.0.5:8786`.
pub const ENV_SCHEDULER: &str = "ADPARALLELENGINE_DASK_SCHEDULER";
/// The Python interpreter that runs the helper (one with `distributed` installed).
pub const ENV_PYTHON: &str = "ADPARALLELENGINE_DASK_PYTHON";
/// The program's path on the workers, when they share one (default: uploaded to each).
pub const ENV_PROGRAM: &str = "ADPARALLELENGINE_DASK_PROGRAM";
/// The driver's address as the Dask workers reach it: `host` or `host:port`.
pub const ENV_ADVERTISE: &str = "ADPARALLELENGINE_DASK_ADVERTISE";
/// Seconds the tasks have to start and dial in.
pub const ENV_START_TIMEOUT: &str = "ADPARALLELENGINE_DASK_START_TIMEOUT";
/// Resources each task asks for, `NAME=amount[,NAME=amount]` (e.g. `ADPE=1`).
pub const ENV_RESOURCES: &str = "ADPARALLELENGINE_DASK_RESOURCES";

/// Settings of a Dask engine. Start from [`DaskBuilder::new`] or [`DaskBuilder::from_env`],
/// then [`build`](DaskBuilder::build).
///
/// ```no_run
/// use adparallelengine_dask::DaskBuilder;
/// use std::time::Duration;
/// let backend = DaskBuilder::new(8)
///     .scheduler("tcp://scheduler.example.com:8786")
///     .resource("ADPE", 1.0)
///     .start_timeout(Duration::from_secs(300))
///     .build()?;
/// # Ok::<(), adparallelengine_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct DaskBuilder {
    pub(crate) workers: usize,
    pub(crate) scheduler: Option<String>,
    pub(crate) python: PathBuf,
    pub(crate) program: Option<PathBuf>,
    pub(crate) resources: BTreeMap<String, f64>,
    pub(crate) restrict: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) advertise: Option<String>,
    pub(crate) listen: String,
    pub(crate) start_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) path_shared: Option<PathBuf>,
    pub(crate) shared_volume: bool,
    pub(crate) max_relaunches: Option<usize>,
}

impl DaskBuilder {
    /// `workers` long-running tasks on the cluster (each holds one Dask thread for the run).
    pub fn new(workers: usize) -> Self {
        DaskBuilder {
            workers: workers.max(1),
            scheduler: None,
            python: PathBuf::from("python3"),
            program: None,
            resources: BTreeMap::new(),
            restrict: Vec::new(),
            env: BTreeMap::new(),
            advertise: None,
            listen: "0.0.0.0".into(),
            start_timeout: Duration::from_secs(180),
            connect_timeout: Duration::from_secs(20),
            path_shared: None,
            shared_volume: false,
            max_relaunches: None,
        }
    }

    /// [`new`](Self::new), with the options the environment gives:
    /// `ADPARALLELENGINE_DASK_SCHEDULER`, `_PYTHON`, `_PROGRAM`, `_ADVERTISE`,
    /// `_START_TIMEOUT` (seconds), `_RESOURCES` (`NAME=amount,...`). A malformed value is an
    /// error.
    pub fn from_env(workers: usize) -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut b = DaskBuilder::new(workers);
        b.scheduler = var(ENV_SCHEDULER);
        if let Some(p) = var(ENV_PYTHON) {
            b.python = PathBuf::from(p);
        }
        b.program = var(ENV_PROGRAM).map(PathBuf::from);
        b.advertise = var(ENV_ADVERTISE);
        if let Some(t) = var(ENV_START_TIMEOUT) {
            let secs: f64 =
                t.trim().parse().ok().filter(|s: &f64| s.is_finite() && *s > 0.0).ok_or_else(|| {
                    dask_err(format!("{ENV_START_TIMEOUT}={t:?} is not a positive number of seconds"))
                })?;
            b.start_timeout = Duration::from_secs_f64(secs);
        }
        if let Some(r) = var(ENV_RESOURCES) {
            for part in r.split(',').filter(|p| !p.trim().is_empty()) {
                let (name, amount) = part
                    .split_once('=')
                    .and_then(|(n, a)| Some((n.trim(), a.trim().parse::<f64>().ok()?)))
                    .filter(|(n, a)| !n.is_empty() && a.is_finite() && *a > 0.0)
                    .ok_or_else(|| dask_err(format!("{ENV_RESOURCES}: {part:?} is not NAME=positive amount")))?;
                b.resources.insert(name.to_string(), amount);
            }
        }
        Ok(b)
    }

    /// The scheduler's address (`tcp://host:8786`); required, here or from
    /// `ADPARALLELENGINE_DASK_SCHEDULER`.
    pub fn scheduler(mut self, address: impl Into<String>) -> Self {
        self.scheduler = Some(address.into());
        self
    }

    /// The Python that runs the helper (default `python3`): it needs `distributed`, of a
    /// version that can talk to the scheduler (the same as the cluster's).
    pub fn python(mut self, python: impl Into<PathBuf>) -> Self {
        self.python = python.into();
        self
    }

    /// The program's path on the workers, when they all see it there (a shared file system).
    /// Default: this executable is uploaded to each worker (Dask's `UploadFile` plugin) and run
    /// from its local directory.
    pub fn program_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.program = Some(path.into());
        self
    }

    /// A resource each task asks for (workers started with `--resources NAME=amount`); tasks
    /// run only on workers that have it.
    pub fn resource(mut self, name: impl Into<String>, amount: f64) -> Self {
        self.resources.insert(name.into(), amount);
        self
    }

    /// Runs the tasks only on these workers (addresses or names, as Dask's `workers=`).
    pub fn restrict_to<S: Into<String>>(mut self, workers: impl IntoIterator<Item = S>) -> Self {
        self.restrict = workers.into_iter().map(Into::into).collect();
        self
    }

    /// An environment variable for the native workers (e.g. `RUST_LOG`).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// The driver's address as the workers reach it: `host` (the port is any free one) or
    /// `host:port` (that port is listened on). Default: this machine's address on its route
    /// to the scheduler.
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.advertise = Some(address.into());
        self
    }

    /// The address the driver listens on (default `0.0.0.0`, every interface).
    pub fn listen(mut self, address: impl Into<String>) -> Self {
        self.listen = address.into();
        self
    }

    /// How long a job waits for a task to dial in before it fails naming the missing tasks
    /// and what Dask says of them (default 180 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How long the helper tries to reach the scheduler (default 20 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many times, in all, a task that ended (its native worker crashed or was stopped)
    /// is replaced by a new one (default: 3 per worker); past that the run fails.
    pub fn max_relaunches(mut self, n: usize) -> Self {
        self.max_relaunches = Some(n);
        self
    }

    /// The directory under which the driver keeps shared values (default: the temp dir).
    pub fn path_shared(mut self, dir: Option<PathBuf>) -> Self {
        self.path_shared = dir;
        self
    }

    /// The workers see `path_shared` at the same path (a shared file system): shared values
    /// are read from there instead of being sent to each worker over its connection.
    pub fn shared_volume(mut self, yes: bool) -> Self {
        self.shared_volume = yes;
        self
    }

    /// The backend. Nothing is started on the cluster until the first job.
    pub fn build(self) -> Result<crate::DaskBackend> {
        crate::DaskBackend::from_builder(self)
    }
}
