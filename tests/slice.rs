//! `map_slice`: split by index on threads, walked like any iterator elsewhere; same results,
//! same errors, nothing leaked when a chunk fails.

mod common;

use adparallelengine::{register_task, task, try_task, Batching, BoxError, Error, Shared, Task};
use common::{engines, in_process_engines, threads};
use std::sync::atomic::{AtomicUsize, Ordering};

task!(Double = |x: u64| -> u64 { 2 * x });
task!(Pair = |x: u64| -> [u64; 2] { [x, x + 1] });

#[test]
fn slice_jobs_give_the_iterator_results_in_order() {
    let input: Vec<u64> = (0..100_003).collect();
    let want: Vec<u64> = input.iter().map(|x| 2 * x).collect();
    for (name, e) in engines() {
        for b in [Batching::Auto, Batching::None, Batching::PerWorker, Batching::Batches(7), Batching::ChunkSize(1000)]
        {
            assert_eq!(e.map_slice(Double, &input[..]).batched(b).run().unwrap(), want, "{name} {b:?}");
        }
        let flat = e.map_slice(Pair, &input[..4]).gather().unwrap();
        assert_eq!(flat, vec![0, 1, 1, 2, 2, 3, 3, 4], "{name}");
        let sum = e.map_slice(Double, &input[..10]).gather_with(0, |a, y| a + y).unwrap();
        assert_eq!(sum, 90, "{name}");
        // Streams and per-item results take the ordinary path.
        let streamed: Vec<u64> = e.map_slice(Double, &input[..50]).stream().unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(streamed, want[..50], "{name}");
        assert_eq!(e.map_slice(Double, &input[..0]).run().unwrap(), Vec::<u64>::new());
    }
}

try_task!(
    /// Returns a `Shared` (an `Arc`) so leaks show in the strong count; fails at 777 (error) and 1500 (panic).
    Tracked = |x: u64, token: &Shared<()>| -> Shared<()> {
        match x {
            777 => Err("seven seven seven".into()),
            1500 => panic!("fifteen hundred"),
            _ => Ok(token.clone()),
        }
    }
);

#[test]
fn a_failing_chunk_names_its_item_and_leaks_no_output() {
    let token = Shared::new(());
    for (name, e) in in_process_engines() {
        for chunk in [1, 10, 64, 5000] {
            let input: Vec<u64> = (0..3000).collect();
            let err = e
                .map_slice(Tracked, &input[..])
                .args(token.clone())
                .batched(Batching::ChunkSize(chunk))
                .run()
                .unwrap_err();
            let idx = err.item_index().unwrap();
            assert!(idx == 777 || idx == 1500, "{name} chunk {chunk}: {err}");
            let input: Vec<u64> = (1000..3000).collect();
            let err = e
                .map_slice(Tracked, &input[..])
                .args(token.clone())
                .batched(Batching::ChunkSize(chunk))
                .run()
                .unwrap_err();
            assert_eq!(err.to_string(), "item 500 panicked: fifteen hundred", "{name} chunk {chunk}");
            assert_eq!(token.handle_count(), 1, "{name} chunk {chunk}: outputs of a failed job leaked");
        }
        let ok: Vec<u64> = (0..700).collect();
        let out = e.map_slice(Tracked, &ok[..]).args(token.clone()).run().unwrap();
        assert_eq!(out.len(), 700);
        assert_eq!(token.handle_count(), 701);
        drop(out);
        assert_eq!(token.handle_count(), 1);
    }
}

static INITS: AtomicUsize = AtomicUsize::new(0);

struct Counted;
impl Task for Counted {
    type Item = u64;
    type Output = u64;
    type Args = ();
    type Init = ();
    type State = ();
    fn init(_: &(), _: &()) -> Result<(), BoxError> {
        INITS.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn run(x: u64, _: &(), _: &mut ()) -> Result<u64, BoxError> {
        // 10,000 items of 20 µs: long enough for every worker of the job to get chunks.
        std::thread::sleep(std::time::Duration::from_micros(20));
        Ok(x)
    }
}
register_task!(Counted);

/// A worker starts (`init`) when it claims its first chunk: every worker of a long job, at
/// most one per chunk of a short one.
#[test]
fn slice_jobs_init_each_worker_once() {
    let e = threads(3);
    INITS.store(0, Ordering::SeqCst);
    let input: Vec<u64> = (0..10_000).collect();
    assert_eq!(e.map_slice(Counted, &input[..]).batched(Batching::None).run().unwrap(), input);
    assert_eq!(INITS.load(Ordering::SeqCst), 3);
    // Fewer chunks than workers: at most as many workers start.
    INITS.store(0, Ordering::SeqCst);
    e.map_slice(Counted, &input[..2]).run().unwrap();
    assert!((1..=2).contains(&INITS.load(Ordering::SeqCst)));
}

#[test]
fn a_declared_length_that_lies_still_fails() {
    let e = threads(2);
    let input: Vec<u64> = (0..10).collect();
    let err = e.map_slice(Double, &input[..]).length(11).run().unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { declared: 11, .. }), "{err}");
}
