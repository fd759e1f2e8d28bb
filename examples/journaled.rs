//! A long journaled job, for the kill-and-resume tests (`tests/journal.rs`): 10,000 items of
//! `3x + 1` after 200 µs each, on the kind named by the first argument (configured from the
//! environment, as a program would be), journaled in `DIR/journal`. Every execution appends
//! its item to `DIR/executions` (the workers' side channel). Prints `driver pid P` once the
//! engine is built, `done N` at every progress update (told once the batch is journaled),
//! and at the end checks every result and prints `resumed R ran K`.
//!
//! `cargo run --example journaled -- KIND DIR`

use adparallelengine::{register_task, Batching, BoxError, Engine, Kind, Progress, Task};
use std::io::Write;
use std::time::Duration;

const N: u64 = 10_000;

/// `3x + 1` after 200 µs, appending `x` to the log its args name.
struct Slow;

impl Task for Slow {
    type Item = u64;
    type Output = u64;
    type Args = String;
    type Init = ();
    type State = std::fs::File;
    fn init(_: &(), log: &String) -> Result<std::fs::File, BoxError> {
        Ok(std::fs::OpenOptions::new().append(true).create(true).open(log)?)
    }
    fn run(x: u64, _: &String, log: &mut std::fs::File) -> Result<u64, BoxError> {
        std::thread::sleep(Duration::from_micros(200));
        // One write(2) of a whole line, in append mode: lines of concurrent workers never mix.
        log.write_all(format!("{x}\n").as_bytes())?;
        Ok(3 * x + 1)
    }
}
register_task!(Slow);

fn main() {
    if let Err(e) = run() {
        eprintln!("Error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let kind: Kind = args.next().unwrap_or_else(|| "process".into()).parse()?;
    let dir = std::path::PathBuf::from(args.next().ok_or("usage: journaled KIND DIR")?);
    let engine = Engine::builder(kind).max_workers(2).progress(Progress::quiet()).build()?;
    // Under MPI only rank 0 gets here: the others serve the engine's jobs inside `build`.
    println!("driver pid {}", std::process::id());
    std::io::stdout().flush()?;
    let out = engine
        .map(Slow, 0..N)
        .args(dir.join("executions").to_string_lossy().into_owned())
        .batched(Batching::ChunkSize(20))
        .journal(dir.join("journal"))
        .on_progress(Duration::ZERO, |p| {
            println!("done {}", p.done);
            let _ = std::io::stdout().flush();
        })
        .run()?;
    if let Some(i) = (0..N as usize).find(|&i| out.get(i) != Some(&(3 * i as u64 + 1))) {
        return Err(
            format!("wrong result at item {i} after the resume: {:?} ({} results)", out.get(i), out.len()).into()
        );
    }
    let stats = engine.last_stats().ok_or("no stats")?;
    println!("resumed {} ran {}", stats.resumed, stats.items_done);
    Ok(())
}
