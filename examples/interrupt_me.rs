//! A long job on worker processes, for the Ctrl-C test: prints `started` once the first
//! result is in, then keeps working until interrupted.
//!
//! `cargo run --example interrupt_me -- [KIND]`

use adparallelengine::{task, Engine, Kind, Progress};
use std::io::Write;

task!(
    /// Sleeps 50 ms and returns the worker's process id.
    Nap = |_x: u64| -> u32 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::process::id()
    }
);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kind: Kind = std::env::args().nth(1).unwrap_or_else(|| "process".into()).parse()?;
    let engine = Engine::builder(kind).max_workers(2).progress(Progress::quiet()).build()?;
    let mut stream = engine.map(Nap, 0..100_000u64).batched(false).stream()?;
    if let Some(first) = stream.next() {
        println!("started {}", first?);
        std::io::stdout().flush()?;
    }
    for r in stream {
        r?;
    }
    Ok(())
}
