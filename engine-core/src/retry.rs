//! [`RetryErrors`]: how often an item whose task returned `Err` or panicked is run again
//! ([`Job::retry_errors`](crate::Job::retry_errors)), what the task's
//! [`retry_if`](crate::Task::retry_if) is told of a failed attempt ([`FailedAttempt`]), and the
//! run with retries itself.

use crate::error::{BoxError, FailureKind};
use crate::task::Task;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

/// Retries of failing items: `retries` more attempts after the first, with a pause of
/// `backoff`, doubled after each attempt, before each. The default: none.
///
/// ```
/// use adparallelengine_core::RetryErrors;
/// let r = RetryErrors { retries: 3, backoff: std::time::Duration::from_millis(10) };
/// assert_eq!(r.pause_before(2), std::time::Duration::from_millis(10));
/// assert_eq!(r.pause_before(4), std::time::Duration::from_millis(40));
/// assert_eq!(RetryErrors::default().retries, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RetryErrors {
    /// Attempts after the first.
    pub retries: u32,
    /// Pause before the second attempt; doubled before each next one.
    pub backoff: Duration,
}

/// A failed attempt at an item, as [`Task::retry_if`](crate::Task::retry_if) sees it on the
/// worker where it failed, to decide whether the item gets another.
///
/// ```
/// use adparallelengine_core::{BoxError, FailedAttempt, FailureKind};
/// let e: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut));
/// let a = FailedAttempt { attempt: 1, kind: FailureKind::Error, error: Some(&e), message: "timed out" };
/// let io = a.error.and_then(|e| e.downcast_ref::<std::io::Error>());
/// assert_eq!(io.map(|e| e.kind()), Some(std::io::ErrorKind::TimedOut));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FailedAttempt<'a> {
    /// The attempt that failed: 1 for the first.
    pub attempt: u32,
    /// [`FailureKind::Error`] (the task returned `Err`) or [`FailureKind::Panic`].
    pub kind: FailureKind,
    /// The error the task returned, to downcast to a type of yours; `None` for a panic.
    pub error: Option<&'a BoxError>,
    /// The error's or the panic's message.
    pub message: &'a str,
}

/// Longest pause between two attempts, however many doublings.
const MAX_PAUSE: Duration = Duration::from_secs(60);

impl RetryErrors {
    /// The pause before attempt `attempt` (2 for the first retry): `backoff × 2^(attempt − 2)`,
    /// at most a minute.
    pub fn pause_before(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(20);
        self.backoff.saturating_mul(1u32 << doublings).min(MAX_PAUSE)
    }
}

/// Runs `item` until it succeeds, has had `1 + policy.retries` attempts, or fails in a way the
/// task's [`retry_if`](Task::retry_if) declines to retry; each attempt runs under its own
/// `catch_unwind`, and a failure's message says how many attempts it had. A retried item is a
/// fresh copy, decoded from the encoding taken before its first attempt (the task consumed
/// the first); an item that cannot be encoded runs once.
pub(crate) fn run_retrying<T: Task>(
    item: T::Item,
    args: &T::Args,
    state: &mut T::State,
    policy: RetryErrors,
) -> Result<T::Output, (FailureKind, String)> {
    let copy = postcard::to_allocvec(&item).ok();
    let mut first = Some(item);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let x = match first.take() {
            Some(x) => x,
            None => match copy.as_deref().map(postcard::from_bytes::<T::Item>) {
                Some(Ok(x)) => x,
                _ => {
                    return Err((
                        FailureKind::Error,
                        format!("attempt {attempt} could not decode its copy of the item"),
                    ))
                }
            },
        };
        let (kind, message, error) = match catch_unwind(AssertUnwindSafe(|| T::run(x, args, state))) {
            Ok(Ok(out)) => return Ok(out),
            Ok(Err(e)) => (FailureKind::Error, e.to_string(), Some(e)),
            Err(p) => (FailureKind::Panic, crate::error::panic_message(&*p), None),
        };
        let last = attempt > policy.retries
            || copy.is_none()
            || !retry_if::<T>(&FailedAttempt { attempt, kind, error: error.as_ref(), message: &message });
        if last {
            let message = match attempt {
                1 => message,
                n => format!("{message} (after {n} attempts)"),
            };
            return Err((kind, message));
        }
        tracing::debug!(attempt, %message, "item failed; retrying");
        std::thread::sleep(policy.pause_before(attempt + 1));
    }
}

/// The task's [`retry_if`](Task::retry_if), a panic in it taken as "no": the item then fails
/// with the error it had, not with the predicate's panic.
fn retry_if<T: Task>(failure: &FailedAttempt<'_>) -> bool {
    catch_unwind(AssertUnwindSafe(|| T::retry_if(failure))).unwrap_or(false)
}
