//! A long job on worker processes, for the Ctrl-C test: prints `started` once the first
//! result is in, then keeps working until interrupted.
//!
//! `cargo run --example interrupt_me -- [KIND] [PATH_SHARED]`

use adparallelengine::{task, Engine, Kind, Progress, Shared};
use std::io::Write;

task!(
    /// Sleeps 50 ms and returns the worker's process id (and reads the shared block).
    Nap = |_x: u64, block: &Shared<Vec<u8>>| -> u32 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::process::id() + u32::from(block[0])
    }
);

fn main() {
    // Errors are printed with their message (not their Debug form) and exit with status 1.
    if let Err(e) = run() {
        eprintln!("Error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let kind: Kind = std::env::args().nth(1).unwrap_or_else(|| "process".into()).parse()?;
    let mut builder = Engine::builder(kind).max_workers(2).progress(Progress::quiet());
    if let Some(dir) = std::env::args().nth(2) {
        builder = builder.path_shared(dir);
    }
    let engine = builder.build()?;
    let block = Shared::new(vec![0u8; 1 << 20]);
    let mut stream = engine.map(Nap, 0..100_000u64).args(block).batched(false).stream()?;
    if let Some(first) = stream.next() {
        println!("started {}", first?);
        std::io::stdout().flush()?;
    }
    for r in stream {
        r?;
    }
    Ok(())
}
