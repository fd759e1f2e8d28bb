//! [`Failure`]: what a check found the backend doing wrong.

use std::time::Duration;

/// A failed conformance check: which check, on which engine, which job, and what the backend
/// did wrong.
///
/// Its `Display` is one line meant for a test log:
///
/// ```text
/// check `input_order` (threads backend, 2 worker(s)), job `run() of 24 items, batched(Batches(7))`: item 3: expected 10, got 13
/// ```
#[derive(Debug, thiserror::Error)]
#[error("check `{check}` ({engine}), job `{job}`: {problem}")]
pub struct Failure {
    /// The check's name, one of [`CHECKS`](super::CHECKS); `build` when the maker could not
    /// build an engine, `kit` for a skip list naming no check.
    pub check: &'static str,
    /// The engine it ran on: its backend's name and worker count.
    pub engine: String,
    /// The job (or step) that went wrong, as the check ran it.
    pub job: String,
    /// What the backend did wrong.
    pub problem: Problem,
}

/// What a backend did wrong, with the expected and the observed behaviour.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The engine maker returned an error.
    #[error("the engine could not be built: {0}")]
    Build(#[source] crate::Error),
    /// A job that must succeed returned an error.
    #[error("expected success, the job failed: {0}")]
    JobFailed(#[source] crate::Error),
    /// A job returned the wrong number of outputs.
    #[error("expected {expected} output(s), got {got}")]
    Count {
        /// Outputs a correct backend returns.
        expected: usize,
        /// Outputs returned.
        got: usize,
    },
    /// One output is wrong (or in the wrong place).
    #[error("item {index}: expected {expected}, got {got}")]
    Output {
        /// The item's index in the input.
        index: usize,
        /// What a correct backend returns, `Debug`-formatted.
        expected: String,
        /// What came back, `Debug`-formatted.
        got: String,
    },
    /// A job that must fail returned `Ok`.
    #[error("expected an error ({expected}), the job returned Ok")]
    NoError {
        /// The error a correct backend returns.
        expected: String,
    },
    /// A job failed, but not as it must.
    #[error("expected {expected}, got error: {got}")]
    WrongError {
        /// The error a correct backend returns.
        expected: String,
        /// The error returned (its `Debug` form and its message).
        got: String,
    },
    /// Something that must be prompt took too long (a near hang).
    #[error("took {took:?}, more than the limit of {limit:?}")]
    TooSlow {
        /// How long it took.
        took: Duration,
        /// The most a correct backend takes.
        limit: Duration,
    },
    /// The engine, its backend or a check panicked.
    #[error("panicked: {0}")]
    Panicked(String),
    /// Any other breach of the contract, described.
    #[error("{0}")]
    Contract(String),
}

/// Builds the failures of one check on one engine.
pub(crate) struct Scope {
    /// The check's name.
    pub check: &'static str,
    /// The engine's description.
    pub engine: String,
}

impl Scope {
    /// A scope for `check` on an engine described by `engine`.
    pub fn new(check: &'static str, engine: impl Into<String>) -> Scope {
        Scope { check, engine: engine.into() }
    }

    /// A failure of `job`.
    pub fn fail(&self, job: &str, problem: Problem) -> Failure {
        Failure { check: self.check, engine: self.engine.clone(), job: job.to_string(), problem }
    }

    /// The value of a job that must succeed.
    pub fn ok<T>(&self, job: &str, r: crate::Result<T>) -> Result<T, Failure> {
        r.map_err(|e| self.fail(job, Problem::JobFailed(e)))
    }

    /// Outputs equal, item by item, to the expected ones.
    pub fn same<T: PartialEq + std::fmt::Debug>(&self, job: &str, expected: &[T], got: &[T]) -> Result<(), Failure> {
        if let Some(index) = expected.iter().zip(got).position(|(e, g)| e != g) {
            return Err(
                self.fail(job, Problem::Output { index, expected: short(&expected[index]), got: short(&got[index]) })
            );
        }
        if expected.len() != got.len() {
            return Err(self.fail(job, Problem::Count { expected: expected.len(), got: got.len() }));
        }
        Ok(())
    }

    /// A contract failure.
    pub fn contract(&self, job: &str, detail: impl Into<String>) -> Failure {
        self.fail(job, Problem::Contract(detail.into()))
    }
}

/// `Debug` of a value, cut to a readable length (large outputs are a few MiB).
pub(crate) fn short<T: std::fmt::Debug + ?Sized>(v: &T) -> String {
    const MAX: usize = 200;
    let s = format!("{v:?}");
    if s.chars().count() <= MAX {
        s
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}... ({} chars)", s.len())
    }
}
