//! Where a dial-in run's workers come from: the launcher starts them with the first job, and
//! they dial in through the [`Door`]. Waiting for them is bounded by the start timeout, and
//! the launcher is asked meanwhile what became of them, so a worker that cannot start is
//! named with its reason instead of a hang.

use super::conn::DialConn;
use super::door::{Arrival, Door};
use super::Launcher;
use crate::error::{Error, Result};
use crate::remote::pooled::ConnSource;
use crossbeam_channel::RecvTimeoutError;
use std::collections::HashSet;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How often the launcher is asked about its workers while the driver waits for them.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Where a run is.
enum RunState {
    /// Its workers are not started yet (they are with the first job).
    ToLaunch,
    /// Started.
    Launched,
    /// Its workers could not start, or the launcher ended the run: later jobs fail with this
    /// at once.
    Failed(String),
}

/// What a run's state and connections are, shared with [`RunEnd`].
pub(crate) struct RunShared {
    backend: &'static str,
    state: Mutex<RunState>,
    /// The connections of the run (to shut when the run is ended), pruned as they go.
    streams: Mutex<Vec<Weak<TcpStream>>>,
}

impl RunShared {
    fn fail(&self, why: String) -> bool {
        let Ok(mut g) = self.state.lock() else { return false };
        if matches!(*g, RunState::Failed(_)) {
            return false;
        }
        *g = RunState::Failed(why);
        true
    }
}

/// Fails a dial-in run from the launcher's side (its cluster went away, say): later waits for
/// workers fail with the reason, and every connected worker's connection is shut, so the
/// running job's items are reported lost with it instead of waiting on workers the launcher
/// knows are gone. Cheap to clone; it does not keep the run alive.
#[derive(Clone)]
pub struct RunEnd {
    shared: Weak<RunShared>,
}

impl std::fmt::Debug for RunEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunEnd").finish_non_exhaustive()
    }
}

impl RunEnd {
    /// Ends the run with `why` (the first reason is kept); a run already gone is left alone.
    pub fn end(&self, why: impl Into<String>) {
        let Some(shared) = self.shared.upgrade() else { return };
        let why = why.into();
        if shared.fail(why.clone()) {
            tracing::warn!(backend = shared.backend, reason = %why, "the run was ended by its launcher");
        }
        let streams = shared.streams.lock().map(|mut g| std::mem::take(&mut *g)).unwrap_or_default();
        for s in streams.iter().filter_map(Weak::upgrade) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// A handle that ends nothing (for a launcher's tests).
    pub fn detached() -> RunEnd {
        RunEnd { shared: Weak::new() }
    }
}

/// The workers of one run: the door they dial, and the launcher that starts them.
pub(crate) struct DialSource {
    backend: &'static str,
    launcher: Arc<dyn Launcher>,
    door: Door,
    /// The address workers dial (for errors).
    address: String,
    shared: Arc<RunShared>,
    start_timeout: Duration,
    /// Connected workers.
    live: Arc<AtomicUsize>,
    /// Workers that dialed in (by name), for the error that names the missing ones.
    arrived: Mutex<HashSet<String>>,
}

impl DialSource {
    pub(crate) fn new(
        backend: &'static str,
        door: Door,
        address: String,
        launcher: Arc<dyn Launcher>,
        start_timeout: Duration,
    ) -> DialSource {
        let shared =
            Arc::new(RunShared { backend, state: Mutex::new(RunState::ToLaunch), streams: Mutex::new(Vec::new()) });
        DialSource {
            backend,
            launcher,
            door,
            address,
            shared,
            start_timeout,
            live: Arc::new(AtomicUsize::new(0)),
            arrived: Mutex::new(HashSet::new()),
        }
    }

    /// Connections refused so far, shared.
    pub(crate) fn refused_counter(&self) -> Arc<AtomicUsize> {
        self.door.refused_counter()
    }

    fn err(&self, message: String) -> Error {
        Error::Backend { backend: self.backend, message }
    }

    fn ensure_launched(&self) -> Result<()> {
        let mut g = self.shared.state.lock().map_err(|_| self.err("the run's state is poisoned".into()))?;
        match &*g {
            RunState::Launched => {}
            RunState::Failed(why) => {
                return Err(self.err(format!("the run's workers could not start or were lost, so it was ended: {why}")))
            }
            RunState::ToLaunch => {
                tracing::info!(backend = self.backend, driver = self.address, "starting the run's workers");
                let end = RunEnd { shared: Arc::downgrade(&self.shared) };
                if let Err(e) = self.launcher.launch(end) {
                    *g = RunState::Failed(e.to_string());
                    drop(g);
                    self.launcher.stop();
                    return Err(e);
                }
                *g = RunState::Launched;
            }
        }
        Ok(())
    }

    /// Waits for a worker with the run's whole patience: failing that, the run is ended (the
    /// launcher stops what it started, so workers that cannot start do not retry for ever)
    /// and the reason kept for later jobs.
    fn wait_or_end(&self, worker: usize) -> Result<DialConn> {
        let got = self.wait_for(worker, self.start_timeout);
        if let Err(e) = &got {
            if self.shared.fail(e.to_string()) {
                self.launcher.stop();
            }
        }
        got
    }

    /// The next worker to dial in, within `wait`.
    fn wait_for(&self, worker: usize, wait: Duration) -> Result<DialConn> {
        self.ensure_launched()?;
        let began = Instant::now();
        let mut next_look = began + LOOK_EVERY;
        let mut seen = Vec::new();
        loop {
            let left = wait.saturating_sub(began.elapsed());
            match self.door.arrivals().recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(a) => return Ok(self.admit(worker, a)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(self.err("the driver's listener stopped".into())),
            }
            if let Ok(g) = self.shared.state.lock() {
                if let RunState::Failed(why) = &*g {
                    return Err(self.err(format!("the run was ended: {why}")));
                }
            }
            if Instant::now() >= next_look {
                next_look = Instant::now() + LOOK_EVERY;
                if let Some(why) = self.launcher.failure() {
                    let now = self.launcher.workers();
                    return Err(self.err(format!("{why}; {}", self.describe_missing(&now))));
                }
                seen = self.launcher.workers();
            }
            if began.elapsed() >= wait {
                let now = self.launcher.workers();
                let seen = if now.is_empty() { seen } else { now };
                let refused = match self.door.refused() {
                    0 => String::new(),
                    n => format!("; {n} connection(s) refused (wrong secret or not a worker)"),
                };
                return Err(self.err(format!(
                    "worker {worker}: no {} dialed in to {} within {wait:?}; {}{refused}",
                    self.launcher.noun(),
                    self.address,
                    self.describe_missing(&seen)
                )));
            }
        }
    }

    /// A worker that dialed in, as a connection of the run.
    fn admit(&self, worker: usize, a: Arrival) -> DialConn {
        if let Ok(mut g) = self.arrived.lock() {
            g.insert(a.name.clone());
        }
        tracing::debug!(worker, name = a.name, peer = %a.peer, "worker joined");
        let stream = Arc::new(a.stream);
        if let Ok(mut g) = self.shared.streams.lock() {
            g.retain(|w| w.strong_count() > 0);
            g.push(Arc::downgrade(&stream));
        }
        DialConn::new(stream, a.name, a.peer, Arc::clone(&self.launcher), Arc::clone(&self.live))
    }

    /// The workers that have not dialed in, and what the launcher says of them.
    fn describe_missing(&self, workers: &[super::WorkerStatus]) -> String {
        let arrived = self.arrived.lock().map(|g| g.clone()).unwrap_or_default();
        let missing: Vec<&str> =
            workers.iter().filter(|w| !arrived.contains(&w.name)).map(|w| w.state.as_str()).collect();
        match missing.is_empty() {
            true => format!("no {} of the run is waiting to start", self.launcher.noun()),
            false => missing.join("; "),
        }
    }
}

impl ConnSource<DialConn> for DialSource {
    fn connect(&self, worker: usize) -> Result<DialConn> {
        self.wait_or_end(worker)
    }

    /// A replacement for a worker lost mid-job: while other workers work, only one that has
    /// dialed in already (the dispatch loop asks again every 250 ms, so a replacement the
    /// launcher starts joins the running job); when none is left, up to the start timeout.
    fn replace(&self, worker: usize) -> Result<DialConn> {
        match self.live.load(Ordering::Acquire) {
            0 => self.wait_or_end(worker),
            _ => match self.door.arrivals().try_recv() {
                Ok(a) => Ok(self.admit(worker, a)),
                Err(_) => Err(self.err(format!("no replacement {} has dialed in yet", self.launcher.noun()))),
            },
        }
    }
}
