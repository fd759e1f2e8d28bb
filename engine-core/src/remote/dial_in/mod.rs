//! Workers that dial in: the driver listens, something else starts the workers (a Kubernetes
//! Job, Dask tasks, a batch scheduler, a person), and each worker connects back over TCP and
//! proves it belongs to the run with a secret. One layer for every such backend; a backend
//! brings only its [`Launcher`].
//!
//! - **The driver's side** ([`DialIn`]): the [`Door`] (one thread for every knock, one deadline
//!   per knock, a cap on connections waiting), the run's [`Secret`], the advertised address
//!   ([`advertised`]), waiting for workers within a start timeout while the launcher is asked
//!   what became of the missing ones, replacements joining a running job, and each job run on
//!   the [`pooled`](crate::remote::Pool) machinery, whose workers stay connected between jobs.
//! - **The worker's side** ([`dial_in_if_asked`]): before `main`, a process whose environment
//!   names a driver ([`ENV_DRIVER`], [`ENV_SECRET`], [`ENV_NAME`]) dials it, knocks, serves,
//!   and exits when the driver closes the connection; it dies with the process that started it.
//!
//! Results are counted by items, never by workers: a worker that dials in twice (a Dask task
//! rerun after its worker died, a pod replaced while its predecessor was still counted
//! alive) is one more connection, and a lost worker's items are re-run by the engine.
//!
//! ```no_run
//! use adparallelengine_core::remote::dial_in::{DialIn, Launcher, OverDialIn, RunEnd, ShareVia, WorkerStatus};
//! use std::sync::Arc;
//! use std::time::Duration;
//! struct ByHand;
//! impl Launcher for ByHand {
//!     fn launch(&self, _end: RunEnd) -> adparallelengine_core::Result<()> { Ok(()) }
//!     fn failure(&self) -> Option<String> { None }
//!     fn workers(&self) -> Vec<WorkerStatus> { Vec::new() }
//!     fn stop_worker(&self, _name: &str) {}
//!     fn stop(&self) {}
//! }
//! /// Workers started by hand, as a backend: everything of `Backend` comes from its `DialIn`.
//! struct ByHandBackend(DialIn);
//! impl OverDialIn for ByHandBackend {
//!     fn dial_in(&self) -> &DialIn { &self.0 }
//! }
//! # fn doc(store: Arc<dyn adparallelengine_core::SharedStore>) -> adparallelengine_core::Result<()> {
//! let listening = DialIn::listen("by-hand", "0.0.0.0:7000", "10.0.0.1")?;
//! println!("start workers with ADPARALLELENGINE_DRIVER={} ADPARALLELENGINE_SECRET={}",
//!     listening.address(), listening.secret().to_hex());
//! let backend = ByHandBackend(listening.serve(Arc::new(ByHand), 4, Duration::from_secs(600), ShareVia::ship(store)));
//! let engine = adparallelengine_core::Engine::from_backend(backend);
//! # Ok(()) }
//! ```

mod advertise;
mod conn;
mod door;
mod launcher;
mod source;
mod worker;

pub use advertise::advertised;
pub use conn::DRAIN_LIMIT;
pub use door::{Arrival, Door, KNOCK_DEADLINE, LOGGED_PER_WINDOW, MAX_PENDING};
pub use launcher::{Launcher, WorkerStatus};
pub use source::RunEnd;
pub use worker::{dial_in_if_asked, DIAL_PATIENCE, ENV_DRIVER, ENV_NAME, ENV_SECRET};

use crate::error::Result;
use crate::plumbing::{Backend, Completions, Plan};
use crate::remote::interrupt::{cleanup_id, register_cleanup, unregister_cleanup};
use crate::remote::net::knock::Secret;
use crate::remote::pooled::{start_pooled, Pool};
use crate::remote::wire::DEFAULT_MAX_FRAME;
use crate::store::SharedStore;
use crate::Task;
use conn::DialConn;
use source::DialSource;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A driver listening for the workers of one run, before its launcher is known: the address
/// and secret are what the launcher hands its workers.
pub struct Listening {
    backend: &'static str,
    door: Door,
    secret: Secret,
    address: String,
}

impl std::fmt::Debug for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listening").field("backend", &self.backend).field("address", &self.address).finish()
    }
}

impl Listening {
    /// The address workers dial (`host:port`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The run's secret, which workers knock with.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// The run's workers: `launcher` starts them with the first job; up to `workers` of them
    /// work at once, and a job waits at most `start_timeout` for one before it fails with what
    /// the launcher says of the missing ones. `share` says how shared values reach them.
    pub fn serve(
        self,
        launcher: Arc<dyn Launcher>,
        workers: usize,
        start_timeout: Duration,
        share: ShareVia,
    ) -> DialIn {
        let cleanup = cleanup_id();
        if let Some(stop) = launcher.emergency_stop() {
            register_cleanup(cleanup, stop);
        }
        let source =
            DialSource::new(self.backend, self.door, self.address.clone(), Arc::clone(&launcher), start_timeout);
        let refused = source.refused_counter();
        DialIn {
            backend: self.backend,
            workers,
            pool: Arc::new(Pool::new(workers, source)),
            launcher,
            address: self.address,
            refused,
            cleanup,
            share,
        }
    }
}

/// How a dial-in run's shared values reach its workers.
pub struct ShareVia {
    store: Arc<dyn SharedStore>,
    dir: Box<dyn Fn() -> Option<String> + Send + Sync>,
    ship: bool,
}

impl ShareVia {
    /// Each worker is sent the values it lacks over its connection (workers that share no
    /// file system with the driver: pods, Dask workers elsewhere). `store` keeps them here.
    pub fn ship(store: Arc<dyn SharedStore>) -> ShareVia {
        ShareVia { store, dir: Box::new(|| None), ship: true }
    }

    /// Workers open the driver's store where `dir` says it is (a volume or a file system they
    /// all see at the same path): `dir` is asked at each job, as a store may make its
    /// directory only with its first value.
    pub fn directory(
        store: Arc<dyn SharedStore>,
        dir: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) -> ShareVia {
        ShareVia { store, dir: Box::new(dir), ship: false }
    }
}

/// A backend whose workers dial in: every method of [`Backend`] comes from its [`DialIn`]
/// (named for the backend, 50 ms batches for [`Batching::Auto`](crate::Batching::Auto) as a
/// message crosses a network, outputs placed straight into the result).
pub trait OverDialIn: Send + Sync {
    /// The backend's workers.
    fn dial_in(&self) -> &DialIn;
}

impl<B: OverDialIn> Backend for B {
    fn name(&self) -> &'static str {
        self.dial_in().backend
    }

    fn max_workers(&self) -> usize {
        self.dial_in().workers
    }

    fn auto_batch_target(&self) -> Duration {
        Duration::from_millis(50)
    }

    fn places_outputs(&self) -> bool {
        true
    }

    fn start<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(
        &'a self,
        plan: Plan<T, I>,
    ) -> Result<Box<dyn Completions<T::Output> + 'a>> {
        self.dial_in().start(plan)
    }
}

/// The workers of one dial-in run, as a backend holds them: jobs run on them with
/// [`start`](Self::start). Dropping it closes every idle worker's connection (they exit 0) and
/// stops the launcher's run.
pub struct DialIn {
    backend: &'static str,
    workers: usize,
    pool: Arc<Pool<DialConn>>,
    launcher: Arc<dyn Launcher>,
    address: String,
    refused: Arc<AtomicUsize>,
    cleanup: u64,
    share: ShareVia,
}

impl std::fmt::Debug for DialIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialIn")
            .field("backend", &self.backend)
            .field("workers", &self.workers)
            .field("address", &self.address)
            .finish()
    }
}

impl DialIn {
    /// Listens on `bind` (`0.0.0.0:0`, or a fixed port) for the workers of a new run of
    /// `backend`, with a fresh random secret; workers are told to dial `host` at the bound
    /// port.
    pub fn listen(backend: &'static str, bind: &str, host: &str) -> Result<Listening> {
        let secret = Secret::random()?;
        let door = Door::bind(backend, bind, secret.clone())?;
        let address = format!("{host}:{}", door.addr().port());
        Ok(Listening { backend, door, secret, address })
    }

    /// Runs a job on the run's workers (the first job starts them).
    pub fn start<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(
        &'a self,
        plan: Plan<T, I>,
    ) -> Result<Box<dyn Completions<T::Output> + 'a>> {
        let share = &self.share;
        start_pooled(
            self.backend,
            &self.pool,
            plan,
            Arc::clone(&share.store),
            || (share.dir)(),
            share.ship,
            DEFAULT_MAX_FRAME,
        )
    }

    /// The most workers at once.
    pub fn max_workers(&self) -> usize {
        self.workers
    }

    /// The address workers dial.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Connections refused so far (no knock, a wrong secret, too slow).
    pub fn refused_connections(&self) -> usize {
        self.refused.load(Ordering::Acquire)
    }

    /// Workers connected and idle between jobs.
    pub fn idle_workers(&self) -> usize {
        self.pool.idle_count()
    }

    /// The run's launcher.
    pub fn launcher(&self) -> &Arc<dyn Launcher> {
        &self.launcher
    }
}

impl Drop for DialIn {
    fn drop(&mut self) {
        // Workers exit 0 when their connection closes; then the launcher's run goes.
        self.pool.retire_idle();
        self.launcher.stop();
        unregister_cleanup(self.cleanup);
    }
}
