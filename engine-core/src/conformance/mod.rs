//! The **conformance kit**: public checks of the whole user-visible contract of an engine,
//! for any [`Backend`](crate::plumbing::Backend) to run from its own tests (feature `conformance`).
//!
//! Like object_store's `integration` module, whose test functions every `ObjectStore` calls,
//! each check is a public function that runs jobs on an engine and returns
//! `Result<(), `[`Failure`]`>`: the failure names the check, the engine, the job and what the
//! backend did wrong (expected vs got, the item index). [`run_all`] runs them all and panics
//! with a summary of every failure, so a third-party backend's whole conformance test is one
//! line. In its crate (`my-backend`), with
//! `adparallelengine-core = { version = "0.1", features = ["conformance"] }` in its
//! `[dev-dependencies]`:
//!
//! ```no_run
//! // my-backend/tests/conformance.rs
//! use adparallelengine_core::{conformance, Engine};
//! # struct MyBackend;
//! # impl MyBackend { fn new(_: usize) -> adparallelengine_core::Result<Self> { Ok(MyBackend) } }
//! # impl adparallelengine_core::plumbing::Backend for MyBackend {
//! #   fn name(&self) -> &'static str { "mine" }
//! #   fn max_workers(&self) -> usize { 1 }
//! #   fn start<'a, T: adparallelengine_core::Task, I: Iterator<Item = T::Item> + 'a>(&'a self, p: adparallelengine_core::plumbing::Plan<T, I>)
//! #     -> adparallelengine_core::Result<Box<dyn adparallelengine_core::plumbing::Completions<T::Output> + 'a>> { adparallelengine_core::plumbing::run_inline(p) }
//! # }
//!
//! #[test]
//! fn conformance() {
//!     // The argument is max_workers: the kit asks for 1, 2 and the default.
//!     conformance::run_all(|n| Ok(Engine::from_backend(MyBackend::new(n)?)));
//! }
//!
//! #[test]
//! fn conformance_without_the_slow_checks() {
//!     let report = conformance::Kit::new(|n| Ok(Engine::from_backend(MyBackend::new(n)?)))
//!         .skip("large_payloads")
//!         .skip("stream_cancel_on_drop")
//!         .run();
//!     assert!(report.is_ok(), "{report}");
//! }
//!
//! #[test]
//! fn one_check() {
//!     let engine = Engine::from_backend(MyBackend::new(2).unwrap());
//!     conformance::input_order(&engine).unwrap();
//! }
//! ```
//!
//! The kit's tasks are registered types (see [`register_task!`](crate::register_task)), so a
//! backend whose workers re-execute the test binary (processes, MPI ranks, pods) finds them
//! there too. An engine built with `Engine::builder(factory).max_workers(n).build()` works
//! as well as `from_backend`.
//!
//! The checks ([`CHECKS`]), each a function of this module:
//!
//! | check | takes | what a correct backend does |
//! |---|---|---|
//! | [`complete_matrix`] | maker | the original's complete example over its 64-cell matrix ([`matrix_cells`]), every number right |
//! | [`input_order`] | engine | `run`, `gather`, `gather_with` in input order despite uneven item times |
//! | [`item_error`] | engine | an item's `Err` is `Error::Item` naming its index, kind `Error`, its message |
//! | [`item_panic`] | engine | an item's panic is `Error::Item` naming its index, kind `Panic`, its message |
//! | [`collect_results`] | engine | every item's own `Ok` or `ItemError`, in order |
//! | [`length_mismatch`] | engine | a `.length(n)` that lies either way is `Error::LengthMismatch`, promptly |
//! | [`zero_items`] | engine | zero items give empty results from every terminal |
//! | [`init_once_per_worker`] | maker | `init` once per worker, its state kept, at most `max_workers` of them |
//! | [`args_and_shared`] | engine | args and `Shared` values reach the task; a changed one is not stale |
//! | [`large_payloads`] | engine | items of 2 MiB and outputs of 3 MiB come back whole |
//! | [`ordered_stream`] | engine | `stream()` in input order |
//! | [`stream_cancel_on_drop`] | engine | dropping a stream mid-way returns promptly; the next job is right |
//! | [`unordered_stream`] | engine | `stream_unordered()` yields every index exactly once |
//! | [`map_slice`] | engine | `map_slice` gives `map`'s outputs, in order, from every terminal |
//! | [`usable_after_failure`] | engine | after a failed job the next one on the same engine is right |
//! | [`max_in_flight`] | engine | streams over an endless generator never pull more than the cap past what the caller took |
//! | [`retry_errors`] | engine | items failing their first attempt (`Err` or panic) succeed on a retry; one that always fails names its attempts; one the task's `retry_if` declines fails at once |
//! | [`progress_callbacks`] | engine | `on_progress` counts only grow and end at the job's; failures counted; time to first result |
//!
//! The complete example's inputs, expected numbers and cells ([`FRAMES`], [`expected_blocks`],
//! [`matrix_cells`], ...) are public too: `cargo xtask test-matrix` checks the example's
//! printed tables against them for every kind.

mod checks;
mod failure;
mod journal;
mod kit;
mod matrix;
mod shared_backend;
mod tasks;

pub use checks::{
    args_and_shared, collect_results, complete_cell, complete_matrix, default_workers, init_once_per_worker,
    init_once_per_worker_on, input_order, item_error, item_panic, large_payloads, length_mismatch, map_slice,
    max_in_flight, ordered_stream, progress_callbacks, retry_errors, stream_cancel_on_drop, unordered_stream,
    usable_after_failure, zero_items, PROMPT_DROP, PROMPT_JOB,
};
pub use failure::{Failure, Problem};
pub use journal::journal_resume;
pub use kit::{run_all, run_all_except, Kit, Report, CHECKS};
pub use matrix::{
    batched_arg, expected_blocks, expected_outputs, matrix_cells, py_bool, ExpectedBlock, MatrixCell, Table, ATTR,
    BATCHED, COLUMNS, FLOAT, FRAMES, GATHER, GENERATOR, ITEMS, MAX_WORKERS, SERIES, SHARE, TOLERANCE,
};
pub use shared_backend::SharedBackend;
