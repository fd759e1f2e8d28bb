//! How far ahead of its caller a stream pulls from an endless generator: the items pulled when
//! the first result and when the 10th is taken, with the default batching and with
//! `.max_in_flight(64)`, on the kind given (default `threads`; `process` too).
//!
//! ```sh
//! cargo run --release --example pull_ahead -- process
//! ```

use adparallelengine::{task, Engine, Kind, Progress};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

task!(Double = |x: u64| -> u64 { 2 * x });

/// Items pulled when the first result, and when the `take`-th, was taken.
fn pulled_for_first(engine: &Engine<adparallelengine::AnyBackend>, take: usize, cap: Option<usize>) -> (usize, usize) {
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&pulled);
    let endless = std::iter::from_fn(move || Some(counter.fetch_add(1, Ordering::SeqCst) as u64));
    let mut job = engine.map(Double, endless);
    if let Some(n) = cap {
        job = job.max_in_flight(n);
    }
    let mut stream = job.stream().expect("stream");
    let mut at_first = 0;
    for i in 0..take {
        let y = stream.next().expect("an endless stream").expect("a result");
        assert_eq!(y, 2 * i as u64);
        if i == 0 {
            at_first = pulled.load(Ordering::SeqCst);
        }
    }
    (at_first, pulled.load(Ordering::SeqCst))
}

fn main() -> adparallelengine::Result<()> {
    let kind: Kind = std::env::args().nth(1).unwrap_or_else(|| "threads".into()).parse()?;
    let engine = Engine::builder(kind).max_workers(2).progress(Progress::quiet()).build()?;
    for cap in [None, Some(64)] {
        let (first, tenth) = pulled_for_first(&engine, 10, cap);
        let label = cap.map_or("default".to_string(), |n| format!("max_in_flight({n})"));
        println!("{kind:?} {label:<18} items pulled at the first result: {first}, at the 10th: {tenth}");
    }
    Ok(())
}
