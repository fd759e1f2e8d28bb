//! [`Kit`]: runs every check, collects every failure, and reports them.

use super::checks::{self, describe};
use super::failure::{Failure, Problem, Scope};
use crate::plumbing::Backend;
use crate::Engine;
use std::fmt;
use std::sync::mpsc;
use std::time::Duration;

/// The name of every check, in the order [`Kit::run`] runs them. Each is also a public
/// function of this module with the same name.
pub const CHECKS: [&str; 19] = [
    "complete_matrix",
    "input_order",
    "item_error",
    "item_panic",
    "collect_results",
    "length_mismatch",
    "zero_items",
    "init_once_per_worker",
    "args_and_shared",
    "large_payloads",
    "ordered_stream",
    "stream_cancel_on_drop",
    "unordered_stream",
    "map_slice",
    "usable_after_failure",
    "progress_callbacks",
    "max_in_flight",
    "retry_errors",
    "journal_resume",
];

/// The checks that take one engine, run on each engine of [`Kit::workers`].
type EngineCheck<B> = fn(&Engine<B>) -> Result<(), Failure>;

fn engine_checks<B: Backend>() -> [(&'static str, EngineCheck<B>); 17] {
    [
        ("input_order", checks::input_order::<B>),
        ("item_error", checks::item_error::<B>),
        ("item_panic", checks::item_panic::<B>),
        ("collect_results", checks::collect_results::<B>),
        ("length_mismatch", checks::length_mismatch::<B>),
        ("zero_items", checks::zero_items::<B>),
        ("args_and_shared", checks::args_and_shared::<B>),
        ("large_payloads", checks::large_payloads::<B>),
        ("ordered_stream", checks::ordered_stream::<B>),
        ("stream_cancel_on_drop", checks::stream_cancel_on_drop::<B>),
        ("unordered_stream", checks::unordered_stream::<B>),
        ("map_slice", checks::map_slice::<B>),
        ("usable_after_failure", checks::usable_after_failure::<B>),
        ("progress_callbacks", checks::progress_callbacks::<B>),
        ("max_in_flight", checks::max_in_flight::<B>),
        ("retry_errors", checks::retry_errors::<B>),
        ("journal_resume", super::journal::journal_resume::<B>),
    ]
}

/// Runs the conformance checks on engines from a maker, and reports every failure.
///
/// ```no_run
/// # use adparallelengine_core::{conformance::Kit, plumbing::Backend, Engine};
/// # struct Mine;
/// # impl Backend for Mine {
/// #   fn name(&self) -> &'static str { "mine" }
/// #   fn max_workers(&self) -> usize { 1 }
/// #   fn start<'a, T: adparallelengine_core::Task, I: Iterator<Item = T::Item> + 'a>(&'a self, p: adparallelengine_core::plumbing::Plan<T, I>)
/// #     -> adparallelengine_core::Result<Box<dyn adparallelengine_core::plumbing::Completions<T::Output> + 'a>> { adparallelengine_core::plumbing::run_inline(p) }
/// # }
/// # fn make(n: usize) -> adparallelengine_core::Result<Engine<Mine>> { Ok(Engine::from_backend(Mine)) }
/// let report = Kit::new(make).skip("large_payloads").workers(&[2]).run();
/// assert!(report.is_ok(), "{report}");
/// ```
pub struct Kit<B: Backend, M: Fn(usize) -> crate::Result<Engine<B>>> {
    make: M,
    skip: Vec<String>,
    workers: Vec<usize>,
    hang_limit: Option<Duration>,
}

impl<B: Backend, M: Fn(usize) -> crate::Result<Engine<B>>> Kit<B, M> {
    /// A kit over `make`, which builds an engine with the given `max_workers`.
    pub fn new(make: M) -> Self {
        Kit { make, skip: Vec::new(), workers: vec![2, 1], hang_limit: Some(Duration::from_secs(300)) }
    }

    /// Skips the check named `name` (one of [`CHECKS`]). A name that is no check is reported
    /// as a failure by [`run`](Kit::run), so a typo cannot skip silently.
    pub fn skip(mut self, name: &str) -> Self {
        self.skip.push(name.to_string());
        self
    }

    /// The `max_workers` of the engines the one-engine checks run on (default `[2, 1]`).
    /// `complete_matrix` always asks for the engine's default and 1, `init_once_per_worker`
    /// for 1 and 2.
    pub fn workers(mut self, workers: &[usize]) -> Self {
        self.workers = workers.to_vec();
        self
    }

    /// The longest one check may run (default 300 s) before the kit decides the backend hangs.
    /// A hung job cannot be cancelled from outside, so past this limit the kit prints which
    /// check hangs on stderr and **exits the process** with status 101 (what a failed test
    /// exits with); `None` waits for ever.
    pub fn hang_limit(mut self, limit: Option<Duration>) -> Self {
        self.hang_limit = limit;
        self
    }

    fn skipped(&self, name: &str) -> bool {
        self.skip.iter().any(|s| s == name)
    }

    /// Runs every check that is not skipped and returns the report. Never panics: a check
    /// (or the backend) that panics is a [`Problem::Panicked`] failure.
    pub fn run(&self) -> Report {
        let mut report = Report::default();
        for name in &self.skip {
            if !CHECKS.contains(&name.as_str()) {
                let scope = Scope::new("kit", "no engine");
                report.failures.push(scope.contract(
                    &format!("skip({name:?})"),
                    format!("no check is named {name:?}; the checks are {}", CHECKS.join(", ")),
                ));
            }
        }
        report.skipped = CHECKS.iter().copied().filter(|c| self.skipped(c)).collect();

        if !self.skipped("complete_matrix") {
            let failures =
                self.guarded("complete_matrix", "matrix", || checks::complete_matrix_failures(&|n| (self.make)(n)));
            report.record("complete_matrix", "default and 1 worker(s)", failures);
        }
        for n in &self.workers {
            let engine = match (self.make)(*n) {
                Ok(e) => e,
                Err(e) => {
                    let scope = Scope::new("build", format!("max_workers {n}"));
                    report
                        .failures
                        .push(scope.fail(&format!("building the engine with max_workers({n})"), Problem::Build(e)));
                    continue;
                }
            };
            let desc = describe(&engine);
            for (name, check) in engine_checks::<B>() {
                if self.skipped(name) {
                    continue;
                }
                let failures = self.guarded(name, &desc, || check(&engine).err().into_iter().collect());
                report.record(name, &desc, failures);
            }
            if !self.skipped("init_once_per_worker") {
                let failures = self.guarded("init_once_per_worker", &desc, || {
                    checks::init_once_per_worker_on(&engine, *n).err().into_iter().collect()
                });
                report.record("init_once_per_worker", &desc, failures);
            }
        }
        // `init_once_per_worker` asks for 1 and 2 workers even when `workers` does not.
        for n in [1usize, 2] {
            if self.skipped("init_once_per_worker") || self.workers.contains(&n) {
                continue;
            }
            let failures = self.guarded("init_once_per_worker", &format!("max_workers {n}"), || match (self.make)(n) {
                Ok(e) => checks::init_once_per_worker_on(&e, n).err().into_iter().collect(),
                Err(e) => vec![Scope::new("build", format!("max_workers {n}"))
                    .fail(&format!("building the engine with max_workers({n})"), Problem::Build(e))],
            });
            report.record("init_once_per_worker", &format!("max_workers {n}"), failures);
        }
        report
    }

    /// Runs one check under the hang watchdog, turning a panic into a failure.
    fn guarded(&self, name: &'static str, engine: &str, f: impl FnOnce() -> Vec<Failure>) -> Vec<Failure> {
        let _watch = self.hang_limit.map(|limit| Watchdog::start(format!("`{name}` ({engine})"), limit));
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(failures) => failures,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic payload".into());
                vec![Scope::new(name, engine).fail("the check", Problem::Panicked(message))]
            }
        }
    }

    /// Runs every check and panics with the report's summary if any failed: the one line of a
    /// backend's `#[test] fn conformance()`. Panicking is this function's purpose; use
    /// [`run`](Kit::run) to get the failures as values.
    pub fn assert_passes(&self) {
        let report = self.run();
        if !report.is_ok() {
            panic!("{report}");
        }
    }
}

/// Runs every check on engines from `make` (its argument is `max_workers`) and **panics**
/// with a readable summary of every failure: a backend's whole conformance test is
///
/// ```no_run
/// # use adparallelengine_core::{plumbing::Backend, Engine};
/// # struct Mine;
/// # impl Backend for Mine {
/// #   fn name(&self) -> &'static str { "mine" }
/// #   fn max_workers(&self) -> usize { 1 }
/// #   fn start<'a, T: adparallelengine_core::Task, I: Iterator<Item = T::Item> + 'a>(&'a self, p: adparallelengine_core::plumbing::Plan<T, I>)
/// #     -> adparallelengine_core::Result<Box<dyn adparallelengine_core::plumbing::Completions<T::Output> + 'a>> { adparallelengine_core::plumbing::run_inline(p) }
/// # }
/// # fn make(n: usize) -> adparallelengine_core::Result<Engine<Mine>> { Ok(Engine::from_backend(Mine)) }
/// adparallelengine_core::conformance::run_all(make);
/// ```
///
/// Panicking is the point (it fails the calling test); [`Kit::run`] returns a [`Report`]
/// instead, and [`Kit::skip`] skips checks.
pub fn run_all<B: Backend>(make: impl Fn(usize) -> crate::Result<Engine<B>>) {
    Kit::new(make).assert_passes()
}

/// [`run_all`] without the checks named in `skip` (names from [`CHECKS`]). Panics with the
/// summary if a check fails or a name in `skip` is no check.
pub fn run_all_except<B: Backend>(make: impl Fn(usize) -> crate::Result<Engine<B>>, skip: &[&str]) {
    skip.iter().fold(Kit::new(make), |k, s| k.skip(s)).assert_passes()
}

/// What [`Kit::run`] found: the checks that passed (with the engine they ran on), those
/// skipped, and every failure.
#[derive(Debug, Default)]
pub struct Report {
    /// `(check, engine)` of every check run that passed.
    pub passed: Vec<(&'static str, String)>,
    /// The checks skipped.
    pub skipped: Vec<&'static str>,
    /// Every failure, in the order found.
    pub failures: Vec<Failure>,
}

impl Report {
    /// Whether every check that ran passed.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// The failures of the check named `name`.
    pub fn failures_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Failure> + 'a {
        self.failures.iter().filter(move |f| f.check == name)
    }

    fn record(&mut self, name: &'static str, engine: &str, failures: Vec<Failure>) {
        if failures.is_empty() {
            self.passed.push((name, engine.to_string()));
        } else {
            self.failures.extend(failures);
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "conformance kit: {} passed, {} failure(s), {} check(s) skipped{}",
            self.passed.len(),
            self.failures.len(),
            self.skipped.len(),
            if self.skipped.is_empty() { String::new() } else { format!(" ({})", self.skipped.join(", ")) }
        )?;
        for failure in &self.failures {
            writeln!(f, "  FAILED {failure}")?;
        }
        Ok(())
    }
}

/// Exits the process if it is not dropped within its limit (a hung check).
struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(what: String, limit: Duration) -> Watchdog {
        let (done, wait) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("conformance-watchdog".into())
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
                    eprintln!(
                        "conformance kit: check {what} is still running after {limit:?}: the backend hangs \
                         (a hung job cannot be cancelled); exiting"
                    );
                    std::process::exit(101);
                }
            })
            .ok();
        Watchdog { done: Some(done), thread }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Dropping the sender wakes the watchdog, which ends.
        self.done.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_is_named_once() {
        let mut names = CHECKS.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CHECKS.len());
        struct NoBackend;
        impl Backend for NoBackend {
            fn name(&self) -> &'static str {
                "none"
            }
            fn max_workers(&self) -> usize {
                1
            }
            fn start<'a, T: crate::Task, I: Iterator<Item = T::Item> + 'a>(
                &'a self,
                _: crate::plumbing::Plan<T, I>,
            ) -> crate::Result<Box<dyn crate::plumbing::Completions<T::Output> + 'a>> {
                Err(crate::Error::Config("no backend".into()))
            }
        }
        for (name, _) in engine_checks::<NoBackend>() {
            assert!(CHECKS.contains(&name), "{name}");
        }
        assert_eq!(engine_checks::<NoBackend>().len() + 2, CHECKS.len());
    }

    /// A backend that cannot run anything fails every check (none passes vacuously), and
    /// the report says so, check by check; a typo in the skip list is a failure too.
    #[test]
    fn a_backend_that_runs_nothing_fails_every_check() {
        struct Refuses;
        impl Backend for Refuses {
            fn name(&self) -> &'static str {
                "refuses"
            }
            fn max_workers(&self) -> usize {
                2
            }
            fn start<'a, T: crate::Task, I: Iterator<Item = T::Item> + 'a>(
                &'a self,
                _: crate::plumbing::Plan<T, I>,
            ) -> crate::Result<Box<dyn crate::plumbing::Completions<T::Output> + 'a>> {
                Err(crate::Error::Backend { backend: "refuses", message: "refused".into() })
            }
        }
        let report = Kit::new(|_| Ok(Engine::from_backend(Refuses))).skip("no_such_check").workers(&[2]).run();
        assert!(!report.is_ok());
        // zero_items starts no job, so it passes; every other check fails.
        let passed: Vec<_> = report.passed.iter().map(|p| p.0).collect();
        assert_eq!(passed, ["zero_items"], "{report}");
        for name in CHECKS.iter().filter(|c| **c != "zero_items") {
            assert!(report.failures_of(name).next().is_some(), "{name} passed on a refusing backend:\n{report}");
        }
        assert!(report.failures_of("kit").any(|f| f.to_string().contains("no_such_check")), "{report}");
        let text = report.to_string();
        assert!(text.contains("FAILED check `input_order` (refuses backend, 2 worker(s))"), "{text}");
        assert!(text.contains("refused"), "{text}");
    }
}
