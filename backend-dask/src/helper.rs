//! The Python helper: there is no Rust client for Dask, and Dask tasks are pickled Python
//! callables, so the driver runs a small script (shipped in this crate, run with `python -c`)
//! that talks to the scheduler with `dask.distributed.Client` and submits the tasks that run
//! the native workers. The driver and the helper speak JSON lines: one configuration line to
//! the helper's stdin, then commands (`status`, `spawn`, `kill`, `stop`); events come back on
//! its stdout (`started`, `status`, `ended`, `fatal`). The helper's stderr is its log.
//!
//! The helper ends when its stdin closes, so it never outlives the driver, even one killed
//! outright: it then cancels the tasks and tells them to stop their native workers.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};

/// The helper script.
pub(crate) const SCRIPT: &str = include_str!("../helper/adpe_dask.py");

/// How many lines of the helper's stderr are kept for errors.
const STDERR_TAIL: usize = 20;

/// The helper's configuration: its first line of input.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HelperConfig {
    pub(crate) scheduler: String,
    pub(crate) workers: usize,
    /// The program the tasks run: its path here (uploaded) or on the workers (shared).
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    pub(crate) upload: bool,
    pub(crate) shared_path: Option<String>,
    /// The native workers' environment (the driver's address and the run's secret among it).
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) name_prefix: String,
    pub(crate) resources: Option<BTreeMap<String, f64>>,
    pub(crate) restrict: Option<Vec<String>>,
    /// Seconds.
    pub(crate) connect_timeout: f64,
}

/// A command to the helper.
#[derive(Debug, Serialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub(crate) enum HelperCommand {
    /// Answer with a `status` event.
    Status,
    /// Submit one more task, under this key.
    Spawn { name: String },
    /// Stop this task's native worker.
    Kill { name: String },
    /// Cancel every task, stop their native workers, and exit.
    Stop,
}

/// One task as Dask sees it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TaskStatus {
    pub(crate) name: String,
    pub(crate) state: String,
    #[serde(default)]
    pub(crate) problem: Option<String>,
    #[serde(default, rename = "where")]
    pub(crate) at: Option<String>,
    /// The name its current run knocks with (`key#attempt`), once it runs.
    #[serde(default)]
    pub(crate) worker_name: Option<String>,
}

impl TaskStatus {
    /// In words, for the error that names missing workers.
    pub(crate) fn describe(&self) -> String {
        let mut s = format!("Dask task {} ({}", self.name, self.state);
        if let Some(w) = &self.at {
            s.push_str(&format!(" on {w}"));
        }
        s.push(')');
        if let Some(p) = &self.problem {
            s.push_str(&format!(": {p}"));
        }
        s
    }
}

/// An event from the helper.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub(crate) enum Event {
    /// Every task is submitted.
    Started {
        #[serde(default)]
        dask_version: String,
    },
    /// The answer to a `status` command.
    Status { tasks: Vec<TaskStatus> },
    /// A task ended: its native worker exited, or Dask gave up on it.
    Ended {
        name: String,
        #[serde(default)]
        exit_code: Option<i32>,
        #[serde(default)]
        error: Option<String>,
    },
    /// The run cannot go on (`kind`: `no-distributed`, `scheduler-unreachable`,
    /// `scheduler-lost`, `upload-failed`, `bad-config`); the helper exits.
    Fatal { kind: String, message: String },
}

/// The helper process and its pipes.
pub(crate) struct HelperProcess {
    pub(crate) child: Child,
    pub(crate) stdin: ChildStdin,
    pub(crate) stdout: ChildStdout,
    pub(crate) stderr: ChildStderr,
}

/// Starts the helper with `python` and hands it its configuration.
pub(crate) fn start(python: &Path, config: &HelperConfig) -> Result<HelperProcess, String> {
    let mut child = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run the Dask helper with {}: {e} (give a Python with `distributed` installed: \
                 `.python(..)` or {})",
                python.display(),
                crate::options::ENV_PYTHON
            )
        })?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("the Dask helper's pipes were not set up".into());
    };
    let line = serde_json::to_string(config).map_err(|e| format!("cannot encode the helper's configuration: {e}"))?;
    if let Err(e) = writeln!(stdin, "{line}").and_then(|()| stdin.flush()) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("cannot configure the Dask helper: {e}"));
    }
    Ok(HelperProcess { child, stdin, stdout, stderr })
}

/// Sends a command; `false` if the helper is gone.
pub(crate) fn send(stdin: &mut ChildStdin, cmd: &HelperCommand) -> bool {
    let Ok(line) = serde_json::to_string(cmd) else { return false };
    writeln!(stdin, "{line}").and_then(|()| stdin.flush()).is_ok()
}

/// Reads the helper's events until its stdout closes, handing each to `on_event`. A line
/// that is not an event is logged and skipped: the helper is ours, but its libraries may print.
pub(crate) fn read_events(stdout: ChildStdout, mut on_event: impl FnMut(Event)) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(&line) {
            Ok(e) => on_event(e),
            Err(e) => tracing::debug!(line, error = %e, "the Dask helper printed a line that is no event"),
        }
    }
}

/// Reads the helper's log, logging each line and keeping the last ones in `tail`.
pub(crate) fn read_log(stderr: ChildStderr, mut keep: impl FnMut(String)) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        tracing::debug!(target: "adparallelengine_dask::helper", "{line}");
        keep(line);
    }
}

/// The last lines of the helper's log.
#[derive(Debug, Default)]
pub(crate) struct LogTail(VecDeque<String>);

impl LogTail {
    pub(crate) fn push(&mut self, line: String) {
        if self.0.len() == STDERR_TAIL {
            self.0.pop_front();
        }
        self.0.push_back(line);
    }

    /// The tail in one string, or nothing.
    pub(crate) fn text(&self) -> String {
        match self.0.is_empty() {
            true => String::new(),
            false => format!("; its log ends: {}", self.0.iter().cloned().collect::<Vec<_>>().join(" | ")),
        }
    }
}
