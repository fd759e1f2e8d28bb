//! Forged answers end to end on the process backend: real worker processes (this test binary,
//! re-executed), one of which answers its batches with forged `Done` messages over its real
//! transport (the crate's `testing` worker, which plays engine-core's
//! `remote::testing::serve_lying`). For each forgery — a shifted start, a count too high, a
//! batch never sent, an answer repeated, a huge count of `()` outputs — and for batches that
//! go through the socket and batches that go through the shared-memory rings, the driver cuts
//! that worker off as misbehaving (logged with its pid and what was wrong; the process killed
//! and reaped), the honest workers finish the job with every result right, a second job runs
//! right too, and no process is left once the engine is dropped.
//!
//! Every worker of a job is sent batches as soon as the job starts (up to the prefetch depth,
//! before any answer), and a job cannot end while a batch is unanswered: the liar is always
//! sent batches and always answers some, whatever the speed of the machine.
//!
//! One test: which worker lies is set in this process's environment, which its workers
//! inherit.

use adparallelengine_core::remote::testing::Lie;
use adparallelengine_core::{Batching, Engine};
use adparallelengine_process::testing::{liar_env, liar_pid};
use adparallelengine_process::{live_workers, ProcessBackend};
use adparallelengine_test_support::warnings;
use std::time::{Duration, Instant};

adparallelengine_core::task!(Double = |x: u64| -> u64 { 2 * x });
adparallelengine_core::task!(Nothing = |_x: u64| -> () {});

/// Worker processes of each engine: the liar and two honest ones.
const WORKERS: usize = 3;

/// The first job of each case, as (items, batch size): batches small enough to go through the
/// workers' sockets, and batches of 40,000 bytes of items (and of outputs), over the 32 KiB
/// from which they go through the workers' shared-memory rings.
const SHAPES: [(u64, usize); 2] = [(600, 10), (40_000, 5_000)];

/// Children of this process, running or zombies not reaped yet.
fn children() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut out = vec![];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid ...
        let ppid = stat.rfind(')').and_then(|i| stat.get(i + 2..)).and_then(|s| s.split_whitespace().nth(1));
        if ppid == Some(me.as_str()) {
            out.extend(entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// A directory, removed with what it holds when dropped (a failed case's too).
struct Removed(std::path::PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The driver's warnings in `log` that say it stopped a worker as misbehaving.
fn stopped(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("worker misbehaved; stopping it")).collect()
}

#[test]
fn a_worker_process_that_forges_its_answers_is_cut_off_and_every_result_is_right() {
    warnings::capture();
    let t0 = Instant::now();
    let dir = Removed(std::env::temp_dir().join(format!("adpe-process-forged-done-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    for (lie, (items, chunk)) in Lie::FORGED.into_iter().flat_map(|l| SHAPES.map(|s| (l, s))) {
        let case = format!("{lie:?}, {items} items in batches of {chunk}");
        let from = warnings::mark();
        let claim = dir.0.join(format!("{lie:?}-{chunk}"));
        let (var, value) = liar_env(lie, &claim);
        // Before the backend starts any worker; the only test of this binary.
        std::env::set_var(var, value);
        let engine = Engine::from_backend(ProcessBackend::new(WORKERS).unwrap());

        // The first job, on three workers: one lies, and is replaced by an honest one.
        let batched = Batching::ChunkSize(chunk);
        let right = match lie {
            // A driver that believed 2^28 `()` outputs per answer would spin on them.
            Lie::HugeUnitCount => engine.map(Nothing, 0..items).batched(batched).run().map(|o| o.len() as u64 == items),
            _ => engine
                .map(Double, 0..items)
                .batched(batched)
                .run()
                .map(|o| o.iter().copied().eq((0..items).map(|x| 2 * x))),
        };
        match right {
            Ok(right) => assert!(right, "{case}: wrong results"),
            Err(e) => panic!("{case}: the job failed: {e}"),
        }
        let liar = liar_pid(&claim).unwrap_or_else(|| panic!("{case}: no worker process lied"));
        // Cut off: killed, and reaped by its reader before the job ended.
        assert!(!children().contains(&liar), "{case}: the liar {liar} is still a child of the driver");
        assert!(!live_workers().contains(&(liar as i32)), "{case}: the liar {liar} is still counted live");
        let log = warnings::since(from);
        let named = format!("peer=worker process {liar} ");
        let line = stopped(&log)
            .into_iter()
            .find(|l| l.contains(&named))
            .unwrap_or_else(|| panic!("{case}: no word of the liar {liar} in the driver's log:\n{log}"));
        assert!(line.contains(lie.complaint()), "{case}: {line}");
        eprintln!("{case}: {line}");

        // The engine goes on, on honest workers only (the liar's replacement among them).
        let all = engine.map(Double, 0..100u64).batched(Batching::ChunkSize(7)).collect_results().unwrap();
        let all: Vec<u64> = all.into_iter().map(|r| r.expect("an item")).collect();
        assert_eq!(all, (0..100).map(|x| 2 * x).collect::<Vec<_>>(), "{case}");
        let log = warnings::since(from);
        assert_eq!(stopped(&log).len(), 1, "{case}: only the liar is stopped:\n{log}");

        // Nothing left behind.
        drop(engine);
        std::env::remove_var(var);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !children().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(children(), Vec::<u32>::new(), "{case}: processes left behind");
        assert!(live_workers().is_empty(), "{case}: {:?}", live_workers());
        std::fs::remove_file(&claim).unwrap();
    }
    eprintln!("{} forged cases in {:?}", Lie::FORGED.len() * SHAPES.len(), t0.elapsed());
}
