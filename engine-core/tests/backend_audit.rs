//! The engine checks its backend: a backend that drops, shortens, lengthens, repeats or
//! invents a batch, or marks one placed without writing it, fails every terminal with an
//! `Error::Backend` that names the batch — never an `Ok` with fewer results. The faulty
//! backend is written as a third party would, through `plumbing` alone.

use adparallelengine_core::plumbing::{run_inline, Backend, BatchDone, Completions, Plan};
use adparallelengine_core::{Batching, Engine, Error, Result, Task};
use std::time::Duration;

adparallelengine_core::task!(Double = |x: u64| -> u64 { 2 * x });
adparallelengine_core::task!(Pair = |x: u64| -> Vec<u64> { vec![x, x] });

/// What the faulty backend does wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Nothing: the control case.
    Honest,
    /// Never returns the last batch.
    DropLast,
    /// Returns batch 3 with one output missing.
    ShortBatch,
    /// Returns batch 1 as one item longer than it was cut.
    LongBatch,
    /// Returns batch 2 twice.
    Repeat,
    /// Returns a batch that was never cut, after the real ones.
    Invent,
    /// Marks batch 0 placed without writing it (a `run` of plain numbers).
    PlacedUnwritten,
}

struct Faulty(Fault);

struct FaultyRun<'a, O> {
    inner: Box<dyn Completions<O> + 'a>,
    fault: Fault,
    held: Option<BatchDone<O>>,
    extra: Option<BatchDone<O>>,
    invented: bool,
}

/// A copy of `b`'s description with no outputs (`O` need not be `Clone`).
fn echo<O>(b: &BatchDone<O>) -> BatchDone<O> {
    BatchDone {
        seq: b.seq,
        start: b.start,
        len: b.len,
        outputs: Vec::new(),
        failures: Vec::new(),
        worker: b.worker,
        busy: Duration::ZERO,
        item_stats: None,
        placed: false,
    }
}

impl<O> Completions<O> for FaultyRun<'_, O> {
    fn next_done(&mut self) -> Option<Result<BatchDone<O>>> {
        if let Some(b) = self.extra.take() {
            return Some(Ok(b));
        }
        let next = self.inner.next_done();
        match (self.fault, next) {
            (Fault::DropLast, Some(Ok(b))) => match self.held.replace(b) {
                Some(previous) => Some(Ok(previous)),
                None => self.next_done(),
            },
            (Fault::DropLast, None) => None,
            (Fault::ShortBatch, Some(Ok(mut b))) if b.seq == 3 => {
                b.outputs.pop();
                Some(Ok(b))
            }
            (Fault::LongBatch, Some(Ok(mut b))) if b.seq == 1 => {
                b.len += 1;
                Some(Ok(b))
            }
            (Fault::Repeat, Some(Ok(b))) if b.seq == 2 => {
                self.extra = Some(echo(&b));
                Some(Ok(b))
            }
            (Fault::Invent, None) if !self.invented => {
                self.invented = true;
                let mut b = echo(&BatchDone::<O> {
                    seq: 999,
                    start: 9990,
                    len: 0,
                    outputs: Vec::new(),
                    failures: Vec::new(),
                    worker: 0,
                    busy: Duration::ZERO,
                    item_stats: None,
                    placed: false,
                });
                b.len = 1;
                Some(Ok(b))
            }
            (Fault::PlacedUnwritten, Some(Ok(mut b))) if b.seq == 0 => {
                b.outputs.clear();
                b.placed = true;
                Some(Ok(b))
            }
            (_, next) => next,
        }
    }
}

impl Backend for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }
    fn max_workers(&self) -> usize {
        2
    }
    fn places_outputs(&self) -> bool {
        self.0 == Fault::PlacedUnwritten
    }
    fn start<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(
        &'a self,
        plan: Plan<T, I>,
    ) -> Result<Box<dyn Completions<T::Output> + 'a>> {
        let inner = run_inline(plan)?;
        Ok(Box::new(FaultyRun { inner, fault: self.0, held: None, extra: None, invented: false }))
    }
}

const N: u64 = 100;

fn engine(fault: Fault) -> Engine<Faulty> {
    Engine::from_backend(Faulty(fault))
}

/// Every terminal's outcome on `fault`, by name: `Ok(number of results)` or the error.
fn terminals(fault: Fault) -> Vec<(&'static str, std::result::Result<usize, Error>)> {
    let e = engine(fault);
    let chunked = Batching::ChunkSize(10);
    vec![
        ("run", e.map(Double, 0..N).batched(chunked).run().map(|v| v.len())),
        ("gather", e.map(Pair, 0..N).batched(chunked).gather().map(|v| v.len() / 2)),
        ("gather_with", e.map(Double, 0..N).batched(chunked).gather_with(0usize, |n, _| n + 1)),
        ("collect_results", e.map(Double, 0..N).batched(chunked).collect_results().map(|v| v.len())),
        (
            "stream",
            e.map(Double, 0..N).batched(chunked).stream().and_then(|s| s.collect::<Result<Vec<_>>>()).map(|v| v.len()),
        ),
        (
            "stream_unordered",
            e.map(Double, 0..N)
                .batched(chunked)
                .stream_unordered()
                .and_then(|s| s.collect::<Result<Vec<_>>>())
                .map(|v| v.len()),
        ),
    ]
}

/// Every terminal fails on `fault` with a backend error from "faulty" that says `what`.
fn every_terminal_fails(fault: Fault, what: &str) {
    for (terminal, outcome) in terminals(fault) {
        match outcome {
            Err(Error::Backend { backend: "faulty", message }) => {
                assert!(message.contains(what), "{fault:?}, {terminal}: {message:?} should say {what:?}")
            }
            other => panic!("{fault:?}, {terminal}: expected a backend error saying {what:?}, got {other:?}"),
        }
    }
}

#[test]
fn an_honest_backend_passes_every_terminal() {
    for (terminal, outcome) in terminals(Fault::Honest) {
        assert_eq!(outcome.ok(), Some(N as usize), "{terminal}");
    }
}

#[test]
fn a_dropped_batch_is_an_error_naming_it() {
    every_terminal_fails(Fault::DropLast, "never returned, the first batch 9 (items 90..100)");
}

#[test]
fn a_short_batch_is_an_error_naming_it() {
    every_terminal_fails(
        Fault::ShortBatch,
        "batch 3 (items 30..40) came back with 9 output(s) and 0 failure(s) for its 10",
    );
}

#[test]
fn a_long_batch_is_an_error_naming_it() {
    every_terminal_fails(Fault::LongBatch, "batch 1 was cut as items 10..20 but came back as items 10..21");
}

#[test]
fn a_repeated_batch_is_an_error_naming_it() {
    every_terminal_fails(Fault::Repeat, "batch 2 (items 20..30) came back twice");
}

#[test]
fn a_batch_never_cut_is_an_error_naming_it() {
    every_terminal_fails(Fault::Invent, "batch 999 (item 9990) was never cut");
}

#[test]
fn a_batch_marked_placed_but_not_written_is_an_error() {
    let e = engine(Fault::PlacedUnwritten);
    match e.map(Double, 0..N).batched(Batching::ChunkSize(10)).run() {
        Err(Error::Backend { backend: "faulty", message }) => {
            assert!(
                message.contains("batch 0 (items 0..10) is marked placed but its outputs were not written"),
                "{message}"
            )
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[test]
fn the_engine_runs_the_next_job_after_a_backend_error() {
    let e = engine(Fault::Repeat);
    assert!(e.map(Double, 0..N).batched(Batching::ChunkSize(10)).run().is_err());
    // Batch 2 only exists with at least 3 batches: a 2-batch job on the same engine is whole.
    let out = e.map(Double, 0..20u64).batched(Batching::ChunkSize(10)).run().unwrap();
    assert_eq!(out, (0..20).map(|x| 2 * x).collect::<Vec<_>>());
}
