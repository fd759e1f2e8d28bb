//! The Dask tasks of a run, as the dial-in layer asks for them: started through the helper
//! with the first job, each replaced by a new task when it ends while the run goes on (its
//! native worker crashed, was stopped for an overrun item, or Dask gave up on it), up to a
//! bound; a fatal event of the helper (the scheduler lost) ends the run at once.

use crate::helper::{self, Event, HelperCommand, HelperConfig, LogTail, TaskStatus};
use adparallelengine_core::remote::dial_in::{Launcher, RunEnd, WorkerStatus};
use adparallelengine_core::Result;
use std::path::PathBuf;
use std::process::{Child, ChildStdin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long `workers()` waits for the helper's answer to a `status` command.
const STATUS_WAIT: Duration = Duration::from_secs(3);

/// How long the helper has to cancel its tasks and exit when the run stops.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// What the helper has said so far.
#[derive(Default)]
struct Seen {
    started: bool,
    /// The last `status` answer, and how many answers came.
    status: (u64, Vec<TaskStatus>),
    /// Why the run cannot go on.
    fatal: Option<String>,
    /// The helper's stdout closed.
    exited: bool,
    log: LogTail,
}

/// The state shared with the helper's reader threads.
struct Shared {
    seen: Mutex<Seen>,
    changed: Condvar,
    stdin: Mutex<Option<ChildStdin>>,
    stopping: AtomicBool,
    relaunches: AtomicUsize,
    max_relaunches: usize,
    /// The index of the next task's key.
    next_task: AtomicUsize,
    prefix: String,
    end: Mutex<Option<RunEnd>>,
}

impl Shared {
    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, cmd: &HelperCommand) -> bool {
        let mut g = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
        g.as_mut().is_some_and(|s| helper::send(s, cmd))
    }

    /// Fails the run: later waits for workers fail with `why`, running jobs lose their
    /// workers' connections.
    fn fail(&self, why: String) {
        {
            let mut s = self.seen();
            if s.fatal.is_none() {
                s.fatal = Some(why.clone());
            }
        }
        self.changed.notify_all();
        if let Some(end) = self.end.lock().ok().and_then(|g| g.clone()) {
            end.end(why);
        }
    }

    fn on_event(&self, event: Event) {
        match event {
            Event::Started { dask_version } => {
                tracing::info!(dask_version, "the Dask tasks are submitted");
                self.seen().started = true;
            }
            Event::Status { tasks } => {
                let mut s = self.seen();
                s.status = (s.status.0 + 1, tasks);
            }
            Event::Fatal { kind, message } => {
                let log = self.seen().log.text();
                self.fail(format!("the Dask helper stopped ({kind}): {message}{log}"));
            }
            Event::Ended { name, exit_code, error } => self.ended(name, exit_code, error),
        }
        self.changed.notify_all();
    }

    /// A task ended: replaced by a new one unless the run is stopping, or has replaced too
    /// many already.
    fn ended(&self, name: String, exit_code: Option<i32>, error: Option<String>) {
        let how = match (&error, exit_code) {
            (Some(e), _) => e.clone(),
            (None, Some(c)) => format!("its native worker exited with code {c}"),
            (None, None) => "it ended".into(),
        };
        if self.stopping.load(Ordering::Acquire) || self.seen().fatal.is_some() {
            tracing::debug!(task = name, how, "a Dask task ended");
            return;
        }
        let n = self.relaunches.fetch_add(1, Ordering::AcqRel) + 1;
        if n > self.max_relaunches {
            self.fail(format!(
                "Dask tasks ended {n} times while the run went on (at most {} replacements): the last, {name}: {how}",
                self.max_relaunches
            ));
            return;
        }
        let next = format!("{}-{}", self.prefix, self.next_task.fetch_add(1, Ordering::AcqRel));
        tracing::warn!(task = name, how, replacement = next, "a Dask task ended mid-run; submitting a replacement");
        self.send(&HelperCommand::Spawn { name: next });
    }
}

/// The Dask tasks of one run.
pub(crate) struct DaskLauncher {
    python: PathBuf,
    config: HelperConfig,
    shared: Arc<Shared>,
    child: Mutex<Option<Child>>,
    /// How long the helper may take to reach the scheduler and submit (upload included).
    launch_wait: Duration,
}

impl DaskLauncher {
    pub(crate) fn new(python: PathBuf, config: HelperConfig, max_relaunches: usize, launch_wait: Duration) -> Self {
        let shared = Arc::new(Shared {
            seen: Mutex::new(Seen::default()),
            changed: Condvar::new(),
            stdin: Mutex::new(None),
            stopping: AtomicBool::new(false),
            relaunches: AtomicUsize::new(0),
            max_relaunches,
            next_task: AtomicUsize::new(config.workers),
            prefix: config.name_prefix.clone(),
            end: Mutex::new(None),
        });
        DaskLauncher { python, config, shared, child: Mutex::new(None), launch_wait }
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Launcher for DaskLauncher {
    fn noun(&self) -> &'static str {
        "Dask task"
    }

    fn launch(&self, end: RunEnd) -> Result<()> {
        *self.shared.end.lock().unwrap_or_else(|p| p.into_inner()) = Some(end);
        let p = helper::start(&self.python, &self.config).map_err(crate::dask_err)?;
        *self.shared.stdin.lock().unwrap_or_else(|p| p.into_inner()) = Some(p.stdin);
        *self.child() = Some(p.child);
        let events = Arc::clone(&self.shared);
        let stdout = p.stdout;
        std::thread::Builder::new()
            .name("adparallelengine-dask-events".into())
            .spawn(move || {
                helper::read_events(stdout, |e| events.on_event(e));
                events.seen().exited = true;
                events.changed.notify_all();
                if !events.stopping.load(Ordering::Acquire) {
                    let log = events.seen().log.text();
                    events.fail(format!("the Dask helper exited{log}"));
                }
            })
            .map_err(|e| crate::dask_err(format!("cannot start the helper's reader: {e}")))?;
        let log = Arc::clone(&self.shared);
        let stderr = p.stderr;
        std::thread::Builder::new()
            .name("adparallelengine-dask-log".into())
            .spawn(move || helper::read_log(stderr, |line| log.seen().log.push(line)))
            .map_err(|e| crate::dask_err(format!("cannot start the helper's log reader: {e}")))?;
        // Wait until every task is submitted, or the helper says why not.
        let deadline = Instant::now() + self.launch_wait;
        let mut seen = self.shared.seen();
        loop {
            if let Some(why) = &seen.fatal {
                return Err(crate::dask_err(why.clone()));
            }
            if seen.started {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let log = seen.log.text();
                return Err(crate::dask_err(format!(
                    "the Dask helper did not submit the tasks to {} within {:?}{log}",
                    self.config.scheduler, self.launch_wait
                )));
            }
            seen = self.shared.changed.wait_timeout(seen, left).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn failure(&self) -> Option<String> {
        self.shared.seen().fatal.clone()
    }

    fn workers(&self) -> Vec<WorkerStatus> {
        let before = self.shared.seen().status.0;
        if !self.shared.send(&HelperCommand::Status) {
            return Vec::new();
        }
        let deadline = Instant::now() + STATUS_WAIT;
        let mut seen = self.shared.seen();
        while seen.status.0 == before && !seen.exited {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Vec::new();
            }
            seen = self.shared.changed.wait_timeout(seen, left).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
        // Matched against the names workers knocked with: a task's current run's (`key#n`).
        let name = |t: &TaskStatus| t.worker_name.clone().unwrap_or_else(|| t.name.clone());
        seen.status.1.iter().map(|t| WorkerStatus { name: name(t), state: t.describe() }).collect()
    }

    /// The task's native worker may be deep in a long item: the helper has its task kill it.
    fn stop_worker(&self, name: &str) {
        self.shared.send(&HelperCommand::Kill { name: name.to_string() });
    }

    fn stop(&self) {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.send(&HelperCommand::Stop);
        // Its stdin closed is the helper's other signal to stop.
        drop(self.shared.stdin.lock().unwrap_or_else(|p| p.into_inner()).take());
        let Some(mut child) = self.child().take() else { return };
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => break,
            }
        }
        tracing::warn!("the Dask helper did not stop within {STOP_WAIT:?}; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for DaskLauncher {
    fn drop(&mut self) {
        self.stop();
    }
}
