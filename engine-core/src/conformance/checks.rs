//! The checks: one public function each, returning the first thing the backend got wrong.
//!
//! Every expectation is computed here from the inputs, independently of the tasks' code.

use super::failure::{short, Failure, Problem, Scope};
use super::matrix::{compare_blocks, MatrixCell, Table, FLOAT, FRAMES, SERIES};
use super::tasks::{
    frame, mixed_fate, table_of, Big, FailAt, FailsFirst, InitToken, KitArgs, Method, MethodArgs, Mixed, MixedFate,
    Pair, PanicAt, PickyRetry, Slow, Stuff, Uneven, WithArgs,
};
use crate::arrow::Series;
use crate::plumbing::Backend;
use crate::{Batching, Engine, Error, FailureKind, ItemError, Shared};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a job that must fail at once (a lying `.length(n)`) may take, worker start
/// included.
pub const PROMPT_JOB: Duration = Duration::from_secs(30);
/// Longest dropping a stream mid-way may take.
pub const PROMPT_DROP: Duration = Duration::from_secs(5);

/// The engine's default `max_workers` (the available parallelism), which the kit asks the
/// maker for where the complete-example matrix says `default`.
pub fn default_workers() -> usize {
    crate::EngineConfig::default().workers_or_default()
}

/// `"<backend> backend, <n> worker(s)"`.
pub(crate) fn describe<B: Backend>(engine: &Engine<B>) -> String {
    format!("{} backend, {} worker(s)", engine.backend().name(), engine.workers())
}

/// The input of the uneven jobs, and their expected outputs (`3x + 1`).
fn uneven_expected(items: &[u64]) -> Vec<u64> {
    items.iter().map(|x| 3 * x + 1).collect()
}

/// A job's description: what terminal, how many items, which batching.
fn job(terminal: &str, n: usize, b: Batching) -> String {
    format!("{terminal} of {n} items, batched({b:?})")
}

// ---------------------------------------------------------------------------------------
// The complete example's matrix.

/// The complete-example matrix in-process: every [`matrix_cells`](super::matrix_cells) cell
/// on `make(default_workers())` or `make(1)`, every number checked against
/// [`expected_blocks`](super::expected_blocks). Returns the first failing cell.
pub fn complete_matrix<B: Backend>(make: impl Fn(usize) -> crate::Result<Engine<B>>) -> Result<(), Failure> {
    match complete_matrix_failures(&make).into_iter().next() {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// Every failing cell of the matrix (an engine that cannot be built fails its cells once).
pub(crate) fn complete_matrix_failures<B: Backend>(make: &dyn Fn(usize) -> crate::Result<Engine<B>>) -> Vec<Failure> {
    let mut failures = Vec::new();
    for max_workers in super::MAX_WORKERS {
        let n = max_workers.unwrap_or_else(default_workers);
        let engine = match make(n) {
            Ok(e) => e,
            Err(e) => {
                let scope = Scope::new("complete_matrix", format!("max_workers {n}"));
                failures.push(scope.fail(&format!("building the engine with max_workers({n})"), Problem::Build(e)));
                continue;
            }
        };
        for cell in super::matrix_cells().into_iter().filter(|c| c.max_workers == max_workers) {
            if let Err(f) = complete_cell(&engine, &cell) {
                failures.push(f);
            }
        }
    }
    failures
}

/// One cell of the complete-example matrix on `engine` (its `max_workers` field is not
/// looked at: pass the engine it names). Runs the original's `method` over its six frames
/// with its `gather`, `batched`, `share` and `generator`, and checks every output value.
pub fn complete_cell<B: Backend>(engine: &Engine<B>, cell: &MatrixCell) -> Result<(), Failure> {
    let scope = Scope::new("complete_matrix", describe(engine));
    let what = format!("complete example, {cell}");
    let frames: Vec<_> = FRAMES
        .iter()
        .map(|rows| frame(*rows))
        .collect::<Result<_, _>>()
        .map_err(|e| scope.contract(&what, format!("cannot build the input frames: {e}")))?;
    let series = Series(Arc::new(arrow_array::Int64Array::from(SERIES.to_vec())));
    let some_other_stuff = if cell.share { Stuff::Shared(Shared::new(series)) } else { Stuff::Plain(series) };
    let items: Box<dyn Iterator<Item = crate::arrow::Frame>> = if cell.generator {
        // No size hint: the length comes from `.length(n)` alone.
        let mut frames = frames.into_iter();
        Box::new(std::iter::from_fn(move || frames.next()))
    } else {
        Box::new(frames.into_iter())
    };
    let job = engine
        .map(Method, items)
        .length(FRAMES.len())
        .args(MethodArgs { some_other_stuff, some_float: FLOAT })
        .init(super::ATTR)
        .batched(cell.batched);
    let out: Vec<crate::arrow::Frame> = if cell.gather {
        scope.ok(&what, job.gather())?
    } else {
        scope.ok(&what, job.run())?.into_iter().flatten().collect()
    };
    let mut tables: Vec<Table> = Vec::with_capacity(out.len());
    for (k, f) in out.iter().enumerate() {
        let t = table_of(f).map_err(|got| {
            scope.fail(
                &what,
                Problem::Output {
                    index: k / 2,
                    expected: "a 2-row frame of Float64 columns \"0\", \"1\"".into(),
                    got: format!("output frame {k}: {got}"),
                },
            )
        })?;
        tables.push(t);
    }
    compare_blocks(&cell.expected(), &tables).map_err(|p| scope.fail(&what, p))
}

// ---------------------------------------------------------------------------------------
// Order.

/// Results come back in input order although items take uneven times (early items are the
/// slowest): `run`, `gather` and `gather_with`, in every batching mode.
pub fn input_order<B: Backend>(engine: &Engine<B>) -> Result<(), Failure> {
    let scope = Scope::new("input_order", describe(engine));
    let items: Vec<u64> = (0..24).collect();
    let want = uneven_expected(&items);
    for b in [Batching::None, Batching::PerWorker, Batching::Batches(7), Batching::ChunkSize(3), Batching::Auto] {
        let what = job("run()", items.len(), b);
        let got = scope.ok(&what, engine.map(Uneven, items.clone()).batched(b).run())?;
        scope.same(&what, &want, &got)?;
    }
    let what = job("gather()", items.len(), Batching::Batches(5));
    let got = scope.ok(&what, engine.map(Pair, items.clone()).batched(5).gather())?;
    let flat: Vec<u64> = items.iter().flat_map(|&x| [x, 10 * x + 1]).collect();
    scope.same(&what, &flat, &got)?;
    let what = job("gather_with() recording the order", items.len(), Batching::None);
    let got = scope.ok(
        &what,
        engine.map(Uneven, items.clone()).batched(false).gather_with(Vec::new(), |mut acc, y| {
            acc.push(y);
            acc
        }),
    )?;
    scope.same(&what, &want, &got)
}

// ---------------------------------------------------------------------------------------
// Failing items.

/// Checks that `r` is the fail-fast error of item `index`, of `kind`, with `needle` in its
/// message and a `Display` of `item {index} {kind}: ...`.
fn expect_item_failure<T: std::fmt::Debug>(
    scope: &Scope,
    what: &str,
    r: crate::Result<T>,
    index: usize,
    kind: FailureKind,
    needle: &str,
) -> Result<(), Failure> {
    let expected = format!("Error::Item {{ index: {index}, kind: {kind:?}, message containing {needle:?} }}");
    let err = match r {
        Ok(v) => {
            return Err(scope.fail(what, Problem::NoError { expected: format!("{expected}; got Ok({})", short(&v)) }))
        }
        Err(e) => e,
    };
    let wrong = |detail: &str| {
        scope.fail(
            what,
            Problem::WrongError { expected: format!("{expected} ({detail})"), got: format!("{err:?}: {err}") },
        )
    };
    let Error::Item(ItemError { index: got_index, kind: got_kind, message }) = &err else {
        return Err(wrong("another variant"));
    };
    if *got_index != index {
        return Err(wrong(&format!("the failure names item {got_index}")));
    }
    if *got_kind != kind {
        return Err(wrong(&format!("the failure kind is {got_kind:?}")));
    }
    if !message.contains(needle) {
        return Err(wrong("the task's message is lost"));
    }
    if err.item_index() != Some(index) {
        return Err(wrong("item_index() disagrees"));
    }
    let prefix = format!("item {index} {kind}: ");
    if !err.to_string().starts_with(&prefix) {
        return Err(wrong(&format!("the message does not start with {prefix:?}")));
    }
    Ok(())
}

/// An item whose task returns `Err` fails the job with [`Error::Item`] naming that item's
/// index, [`FailureKind::Error`] and the task's message, in several batching modes and
/// positions (first, middle, last).
pub fn item_error<B: Backend>(engine: &Engine<B>) -> Result<(), Failure> {
    let scope = Scope::new("item_error", describe(engine));
    for (bad, b) in [(7u64, Batching::None), (0, Batching::Batches(3)), (23, Batching::Auto), (12, Batching::PerWorker)]
    {
        let what = format!("{} failing at item {bad}", job("run()", 24, b));
        let r = engine.map(FailAt, 0..24u64).args(bad).batched(b).run();
        expect_item_failure(&scope, &what, r, bad as usize, FailureKind::Error, "fails on purpose")?;
    }
    Ok(())
}

/// An item whose task panics fails the job with [`Error::Item`] naming that item's index,
/// [`FailureKind::Panic`] and the panic's message.
pub fn item_panic<B: Backend>(engine: &Engine<B>) -> Result<(), Failure> {
    let scope = Scope::new("item_panic", describe(engine));
    for (bad, b) in [(9u64, Batching::None), (0, Batching::Batches(3)), (23, Batching::Auto)] {
        let what = format!("{} panicking at item {bad}", job("run()", 24, b));
        let r = engine.map(PanicAt, 0..24u64).args(bad).batched(b).run();
        expect_item_failure(&scope, &what, r, bad as usize, FailureKind::Panic, "panics on purpose")?;
    }
    Ok(())
}

/// `collect_results` runs every item and returns each one's own result in input order:
/// `Ok(output)`, or an [`ItemError`] with the item's index, kind (`Error` or `Panic`) and
/// message.
pub fn collect_results<B: Backend>(engine: &Engine<B>) -> Result<(), Failure> {
    let scope = Scope::new("collect_results", describe(engine));
    let n = 30u64;
    for b in [Batching::None, Batching::Batches(4), Batching::Auto] {
        let what = job("collect_results()", n as usize, b);
        let got = scope.ok(&what, engine.map(Mixed, 0..n).batched(b).collect_results())?;
        if got.len() != n as usize {
            return Err(scope.fail(&what, Problem::Count { expected: n as usize, got: got.len() }));
        }
        for (i, r) in got.iter().enumerate() {
            let fate = mixed_fate(i as u64);
            let fine = match (fate, r) {
                (MixedFate::Ok(v), Ok(o)) => *o == v,
                (MixedFate::Err, Err(e)) => {
                    e.index == i && e.kind == FailureKind::Error && e.message.contains("fails on purpose")
                }
                (MixedFate::Panic, Err(e)) => {
                    e.index == i && e.kind == FailureKind::Panic && e.message.contains("panics on purpose")
                }
                _ => false,
            };
            if !fine {
                let expected = match fate {
                    MixedFate::Ok(v) => format!("Ok({v})"),
                    MixedFate::Err => format!("Err(ItemError {{ index: {i}, kind: Error, .. }})"),
                    MixedFate::Panic => format!("Err(ItemError {{ index: {i}, kind: Panic, .. }})"),
                };
                return Err(scope.fail(&what, Problem::Output { index: i, expected, got: format!("{r:?}") }));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Progress callbacks.

/// Checks one job's progress calls: at least one, counts and elapsed never going down, the
/// last one with the final counts and the length.
fn verify_progress(
    scope: &Scope,
    what: &str,
    seen: &[crate::ProgressUpdate],
    done: usize,
    failed: usize,
    total: Option<usize>,
) -> Result<(), Failure> {
    let Some(last) = seen.last() else {
        return Err(scope.contract(what, "the progress callback was never called"));
    };
    for w in seen.windows(2) {
        if w[1].done < w[0].done || w[1].failed < w[0].failed || w[1].elapsed < w[0].elapsed {
            return Err(scope.contract(what, format!("progress went back: {:?} then {:?}", w[0], w[1])));
        }
    }
    if (last.done, last.failed, last.total) != (done, failed, total) {
        return Err(scope.contract(
            what,
            format!(
                "the last progress call said done {}, failed {}, total {:?}; the job had done {done}, failed \
                 {failed}, total {total:?}",
                last.done, last.failed, last.total
            ),
        ));
    }
    Ok(())
}

/// `.on_progress` is called with counts that only grow, the last call with the final counts
/// and the length when it is known (`None` for a generator without one); failures are
/// counted; the job's stats have the time to its first result.
pub fn progress_callbacks<B: Backend>(engine: &Engine<B>) -> Result<(), Failure> {
    let scope = Scope::new("progress_callbacks", describe(engine));
    let n = 40usize;
    for b in [Batching::None, Batching::Batches(8), Batching::Auto] {
        let what = job("run() with on_progress", n, b);
        let mut seen = Vec::new();
        let got = scope.ok(
            &what,
            engine.map(Uneven, 0..n as u64).batched(b).on_progress(Duration::ZERO, |p| seen.push(p)).run(),
        )?;
        scope.same(&what, &uneven_expected(&(0..n as u64).collect::<Vec<_>>()), &got)?;
        verify_progress(&scope, &what, &seen, n, 0, Some(n))?;
        let stats = engine.last_stats().ok_or_else(|| scope.contract(&what, "no stats after the job"))?;
        match stats.first_result {
            Some(t) if t <= stats.wall => {}
            other => {
                return Err(scope.contract(
                    &what,
                    format!("time to the first result {other:?}, expected some at most the job's {:?}", stats.wall),
                ))
            }
        }
    }
    let what = "collect_results() of Mixed over a generator without length, ChunkSize(4), with on_progress".to_string();
    let mut seen = Vec::new();
    let mut x = 0u64;
    let items = std::iter::from_fn(move || {
        x += 1;
        (x <= 30).then_some(x - 1)
    });
    let got = scope.ok(
        &what,
        engine
            .map(Mixed, items)
            .batched(Batching::ChunkSize(4))
            .on_progress(Duration::ZERO, |p| seen.push(p))
            .collect_results(),
    )?;
    let failed = got.iter().filter(|r| r.is_err()).count();
    let want_failed = (0..30u64).filter(|&i| !matches!(mixed_fate(i), MixedFate::Ok(_))).count();
    if failed != want_failed {
        return Err(scope.fail(&what, Problem::Count { expected: want_failed, got: failed }));
    }
    verify_progress(&scope, &what, &seen, 30 - failed, failed, None)
}

// ---------------------------------------------------------------------------------------
// Retries of failing items.

/// `.retry_errors(n)`: items that fail their first attempt (an `Err` or a panic) succeed on
/// the retry, every result right and in order, from `run` and `collect_results`; without
/// retries they fail as before; an item that always fails still fails, naming its index and
/// "(after 3 attempts)" with `retry_errors(2)`; a failure the task's `retry_if` declines fails
/// at its first attempt while the others are retried.
pub fn retry_errors<B: Backend>(engine: &Engine<B>) -> Result<(), Failure> {
    let scope = Scope::new("retry_errors", describe(engine));
    let n = 24u64;
    let want: Vec<u64> = (1..=n).collect();
    for (panics, b) in [(false, Batching::Batches(4)), (true, Batching::Auto), (false, Batching::None)] {
        let what = format!(
            "run() of FailsFirst ({}) with retry_errors(1), {}",
            if panics { "panics" } else { "Err" },
            crate::conformance::batched_arg(b)
        );
        let got = scope.ok(&what, engine.map(FailsFirst, 0..n).args(panics).batched(b).retry_errors(1).run())?;
        scope.same(&what, &want, &got)?;
    }
    let what = "collect_results() of FailsFirst with retry_errors(1)".to_string();
    let got = scope.ok(&what, engine.map(FailsFirst, 0..n).args(false).batched(3).retry_errors(1).collect_results())?;
    if let Some((i, r)) = got.iter().enumerate().find(|(i, r)| r.as_ref().ok() != Some(&(*i as u64 + 1))) {
        return Err(
            scope.fail(&what, Problem::Output { index: i, expected: format!("Ok({})", i + 1), got: format!("{r:?}") })
        );
    }
    let what = "run() of FailsFirst without retries".to_string();
    match engine.map(FailsFirst, 0..n).args(false).run() {
        Err(Error::Item(e)) if e.kind == FailureKind::Error && e.message.contains("first attempt") => {}
        other => {
            return Err(scope.fail(
                &what,
                Problem::WrongError {
                    expected: "Error::Item of kind Error, \"fails on its first attempt\"".into(),
                    got: format!("{:?}", other.map(|v| short(&v))),
                },
            ))
        }
    }
    let what = "run() of FailAt(7) with retry_errors(2)".to_string();
    let r = engine.map(FailAt, 0..n).args(7).batched(4).retry_errors(2).run();
    expect_item_failure(&scope, &what, r, 7, FailureKind::Error, "(after 3 attempts)")?;
    // The task's retry_if: a failure it declines is not retried, the others are.
    let what = "run() of PickyRetry (item 9 fails fatally, retry_if declines it) with retry_errors(3)".to_string();
    let r = engine.map(PickyRetry, 0..n).args(9).batched(4).retry_errors(3).run();
    expect_item_failure(&scope, &what, r, 9, FailureKind::Error, "a fatal failure at attempt 1")?;
    let what = "collect_results() of PickyRetry (item 9 fatal) with retry_errors(3)".to_string();
    let got = scope.ok(&what, engine.map(PickyRetry, 0..n).args(9).batched(4).retry_errors(3).collect_results())?;
    for (i, r) in got.iter().enumerate() {
        let right = match (i, r) {
            (9, Err(e)) => e.message == "conformance kit: a fatal failure at attempt 1",
            (_, Ok(v)) => *v == i as u64 + 1,
            _ => false,
        };
        if !right {
            let expected = if i == 9 {
                "Err(\"... a fatal failure at attempt 1\"), once".into()
            } else {
                format!("Ok({})", i + 1)
            };
            return Err(scope.fail(&what, Problem::Output { index: i, expected, got: format!("{r:?}") }));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The cap on items in flight.

/// `.max_in_flight(n)` holds: a stream (ordered or not) over an endless generator never has
/// pulled more than `n` items beyond what its caller took, whatever the batching; `run()`
/// under a cap is right and in order.
pub fn max_in_flight<B: Backend>(engine: &Engine<B>) -> Result<(), Failure> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let scope = Scope::new("max_in_flight", describe(engine));
    let (cap, take) = (16usize, 200usize);
    for b in [Batching::None, Batching::ChunkSize(10), Batching::Auto] {
        for ordered in [true, false] {
            let what = format!(
                "{} over an endless generator, {}, max_in_flight({cap}), taking {take}",
                if ordered { "stream()" } else { "stream_unordered()" },
                crate::conformance::batched_arg(b)
            );
            let pulled = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&pulled);
            let endless = std::iter::from_fn(move || Some(counter.fetch_add(1, Ordering::SeqCst) as u64));
            let job = engine.map(Pair, endless).batched(b).max_in_flight(cap);
            let mut got: Vec<(usize, [u64; 2])> = Vec::with_capacity(take);
            let mut worst = 0usize;
            if ordered {
                let stream = scope.ok(&what, job.stream())?;
                for r in stream.take(take) {
                    let y = scope.ok(&what, r)?;
                    got.push((got.len(), y));
                    worst = worst.max(pulled.load(Ordering::SeqCst).saturating_sub(got.len()));
                }
            } else {
                let stream = scope.ok(&what, job.stream_unordered())?;
                for r in stream.take(take) {
                    got.push(scope.ok(&what, r)?);
                    worst = worst.max(pulled.load(Ordering::SeqCst).saturating_sub(got.len()));
                }
                got.sort_by_key(|(i, _)| *i);
            }
            if worst > cap {
                return Err(scope.contract(
                    &what,
                    format!("{worst} items were pulled beyond what the caller took, over the cap of {cap}"),
                ));
            }
            if ordered {
                let want: Vec<(usize, [u64; 2])> = (0..take).map(|i| (i, [i as u64, 10 * i as u64 + 1])).collect();
                scope.same(&what, &want, &got)?;
            } else {
                // Unordered: every index taken once, each with its own output.
                for w in got.windows(2) {
                    if w[0].0 == w[1].0 {
                        return Err(scope.contract(&what, format!("index {} came back twice", w[0].0)));
                    }
                }
                if let Some((i, y)) = got.iter().find(|(i, y)| *y != [*i as u64, 10 * *i as u64 + 1]) {
                    return Err(scope.fail(
                        &what,
                        Problem::Output {
                            index: *i,
                            expected: format!("[{i}, {}]", 10 * i + 1),
                            got: format!("{y:?}"),
                        },
                    ));
                }
            }
        }
    }
    let items: Vec<u64> = (0..60).collect();
    let what = job("run() with max_in_flight(5)", items.len(), Batching::Auto);
    let got = scope.ok(&what, engine.map(Uneven, items.clone()).max_in_flight(5).run())?;
    scope.same(&what, &uneven_expected(&items), &got)
}

// ---------------------------------------------------------------------------------------
// Lengths.

/// Runs `f`, failing if it takes longer than `limit`.
fn timed<T>(scope: &Scope, what: &str, limit: Duration, f: impl FnOnce() -> T) -> Result<T, Failure> {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    if took > limit {
        return Err(scope.fail(what, Problem::TooSlow { took, limit }));
    }
    Ok(out)
}

/// Checks a lying `.length(7)`'s error: `LengthMismatch { declared: 7, .. }`, with `actual`
/// `"5"` for the short iterator.
fn expect_length_error(scope: &Scope, what: &str, err: Option<Error>, short: bool) -> Result<(), Failure> {
    let expected = if short {
        "Error::LengthMismatch { declared: 7, actual: \"5\" }".to_string()
    } else {
        "Error::LengthMismatch { declared: 7, actual: more than 7 }".to_string()
    };
    let Some(err) = err else {
        return Err(scope.fail(what, Problem::NoError { expected }));
    };
    let fine = match &err {
        Error::LengthMismatch { declared: 7, actual } => {
            if short {
                actual.trim() == "5"
            } else {
                actual.trim() != "7" && actual.contains('7')
            }
        }
        _ => false,
    };
    if !fine {
        return Err(scope.fail(what, Problem::WrongError { expected, got: format!("{err:?}: {err}") }));
    }
    Ok(())
}

/// A `.length(n)` that lies, too long (the iterator yields 5 of 7) or too short (it yields 9
/// of 7), is [`Error::LengthMismatch`] from `run`, `stream` and `collect_results`, promptly
/// (within [`PROMPT_JOB`]): no hang, no silent truncation.
pub fn length_mismatch<B: Backend>(engine: &Engine<B>) -> Result<(), Failure> {
    let scope = Scope::new("length_mismatch", describe(engine));
    // `filter` hides the exact size: the length comes from `.length(7)` alone.
    let yields = |n: u64| (0..n).filter(|_| true);
    for (n, short) in [(5u64, true), (9, false)] {
        for b in [Batching::None, Batching::PerWorker, Batching::Batches(3), Batching::Auto] {
            let what = format!("run() of an iterator of {n} items declared .length(7), batched({b:?})");
            let r = timed(&scope, &what, PROMPT_JOB, || engine.map(Uneven, yields(n)).length(7).batched(b).run())?;
            expect_length_error(&scope, &what, r.err(), short)?;
        }
        let what = format!("stream() of an iterator of {n} items declared .length(7)");
        let err = timed(&scope, &what, PROMPT_JOB, || match engine.map(Uneven, yields(n)).length(7).stream() {
            Err(e) => Some(e),
            Ok(s) => s.filter_map(Result::err).next(),
        })?;
        expect_length_error(&scope, &what, err, short)?;
        let what = format!("collect_results() of an iterator of {n} items declared .length(7)");
        let r = timed(&scope, &what, PROMPT_JOB, || engine.map(Uneven, yields(n)).length(7).collect_results())?;
        expect_length_error(&scope, &what, r.err(), short)?;
    }
    Ok(())
}

/// Zero items return an empty result, from every terminal, with or without a length.
pub fn zero_items<B: Backend>(engine: &Engine<B>) -> Result<(), Failure> {
    let scope = Scope::new("zero_items", describe(engine));
    let empty: Vec<u64> = Vec::new();
    let none = |what: &str, n: usize| -> Result<(), Failure> {
        if n == 0 {
            Ok(())
        } else {
            Err(scope.fail(what, Problem::Count { expected: 0, got: n }))
        }
    };
    let what = "run() of an empty Vec";
    none(what, scope.ok(what, engine.map(Uneven, empty.clone()).run())?.len())?;
    let what = "run() of an empty iterator without a length, batched(Auto)";
    none(what, scope.ok(what, engine.map(Uneven, std::iter::empty()).batched(Batching::Auto).run())?.len())?;
    let what = "run() of an empty iterator with .length(0), batched(true)";
    let r = engine.map(Uneven, (0..0u64).filter(|_| true)).length(0).batched(true).run();
    none(what, scope.ok(what, r)?.len())?;
    let what = "run() of an empty Vec, with init";
    none(what, scope.ok(what, engine.map(InitToken, empty.clone()).init(1).run())?.len())?;
    let what = "gather() of an empty Vec";
    none(what, scope.ok(what, engine.map(Pair, empty.clone()).gather())?.len())?;
    let what = "gather_with() of an empty Vec";
    none(what, scope.ok(what, engine.map(Uneven, empty.clone()).gather_with(0usize, |n, _| n + 1))?)?;
    let what = "collect_results() of an empty Vec";
    none(what, scope.ok(what, engine.map(Uneven, empty.clone()).collect_results())?.len())?;
    let what = "stream() of an empty Vec";
    let s = scope.ok(what, engine.map(Uneven, empty.clone()).stream())?;
    none(what, scope.ok(what, s.collect::<crate::Result<Vec<_>>>())?.len())?;
    let what = "stream_unordered() of an empty Vec";
    let s = scope.ok(what, engine.map(Uneven, empty.clone()).stream_unordered())?;
    none(what, scope.ok(what, s.collect::<crate::Result<Vec<_>>>())?.len())?;
    let what = "map_slice(&[]).run()";
    none(what, scope.ok(what, engine.map_slice(Uneven, &empty).run())?.len())
}

// ---------------------------------------------------------------------------------------
// Init, args, shared values, large payloads.

/// Checks one run of [`InitToken`]: outputs `x + offset` in order, at most `max` distinct
/// per-worker tokens, and each token's counters exactly `1..=k`.
pub(crate) fn verify_tokens(
    scope: &Scope,
    what: &str,
    items: &[u64],
    offset: u64,
    max: usize,
    got: &[(String, u64, u64)],
) -> Result<(), Failure> {
    let values: Vec<u64> = got.iter().map(|o| o.2).collect();
    let want: Vec<u64> = items.iter().map(|x| x + offset).collect();
    scope.same(what, &want, &values)?;
    let mut counts: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (token, count, _) in got {
        counts.entry(token.as_str()).or_default().push(*count);
    }
    if counts.len() > max {
        return Err(scope.contract(
            what,
            format!(
                "init ran {} times (distinct worker states) for at most {max} worker(s): {:?}",
                counts.len(),
                counts.keys().collect::<Vec<_>>()
            ),
        ));
    }
    for (token, mut seen) in counts {
        seen.sort_unstable();
        let k = seen.len() as u64;
        if !seen.iter().copied().eq(1..=k) {
            return Err(scope.contract(
                what,
                format!(
                    "the state of worker `{token}` ran {k} item(s) but counted {}: init did not run once per \
                     worker, or its state was not kept between items",
                    short(&seen)
                ),
            ));
        }
    }
    Ok(())
}

/// `init` runs once per worker and its state is lent to every item of that worker: with
/// `make(1)` and `make(2)`, every state's token (made in `init`) is one of at most
/// `max_workers`, each state counts its items 1, 2, ..., k without a gap or a restart, and
/// the init argument reaches the state. The engine must not report more workers than asked.
pub fn init_once_per_worker<B: Backend>(make: impl Fn(usize) -> crate::Result<Engine<B>>) -> Result<(), Failure> {
    for n in [1usize, 2] {
        let engine = make(n).map_err(|e| {
            Scope::new("init_once_per_worker", format!("max_workers {n}"))
                .fail(&format!("building the engine with max_workers({n})"), Problem::Build(e))
        })?;
        init_once_per_worker_on(&engine, n)?;
    }
    Ok(())
}

/// [`init_once_per_worker`] on one engine built with `max_workers(asked)`.
pub fn init_once_per_worker_on<B: Backend>(engine: &Engine<B>, asked: usize) -> Result<(), Failure> {
    let scope = Scope::new("init_once_per_worker", describe(engine));
    if engine.workers() > asked {
        return Err(scope.contract(
            &format!("building with max_workers({asked})"),
            format!("the engine reports {} workers for max_workers({asked})", engine.workers()),
        ));
    }
    let items: Vec<u64> = (0..60).collect();
    for (b, offset) in [(Batching::None, 100u64), (Batching::Batches(4), 7), (Batching::Auto, 1000)] {
        let what = format!("{} with .init({offset})", job("run()", items.len(), b));
        let got = scope.ok(&what, engine.map(InitToken, items.clone()).init(offset).batched(b).run())?;
        verify_tokens(&scope, &what, &items, offset, asked.min(engine.workers()), &got)?;
    }
    Ok(())
}

/// Args and [`Shared`] values reach every call, and a changed shared value is seen by the
/// next job (no stale copy): outputs depend on a plain arg, a string and a shared table.
pub fn args_and_shared<B: Backend>(engine: &Engine<B>) -> Result<(), Failure> {
    let scope = Scope::new("args_and_shared", describe(engine));
    let items: Vec<u64> = (0..50).map(|i| i * 37).collect();
    let first = Shared::new((0..1000u64).map(|j| j * j + 7).collect::<Vec<_>>());
    let second = Shared::new((0..1000u64).map(|j| 5 * j + 1).collect::<Vec<_>>());
    let runs = [(&first, 3u64, "first"), (&second, 11, "second"), (&first, 2, "first again")];
    for (table, factor, label) in runs {
        let what =
            format!("run() of {} items with args (factor {factor}, label {label:?}, a shared table)", items.len());
        let want: Vec<(u64, String)> =
            items.iter().map(|&x| (table[(x % 1000) as usize] * factor + x, format!("{label}#{x}"))).collect();
        let args = KitArgs { factor, label: label.to_string(), table: table.clone() };
        let got = scope.ok(&what, engine.map(WithArgs, items.clone()).args(args).batched(Batching::Auto).run())?;
        scope.same(&what, &want, &got)?;
    }
    Ok(())
}

/// Elements of one large item: 2 MiB of numbers.
const BIG_LEN: usize = 1 << 18;

/// The data of large item `seed`.
fn big_data(seed: u64) -> Vec<u64> {
    (0..BIG_LEN as u64).map(|j| (seed * 1_000_003 + j).wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect()
}

/// Large items (2 MiB each) and outputs (3 MiB each) come back whole and right, every element
/// checked.
pub fn large_payloads<B: Backend>(engine: &Engine<B>) -> Result<(), Failure> {
    let scope = Scope::new("large_payloads", describe(engine));
    let n = 4u64;
    for b in [Batching::None, Batching::Auto] {
        let what = format!("{}, 2 MiB in and 3 MiB out per item", job("run()", n as usize, b));
        let got = scope.ok(&what, engine.map(Big, (0..n).map(|s| (s, big_data(s)))).batched(b).run())?;
        if got.len() != n as usize {
            return Err(scope.fail(&what, Problem::Count { expected: n as usize, got: got.len() }));
        }
        for (i, out) in got.iter().enumerate() {
            let data = big_data(i as u64);
            let want_len = BIG_LEN + BIG_LEN / 2;
            if out.len() != want_len {
                return Err(scope.fail(
                    &what,
                    Problem::Output {
                        index: i,
                        expected: format!("{want_len} numbers"),
                        got: format!("{} numbers", out.len()),
                    },
                ));
            }
            if let Some(j) = (0..want_len).find(|&j| out[j] != data[j % BIG_LEN] ^ i as u64) {
                return Err(scope.fail(
                    &what,
                    Problem::Output {
                        index: i,
                        expected: format!("out[{j}] = {}", data[j % BIG_LEN] ^ i as u64),
                        got: format!("out[{j}] = {}", out[j]),
                    },
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Streams.

/// `stream()` yields every output in input order, despite uneven item times.
pub fn ordered_stream<B: Backend>(engine: &Engine<B>) -> Result<(), Failure> {
    let scope = Scope::new("ordered_stream", describe(engine));
    let items: Vec<u64> = (0..40).collect();
    let want = uneven_expected(&items);
    for b in [Batching::None, Batching::Batches(5), Batching::Auto] {
        let what = job("stream()", items.len(), b);
        let stream = scope.ok(&what, engine.map(Uneven, items.clone()).batched(b).stream())?;
        let got = scope.ok(&what, stream.collect::<crate::Result<Vec<_>>>())?;
        scope.same(&what, &want, &got)?;
    }
    Ok(())
}

/// Dropping a stream (ordered or not) after a few values returns promptly (within
/// [`PROMPT_DROP`]) and cancels the rest of a long job: the engine then runs the next job
/// correctly, within [`PROMPT_JOB`] (a backend still running the dropped job's 50 s of items
/// is late).
pub fn stream_cancel_on_drop<B: Backend>(engine: &Engine<B>) -> Result<(), Failure> {
    let scope = Scope::new("stream_cancel_on_drop", describe(engine));
    // 10 000 items of 10 ms: 50 s of work on 2 workers, which a backend that does not cancel
    // would still be doing when the next job comes, so that job would be late.
    let n = 10_000u64;
    let what = format!("{}, dropped after 3 values", job("stream()", n as usize, Batching::None));
    let mut stream = scope.ok(&what, engine.map(Slow, 0..n).batched(false).stream())?;
    let mut first = Vec::new();
    for _ in 0..3 {
        match stream.next() {
            Some(r) => first.push(scope.ok(&what, r)?),
            None => break,
        }
    }
    scope.same(&what, &[0, 1, 2], &first)?;
    timed(&scope, &format!("dropping the {what}"), PROMPT_DROP, || drop(stream))?;

    let what = format!("{}, dropped after 3 values", job("stream_unordered()", n as usize, Batching::None));
    let mut stream = scope.ok(&what, engine.map(Slow, 0..n).batched(false).stream_unordered())?;
    for _ in 0..3 {
        match stream.next() {
            Some(r) => {
                let (i, v) = scope.ok(&what, r)?;
                if v != i as u64 {
                    return Err(scope.fail(
                        &what,
                        Problem::Output { index: i, expected: format!("({i}, {i})"), got: format!("({i}, {v})") },
                    ));
                }
            }
            None => return Err(scope.fail(&what, Problem::Count { expected: n as usize, got: 0 })),
        }
    }
    timed(&scope, &format!("dropping the {what}"), PROMPT_DROP, || drop(stream))?;

    let items: Vec<u64> = (0..24).collect();
    let what = format!("{} after the dropped streams", job("run()", items.len(), Batching::Auto));
    let got = timed(&scope, &what, PROMPT_JOB, || engine.map(Uneven, items.clone()).run())?;
    let got = scope.ok(&what, got)?;
    scope.same(&what, &uneven_expected(&items), &got)
}

/// `stream_unordered()` yields every `(index, output)` exactly once, with the right output.
pub fn unordered_stream<B: Backend>(engine: &Engine<B>) -> Result<(), Failure> {
    let scope = Scope::new("unordered_stream", describe(engine));
    let n = 40usize;
    for b in [Batching::None, Batching::Batches(5), Batching::Auto] {
        let what = job("stream_unordered()", n, b);
        let stream = scope.ok(&what, engine.map(Uneven, 0..n as u64).batched(b).stream_unordered())?;
        let got = scope.ok(&what, stream.collect::<crate::Result<Vec<_>>>())?;
        verify_unordered(&scope, &what, n, &got)?;
    }
    Ok(())
}

/// Every index of `0..n` exactly once, with output `3i + 1`.
pub(crate) fn verify_unordered(scope: &Scope, what: &str, n: usize, got: &[(usize, u64)]) -> Result<(), Failure> {
    let mut seen = vec![false; n];
    for &(i, v) in got {
        if i >= n {
            return Err(scope.contract(what, format!("index {i} came back for {n} items")));
        }
        if std::mem::replace(&mut seen[i], true) {
            return Err(scope.contract(what, format!("index {i} came back twice")));
        }
        let want = 3 * i as u64 + 1;
        if v != want {
            return Err(scope.fail(what, Problem::Output { index: i, expected: want.to_string(), got: v.to_string() }));
        }
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(scope.contract(what, format!("index {i} never came back ({} of {n} did)", got.len())));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Slices, and life after a failure.

/// `map_slice` gives the same outputs as `map`, in order, from `run`, `gather`,
/// `gather_with` and `stream`, in every batching mode.
pub fn map_slice<B: Backend>(engine: &Engine<B>) -> Result<(), Failure> {
    let scope = Scope::new("map_slice", describe(engine));
    let items: Vec<u64> = (0..50).map(|i| (i * 7) % 13 + i).collect();
    let want = uneven_expected(&items);
    let flat: Vec<u64> = items.iter().flat_map(|&x| [x, 10 * x + 1]).collect();
    for b in [Batching::None, Batching::PerWorker, Batching::Batches(6), Batching::ChunkSize(7), Batching::Auto] {
        let what = job("map_slice().run()", items.len(), b);
        let got = scope.ok(&what, engine.map_slice(Uneven, &items).batched(b).run())?;
        scope.same(&what, &want, &got)?;
        let what = job("map_slice().gather()", items.len(), b);
        let got = scope.ok(&what, engine.map_slice(Pair, &items).batched(b).gather())?;
        scope.same(&what, &flat, &got)?;
    }
    let what = job("map_slice().gather_with() recording the order", items.len(), Batching::Auto);
    let got = scope.ok(
        &what,
        engine.map_slice(Uneven, &items).gather_with(Vec::new(), |mut acc, y| {
            acc.push(y);
            acc
        }),
    )?;
    scope.same(&what, &want, &got)?;
    let what = job("map_slice().stream()", items.len(), Batching::Batches(6));
    let stream = scope.ok(&what, engine.map_slice(Uneven, &items).batched(6).stream())?;
    let got = scope.ok(&what, stream.collect::<crate::Result<Vec<_>>>())?;
    scope.same(&what, &want, &got)
}

/// A job that must fail; `true` when it did.
type FailingJob<'e> = Box<dyn Fn() -> bool + 'e>;

/// The engine is usable after a failed job: after an item's error, a panic, a lying length
/// and a `collect_results` with failures, the next job on the same engine is right.
pub fn usable_after_failure<B: Backend>(engine: &Engine<B>) -> Result<(), Failure> {
    let scope = Scope::new("usable_after_failure", describe(engine));
    let items: Vec<u64> = (0..24).collect();
    let want = uneven_expected(&items);
    let failing: [(&str, FailingJob<'_>); 4] = [
        ("run() failing at item 5", Box::new(|| engine.map(FailAt, 0..24u64).args(5).batched(false).run().is_err())),
        ("run() panicking at item 17", Box::new(|| engine.map(PanicAt, 0..24u64).args(17).batched(3).run().is_err())),
        (
            "run() of 5 items declared .length(9)",
            Box::new(|| engine.map(Uneven, (0..5u64).filter(|_| true)).length(9).run().is_err()),
        ),
        (
            "collect_results() with failed items",
            Box::new(|| engine.map(Mixed, 0..24u64).collect_results().is_ok_and(|r| r.iter().any(|x| x.is_err()))),
        ),
    ];
    for (failed, run) in failing {
        if !run() {
            return Err(scope.fail(failed, Problem::NoError { expected: "the job's failure".into() }));
        }
        for b in [Batching::None, Batching::Auto] {
            let what = format!("{} after a {failed}", job("run()", items.len(), b));
            let got = scope.ok(&what, engine.map(Uneven, items.clone()).batched(b).run())?;
            scope.same(&what, &want, &got)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope::new("test", "no engine")
    }

    /// A wrong output, a missing one and an extra one all fail, naming the item.
    #[test]
    fn outputs_must_match() {
        let s = scope();
        s.same("j", &[1, 2, 3], &[1, 2, 3]).unwrap();
        let f = s.same("j", &[1, 2, 3], &[1, 5, 3]).unwrap_err();
        assert!(matches!(f.problem, Problem::Output { index: 1, .. }), "{f}");
        assert_eq!(f.to_string(), "check `test` (no engine), job `j`: item 1: expected 2, got 5");
        assert!(matches!(
            s.same("j", &[1, 2, 3], &[1, 2]).unwrap_err().problem,
            Problem::Count { expected: 3, got: 2 }
        ));
        assert!(matches!(s.same("j", &[1], &[1, 2]).unwrap_err().problem, Problem::Count { expected: 1, got: 2 }));
    }

    /// Two inits on one worker (a restarted counter), too many workers, or a wrong init
    /// argument all fail.
    #[test]
    fn tokens_must_show_one_init_per_worker() {
        let s = scope();
        let items = [0u64, 1, 2, 3];
        let t = |tok: &str, c: u64, v: u64| (tok.to_string(), c, v);
        let good = [t("a", 1, 10), t("b", 1, 11), t("a", 2, 12), t("b", 2, 13)];
        verify_tokens(&s, "j", &items, 10, 2, &good).unwrap();
        let f = verify_tokens(&s, "j", &items, 10, 1, &good).unwrap_err();
        assert!(f.to_string().contains("init ran 2 times"), "{f}");
        let restarted = [t("a", 1, 10), t("a", 2, 11), t("a", 1, 12), t("a", 3, 13)];
        let f = verify_tokens(&s, "j", &items, 10, 2, &restarted).unwrap_err();
        assert!(f.to_string().contains("counted [1, 1, 2, 3]"), "{f}");
        let wrong_init = [t("a", 1, 10), t("a", 2, 11), t("a", 3, 12), t("a", 4, 14)];
        let f = verify_tokens(&s, "j", &items, 10, 2, &wrong_init).unwrap_err();
        assert!(matches!(f.problem, Problem::Output { index: 3, .. }), "{f}");
    }

    /// Duplicated, missing, out-of-range and wrong values of an unordered stream fail.
    #[test]
    fn unordered_needs_every_index_once() {
        let s = scope();
        verify_unordered(&s, "j", 3, &[(2, 7), (0, 1), (1, 4)]).unwrap();
        assert!(verify_unordered(&s, "j", 3, &[(2, 7), (2, 7), (1, 4)]).unwrap_err().to_string().contains("twice"));
        assert!(verify_unordered(&s, "j", 3, &[(2, 7), (1, 4)]).unwrap_err().to_string().contains("index 0 never"));
        assert!(verify_unordered(&s, "j", 3, &[(3, 10)]).unwrap_err().to_string().contains("index 3 came back"));
        let f = verify_unordered(&s, "j", 3, &[(2, 7), (0, 1), (1, 5)]).unwrap_err();
        assert!(matches!(f.problem, Problem::Output { index: 1, .. }), "{f}");
    }

    /// A success where an error is due, another item, another kind or a lost message fail.
    #[test]
    fn item_failures_must_name_the_item() {
        let s = scope();
        let item = |index, kind| Error::Item(ItemError { index, kind, message: "x fails on purpose".into() });
        expect_item_failure::<()>(&s, "j", Err(item(3, FailureKind::Error)), 3, FailureKind::Error, "on purpose")
            .unwrap();
        let f = expect_item_failure(&s, "j", Ok(vec![1u64]), 3, FailureKind::Error, "on purpose").unwrap_err();
        assert!(matches!(f.problem, Problem::NoError { .. }), "{f}");
        let f =
            expect_item_failure::<()>(&s, "j", Err(item(4, FailureKind::Error)), 3, FailureKind::Error, "on purpose")
                .unwrap_err();
        assert!(f.to_string().contains("names item 4"), "{f}");
        let f =
            expect_item_failure::<()>(&s, "j", Err(item(3, FailureKind::Panic)), 3, FailureKind::Error, "on purpose")
                .unwrap_err();
        assert!(f.to_string().contains("kind is Panic"), "{f}");
        let f = expect_item_failure::<()>(&s, "j", Err(item(3, FailureKind::Error)), 3, FailureKind::Error, "nope")
            .unwrap_err();
        assert!(f.to_string().contains("message is lost"), "{f}");
        let f =
            expect_item_failure::<()>(&s, "j", Err(Error::Config("c".into())), 3, FailureKind::Error, "x").unwrap_err();
        assert!(f.to_string().contains("another variant"), "{f}");
    }

    /// A lying length must be that error, with the right counts.
    #[test]
    fn length_errors_must_be_exact() {
        let s = scope();
        let lm = |declared, actual: &str| Some(Error::LengthMismatch { declared, actual: actual.into() });
        expect_length_error(&s, "j", lm(7, "5"), true).unwrap();
        expect_length_error(&s, "j", lm(7, "more than 7"), false).unwrap();
        assert!(expect_length_error(&s, "j", None, true).is_err());
        assert!(expect_length_error(&s, "j", lm(7, "4"), true).is_err());
        assert!(expect_length_error(&s, "j", lm(8, "5"), true).is_err());
        assert!(expect_length_error(&s, "j", lm(7, "7"), false).is_err());
        assert!(expect_length_error(&s, "j", Some(Error::Config("x".into())), false).is_err());
    }
}
