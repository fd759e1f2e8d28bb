//! The user API on the in-process backends: order, batching, gather, args, share, init, stats.

mod common;

use adparallelengine::{register_task, task, Batching, BoxError, Engine, Error, Kind, Progress, Shared, Task};
use common::{engines, in_process_engines, threads};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

task!(Double = |x: u64| -> u64 { 2 * x });
task!(Pair = |x: u64| -> [u64; 2] { [x, 10 * x] });
task!(AddArg = |x: u64, add: &u64| -> u64 { x + *add });

task!(
    /// Sleeps longer for earlier items, so they finish last.
    Uneven = |x: u64| -> u64 {
    std::thread::sleep(Duration::from_millis(30u64.saturating_sub(x)));
    x
});

#[test]
fn results_come_back_in_input_order_despite_uneven_times() {
    for (name, e) in engines() {
        for batching in [Batching::None, Batching::PerWorker, Batching::Batches(7), Batching::Auto] {
            let out = e.map(Uneven, 0..30u64).batched(batching).run().unwrap();
            assert_eq!(out, (0..30).collect::<Vec<_>>(), "{name} {batching:?}");
        }
    }
}

#[test]
fn every_batching_mode_gives_the_same_numbers() {
    let want: Vec<u64> = (0..1000).map(|x| 2 * x).collect();
    for (name, e) in engines() {
        for batching in [
            Batching::None,
            Batching::PerWorker,
            Batching::Batches(16),
            Batching::Batches(5000),
            Batching::ChunkSize(33),
            Batching::Auto,
        ] {
            assert_eq!(e.map(Double, 0..1000u64).batched(batching).run().unwrap(), want, "{name} {batching:?}");
        }
    }
}

#[test]
fn batch_counts_follow_the_mode() {
    let e =
        Engine::builder(Kind::Threads).max_workers(2).batch_multiplier(3).progress(Progress::quiet()).build().unwrap();
    let count = |b: Batching| {
        e.map(Double, 0..100u64).batched(b).run().unwrap();
        e.last_stats().unwrap().batches.len()
    };
    assert_eq!(count(Batching::None), 100);
    assert_eq!(count(Batching::PerWorker), 6, "2 workers × multiplier 3");
    assert_eq!(count(Batching::Batches(16)), 16);
    assert_eq!(count(Batching::ChunkSize(30)), 4);
    let auto = count(Batching::Auto);
    assert!(auto < 100, "auto batching grew batches ({auto} batches)");
    // Fewer items than batches: one item per batch.
    e.map(Double, 0..6u64).batched(16).run().unwrap();
    assert_eq!(e.last_stats().unwrap().batches.len(), 6);
}

#[test]
fn gather_flattens_and_custom_gather_folds_in_order() {
    for (name, e) in engines() {
        let flat = e.map(Pair, 0..4u64).batched(true).gather().unwrap();
        assert_eq!(flat, vec![0, 0, 1, 10, 2, 20, 3, 30], "{name}");
        let nested = e.map(Pair, 0..2u64).run().unwrap();
        assert_eq!(nested, vec![[0, 0], [1, 10]], "{name}");
        // A custom gather that depends on order: concatenated digits.
        let s = e.map(Double, 0..5u64).gather_with(String::new(), |mut acc, y| {
            acc.push_str(&y.to_string());
            acc
        });
        assert_eq!(s.unwrap(), "02468", "{name}");
    }
}

#[test]
fn args_reach_every_call() {
    for (name, e) in engines() {
        assert_eq!(e.map(AddArg, 0..5u64).args(100).run().unwrap(), vec![100, 101, 102, 103, 104], "{name}");
    }
}

#[test]
fn missing_args_is_a_clear_error() {
    let e = threads(2);
    let err = e.map(AddArg, 0..5u64).run().unwrap_err();
    assert!(err.to_string().contains("pass them with `.args(...)`"), "{err}");
}

/// Args holding a large shared vector; the task reports where the data it sees lives.
#[derive(Serialize, Deserialize)]
struct BigArgs {
    table: Shared<Vec<u64>>,
}

task!(SharedAddr = |i: usize, args: &BigArgs| -> (usize, u64) { (args.table.as_ptr() as usize, args.table[i]) });

#[test]
fn shared_values_are_borrowed_never_copied_in_process() {
    let table = Shared::new((0..1_000_000u64).collect::<Vec<_>>());
    let addr = table.as_ptr() as usize;
    for (name, e) in in_process_engines() {
        let out = e.map(SharedAddr, [0usize, 10, 999_999]).args(BigArgs { table: table.clone() }).run().unwrap();
        for (seen, _) in &out {
            assert_eq!(*seen, addr, "{name}: the task saw a copy of the shared table");
        }
        assert_eq!(out.iter().map(|o| o.1).collect::<Vec<_>>(), vec![0, 10, 999_999]);
    }
}

static INITS: AtomicUsize = AtomicUsize::new(0);

/// The Python original's `init_method` setting `Dummy.some_attr`: per-worker state.
struct WithInit;
impl Task for WithInit {
    type Item = u64;
    type Output = (u64, String);
    type Args = ();
    type Init = u64;
    type State = (u64, String);
    fn init(attr: &u64, _: &()) -> Result<(u64, String), BoxError> {
        INITS.fetch_add(1, Ordering::SeqCst);
        Ok((*attr, std::thread::current().name().unwrap_or("main").to_string()))
    }
    fn run(x: u64, _: &(), state: &mut (u64, String)) -> Result<(u64, String), BoxError> {
        // State belongs to the worker: it is on the thread that built it.
        assert_eq!(std::thread::current().name().unwrap_or("main"), state.1);
        Ok((x + state.0, state.1.clone()))
    }
}
register_task!(WithInit);

#[test]
fn init_runs_once_per_worker_and_gives_state() {
    let e = threads(3);
    INITS.store(0, Ordering::SeqCst);
    let out = e.map(WithInit, 0..300u64).init(1).batched(Batching::None).run().unwrap();
    assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), (1..301).collect::<Vec<_>>());
    // One init per worker that got items: a worker that finds every chunk of a short job
    // claimed never starts.
    assert!((1..=3).contains(&INITS.load(Ordering::SeqCst)), "one init per worker at most");
    let threads_used: HashSet<_> = out.iter().map(|o| o.1.clone()).collect();
    assert!(threads_used.len() <= 3, "max_workers is respected: {threads_used:?}");
    // Missing init argument.
    let err = e.map(WithInit, 0..3u64).run().unwrap_err();
    assert!(err.to_string().contains(".init(...)"), "{err}");
}

task!(ThreadName = |_x: u64| -> String { std::thread::current().name().unwrap_or("?").to_string() });

#[test]
fn threads_never_exceed_max_workers() {
    for workers in [1, 2, 3] {
        let e = threads(workers);
        let names: HashSet<String> = e.map(ThreadName, 0..2000u64).batched(false).run().unwrap().into_iter().collect();
        assert!(names.len() <= workers, "{workers} workers but {} threads: {names:?}", names.len());
    }
}

#[test]
fn max_workers_one_runs_in_the_calling_thread() {
    let e = threads(1);
    assert_eq!(e.backend().kind(), Kind::Serial);
    let here = std::thread::current().name().unwrap_or("?").to_string();
    let names = e.map(ThreadName, 0..3u64).run().unwrap();
    assert!(names.iter().all(|n| *n == here), "{names:?} vs {here}");
}

#[test]
fn generators_with_a_length_are_consumed_lazily_once() {
    // The Python original's Fibonacci generator, as a Rust iterator without an exact size.
    fn fib(limit: u64) -> impl Iterator<Item = u64> {
        let mut ab = (0u64, 1u64);
        std::iter::from_fn(move || {
            let (a, b) = ab;
            (a < limit).then(|| {
                ab = (b, a + b);
                a
            })
        })
    }
    for (name, e) in engines() {
        let out = e.map(Double, fib(25)).length(9).batched(4).run().unwrap();
        assert_eq!(out, vec![0, 2, 2, 4, 6, 10, 16, 26, 42], "{name}");
        // Without a length, modes that need it say so; the others work.
        let err = e.map(Double, fib(25)).batched(4).run().unwrap_err();
        assert!(matches!(err, Error::NeedsLength { .. }), "{name}: {err}");
        assert_eq!(e.map(Double, fib(25)).batched(Batching::Auto).run().unwrap().len(), 9);
    }
}

#[test]
fn batches_are_cut_lazily() {
    // Count how far the driver pulled the iterator while items run.
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = Arc::clone(&pulled);
    let e = threads(2);
    let items = (0..200u64).inspect(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
    });
    let mut stream = e.map(Uneven, items).batched(Batching::ChunkSize(5)).reorder_window(4).stream().unwrap();
    let first = stream.next().unwrap().unwrap();
    assert_eq!(first, 0);
    let ahead = pulled.load(Ordering::SeqCst);
    assert!(ahead <= 5 * 6, "pulled {ahead} items for the first result: not lazy");
    assert_eq!(stream.count(), 199);
}

#[test]
fn length_mismatch_is_an_error_not_a_truncation() {
    for (name, e) in engines() {
        let err = e.map(Double, (0..5u64).filter(|_| true)).length(7).run().unwrap_err();
        assert!(matches!(err, Error::LengthMismatch { declared: 7, .. }), "{name}: {err}");
        assert!(err.to_string().contains("yielded 5"), "{name}: {err}");
        let err = e.map(Double, (0..9u64).filter(|_| true)).length(7).batched(true).run().unwrap_err();
        assert!(err.to_string().contains("more than 7"), "{name}: {err}");
    }
}

#[test]
fn zero_items_start_no_worker() {
    INITS.store(0, Ordering::SeqCst);
    for (name, e) in in_process_engines() {
        let out = e.map(WithInit, Vec::<u64>::new()).init(1).run().unwrap();
        assert!(out.is_empty(), "{name}");
        let out = e.map(WithInit, std::iter::empty()).init(1).batched(Batching::Auto).stream().unwrap();
        assert_eq!(out.count(), 0);
    }
    assert_eq!(INITS.load(Ordering::SeqCst), 0, "no worker started for an empty job");
}

#[test]
fn unknown_and_unbuilt_kinds_are_clear_errors() {
    let err = "gpu".parse::<Kind>().unwrap_err();
    assert!(matches!(err, Error::UnknownKind(_)), "{err}");
    assert!(err.to_string().contains("expected one of serial, threads"), "{err}");
    for kind in [Kind::Process, Kind::Mpi, Kind::K8s, Kind::Dask, Kind::Slurm] {
        if kind.is_available() {
            continue;
        }
        let err = Engine::builder(kind).build().unwrap_err();
        assert!(matches!(err, Error::KindUnavailable { .. }), "{err}");
        assert!(err.to_string().contains(kind.as_str()), "{err}");
    }
    for (s, k) in [
        ("serial", Kind::Serial),
        ("multithread", Kind::Threads),
        ("threads", Kind::Threads),
        ("multiproc", Kind::Process),
        ("process", Kind::Process),
        ("mpi", Kind::Mpi),
        ("k8s", Kind::K8s),
        ("dask", Kind::Dask),
        ("slurm", Kind::Slurm),
    ] {
        assert_eq!(s.parse::<Kind>().unwrap(), k);
    }
    let err = Engine::builder(Kind::Threads).max_workers(0).build().unwrap_err();
    assert!(err.to_string().contains("max_workers"), "{err}");
}

struct Unregistered;
impl Task for Unregistered {
    type Item = u8;
    type Output = u8;
    type Args = ();
    type Init = ();
    type State = ();
    fn init(_: &(), _: &()) -> Result<(), BoxError> {
        Ok(())
    }
    fn run(x: u8, _: &(), _: &mut ()) -> Result<u8, BoxError> {
        Ok(x)
    }
}

#[test]
fn unregistered_tasks_fail_on_every_backend() {
    for (name, e) in engines() {
        let err = e.map(Unregistered, [1u8]).run().unwrap_err();
        assert!(matches!(err, Error::TaskNotRegistered(_)), "{name}: {err}");
        assert!(err.to_string().contains("register_task!"), "{err}");
    }
}

#[test]
fn stats_are_per_item_when_asked() {
    for (name, e) in engines() {
        e.map(Uneven, 0..10u64).batched(3).item_stats(true).run().unwrap();
        let st = e.last_stats().unwrap();
        let times = st.times().unwrap();
        assert_eq!(times.len(), 10, "{name}");
        // Item 0 sleeps 30 ms, item 9 sleeps 21 ms.
        assert!(times[0] >= Duration::from_millis(29), "{name}: {times:?}");
        assert!(times.iter().all(|t| *t >= Duration::from_millis(20)), "{name}: {times:?}");
        assert_eq!(st.items_done, 10);
        assert_eq!(st.batches.iter().map(|b| b.len).sum::<usize>(), 10);
        // Without the counting allocator there is no memory figure.
        assert!(st.peak_mem_allocations().is_none());
        e.map(Double, 0..10u64).run().unwrap();
        assert!(e.last_stats().unwrap().times().is_none(), "per-item stats are opt-in");
    }
}

#[test]
fn progress_logs_every_n_percent() {
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
    let sub = tracing_subscriber::fmt().with_writer(move || b2.clone()).with_ansi(false).finish();
    let e = Engine::builder(Kind::Threads)
        .max_workers(2)
        .progress(Progress { log_every_percent: Some(25), bar: adparallelengine::ProgressBar::Never })
        .build()
        .unwrap();
    tracing::subscriber::with_default(sub, || {
        e.map(Double, 0..100u64).batched(Batching::None).run().unwrap();
    });
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("items done")).collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].contains("25/100 items done (25%)"), "{text}");
    assert!(lines[3].contains("100/100 items done (100%)"), "{text}");
}

#[test]
fn unordered_stream_yields_every_index_once() {
    for (name, e) in engines() {
        let mut got: Vec<(usize, u64)> =
            e.map(Uneven, 0..20u64).batched(false).stream_unordered().unwrap().map(|r| r.unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..20).map(|i| (i, i as u64)).collect::<Vec<_>>(), "{name}");
    }
}

#[test]
fn a_job_can_use_fewer_workers_than_its_engine() {
    for (name, e) in engines() {
        let out = e.map(Double, 0..40u64).workers(1).batched(false).run().unwrap();
        assert_eq!(out, (0..40).map(|x| 2 * x).collect::<Vec<_>>(), "{name}");
        let stats = e.last_stats().unwrap();
        assert_eq!(stats.workers, 1, "{name}");
        assert!(stats.batches.iter().all(|b| b.worker == 0), "{name}");
    }
}
