//! Errors returned by the engine.

use std::fmt;

/// A boxed error, what a task returns when it fails (`?` works on any error type).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How an item failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FailureKind {
    /// The task returned `Err`.
    Error,
    /// The task panicked.
    Panic,
    /// The item produced no result (its worker was lost, or the job was cancelled).
    Lost,
    /// The item ran past the job's item timeout.
    Timeout,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Error => f.write_str("returned an error"),
            FailureKind::Panic => f.write_str("panicked"),
            FailureKind::Lost => f.write_str("was lost"),
            FailureKind::Timeout => f.write_str("timed out"),
        }
    }
}

/// The failure of one item: its index in the input and what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("item {index} {kind}: {message}")]
pub struct ItemError {
    /// Position of the item in the input iterator (0-based).
    pub index: usize,
    /// Whether the task returned `Err` or panicked.
    pub kind: FailureKind,
    /// The error's or the panic's message.
    pub message: String,
}

/// Everything that can go wrong in a job or while building an engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// One item failed (fail-fast mode).
    #[error(transparent)]
    Item(#[from] ItemError),
    /// The iterator yielded a different number of items than the declared length.
    #[error("the iterator yielded {actual} item(s) but the declared length is {declared}")]
    LengthMismatch {
        /// The length given with `.length(n)` (or the iterator's exact size hint).
        declared: usize,
        /// What the iterator actually yielded (`declared + 1` means "at least one more").
        actual: String,
    },
    /// A batching mode that needs the number of items was used on an iterator of unknown length.
    #[error("batching mode {mode} needs the number of items: pass `.length(n)` or an ExactSizeIterator")]
    NeedsLength {
        /// The batching mode, as written in code.
        mode: String,
    },
    /// A kind string that names no engine.
    #[error("unknown engine kind {0:?}: expected one of serial, threads (multithread), process (multiproc), mpi, k8s, dask, slurm")]
    UnknownKind(String),
    /// A kind that exists but cannot run in this build.
    #[error("engine kind `{kind}` is not available: {reason}")]
    KindUnavailable {
        /// The kind asked for.
        kind: String,
        /// Why it cannot run (feature off, backend not built yet, ...).
        reason: String,
    },
    /// The task was not registered with `register_task!`.
    #[error("task `{0}` is not registered: add `adparallelengine::register_task!(YourTask);` next to its impl (worker processes find tasks by name)")]
    TaskNotRegistered(String),
    /// Two different tasks were registered under one name.
    #[error("task name `{0}` is registered by more than one type: give each task a unique `Task::name()`")]
    DuplicateTaskName(String),
    /// A worker's `init` failed.
    #[error("init failed on worker {worker}: {message}")]
    Init {
        /// The worker's number.
        worker: usize,
        /// The error or panic message.
        message: String,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A backend-level failure (a worker vanished, a channel closed, ...).
    #[error("backend {backend}: {message}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// What happened.
        message: String,
    },
    /// Encoding or decoding a value failed.
    #[error("codec: {0}")]
    Codec(String),
    /// A shared-store operation failed.
    #[error("shared store: {0}")]
    Store(String),
    /// A results journal could not be used: unreadable, locked by another job, damaged, a
    /// write failed, or the file is not a journal.
    #[error("journal {}: {message}", path.display())]
    Journal {
        /// The journal's file (boxed: keeps `Error` small).
        path: Box<std::path::Path>,
        /// What went wrong.
        message: String,
    },
    /// A results journal belongs to another job: nothing in it was used. Delete it, or pass
    /// [`Journal::discard_mismatched`](crate::Journal::discard_mismatched) to start over.
    #[error("journal {} belongs to another job: {}; delete it, or pass `.discard_mismatched()` to start over", path.display(), differences.join("; "))]
    JournalMismatch {
        /// The journal's file (boxed: keeps `Error` small).
        path: Box<std::path::Path>,
        /// What differs, in words (the task, its version, the types, args, init, shared
        /// values, the length).
        differences: Vec<String>,
    },
}

impl Error {
    /// The item index, when this error is about one item.
    pub fn item_index(&self) -> Option<usize> {
        match self {
            Error::Item(e) => Some(e.index),
            _ => None,
        }
    }
}

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Turns a panic payload into a message.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
