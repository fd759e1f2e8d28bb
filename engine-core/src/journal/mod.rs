//! [`Journal`]: a file where a job appends every finished item's output as it arrives, so
//! that a rerun of the same job after a crash (or a finished job run again) skips what is in
//! it and returns every result, old and new, in input order.
//!
//! The pieces: [`file`] (the format: a checked header, checksummed records, a torn tail
//! detected and cut), [`identity`] (what the header says about the job: its task, version,
//! types, and hashes of args, init and shared values), [`done`] (the items already in the
//! journal, and how indices of the items still to run map back to the input's), [`skip`]
//! (the iterator that walks the input and leaves journaled items out) and [`layer`] (what
//! the running job does with each batch: journal it, put it back in the input's numbering,
//! merge the old results in).

pub(crate) mod done;
pub(crate) mod file;
pub(crate) mod identity;
pub(crate) mod layer;
pub(crate) mod skip;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A results journal for one job ([`Job::journal`](crate::Job::journal)).
///
/// ```
/// use adparallelengine_core::{Journal, JournalSync};
/// let j = Journal::at("/tmp/backtest.journal")
///     .version("fix-1") // a rebuild that changed the task's meaning: a new version
///     .sync(JournalSync::EveryItems(10_000)); // at most 10,000 items lost to a power cut
/// assert_eq!(j.path(), std::path::Path::new("/tmp/backtest.journal"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    pub(crate) path: PathBuf,
    pub(crate) version: String,
    pub(crate) sync: JournalSync,
    pub(crate) discard_mismatched: bool,
}

/// When the journal's appends are forced to disk (`fdatasync`). Every record is written to
/// the file as its batch comes back, whatever the policy, so a driver that crashes or is
/// killed loses nothing it wrote: the policy only matters when the machine itself goes down
/// (power, kernel), where the records not synced yet may be lost (and the torn one ignored):
/// a rerun runs those items again, it never returns a wrong result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalSync {
    /// At most once per this interval, when a record is written (the first one an interval
    /// after the journal is opened), and at the end of the job on a thread of its own, so
    /// that no job waits for the disk more than once per interval (the default: one second;
    /// a job shorter than that never waits).
    Interval(Duration),
    /// Once `n` items were appended since the last sync (checked as each record is written,
    /// so the sync comes with the record that reaches `n`: a record holds a run of consecutive
    /// outputs of one batch), after a new journal's header, and at the end of the job, each
    /// before the job goes on. `EveryItems(1)` syncs every record.
    EveryItems(u64),
    /// Never: the operating system writes the pages back when it likes.
    Never,
}

impl Default for JournalSync {
    fn default() -> Self {
        JournalSync::Interval(Duration::from_secs(1))
    }
}

impl Journal {
    /// A journal in the file at `path` (created if missing).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Journal { path: path.into(), version: String::new(), sync: JournalSync::default(), discard_mismatched: false }
    }

    /// A version of the task, written in the header: a journal written under another version
    /// is refused. The task's name and its item and output types are checked anyway, but
    /// not its code: a rebuild that fixed the bug that crashed the driver keeps the finished
    /// work (same version), a change of what the task computes is yours to declare (a new
    /// version).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// When appends are forced to disk (default: [`JournalSync::Interval`] of one second).
    pub fn sync(mut self, policy: JournalSync) -> Self {
        self.sync = policy;
        self
    }

    /// A journal that belongs to another job is emptied and the job starts over, instead of
    /// the job failing with [`Error::JournalMismatch`](crate::Error::JournalMismatch).
    pub fn discard_mismatched(mut self) -> Self {
        self.discard_mismatched = true;
        self
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl From<&str> for Journal {
    fn from(path: &str) -> Self {
        Journal::at(path)
    }
}

impl From<String> for Journal {
    fn from(path: String) -> Self {
        Journal::at(path)
    }
}

impl From<&Path> for Journal {
    fn from(path: &Path) -> Self {
        Journal::at(path)
    }
}

impl From<PathBuf> for Journal {
    fn from(path: PathBuf) -> Self {
        Journal::at(path)
    }
}
