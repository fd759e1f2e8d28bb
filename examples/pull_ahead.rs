//! How far ahead of its caller a stream pulls from an endless generator: the first 10 results
//! taken, with the default batching and with `.max_in_flight(64)`, on the kind given (default
//! `threads`; `process` too).
//!
//! ```sh
//! cargo run --release --example pull_ahead -- process
//! ```

use adparallelengine::{task, Engine, Kind, Progress};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

task!(Double = |x: u64| -> u64 { 2 * x });

fn pulled_for_first(engine: &Engine<adparallelengine::AnyBackend>, take: usize, cap: Option<usize>) -> usize {
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&pulled);
    let endless = std::iter::from_fn(move || Some(counter.fetch_add(1, Ordering::SeqCst) as u64));
    let mut job = engine.map(Double, endless);
    if let Some(n) = cap {
        job = job.max_in_flight(n);
    }
    let stream = job.stream().expect("stream");
    let got: Vec<u64> = stream.take(take).collect::<adparallelengine::Result<_>>().expect("results");
    assert_eq!(got, (0..take as u64).map(|x| 2 * x).collect::<Vec<_>>());
    pulled.load(Ordering::SeqCst)
}

fn main() -> adparallelengine::Result<()> {
    let kind: Kind = std::env::args().nth(1).unwrap_or_else(|| "threads".into()).parse()?;
    let engine = Engine::builder(kind).max_workers(2).progress(Progress::quiet()).build()?;
    for cap in [None, Some(64)] {
        let pulled = pulled_for_first(&engine, 10, cap);
        let label = cap.map_or("default".to_string(), |n| format!("max_in_flight({n})"));
        println!("{kind:?} {label:<18} first 10 results: {pulled} items pulled");
    }
    Ok(())
}
