//! Fault scenarios of the MPI backend, run under `mpirun -n 3` by `tests/mpi.rs`.
//!
//! `mpi_faults MODE`: `ok` (a few jobs whose results are checked), `panic` / `err` (item 7's
//! task panics / fails), `abort` (item 7's task aborts its rank), `driver-dies` (rank 0 panics
//! after a first job), `ship` / `no-ship` (a shared Arrow series reaches the ranks over MPI
//! into their own store / through `path_shared`; prints where the ranks mapped it from),
//! `timeout` (item 3 never ends: it times out, the other items finish on the other rank).

use adparallelengine::arrow::Series;
use adparallelengine::{task, Batching, Engine, Kind, Shared};
use arrow_array::{Array, Int64Array};

task!(Square = |x: u64| -> u64 { x * x });
task!(
    /// Panics on item 7.
    PanicsAt7 = |x: u64| -> u64 {
        if x == 7 {
            panic!("item seven is cursed");
        }
        x
    }
);
task!(
    /// Aborts its process on item 7.
    AbortsAt7 = |x: u64| -> u64 {
        if x == 7 {
            std::process::abort();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        x
    }
);
task!(
    /// Item 3 never ends (for a while).
    HangsAt3 = |x: u64| -> u64 {
        if x == 3 {
            std::thread::sleep(std::time::Duration::from_secs(600));
        }
        x
    }
);
task!(
    /// Adds the shared offsets' sum.
    AddShared = |x: u64, offsets: &Shared<Vec<u64>>| -> u64 { x + offsets.iter().sum::<u64>() }
);

task!(
    /// The item plus the series' sum, and the store files this rank has mapped.
    SumAndMaps = |x: u64, s: &Shared<Series>| -> (u64, String) {
        let col = s.0.as_any().downcast_ref::<Int64Array>().expect("int64");
        let sum: i64 = col.values().iter().sum();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let files: Vec<&str> = maps.lines().filter_map(|l| l.split_whitespace().nth(5)).filter(|p| p.ends_with(".bin")).collect();
        (x + sum as u64, files.join(","))
    }
);

adparallelengine::try_task!(
    FailsAt7 = |x: u64| -> u64 {
        if x == 7 {
            return Err("item seven is invalid".into());
        }
        Ok(x)
    }
);

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let engine = Engine::builder(Kind::Mpi).path_shared("target/mpi-faults-shared").ship_shared(mode == "ship").build();
    let engine = match engine {
        Ok(e) => e,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::exit(2);
        }
    };
    // Only rank 0 gets here.
    let result = match mode.as_str() {
        "ok" => ok(&engine),
        "ship" | "no-ship" => ship(&engine),
        "timeout" => timeout(&engine),
        "panic" => engine.map(PanicsAt7, 0..20u64).batched(Batching::None).run().map(|_| ()),
        "err" => engine.map(FailsAt7, 0..20u64).batched(Batching::ChunkSize(4)).run().map(|_| ()),
        "abort" => engine.map(AbortsAt7, 0..40u64).batched(Batching::None).run().map(|_| ()),
        "driver-dies" => {
            engine.map(Square, 0..10u64).run().expect("first job");
            panic!("the driver dies with its engine alive");
        }
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::exit(2);
        }
    };
    match result {
        Ok(()) => println!("rank 0: {mode} done"),
        Err(e) => {
            eprintln!("Error: {e}");
            drop(engine);
            std::process::exit(1);
        }
    }
}

fn ok(engine: &Engine) -> adparallelengine::Result<()> {
    let n = 10_000u64;
    let squares = engine.map(Square, 0..n).run()?;
    assert_eq!(squares, (0..n).map(|x| x * x).collect::<Vec<_>>());
    let offsets = Shared::new(vec![1u64, 2, 3]);
    let shifted = engine.map(AddShared, 0..100u64).args(offsets).batched(Batching::ChunkSize(7)).run()?;
    assert_eq!(shifted, (0..100).map(|x| x + 6).collect::<Vec<_>>());
    let streamed: Vec<u64> = engine.map(Square, 0..50u64).batched(false).stream()?.collect::<Result<_, _>>()?;
    assert_eq!(streamed, (0..50).map(|x| x * x).collect::<Vec<_>>());
    let each = engine.map(FailsAt7, 0..10u64).collect_results()?;
    assert!(each[7].is_err() && each.iter().enumerate().all(|(i, r)| i == 7 || r.as_ref().ok() == Some(&(i as u64))));
    println!(
        "rank 0: workers={} stats: {} batches",
        engine.workers(),
        engine.last_stats().map_or(0, |s| s.batches.len())
    );
    Ok(())
}

/// Prints, for each item, where its rank mapped the shared series from.
fn ship(engine: &Engine) -> adparallelengine::Result<()> {
    let series = Shared::new(Series(std::sync::Arc::new(Int64Array::from(vec![1, 2, 3]))));
    for _ in 0..2 {
        let out = engine.map(SumAndMaps, 0..8u64).args(series.clone()).batched(false).run()?;
        for (x, (y, maps)) in out.iter().enumerate() {
            assert_eq!(*y, x as u64 + 6);
            println!("item {x}: mapped {maps}");
        }
    }
    let driver_dir = std::fs::canonicalize("target/mpi-faults-shared").unwrap_or_default();
    println!("driver store under {}", driver_dir.display());
    Ok(())
}

/// Item 3 hangs: it fails as timed out, every other item succeeds.
fn timeout(engine: &Engine) -> adparallelengine::Result<()> {
    let all = engine
        .map(HangsAt3, 0..12u64)
        .batched(false)
        .item_timeout(std::time::Duration::from_millis(500))
        .retries(0)
        .collect_results()?;
    for (i, r) in all.iter().enumerate() {
        match (i, r) {
            (3, Err(e)) => assert_eq!(e.kind, adparallelengine::FailureKind::Timeout, "{e}"),
            (_, Ok(v)) => assert_eq!(*v, i as u64),
            (_, other) => panic!("item {i}: {other:?}"),
        }
    }
    println!("rank 0: item 3 timed out, the 11 others came back");
    Ok(())
}
