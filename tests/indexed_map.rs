//! `map` over a `Vec`, a range or a slice iterator (`.copied()`, `.cloned()`) on threads is
//! split by index (one batch in the stats, no driver walking the items); every promise of the
//! ordinary path holds there: results in order, gather, the failed item's index, panics,
//! per-worker init, the job's worker cap, nothing leaked. Other iterators and backends take
//! the ordinary path, with the same results.

mod common;

use adparallelengine::{register_task, task, try_task, Batching, BoxError, Engine, Error, Shared, Task};
use common::{engines, threads};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

task!(Double = |x: u64| -> u64 { 2 * x });
task!(Pair = |x: u64| -> [u64; 2] { [x, x + 1] });
task!(Neg = |x: i32| -> i64 { -i64::from(x) });
task!(Len = |s: String| -> usize { s.len() });

/// Batches the last job handed back.
fn batches(e: &Engine) -> usize {
    e.last_stats().expect("stats").batches.len()
}

/// Runs `job` and tells whether the threads backend split it by index (it logs so at debug
/// level, on the driver's thread), with the job's result.
fn split<R>(job: impl FnOnce() -> R) -> (bool, R) {
    let (n, r) = splits(job);
    (n > 0, r)
}

/// Runs `job` (any number of jobs) and counts those the threads backend split by index.
fn splits<R>(job: impl FnOnce() -> R) -> (usize, R) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let b2 = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || b2.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let r = tracing::subscriber::with_default(sub, job);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (text.matches("threads indexed job started").count(), r)
}

const MODES: [Batching; 5] =
    [Batching::Auto, Batching::None, Batching::PerWorker, Batching::Batches(7), Batching::ChunkSize(1000)];

#[test]
fn vec_range_copied_cloned_give_results_in_order_split_by_index() {
    let input: Vec<u64> = (0..20_011).collect();
    let want: Vec<u64> = input.iter().map(|x| 2 * x).collect();
    for workers in [1, 2, 4] {
        let e = threads(workers);
        for b in MODES {
            let what = format!("{workers} workers, {b:?}");
            let check = |name: &str, job: &dyn Fn() -> Vec<u64>| {
                let (by_index, out) = split(job);
                assert_eq!(out, want, "{name}, {what}");
                // One worker is the serial engine, which cuts batches as always.
                assert_eq!(by_index, workers > 1, "{name} split by index, {what}");
            };
            check("vec", &|| e.map(Double, input.clone()).batched(b).run().unwrap());
            check("range", &|| e.map(Double, 0..20_011u64).batched(b).run().unwrap());
            check("range inclusive", &|| e.map(Double, 0..=20_010u64).batched(b).run().unwrap());
            check("copied", &|| e.map(Double, input.iter().copied()).batched(b).run().unwrap());
            check("cloned", &|| e.map(Double, input.iter().cloned()).batched(b).run().unwrap());
            check("slice", &|| e.map_slice(Double, &input).batched(b).run().unwrap());
            check("gather", &|| {
                e.map(Pair, input.clone()).batched(b).gather().unwrap().into_iter().step_by(2).map(|x| 2 * x).collect()
            });
        }
        // A range that does not start at 0, of another integer type.
        let neg: Vec<i64> = (-500..500).map(|x: i64| -x).collect();
        assert_eq!(e.map(Neg, -500..500i32).run().unwrap(), neg);
        // A sub-slice, advanced before the job: it starts where the iterator is.
        let mut it = input[10..].iter().copied();
        it.next();
        assert_eq!(e.map(Double, it).run().unwrap(), want[11..]);
        // gather and a custom gather take the same path.
        let flat = e.map(Pair, vec![0u64, 1, 2, 3]).gather().unwrap();
        assert_eq!(flat, vec![0, 1, 1, 2, 2, 3, 3, 4]);
        assert_eq!(e.map(Double, 0..10u64).gather_with(0, |a, y| a + y).unwrap(), 90);
        assert_eq!(e.map(Double, Vec::<u64>::new()).run().unwrap(), Vec::<u64>::new());
        assert_eq!(e.map(Double, 5..5u64).run().unwrap(), Vec::<u64>::new());
    }
}

#[test]
fn other_iterators_and_terminals_take_the_ordinary_path_with_the_same_results() {
    let input: Vec<u64> = (0..10_000).collect();
    let want: Vec<u64> = input.iter().map(|x| 2 * x).collect();
    let e = threads(2);
    let mut i = 0u64;
    let gen = std::iter::from_fn(move || (i < 10_000).then(|| (i, i += 1).0));
    let (by_index, out) = split(|| e.map(Double, gen).batched(Batching::ChunkSize(1000)).run().unwrap());
    assert_eq!((by_index, out), (false, want.clone()), "a generator is cut into batches");
    assert_eq!(batches(&e), 10);
    let (by_index, out) = split(|| e.map(Double, input.iter().copied().filter(|_| true)).run().unwrap());
    assert_eq!((by_index, out), (false, want.clone()), "an adapted iterator is cut into batches");
    let strings: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    let (by_index, out) = split(|| e.map(Len, strings.iter().cloned()).run().unwrap());
    assert!(!by_index, "items not known to be Sync are walked by the driver");
    assert_eq!(out, strings.iter().map(|s| s.len()).collect::<Vec<_>>());
    let (by_index, streamed) =
        split(|| e.map(Double, input.clone()).stream().unwrap().map(|r| r.unwrap()).collect::<Vec<_>>());
    assert_eq!((by_index, streamed), (false, want.clone()), "streams take the ordinary path");
    let (by_index, results) = split(|| e.map(Double, 0..100u64).collect_results().unwrap());
    assert!(!by_index);
    assert_eq!(results.into_iter().map(|r| r.unwrap()).collect::<Vec<_>>(), want[..100]);
    let (by_index, out) = split(|| e.map(Double, input.clone()).item_stats(true).run().unwrap());
    assert_eq!((by_index, out), (false, want.clone()), "per-item stats take the ordinary path");
    assert_eq!(e.last_stats().unwrap().times().unwrap().len(), 10_000, "per-item stats still measured");
    // Every backend gives the same results for the same iterators.
    for (name, e) in engines() {
        assert_eq!(e.map(Double, input.clone()).run().unwrap(), want, "{name}");
        assert_eq!(e.map(Double, 0..10_000u64).run().unwrap(), want, "{name}");
        assert_eq!(e.map(Double, input.iter().copied()).run().unwrap(), want, "{name}");
        assert_eq!(e.map(Double, input.iter().cloned()).run().unwrap(), want, "{name}");
        let (by_index, b) = split(|| e.map(Double, input.clone()).batched(Batching::ChunkSize(1000)).run().unwrap());
        assert_eq!(b, want, "{name}");
        assert_eq!(by_index, name.starts_with("threads"), "{name}");
        // Chunks are batches in the stats, as cut batches are.
        assert_eq!(batches(&e), 10, "{name}");
    }
}

#[test]
fn a_declared_length_that_lies_still_fails() {
    let e = threads(2);
    let err = e.map(Double, vec![1u64; 10]).length(11).run().unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { declared: 11, .. }), "{err}");
    let err = e.map(Double, 0..10u64).length(9).run().unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { declared: 9, .. }), "{err}");
}

try_task!(
    /// Fails at 777 (an error) and 1500 (a panic).
    Picky = |x: u64| -> u64 {
        match x {
            777 => Err("seven seven seven".into()),
            1500 => panic!("fifteen hundred"),
            _ => Ok(x),
        }
    }
);

#[test]
fn a_failed_or_panicking_item_is_named_by_its_index() {
    for workers in [2, 4] {
        let e = threads(workers);
        for chunk in [1, 10, 64, 5000] {
            let b = Batching::ChunkSize(chunk);
            let what = format!("{workers} workers, chunk {chunk}");
            let input: Vec<u64> = (0..3000).collect();
            let (n, errs) = splits(|| {
                [
                    e.map(Picky, input.clone()).batched(b).run().unwrap_err(),
                    e.map(Picky, 0..3000u64).batched(b).run().unwrap_err(),
                    e.map(Picky, input.iter().copied()).batched(b).run().unwrap_err(),
                    e.map(Picky, input.iter().cloned()).batched(b).run().unwrap_err(),
                ]
            });
            assert_eq!(n, 4, "{what}: every job split by index");
            for err in errs {
                let idx = err.item_index().unwrap();
                assert!(idx == 777 || idx == 1500, "{what}: {err}");
                if idx == 777 {
                    assert_eq!(err.to_string(), "item 777 returned an error: seven seven seven", "{what}");
                }
            }
            // Only the panic left: its index is the item's place in the input, not its value.
            let input: Vec<u64> = (1000..3000).collect();
            let (n, errs) = splits(|| {
                [
                    e.map(Picky, input.clone()).batched(b).run().unwrap_err(),
                    e.map(Picky, 1000..3000u64).batched(b).run().unwrap_err(),
                    e.map(Picky, input.iter().copied()).batched(b).run().unwrap_err(),
                    e.map(Picky, input.iter().cloned()).batched(b).gather_with(0, |a, y| a + y).unwrap_err(),
                ]
            });
            assert_eq!(n, 4, "{what}: every job split by index");
            for err in errs {
                assert_eq!(err.to_string(), "item 500 panicked: fifteen hundred", "{what}");
            }
        }
    }
}

try_task!(
    /// Items carry a `Shared` (an `Arc`) so that a leaked or doubly dropped item shows in the
    /// count; fails at 777 (error) and 1500 (panic).
    Holder = |x: (u64, Shared<()>)| -> u64 {
        match x.0 {
            777 => Err("seven seven seven".into()),
            1500 => panic!("fifteen hundred"),
            _ => Ok(x.0),
        }
    }
);

#[test]
fn items_moved_out_of_a_vec_are_dropped_once_whatever_happens() {
    let token = Shared::new(());
    for workers in [2, 4] {
        let e = threads(workers);
        for chunk in [1, 10, 64, 700, 5000] {
            let items = |range: std::ops::Range<u64>| range.map(|i| (i, token.clone())).collect::<Vec<_>>();
            let b = Batching::ChunkSize(chunk);
            let (by_index, err) = split(|| e.map(Holder, items(0..3000)).batched(b).run().unwrap_err());
            assert!(by_index);
            assert!(matches!(err.item_index(), Some(777 | 1500)), "{err}");
            assert_eq!(token.handle_count(), 1, "chunk {chunk}: items leaked after an error");
            let err = e.map(Holder, items(1000..3000)).batched(b).run().unwrap_err();
            assert_eq!(err.to_string(), "item 500 panicked: fifteen hundred");
            assert_eq!(token.handle_count(), 1, "chunk {chunk}: items leaked after a panic");
            let out = e.map(Holder, items(0..700)).batched(b).run().unwrap();
            assert_eq!(out, (0..700).collect::<Vec<_>>());
            assert_eq!(token.handle_count(), 1, "chunk {chunk}: items leaked after success");
        }
    }
}

try_task!(
    /// Gives its item back with the number doubled: an output of the item's layout, which
    /// goes where the item was; fails at 777 (error) and 1500 (panic).
    GiveBack = |x: (u64, Shared<()>)| -> (u64, Shared<()>) {
        match x.0 {
            777 => Err("seven seven seven".into()),
            1500 => panic!("fifteen hundred"),
            _ => Ok((2 * x.0, x.1)),
        }
    }
);

/// A `Vec`'s outputs of its items' layout are written into its own buffer (no second one),
/// each where its item was, and every item and output is dropped once: after a success, an
/// error or a panic, whatever the chunks.
#[test]
fn outputs_of_the_items_layout_go_into_the_vecs_own_buffer_and_drop_once() {
    let token = Shared::new(());
    for workers in [2, 4] {
        let e = threads(workers);
        for chunk in [1, 10, 64, 700, 5000] {
            let items = |range: std::ops::Range<u64>| range.map(|i| (i, token.clone())).collect::<Vec<_>>();
            let b = Batching::ChunkSize(chunk);
            let v = items(0..700);
            let at = v.as_ptr() as usize;
            let (by_index, out) = split(|| e.map(GiveBack, v).batched(b).run().unwrap());
            assert!(by_index);
            assert_eq!(out.as_ptr() as usize, at, "chunk {chunk}: the outputs are in the input's buffer");
            assert!(out.iter().enumerate().all(|(i, (y, _))| *y == 2 * i as u64), "chunk {chunk}");
            assert_eq!(token.handle_count(), 701, "chunk {chunk}: one handle per output");
            drop(out);
            assert_eq!(token.handle_count(), 1, "chunk {chunk}: outputs leaked");
            let err = e.map(GiveBack, items(0..3000)).batched(b).run().unwrap_err();
            assert!(matches!(err.item_index(), Some(777 | 1500)), "{err}");
            assert_eq!(token.handle_count(), 1, "chunk {chunk}: items or outputs leaked after an error");
            let err = e.map(GiveBack, items(1000..3000)).batched(b).run().unwrap_err();
            assert_eq!(err.to_string(), "item 500 panicked: fifteen hundred");
            assert_eq!(token.handle_count(), 1, "chunk {chunk}: items or outputs leaked after a panic");
        }
    }
    // Plain numbers too; an output of another layout gets a buffer of its own.
    let e = threads(2);
    let v: Vec<u64> = (0..100_000).collect();
    let at = v.as_ptr() as usize;
    let out = e.map(Double, v).run().unwrap();
    assert_eq!(out.as_ptr() as usize, at);
    assert!(out.iter().enumerate().all(|(i, y)| *y == 2 * i as u64));
    let out = e.map(Pair, (0..1000u64).collect::<Vec<_>>()).run().unwrap();
    assert_eq!(out[999], [999, 1000]);
}

static INITS: AtomicUsize = AtomicUsize::new(0);
static THREADS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Counts its inits, and remembers which threads ran them.
struct Counted;
impl Task for Counted {
    type Item = u64;
    type Output = u64;
    type Args = ();
    type Init = ();
    type State = ();
    fn init(_: &(), _: &()) -> Result<(), BoxError> {
        INITS.fetch_add(1, Ordering::SeqCst);
        let name = std::thread::current().name().unwrap_or("").to_string();
        THREADS.lock().unwrap().push(name);
        Ok(())
    }
    fn run(x: u64, _: &(), _: &mut ()) -> Result<u64, BoxError> {
        // 10,000 items of 20 µs: long enough for every worker of the job to get chunks.
        std::thread::sleep(std::time::Duration::from_micros(20));
        Ok(x)
    }
}
register_task!(Counted);

/// A worker starts (`init`) on its own thread when it claims its first chunk: every worker of
/// a long job, never more than the cap; a worker that finds every chunk claimed (a short job,
/// the pool's threads not woken in time) never starts.
#[test]
fn each_worker_inits_once_on_its_own_thread_and_the_worker_cap_holds() {
    let e = threads(3);
    let input: Vec<u64> = (0..10_000).collect();
    let jobs: [&dyn Fn(Option<usize>) -> Vec<u64>; 4] = [
        &|w| e.map(Counted, input.clone()).batched(Batching::None).workers(w.unwrap_or(9)).run().unwrap(),
        &|w| e.map(Counted, 0..10_000u64).batched(Batching::None).workers(w.unwrap_or(9)).run().unwrap(),
        &|w| e.map(Counted, input.iter().copied()).batched(Batching::None).workers(w.unwrap_or(9)).run().unwrap(),
        &|w| e.map(Counted, input.iter().cloned()).batched(Batching::None).workers(w.unwrap_or(9)).run().unwrap(),
    ];
    for (k, job) in jobs.iter().enumerate() {
        for (cap, want) in [(None, 3), (Some(2), 2), (Some(1), 1)] {
            INITS.store(0, Ordering::SeqCst);
            THREADS.lock().unwrap().clear();
            let (by_index, out) = split(|| job(cap));
            assert!(by_index, "job {k}");
            assert_eq!(out, input, "job {k}");
            assert_eq!(INITS.load(Ordering::SeqCst), want, "job {k}, cap {cap:?}");
            let names = THREADS.lock().unwrap().clone();
            assert!(names.iter().all(|n| n.starts_with("adparallelengine-worker-")), "job {k}: {names:?}");
            let mut distinct = names.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), names.len(), "job {k}: one init per worker thread: {names:?}");
        }
    }
    // Fewer chunks than workers: at most as many workers start.
    INITS.store(0, Ordering::SeqCst);
    e.map(Counted, vec![1u64, 2]).run().unwrap();
    assert!((1..=2).contains(&INITS.load(Ordering::SeqCst)));
}

/// Fails in `init` on every worker; its items hold a `Shared` to count them.
struct BadInit;
impl Task for BadInit {
    type Item = (u64, Shared<()>);
    type Output = u64;
    type Args = ();
    type Init = ();
    type State = ();
    fn init(_: &(), _: &()) -> Result<(), BoxError> {
        Err("no state today".into())
    }
    fn run(x: (u64, Shared<()>), _: &(), _: &mut ()) -> Result<u64, BoxError> {
        Ok(x.0)
    }
}
register_task!(BadInit);

#[test]
fn a_failed_init_fails_the_job_and_drops_the_items() {
    let e = threads(2);
    let token = Shared::new(());
    let err = e.map(BadInit, vec![(1u64, token.clone()); 1000]).run().unwrap_err();
    assert!(matches!(err, Error::Init { .. }), "{err}");
    assert!(err.to_string().contains("no state today"), "{err}");
    assert_eq!(token.handle_count(), 1, "the items of a job that never ran are dropped");
}
