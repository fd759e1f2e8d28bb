//! Failures: item errors and panics name their index, fail fast or per item, the engine stays
//! usable, streams are bounded and cancel on drop.

mod common;

use adparallelengine::{register_task, task, try_task, Batching, BoxError, Error, FailureKind, Task};
use common::{engines, threads};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

try_task!(
    Picky = |x: u64| -> u64 {
        match x {
            13 => Err(format!("unlucky {x}").into()),
            17 => panic!("boom at {x}"),
            _ => Ok(x),
        }
    }
);

task!(Double = |x: u64| -> u64 { 2 * x });

#[test]
fn an_err_names_the_item_index_and_message() {
    for (name, e) in engines() {
        for batching in [Batching::None, Batching::PerWorker, Batching::Auto] {
            let err = e.map(Picky, 0..15u64).batched(batching).run().unwrap_err();
            assert_eq!(err.item_index(), Some(13), "{name} {batching:?}: {err}");
            let Error::Item(item) = &err else { panic!("{err}") };
            assert_eq!(item.kind, FailureKind::Error);
            assert_eq!(err.to_string(), "item 13 returned an error: unlucky 13");
        }
    }
}

#[test]
fn a_panic_names_the_item_index_and_message() {
    for (name, e) in engines() {
        let err = e.map(Picky, 14..40u64).batched(4).run().unwrap_err();
        // Item 17 is at index 3 of this input.
        assert_eq!(err.to_string(), "item 3 panicked: boom at 17", "{name}");
        // The engine stays usable after a failed job.
        assert_eq!(e.map(Double, 0..4u64).run().unwrap(), vec![0, 2, 4, 6], "{name}");
    }
}

#[test]
fn collect_results_returns_every_items_own_result() {
    for (name, e) in engines() {
        let all = e.map(Picky, 10..20u64).batched(3).collect_results().unwrap();
        assert_eq!(all.len(), 10, "{name}");
        for (i, r) in all.iter().enumerate() {
            let x = 10 + i as u64;
            match x {
                13 => assert_eq!(r.as_ref().unwrap_err().to_string(), "item 3 returned an error: unlucky 13"),
                17 => assert_eq!(r.as_ref().unwrap_err().to_string(), "item 7 panicked: boom at 17"),
                _ => assert_eq!(r.as_ref().unwrap(), &x, "{name}"),
            }
        }
    }
}

#[test]
fn stream_ends_after_the_first_failure() {
    for (name, e) in engines() {
        let got: Vec<_> = e.map(Picky, 0..30u64).batched(false).stream().unwrap().collect();
        let last = got.last().unwrap();
        assert!(last.is_err(), "{name}");
        assert!(got[..got.len() - 1].iter().all(|r| r.is_ok()), "{name}");
        let oks: Vec<u64> = got.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
        assert_eq!(oks, (0..oks.len() as u64).collect::<Vec<_>>(), "{name}: in order until the failure");
        assert!(oks.len() <= 13, "{name}");
    }
}

struct BadInit;
impl Task for BadInit {
    type Item = u64;
    type Output = u64;
    type Args = ();
    type Init = bool;
    type State = ();
    fn init(panic: &bool, _: &()) -> Result<(), BoxError> {
        if *panic {
            panic!("init exploded");
        }
        Err("no database".into())
    }
    fn run(x: u64, _: &(), _: &mut ()) -> Result<u64, BoxError> {
        Ok(x)
    }
}
register_task!(BadInit);

#[test]
fn init_failures_are_reported() {
    for (name, e) in engines() {
        let err = e.map(BadInit, 0..5u64).init(false).run().unwrap_err();
        assert!(matches!(err, Error::Init { .. }), "{name}: {err}");
        assert!(err.to_string().contains("no database"), "{name}: {err}");
        let err = e.map(BadInit, 0..5u64).init(true).run().unwrap_err();
        assert!(err.to_string().contains("init exploded"), "{name}: {err}");
    }
}

static RAN: AtomicUsize = AtomicUsize::new(0);

task!(
    /// Item 0 is slow; the others count themselves.
    SlowHead = |x: u64| -> u64 {
        if x == 0 {
            std::thread::sleep(Duration::from_millis(300));
        } else {
            RAN.fetch_add(1, Ordering::SeqCst);
        }
        x
    }
);

#[test]
fn ordered_stream_buffering_is_bounded_by_the_reorder_window() {
    let e = threads(2);
    RAN.store(0, Ordering::SeqCst);
    let mut s = e.map(SlowHead, 0..1000u64).batched(false).reorder_window(4).stream().unwrap();
    assert_eq!(s.next().unwrap().unwrap(), 0);
    let ran = RAN.load(Ordering::SeqCst);
    // Batches 0..4 may be cut while batch 0 runs: items 1, 2, 3 at most.
    assert!(ran <= 3, "{ran} items ran ahead of a slow head with a window of 4 batches");
    assert!(s.held_batches() <= 4);
    assert_eq!(s.map(|r| r.unwrap()).collect::<Vec<_>>(), (1..1000).collect::<Vec<_>>());

    // `run` keeps everything anyway, so it is not bounded: the other worker runs ahead.
    RAN.store(0, Ordering::SeqCst);
    e.map(SlowHead, 0..1000u64).batched(false).run().unwrap();
    assert_eq!(RAN.load(Ordering::SeqCst), 999);
}

static STARTED: AtomicUsize = AtomicUsize::new(0);

task!(
    Slow = |x: u64| -> u64 {
        STARTED.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(5));
        x
    }
);

#[test]
fn dropping_a_stream_cancels_the_rest() {
    let e = threads(2);
    STARTED.store(0, Ordering::SeqCst);
    let mut s = e.map(Slow, 0..10_000u64).batched(false).stream().unwrap();
    for _ in 0..5 {
        s.next().unwrap().unwrap();
    }
    drop(s);
    std::thread::sleep(Duration::from_millis(100));
    let started = STARTED.load(Ordering::SeqCst);
    assert!(started < 100, "{started} items started after the stream was dropped");
    // Stats of the dropped job are published, and the engine runs the next job.
    assert!(e.last_stats().unwrap().items_done >= 5);
    assert_eq!(e.map(Double, 0..3u64).run().unwrap(), vec![0, 2, 4]);
}
