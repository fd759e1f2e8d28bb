//! The Dask backend: the tasks run in this same program on the workers of a Dask cluster,
//! each started by a long-running Dask task, and each dialing back to the driver over TCP.
//!
//! - The first job starts a Python helper (shipped in this crate, run with
//!   [`python`](DaskBuilder::python), `python3` by default, which needs `distributed`). It
//!   connects to the scheduler with Dask's own client and submits `max_workers` tasks
//!   (`pure=False`, with the [resources](DaskBuilder::resource) and
//!   [restrictions](DaskBuilder::restrict_to) asked). Each task runs this program, uploaded to
//!   every worker with Dask's `UploadFile` plugin unless the workers share a
//!   [path](DaskBuilder::program_path) to it; the program becomes a worker before `main`
//!   (engine-core's [`dial_in`](adparallelengine_core::remote::dial_in) layer, which this
//!   backend brings a launcher to), dials the driver, knocks with the run's secret and serves
//!   jobs until the driver closes its connection.
//! - Scheduling, batching, retries of a lost worker's items, item timeouts, ordering and
//!   shared values (sent once to each worker over its connection) are engine-core's, as for
//!   pods and worker processes. Results are counted by items, never by Dask tasks: a task Dask
//!   reruns after its worker died dials in again as a new worker, and loses nothing.
//! - A native worker dies with the Dask worker that started it (`PR_SET_PDEATHSIG`), and exits
//!   when the driver goes away. A task that ends while the run goes on is replaced by a new
//!   one (at most [`max_relaunches`](DaskBuilder::max_relaunches) times). Dropping the engine,
//!   an error, or Ctrl-C cancels the tasks and stops their native workers; a driver killed
//!   outright closes the helper's stdin, and the helper does the same.
//! - Errors name the cause: Python or `distributed` missing, the scheduler unreachable or
//!   lost, no worker with the resources asked within the start timeout (with what Dask says
//!   of each task), a task that ended (`KilledWorker`, the native worker's exit code).
//!
//! ```no_run
//! use adparallelengine_dask::DaskBuilder;
//! use adparallelengine_core::Engine;
//! adparallelengine_core::task!(Sq = |x: u64| -> u64 { x * x });
//! let backend = DaskBuilder::new(4).scheduler("tcp://127.0.0.1:8786").build()?;
//! let engine = Engine::from_backend(backend);
//! assert_eq!(engine.map(Sq, 0..5u64).run()?, vec![0, 1, 4, 9, 16]);
//! # Ok::<(), adparallelengine_core::Error>(())
//! ```
#![warn(missing_docs)]

mod helper;
mod launcher;
pub mod options;

pub use options::DaskBuilder;

use adparallelengine_core::remote::dial_in::{advertised, DialIn, OverDialIn, ShareVia, ENV_DRIVER, ENV_SECRET};
use adparallelengine_core::remote::Secret;
use adparallelengine_core::{Error, Result};
use std::sync::Arc;
use std::time::Duration;

adparallelengine_core::worker_entry!(adparallelengine_store::dial_in_worker);

fn dask_err(message: String) -> Error {
    Error::Backend { backend: "dask", message }
}

/// Native workers started by the tasks of a Dask cluster. Build it with [`DaskBuilder`].
pub struct DaskBackend {
    /// The workers, over the dial-in layer (dropping it stops the tasks).
    workers: DialIn,
    scheduler: String,
    prefix: String,
}

impl std::fmt::Debug for DaskBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaskBackend")
            .field("workers", &self.workers.max_workers())
            .field("scheduler", &self.scheduler)
            .field("driver", &self.workers.address())
            .finish()
    }
}

impl DaskBackend {
    fn from_builder(opts: DaskBuilder) -> Result<DaskBackend> {
        // Serve here if this process is a native worker whose pre-main entry did not run.
        adparallelengine_core::remote::become_worker_if_asked();
        let scheduler = opts.scheduler.clone().ok_or_else(|| {
            Error::Config(format!(
                "the Dask backend needs a scheduler address: `.scheduler(\"tcp://host:8786\")` or {}",
                options::ENV_SCHEDULER
            ))
        })?;
        if opts.shared_volume && opts.path_shared.is_none() {
            return Err(Error::Config("`shared_volume` needs `path_shared`: the directory the workers see".into()));
        }
        let toward = scheduler_host_port(&scheduler)?;
        let (bind, host) = advertised("dask", opts.advertise.as_deref(), &opts.listen, (&toward.0, toward.1))?;
        let listening = DialIn::listen("dask", &bind, &host)?;
        // Task keys are seen by anyone who looks at the scheduler: their randomness is their
        // own, not the secret's.
        let prefix = format!("adpe-{}", &Secret::random()?.to_hex()[..10]);
        let exe = std::env::current_exe()
            .map_err(|e| dask_err(format!("cannot find this executable (the tasks' program): {e}")))?;
        let mut env = opts.env.clone();
        env.insert(ENV_DRIVER.into(), listening.address().to_string());
        env.insert(ENV_SECRET.into(), listening.secret().to_hex());
        let config = helper::HelperConfig {
            scheduler: scheduler.clone(),
            workers: opts.workers,
            program: exe.to_string_lossy().into_owned(),
            args: Vec::new(),
            upload: opts.program.is_none(),
            shared_path: opts.program.as_ref().map(|p| p.to_string_lossy().into_owned()),
            env,
            name_prefix: prefix.clone(),
            resources: (!opts.resources.is_empty()).then(|| opts.resources.clone()),
            restrict: (!opts.restrict.is_empty()).then(|| opts.restrict.clone()),
            connect_timeout: opts.connect_timeout.as_secs_f64(),
        };
        let max_relaunches = opts.max_relaunches.unwrap_or(3 * opts.workers);
        // Reaching the scheduler, then uploading the program to every worker.
        let launch_wait = opts.connect_timeout + Duration::from_secs(120);
        let launcher = launcher::DaskLauncher::new(opts.python.clone(), config, max_relaunches, launch_wait);
        let store = Arc::new(adparallelengine_store::LazyDirStore::new(opts.path_shared.clone()));
        let share = match opts.shared_volume {
            false => ShareVia::ship(store),
            true => ShareVia::directory(store.clone(), move || store.dir().map(|d| d.to_string_lossy().into_owned())),
        };
        let workers = listening.serve(Arc::new(launcher), opts.workers, opts.start_timeout, share);
        Ok(DaskBackend { workers, scheduler, prefix })
    }

    /// The scheduler's address.
    pub fn scheduler(&self) -> &str {
        &self.scheduler
    }

    /// The address the native workers dial.
    pub fn driver_address(&self) -> &str {
        self.workers.address()
    }

    /// The prefix of the run's task keys (`adpe-<random>`; task `i` is `<prefix>-<i>`).
    pub fn task_prefix(&self) -> &str {
        &self.prefix
    }

    /// Connections refused so far (no knock, or a wrong secret).
    pub fn refused_connections(&self) -> usize {
        self.workers.refused_connections()
    }

    /// Native workers connected and idle between jobs.
    pub fn idle_workers(&self) -> usize {
        self.workers.idle_workers()
    }
}

/// The host and port of a scheduler address (`tcp://host:port`, `tls://...`, `host:port`).
fn scheduler_host_port(address: &str) -> Result<(String, u16)> {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let bad = || Error::Config(format!("the Dask scheduler address {address:?} is not [tcp://]host:port"));
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port = port.trim_end_matches('/').parse::<u16>().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// Everything of `Backend` is the dial-in layer's: the tasks' native workers dial in.
impl OverDialIn for DaskBackend {
    fn dial_in(&self) -> &DialIn {
        &self.workers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_addresses_are_parsed_or_refused_by_name() {
        assert_eq!(scheduler_host_port("tcp://127.0.0.1:8786").unwrap(), ("127.0.0.1".into(), 8786));
        assert_eq!(scheduler_host_port("sched.example.com:8786").unwrap(), ("sched.example.com".into(), 8786));
        assert_eq!(scheduler_host_port("tls://[::1]:8786").unwrap(), ("[::1]".into(), 8786));
        for bad in ["tcp://host", "tcp://:8786", "nonsense", "tcp://h:port"] {
            let e = scheduler_host_port(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn a_backend_without_a_scheduler_is_a_config_error() {
        std::env::remove_var(options::ENV_SCHEDULER);
        let e = DaskBuilder::new(2).build().unwrap_err();
        assert!(e.to_string().contains("scheduler address"), "{e}");
    }
}
