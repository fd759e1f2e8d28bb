//! The conformance kit on the built-in backends, and proof that it fails a broken one.
#![cfg(feature = "conformance")]

use adparallelengine::conformance::{self, Kit, Problem};
use adparallelengine::{Engine, Kind, Progress};

/// The maker the kit calls: `max_workers` -> an engine of `kind`.
fn maker(kind: Kind) -> impl Fn(usize) -> adparallelengine::Result<Engine> {
    move |n| Engine::builder(kind).max_workers(n).progress(Progress::quiet()).build()
}

#[test]
fn serial_conforms() {
    conformance::run_all(maker(Kind::Serial));
}

#[cfg(feature = "threads")]
#[test]
fn threads_conform() {
    conformance::run_all(maker(Kind::Threads));
}

#[cfg(feature = "process")]
#[test]
fn processes_conform() {
    conformance::run_all(maker(Kind::Process));
}

/// Broken backends the kit must reject, built from the threads backend.
#[cfg(feature = "threads")]
mod broken {
    use super::*;
    use adparallelengine::backends::ThreadsBackend;
    use adparallelengine::plumbing::{Backend, Completions, Plan};
    use adparallelengine::Task;

    /// Says it has `claimed` workers but runs every job on one more: a backend that ignores
    /// `max_workers`.
    struct Overcommit {
        claimed: usize,
        inner: ThreadsBackend,
    }

    impl Backend for Overcommit {
        fn name(&self) -> &'static str {
            "overcommit"
        }
        fn max_workers(&self) -> usize {
            self.claimed
        }
        fn start<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(
            &'a self,
            mut plan: Plan<T, I>,
        ) -> adparallelengine::Result<Box<dyn Completions<T::Output> + 'a>> {
            plan.workers = self.claimed + 1;
            self.inner.start(plan)
        }
    }

    fn overcommit(n: usize) -> adparallelengine::Result<Engine<Overcommit>> {
        Ok(Engine::from_backend(Overcommit { claimed: n, inner: ThreadsBackend::new(n + 1)? }))
    }

    #[test]
    fn a_backend_running_more_workers_than_asked_fails_the_init_check() {
        let err = conformance::init_once_per_worker(overcommit).unwrap_err();
        assert_eq!(err.check, "init_once_per_worker");
        assert!(matches!(err.problem, Problem::Contract(_)), "{err}");
        assert!(err.to_string().contains("init ran 2 times (distinct worker states) for at most 1 worker(s)"), "{err}");
        // The results themselves are right, so the checks of outputs pass: only the init
        // check catches it.
        let report = Kit::new(overcommit).workers(&[2]).skip("complete_matrix").skip("large_payloads").run();
        assert!(!report.is_ok());
        assert!(report.failures.iter().all(|f| f.check == "init_once_per_worker"), "{report}");
        assert!(report.passed.iter().any(|p| p.0 == "input_order"), "{report}");
    }

    /// A maker that ignores the `max_workers` it is asked for.
    #[test]
    fn a_maker_ignoring_max_workers_fails() {
        let err = conformance::init_once_per_worker(|n| {
            Engine::builder(Kind::Threads).max_workers(n + 2).progress(Progress::quiet()).build()
        })
        .unwrap_err();
        assert!(err.to_string().contains("reports 3 workers for max_workers(1)"), "{err}");
    }
}

/// A check named in the skip list is skipped; a misspelt one is a failure, not a silent skip.
#[test]
fn skipping_checks() {
    let mut kit = Kit::new(maker(Kind::Serial)).workers(&[1]);
    for name in conformance::CHECKS.iter().filter(|c| **c != "zero_items") {
        kit = kit.skip(name);
    }
    let report = kit.run();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.skipped.len(), conformance::CHECKS.len() - 1);
    assert_eq!(report.passed.iter().map(|p| p.0).collect::<Vec<_>>(), ["zero_items"]);
    let report = Kit::new(maker(Kind::Serial)).skip("imput_order").workers(&[]).skip("complete_matrix").run();
    assert!(!report.is_ok());
    assert!(report.to_string().contains("no check is named \"imput_order\""), "{report}");
}
