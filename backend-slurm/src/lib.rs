//! The Slurm backend: the workers are the tasks of one Slurm job array, each running this
//! same program, which dials back to the driver over TCP.
//!
//! - The first job submits one array of `max_workers` tasks with `sbatch` (the
//!   [partition](SlurmBuilder::partition), [account](SlurmBuilder::account),
//!   [QoS](SlurmBuilder::qos), [time limit](SlurmBuilder::time_limit), CPUs and memory per
//!   task asked). Each task runs this program from its path, which the compute nodes must see
//!   at the same place (a shared file system, as every Slurm user's programs are), or from
//!   [`program_path`](SlurmBuilder::program_path). The program becomes a worker before `main`
//!   (engine-core's [`dial_in`](adparallelengine_core::remote::dial_in) layer, which this
//!   backend brings a launcher to), dials the driver, knocks with the run's secret and serves
//!   jobs until the driver closes its connection. The secret travels in the job's
//!   environment (`sbatch` exports the driver's), never in its script or arguments.
//! - Scheduling, batching, retries of a lost worker's items, item timeouts, ordering and
//!   shared values are engine-core's, as for pods and Dask. Results are counted by items,
//!   never by Slurm tasks: a task that ends mid-run (`scancel`, a node lost, its time limit)
//!   loses its connection, its items run on the others, and a new task is submitted in its
//!   place (at most [`max_relaunches`](SlurmBuilder::max_relaunches) times).
//! - The driver watches its tasks with `squeue`: a job that waits for its workers past the
//!   start timeout fails naming each missing task and Slurm's reason (`Resources`,
//!   `PartitionConfig`, ...); a task that ended before dialing in is named with its state,
//!   exit code and node; `sbatch`'s refusal (a bad partition or account) is returned in
//!   Slurm's own words.
//! - Dropping the engine, an error, or Ctrl-C cancels the array (`scancel`); a driver killed
//!   outright closes the workers' connections, and each worker exits, ending its task.
//!
//! ```no_run
//! use adparallelengine_slurm::SlurmBuilder;
//! use adparallelengine_core::Engine;
//! adparallelengine_core::task!(Sq = |x: u64| -> u64 { x * x });
//! let backend = SlurmBuilder::new(4).partition("compute").time_limit("00:30:00").build()?;
//! let engine = Engine::from_backend(backend);
//! assert_eq!(engine.map(Sq, 0..5u64).run()?, vec![0, 1, 4, 9, 16]);
//! # Ok::<(), adparallelengine_core::Error>(())
//! ```
#![warn(missing_docs)]

mod launcher;
pub mod options;
mod squeue;

pub use options::SlurmBuilder;

use adparallelengine_core::remote::dial_in::{advertised, DialIn, OverDialIn, ShareVia, ENV_DRIVER, ENV_SECRET};
use adparallelengine_core::remote::Secret;
use adparallelengine_core::{Error, Result};
use std::sync::Arc;

adparallelengine_core::worker_entry!(adparallelengine_store::dial_in_worker);

pub(crate) fn slurm_err(message: String) -> Error {
    Error::Backend { backend: "slurm", message }
}

/// The tasks of a Slurm job array, as workers. Build it with [`SlurmBuilder`].
pub struct SlurmBackend {
    /// The workers, over the dial-in layer (dropping it cancels the array).
    workers: DialIn,
    job_name: String,
}

impl std::fmt::Debug for SlurmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlurmBackend")
            .field("workers", &self.workers.max_workers())
            .field("job_name", &self.job_name)
            .field("driver", &self.workers.address())
            .finish()
    }
}

impl SlurmBackend {
    fn from_builder(opts: SlurmBuilder) -> Result<SlurmBackend> {
        // Serve here if this process is a worker whose pre-main entry did not run.
        adparallelengine_core::remote::become_worker_if_asked();
        if opts.shared_volume && opts.path_shared.is_none() {
            return Err(Error::Config("`shared_volume` needs `path_shared`: the directory the tasks see".into()));
        }
        let controller = opts.controller_host();
        let (bind, host) = advertised("slurm", opts.advertise.as_deref(), &opts.listen, (&controller, 6817))?;
        let listening = DialIn::listen("slurm", &bind, &host)?;
        // Job names are seen by everyone on the cluster: their randomness is their own.
        let job_name = match &opts.job_name {
            Some(n) => n.clone(),
            None => format!("adpe-{}", &Secret::random()?.to_hex()[..10]),
        };
        let program = match &opts.program {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .map_err(|e| slurm_err(format!("cannot find this executable (the tasks' program): {e}")))?,
        };
        let mut env = opts.env.clone();
        env.insert(ENV_DRIVER.into(), listening.address().to_string());
        env.insert(ENV_SECRET.into(), listening.secret().to_hex());
        let submit = launcher::Submit {
            sbatch: opts.sbatch.clone(),
            squeue: opts.squeue.clone(),
            scancel: opts.scancel.clone(),
            program,
            job_name: job_name.clone(),
            args: opts.sbatch_args(),
            env,
        };
        let max_relaunches = opts.max_relaunches.unwrap_or(3 * opts.workers);
        let launcher = launcher::SlurmLauncher::new(submit, opts.workers, max_relaunches);
        let store = Arc::new(adparallelengine_store::LazyDirStore::new(opts.path_shared.clone()));
        let share = match opts.shared_volume {
            false => ShareVia::ship(store),
            true => ShareVia::directory(store.clone(), move || store.dir().map(|d| d.to_string_lossy().into_owned())),
        };
        let workers = listening.serve(Arc::new(launcher), opts.workers, opts.start_timeout, share);
        Ok(SlurmBackend { workers, job_name })
    }

    /// The name of the run's Slurm jobs (`--job-name`; `adpe-<random>` unless set).
    pub fn job_name(&self) -> &str {
        &self.job_name
    }

    /// The address the tasks dial.
    pub fn driver_address(&self) -> &str {
        self.workers.address()
    }

    /// Connections refused so far (no knock, or a wrong secret).
    pub fn refused_connections(&self) -> usize {
        self.workers.refused_connections()
    }

    /// Workers connected and idle between jobs.
    pub fn idle_workers(&self) -> usize {
        self.workers.idle_workers()
    }
}

/// Everything of `Backend` is the dial-in layer's: the array's tasks dial in.
impl OverDialIn for SlurmBackend {
    fn dial_in(&self) -> &DialIn {
        &self.workers
    }
}
