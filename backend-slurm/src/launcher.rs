//! The Slurm tasks of a run, as the dial-in layer asks for them: one job array submitted with
//! the first job, watched with `squeue`, each task that ends while the run goes on replaced by
//! a new one-task array (up to a bound), and every job of the run cancelled at its end.

use crate::slurm_err;
use crate::squeue::{self, TaskState};
use adparallelengine_core::remote::dial_in::{Launcher, RunEnd, WorkerStatus, ENV_NAME};
use adparallelengine_core::Result;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often the watcher asks `squeue`.
const POLL: Duration = Duration::from_millis(500);

/// How long `stop` waits for the cancelled tasks to leave the node.
const STOP_WAIT: Duration = Duration::from_secs(15);

/// How a run's tasks are submitted.
#[derive(Debug, Clone)]
pub(crate) struct Submit {
    pub(crate) sbatch: PathBuf,
    pub(crate) squeue: PathBuf,
    pub(crate) scancel: PathBuf,
    pub(crate) program: PathBuf,
    pub(crate) job_name: String,
    /// The options' arguments (partition, time, ...).
    pub(crate) args: Vec<String>,
    /// On top of the driver's environment (the driver's address and the secret among them).
    pub(crate) env: BTreeMap<String, String>,
}

impl Submit {
    /// Submits an array of the task indices `indices` (`0-3`, `7`); returns its job id.
    fn array(&self, indices: &str) -> Result<String> {
        // The worker's name is its task's id, which `squeue` shows; the secret and the
        // driver's address come in the environment, not in the script.
        let script = format!(
            "export {ENV_NAME}=\"${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}\"; exec {}",
            shell_quote(&self.program.to_string_lossy())
        );
        let out = Command::new(&self.sbatch)
            .arg("--parsable")
            .arg(format!("--array={indices}"))
            .arg(format!("--job-name={}", self.job_name))
            .args(&self.args)
            .arg("--wrap")
            .arg(script)
            .envs(&self.env)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| slurm_err(format!("cannot run {}: {e} (is Slurm installed?)", self.sbatch.display())))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(slurm_err(format!("sbatch refused the workers' job array: {}", err.trim())));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(slurm_err(format!("sbatch --parsable answered {text:?}, not a job id")));
        }
        tracing::info!(job = id, array = indices, name = self.job_name, "Slurm job array submitted");
        Ok(id)
    }

    /// Cancels `targets` (job ids or task ids); errors are logged, never returned.
    fn cancel(&self, targets: &[String]) {
        if targets.is_empty() {
            return;
        }
        match Command::new(&self.scancel).args(targets).stdin(Stdio::null()).stdout(Stdio::null()).output() {
            Ok(o) if !o.status.success() => {
                tracing::warn!(targets = ?targets, err = %String::from_utf8_lossy(&o.stderr).trim(), "scancel failed")
            }
            Err(e) => tracing::warn!(targets = ?targets, "cannot run scancel: {e}"),
            Ok(_) => {}
        }
    }
}

/// `s` as one word for `sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// What the watcher has seen, and the run's jobs.
#[derive(Default)]
struct Seen {
    /// Every array job id of the run.
    jobs: Vec<String>,
    /// The tasks as of the last `squeue`, and how many answers came.
    tasks: (u64, Vec<TaskState>),
    /// Tasks whose end was already handled.
    handled: HashSet<String>,
    /// Why the run cannot go on.
    fatal: Option<String>,
}

/// The state shared with the watcher thread.
struct Shared {
    submit: Submit,
    seen: Mutex<Seen>,
    changed: Condvar,
    stopping: AtomicBool,
    relaunches: AtomicUsize,
    max_relaunches: usize,
    /// The index of the next replacement task.
    next_index: AtomicUsize,
    end: Mutex<Option<RunEnd>>,
}

impl Shared {
    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails the run: later waits for workers fail with `why`, running jobs lose their
    /// workers' connections.
    fn fail(&self, why: String) {
        self.seen().fatal.get_or_insert_with(|| why.clone());
        self.changed.notify_all();
        if let Some(end) = self.end.lock().ok().and_then(|g| g.clone()) {
            end.end(why);
        }
    }

    /// One look at the queue: new states kept, ended tasks replaced.
    fn poll(&self) {
        let jobs = self.seen().jobs.clone();
        let Some(now) = squeue::query(&self.submit.squeue, &jobs) else {
            tracing::debug!("squeue did not answer; asking again");
            return;
        };
        let ended: Vec<TaskState> = {
            let mut s = self.seen();
            // A task Slurm forgot between two looks is as ended as one it shows ended.
            let gone: Vec<TaskState> = s
                .tasks
                .1
                .iter()
                .filter(|t| t.alive() && !now.iter().any(|n| n.id == t.id))
                .map(|t| TaskState { state: "GONE".into(), reason: "left the queue".into(), ..t.clone() })
                .collect();
            let mut ended: Vec<TaskState> = now.iter().filter(|t| t.ended()).cloned().collect();
            ended.extend(gone);
            ended.retain(|t| s.handled.insert(t.id.clone()));
            s.tasks = (s.tasks.0 + 1, now);
            ended
        };
        self.changed.notify_all();
        for t in ended {
            self.ended(&t);
        }
    }

    /// A task ended: replaced by a new one unless the run is stopping, or has replaced too
    /// many already.
    fn ended(&self, t: &TaskState) {
        let how = t.describe();
        if self.stopping.load(Ordering::Acquire) || self.seen().fatal.is_some() {
            tracing::debug!(task = t.id, how, "a Slurm task ended");
            return;
        }
        let n = self.relaunches.fetch_add(1, Ordering::AcqRel) + 1;
        if n > self.max_relaunches {
            self.fail(format!(
                "Slurm tasks ended {n} times while the run went on (at most {} replacements): the last, {how}",
                self.max_relaunches
            ));
            return;
        }
        let index = self.next_index.fetch_add(1, Ordering::AcqRel);
        tracing::warn!(task = t.id, how, "a Slurm task ended mid-run; submitting a replacement");
        match self.submit.array(&index.to_string()) {
            Ok(id) => self.seen().jobs.push(id),
            Err(e) => self.fail(format!("{how}, and its replacement was refused: {e}")),
        }
    }

    /// Tasks of the run that may still hold a worker.
    fn alive(&self) -> usize {
        let jobs = self.seen().jobs.clone();
        squeue::query(&self.submit.squeue, &jobs).map_or(usize::MAX, |t| t.iter().filter(|t| t.alive()).count())
    }
}

/// The Slurm tasks of one run.
pub(crate) struct SlurmLauncher {
    shared: Arc<Shared>,
    workers: usize,
}

impl SlurmLauncher {
    pub(crate) fn new(submit: Submit, workers: usize, max_relaunches: usize) -> Self {
        let shared = Arc::new(Shared {
            submit,
            seen: Mutex::new(Seen::default()),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
            relaunches: AtomicUsize::new(0),
            max_relaunches,
            next_index: AtomicUsize::new(workers),
            end: Mutex::new(None),
        });
        SlurmLauncher { shared, workers }
    }
}

impl Launcher for SlurmLauncher {
    fn noun(&self) -> &'static str {
        "Slurm task"
    }

    fn launch(&self, end: RunEnd) -> Result<()> {
        *self.shared.end.lock().unwrap_or_else(|p| p.into_inner()) = Some(end);
        let id = self.shared.submit.array(&format!("0-{}", self.workers - 1))?;
        self.shared.seen().jobs.push(id);
        // The watcher holds the state only weakly: it ends with the launcher.
        let weak = Arc::downgrade(&self.shared);
        std::thread::Builder::new()
            .name("adparallelengine-slurm-watch".into())
            .spawn(move || loop {
                let Some(shared) = weak.upgrade() else { return };
                if shared.stopping.load(Ordering::Acquire) {
                    return;
                }
                shared.poll();
                let guard = shared.seen();
                let _ = shared.changed.wait_timeout(guard, POLL);
            })
            .map_err(|e| slurm_err(format!("cannot start the squeue watcher: {e}")))?;
        Ok(())
    }

    fn failure(&self) -> Option<String> {
        self.shared.seen().fatal.clone()
    }

    fn workers(&self) -> Vec<WorkerStatus> {
        // A fresh look, so that the error that names a missing task says what Slurm says now.
        self.shared.poll();
        let seen = self.shared.seen();
        seen.tasks.1.iter().map(|t| WorkerStatus { name: t.id.clone(), state: t.describe() }).collect()
    }

    /// The task's worker may be deep in a long item: Slurm ends the task. The watcher sees it
    /// end and submits a replacement.
    fn stop_worker(&self, name: &str) {
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
            self.shared.submit.cancel(&[name.to_string()]);
        }
    }

    fn stop(&self) {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.changed.notify_all();
        let jobs = self.shared.seen().jobs.clone();
        if jobs.is_empty() {
            return;
        }
        self.shared.submit.cancel(&jobs);
        // Until no task of the run holds a worker on a node (scancel only asks).
        let deadline = Instant::now() + STOP_WAIT;
        while self.shared.alive() > 0 {
            if Instant::now() > deadline {
                tracing::warn!(jobs = ?jobs, "Slurm tasks still in the queue {STOP_WAIT:?} after scancel");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn emergency_stop(&self) -> Option<Box<dyn Fn() + Send + Sync>> {
        let shared = Arc::clone(&self.shared);
        Some(Box::new(move || {
            let jobs = shared.seen.try_lock().map(|s| s.jobs.clone()).unwrap_or_default();
            shared.submit.cancel(&jobs);
        }))
    }
}

impl Drop for SlurmLauncher {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
    }
}
