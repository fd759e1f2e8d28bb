//! MPI backend benchmarks, each against a baseline measured in the same run, under
//! `mpirun -n 3` (the bench re-launches itself so when started by `cargo bench`):
//!
//! - (a) unbatched per-item round trip, 1 worker rank, vs a raw rsmpi ping-pong between the
//!   same two ranks (blocking send and receive, before the engine exists);
//! - (b) 64 CPU-bound items of about 50 ms: speedup over a serial run on rank 0, with 2 worker
//!   ranks on this 2-core machine (the driver rank must not take a core while it waits).
//!
//! `cargo bench --features mpi --bench mpi` (or `cargo xtask bench`).

mod common;

use common::{median, ratio, Echo, Spin};

use adparallelengine::backends::mpi::rsmpi::point_to_point::{Destination, Source};
use adparallelengine::backends::mpi::rsmpi::topology::{Communicator, SimpleCommunicator};
use adparallelengine::{Batching, Engine, Kind, Progress, Task};
use std::time::{Duration, Instant};

const RANKS: usize = 3;
const PING_TAG: i32 = 99;

/// Started by `cargo bench`: run again under the launcher.
fn relaunch() -> ! {
    let exe = std::env::current_exe().expect("exe");
    let openmpi = std::process::Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Open MPI"));
    let mut cmd = std::process::Command::new(if openmpi { "mpirun" } else { "mpiexec" });
    cmd.args(["-n", &RANKS.to_string()]);
    if openmpi {
        cmd.arg("--oversubscribe");
    }
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    cmd.arg(exe).args(std::env::args().skip(1).filter(|a| a != "--bench"));
    let status = cmd.status().expect("start mpirun");
    std::process::exit(status.code().unwrap_or(1));
}

/// Raw ping-pong between ranks 0 and 1 (blocking calls); rank 2 waits. Returns rank 0's
/// median round trip.
fn raw_ping_pong(world: &SimpleCommunicator, n: usize) -> Option<Duration> {
    let rank = world.rank();
    let mut rounds = vec![];
    for _ in 0..5 {
        let mut buf = [0u8; 16];
        match rank {
            0 => {
                let peer = world.process_at_rank(1);
                let t0 = Instant::now();
                for _ in 0..n {
                    peer.send_with_tag(&buf[..], PING_TAG);
                    peer.receive_into_with_tag(&mut buf[..], PING_TAG);
                }
                rounds.push(t0.elapsed() / n as u32);
            }
            1 => {
                let peer = world.process_at_rank(0);
                for _ in 0..n {
                    peer.receive_into_with_tag(&mut buf[..], PING_TAG);
                    peer.send_with_tag(&buf[..], PING_TAG);
                }
            }
            _ => {}
        }
    }
    (rank == 0).then(|| median(rounds))
}

fn main() {
    if !adparallelengine::backends::mpi::launched() {
        relaunch();
    }
    let world = adparallelengine::backends::mpi::world().expect("MPI");
    let n = 20_000;
    let raw = raw_ping_pong(&world, n);
    // Ranks 1 and 2 serve from here on, and exit when rank 0 drops its engine.
    let engine = Engine::builder(Kind::Mpi).progress(Progress::quiet()).build().expect("engine");
    let raw = raw.expect("rank 0");
    let (mut strict, mut pipelined) = (vec![], vec![]);
    for _ in 0..5 {
        let t0 = Instant::now();
        let out = engine.map(Echo, 0..n as u64).workers(1).batched(false).prefetch(1).run().expect("run");
        strict.push(t0.elapsed() / n as u32);
        assert_eq!(out.len(), n);
        let t0 = Instant::now();
        engine.map(Echo, 0..n as u64).workers(1).batched(false).run().expect("run");
        pipelined.push(t0.elapsed() / n as u32);
    }
    let (strict, pipelined) = (median(strict), median(pipelined));
    println!("(a) per-item round trip, unbatched, 1 worker rank, {n} items");
    println!("    raw rsmpi ping-pong, ranks 0-1  {raw:>10.2?}   1.00x");
    println!("    engine, prefetch 1 (strict)     {strict:>10.2?}   {:.2}x raw", ratio(strict, raw));
    println!("    engine, prefetch 2 (default)    {pipelined:>10.2?}   {:.2}x raw", ratio(pipelined, raw));

    if std::env::var_os("ADPE_BENCH_ONLY_A").is_some() {
        return;
    }
    let t0 = Instant::now();
    let serial: Vec<u64> = (0..64u64).map(|s| Spin::run(s, &(), &mut ()).expect("spin")).collect();
    let s = t0.elapsed();
    let t0 = Instant::now();
    let out = engine.map(Spin, 0..64u64).batched(Batching::Auto).run().expect("run");
    let p = t0.elapsed();
    // Spin's value depends on the machine's speed: compare counts only.
    assert_eq!(out.len(), serial.len());
    println!("(b) 64 CPU-bound items of ~50 ms, 2 worker ranks (3 ranks on this machine's cores)");
    println!("    serial, on rank 0               {s:>10.2?}   1.00x");
    println!("    mpi                             {p:>10.2?}   {:.2}x speedup", ratio(s, p));
}
