//! Worker ranks that forge their answers, under a real `mpirun -n 7`: rank 0 drives, rank 1
//! serves honestly, and ranks 2 to 6 each answer their batches with one forged `Done`
//! (engine-core's forging worker, `remote::testing::serve_lying`): a shifted start, a count too
//! high, a batch never sent, an answer repeated, a huge count. Every answer is checked against
//! the batches sent to its rank: each liar is stopped as misbehaving (logged with its rank and
//! what was wrong) and used no more, the honest rank finishes the jobs with every result right,
//! and every rank exits 0 when the engine ends. The ranks are this test binary, re-executed
//! by `mpirun` to run only [`rank`].

use adparallelengine_core::remote::testing::Lie;
use adparallelengine_core::{Batching, Engine};
use adparallelengine_mpi::rsmpi::traits::Communicator;
use adparallelengine_mpi::MpiBackend;
use adparallelengine_test_support::mpi::{launcher, run};
use std::time::Duration;

adparallelengine_core::task!(
    /// Doubles, taking a millisecond: the honest rank alone takes a while, so that every
    /// liar is sent batches before the job can end.
    SlowDouble = |x: u64| -> u64 {
        std::thread::sleep(Duration::from_millis(1));
        2 * x
    }
);

/// Set in the ranks' environment: they run [`rank`].
const RANKS: &str = "ADPE_TEST_FORGED_RANKS";

/// The first liar's rank; rank `FIRST_LIAR + i` tells lie `Lie::FORGED[i]`.
const FIRST_LIAR: usize = 2;

/// One rank's part, a test that does nothing unless this binary was started by [`RANKS`]'s
/// launch.
#[test]
fn rank() {
    if std::env::var_os(RANKS).is_none() {
        return;
    }
    let me = adparallelengine_mpi::world().unwrap().rank();
    if let Some(lie) = usize::try_from(me).ok().and_then(|r| r.checked_sub(FIRST_LIAR)).and_then(|i| Lie::FORGED.get(i))
    {
        // Never returns: it serves lies until the driver closes the engine, then exits.
        adparallelengine_mpi::testing::lie_if_worker_rank(*lie).unwrap();
        unreachable!("a worker rank exits when the driver is done");
    }
    // Rank 1 serves honestly inside `new`; rank 0 drives and logs why it stops a rank.
    let backend = MpiBackend::new(None).unwrap();
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let engine = Engine::from_backend(backend);
    assert_eq!(engine.workers(), FIRST_LIAR - 1 + Lie::FORGED.len());
    let out = engine.map(SlowDouble, 0..600u64).batched(Batching::ChunkSize(10)).run().unwrap();
    assert_eq!(out, (0..600).map(|x| 2 * x).collect::<Vec<_>>());
    // The liars serve no more: the next jobs run on the honest rank.
    for _ in 0..2 {
        let all = engine.map(SlowDouble, 0..50u64).batched(Batching::ChunkSize(7)).collect_results().unwrap();
        let all: Vec<u64> = all.into_iter().map(|r| r.expect("an item")).collect();
        assert_eq!(all, (0..50).map(|x| 2 * x).collect::<Vec<_>>());
    }
    println!("rank 0: every result right");
}

#[test]
fn forged_answers_of_worker_ranks_stop_those_ranks_and_every_result_is_right() {
    if std::env::var_os(RANKS).is_some() {
        return;
    }
    let mut cmd = launcher(FIRST_LIAR + Lie::FORGED.len());
    cmd.arg(std::env::current_exe().unwrap())
        .args(["rank", "--exact", "--nocapture", "--test-threads=1"])
        .env(RANKS, "1");
    let r = run(cmd, Duration::from_secs(120));
    assert_eq!(r.code, Some(0), "every rank exits 0\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("rank 0: every result right"), "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    for (i, lie) in Lie::FORGED.into_iter().enumerate() {
        let rank = format!("rank={}", FIRST_LIAR + i);
        let line = r
            .stderr
            .lines()
            .find(|l| l.contains("misbehaved") && l.split_whitespace().any(|w| w == rank))
            .unwrap_or_else(|| panic!("{lie:?}: the driver did not stop {rank}:\n{}", r.stderr));
        assert!(line.contains(lie.complaint()), "{lie:?}: {line}");
        eprintln!("{lie:?}: {line}");
    }
    let honest = r.stderr.lines().any(|l| l.contains("misbehaved") && l.split_whitespace().any(|w| w == "rank=1"));
    assert!(!honest, "the honest rank was stopped:\n{}", r.stderr);
    eprintln!("took {:?}", r.took);
}
