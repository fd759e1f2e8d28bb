//! What `squeue` says of the run's tasks: one line per array task, parsed into [`TaskState`].

use std::path::Path;
use std::process::{Command, Stdio};

/// The fields asked of `squeue -O`, each ended by `|` (no field holds one).
const FORMAT: &str = "JobArrayID:|,State:|,Reason:|,NodeList:|,exit_code:|";

/// One array task, as `squeue` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskState {
    /// `<array job id>_<index>`: the name the task's worker knocks with.
    pub(crate) id: String,
    /// `PENDING`, `RUNNING`, `FAILED`, `CANCELLED`, ...
    pub(crate) state: String,
    /// Why it waits or ended (`Resources`, `NonZeroExitCode`, `None`).
    pub(crate) reason: String,
    /// The node it runs or ran on (empty while pending).
    pub(crate) node: String,
    /// Its wait status once ended (`exit code << 8 | signal`).
    pub(crate) wait_status: Option<i32>,
}

impl TaskState {
    /// Whether Slurm is done with it (it neither waits nor runs).
    pub(crate) fn ended(&self) -> bool {
        !matches!(
            self.state.as_str(),
            "PENDING"
                | "RUNNING"
                | "CONFIGURING"
                | "COMPLETING"
                | "SUSPENDED"
                | "REQUEUED"
                | "REQUEUE_HOLD"
                | "REQUEUE_FED"
                | "RESIZING"
                | "SIGNALING"
                | "STAGE_OUT"
                | "RESV_DEL_HOLD"
        )
    }

    /// Whether it may still be running a worker.
    pub(crate) fn alive(&self) -> bool {
        !self.ended()
    }

    /// The task in words: `task 12_1 FAILED (NonZeroExitCode) on node n01, exit code 3`.
    pub(crate) fn describe(&self) -> String {
        let mut s = format!("Slurm task {} {}", self.id, self.state);
        if !self.reason.is_empty() && self.reason != "None" {
            s.push_str(&format!(" ({})", self.reason));
        }
        if !self.node.is_empty() {
            s.push_str(&format!(" on node {}", self.node));
        }
        if self.ended() {
            match self.wait_status {
                Some(w) if w & 0x7f != 0 => s.push_str(&format!(", killed by signal {}", w & 0x7f)),
                Some(w) => s.push_str(&format!(", exit code {}", w >> 8)),
                None => {}
            }
        }
        s
    }
}

/// Parses `squeue -h -O FORMAT` output; lines that do not parse are skipped.
pub(crate) fn parse(text: &str) -> Vec<TaskState> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('|').map(str::trim).collect();
            if f.len() < 5 || f[0].is_empty() {
                return None;
            }
            Some(TaskState {
                id: f[0].to_string(),
                state: f[1].to_string(),
                reason: f[2].to_string(),
                node: f[3].to_string(),
                wait_status: f[4].parse().ok(),
            })
        })
        .collect()
}

/// The tasks of `jobs` (array job ids), ended ones included while Slurm still remembers
/// them; `None` when `squeue` could not be run or failed for another reason than the jobs
/// being forgotten.
pub(crate) fn query(squeue: &Path, jobs: &[String]) -> Option<Vec<TaskState>> {
    if jobs.is_empty() {
        return Some(Vec::new());
    }
    let out = Command::new(squeue)
        .args(["-h", "-r", "--states=all", "-j", &jobs.join(","), "-O", FORMAT])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // Every job of the list already forgotten (past `MinJobAge`).
        return err.contains("Invalid job id").then(Vec::new);
    }
    Some(parse(&String::from_utf8_lossy(&out.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_are_parsed_and_described() {
        let t = parse(
            "3_0|FAILED|NonZeroExitCode|vm|768|\n3_1|PENDING|Resources||0|\ngarbage\n4_0|CANCELLED|None|vm|15|\n",
        );
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].describe(), "Slurm task 3_0 FAILED (NonZeroExitCode) on node vm, exit code 3");
        assert!(t[0].ended() && !t[1].ended());
        assert_eq!(t[1].describe(), "Slurm task 3_1 PENDING (Resources)");
        assert_eq!(t[2].describe(), "Slurm task 4_0 CANCELLED on node vm, killed by signal 15");
    }
}
