//! Worker processes: crashes, kills, timeouts, refusals, and nothing left behind.

mod common;

use adparallelengine::{
    register_task, task, try_task, AnyBackend, Batching, BoxError, Engine, Error, FailureKind, Task,
};
use common::processes;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tests here check that no worker process is left: they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Live (non-zombie) processes whose parent is this process.
fn live_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut out = vec![];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid ...
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.len() > 1 && fields[1] == me && fields[0] != "Z" {
            out.push(entry.file_name().to_string_lossy().parse().unwrap_or(0));
        }
    }
    out
}

/// After a job, the engine still up: no worker busy, and the only live children are the
/// engine's idle workers, kept for its next job.
fn assert_only_idle_workers(e: &Engine, what: &str) {
    let idle = match e.backend() {
        AnyBackend::Process(p) => p.idle_workers(),
        _ => 0,
    };
    assert!(idle <= e.workers(), "{what}: {idle} idle workers for {} workers", e.workers());
    let deadline = Instant::now() + Duration::from_secs(5);
    while live_children().len() != idle && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(live_children().len(), idle, "{what}: worker processes left behind besides the idle ones");
    assert_eq!(adparallelengine::backends::live_workers().len(), idle, "{what}");
}

/// After the engine is dropped: no worker process at all.
fn assert_no_worker_left(what: &str) {
    // Reader threads reap workers as the job ends; allow them a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !live_children().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(live_children(), Vec::<i32>::new(), "{what}: worker processes left behind");
    assert!(adparallelengine::backends::live_workers().is_empty(), "{what}");
}

task!(
    /// Aborts on item 3 (SIGABRT), exits with code 7 on item 5, doubles the others.
    Crashy = |x: u64| -> u64 {
        match x {
            3 => std::process::abort(),
            5 => std::process::exit(7),
            _ => 2 * x,
        }
    }
);

#[test]
fn a_worker_that_dies_loses_no_other_item_and_names_the_culprit() {
    let _g = lock();
    let e = processes(2);
    for batching in [Batching::None, Batching::PerWorker, Batching::ChunkSize(4)] {
        let all = e.map(Crashy, 0..10u64).batched(batching).retries(1).collect_results().unwrap();
        for (i, r) in all.iter().enumerate() {
            match i {
                3 => {
                    let err = r.as_ref().unwrap_err();
                    assert_eq!((err.index, err.kind), (3, FailureKind::Lost), "{batching:?}: {err}");
                    assert!(err.message.contains("signal 6 (SIGABRT)"), "{err}");
                    assert!(err.message.contains("lost 2 time(s)"), "{err}");
                }
                5 => {
                    let err = r.as_ref().unwrap_err();
                    assert!(err.message.contains("exited with code 7"), "{batching:?}: {err}");
                }
                _ => assert_eq!(r.as_ref().unwrap(), &(2 * i as u64), "{batching:?} item {i}"),
            }
        }
        // Fail-fast names the first lost item it meets. With no retries no item runs twice,
        // so every item of a batch whose worker died fails (which one killed it is unknown).
        let err = e.map(Crashy, 0..10u64).batched(batching).retries(0).run().unwrap_err();
        assert!(err.item_index().is_some_and(|i| i <= 5), "{err}");
        assert!(err.to_string().contains("lost 1 time(s)"), "{err}");
        assert_only_idle_workers(&e, "after crashes");
    }
    drop(e);
    assert_no_worker_left("after crashes, engine dropped");
}

task!(
    /// Appends a line to `<dir>/<x>` each time item `x` starts (a side effect a retry would
    /// repeat), then kills its worker on item 13, doubles the others.
    CountsRuns = |x: u64, dir: &String| -> u64 {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).create(true).open(format!("{dir}/{x}")).unwrap();
        f.write_all(b"run\n").unwrap();
        drop(f);
        if x == 13 {
            std::process::abort();
        }
        2 * x
    }
);

/// How many times each of items `0..n` started, from `CountsRuns`' files.
fn runs(dir: &std::path::Path, n: u64) -> Vec<usize> {
    (0..n).map(|x| std::fs::read_to_string(dir.join(x.to_string())).map(|s| s.lines().count()).unwrap_or(0)).collect()
}

#[test]
fn with_no_retries_no_item_runs_twice_and_retries_n_runs_an_item_at_most_n_plus_1_times() {
    let _g = lock();
    let e = processes(2);
    for retries in [0usize, 2] {
        let dir = std::env::temp_dir().join(format!("adpe-at-most-once-{}-{retries}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let all = e
            .map(CountsRuns, 0..40u64)
            .args(dir.to_string_lossy().into_owned())
            .batched(Batching::ChunkSize(8))
            .retries(retries)
            .collect_results()
            .unwrap();
        let runs = runs(&dir, 40);
        std::fs::remove_dir_all(&dir).unwrap();
        for (i, r) in all.iter().enumerate() {
            match (retries, i) {
                // At most once: the batch 8..16 was running when its worker died, so each of
                // its items may have run; none runs again, all fail as lost.
                (0, 8..16) => assert_eq!(r.as_ref().unwrap_err().kind, FailureKind::Lost, "item {i}"),
                (_, 13) => assert_eq!(r.as_ref().unwrap_err().kind, FailureKind::Lost, "item {i}"),
                _ => assert_eq!(r.as_ref().unwrap(), &(2 * i as u64), "item {i}"),
            }
        }
        if retries == 0 {
            assert!(runs.iter().all(|&n| n <= 1), "no item starts twice: {runs:?}");
            assert_eq!(runs[13], 1, "{runs:?}");
        } else {
            assert!(runs.iter().all(|&n| n <= retries + 1), "at most retries + 1 starts: {runs:?}");
            assert_eq!(runs[13], retries + 1, "item 13 kills every worker it runs on: {runs:?}");
            assert!(runs.iter().enumerate().all(|(i, &n)| n >= 1 || (14..16).contains(&i)), "{runs:?}");
        }
    }
    assert_only_idle_workers(&e, "after at-most-once jobs");
}

task!(
    /// The worker's process id.
    WhoAmI = |_x: u64| -> u32 {
        std::thread::sleep(Duration::from_millis(5));
        std::process::id()
    }
);

#[test]
fn workers_stay_up_between_jobs_and_a_dead_idle_one_is_replaced() {
    let _g = lock();
    let e = processes(2);
    let pids = |e: &Engine| {
        let mut p = e.map(WhoAmI, 0..40u64).batched(false).run().unwrap();
        p.sort();
        p.dedup();
        p
    };
    let first = pids(&e);
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first.iter().all(|p| *p != std::process::id()));
    assert_only_idle_workers(&e, "after the first job");
    assert_eq!(live_children().len(), 2);
    // The next job runs on the same processes: no start-up cost.
    assert_eq!(pids(&e), first);
    // One dies while idle: the next job replaces it and loses nothing.
    // SAFETY: plain kill(2) of our own worker process.
    unsafe { libc_kill(first[0] as i32) };
    std::thread::sleep(Duration::from_millis(50));
    let third = pids(&e);
    assert_eq!(third.len(), 2, "{third:?}");
    assert!(!third.contains(&first[0]) && third.contains(&first[1]), "{first:?} then {third:?}");
    assert_only_idle_workers(&e, "after replacing a dead idle worker");
    drop(e);
    assert_no_worker_left("after dropping an engine with idle workers");
}

try_task!(
    /// Outputs `[x, 2x, 3x]`; aborts the first time it meets item 123_456 (the marker file
    /// says it already did).
    DiesOnceOnBigBatch = |x: u64, marker: &PathBuf| -> Vec<u64> {
        if x == 123_456 && std::fs::OpenOptions::new().write(true).create_new(true).open(marker).is_ok() {
            std::process::abort();
        }
        Ok(vec![x, 2 * x, 3 * x])
    }
);

#[test]
fn large_batches_cross_shared_memory_both_ways_and_survive_a_dying_worker() {
    let _g = lock();
    let e = processes(2);
    // 50,000 plain numbers are 400 KB of items (over the 32 KiB from which tails go through
    // the shared rings) and 1.6 MB of outputs per batch.
    // (Items from a vector: a range's batches travel as their first item, not in the rings.)
    let n = 300_000u64;
    let items: Vec<u64> = (0..n).collect();
    let out = e.map(Double, items.clone()).batched(Batching::ChunkSize(50_000)).run().unwrap();
    assert_eq!(out.len(), n as usize);
    assert!(out.iter().enumerate().all(|(i, y)| *y == 2 * i as u64));
    // Jobs after the first reuse the same rings (first fit from the start).
    for _ in 0..3 {
        let again = e.map(Double, items.clone()).batched(Batching::ChunkSize(70_000)).run().unwrap();
        assert_eq!(again, out);
    }
    // A worker dies holding a large batch: it is split and retried through another ring.
    let marker = std::env::temp_dir().join(format!("adpe-bigbatch-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let all = e
        .map(DiesOnceOnBigBatch, items.clone())
        .args(marker.clone())
        .batched(Batching::ChunkSize(50_000))
        .run()
        .unwrap();
    let _ = std::fs::remove_file(&marker);
    assert_eq!(all.len(), n as usize);
    assert!(all.iter().enumerate().all(|(i, v)| *v == [i as u64, 2 * i as u64, 3 * i as u64]));
    // The same with plain outputs, which `run` has written straight into its result: whole
    // batches in place, the dead worker's batch retried item by item and moved in.
    let all = e.map(DiesOnceDoubling, items).args(marker.clone()).batched(Batching::ChunkSize(50_000)).run().unwrap();
    let _ = std::fs::remove_file(&marker);
    assert_eq!(all, out);
    // A failing item stops a job whose other batches were placed: its error, by index.
    let err = e.map(FailsAt, 0..n).batched(Batching::ChunkSize(50_000)).run().unwrap_err();
    assert_eq!(err.item_index(), Some(250_000), "{err}");
    assert_only_idle_workers(&e, "after large batches");
    // Each idle worker maps its shared rings (a memfd, no file anywhere).
    for pid in live_children() {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        assert!(maps.contains("memfd:adparallelengine-rings"), "worker {pid} has no shared rings");
    }
    drop(e);
    assert_no_worker_left("after large batches, engine dropped");
}

task!(Double = |x: u64| -> u64 { 2 * x });

try_task!(
    /// Doubles; aborts the first time it meets item 123_456.
    DiesOnceDoubling = |x: u64, marker: &PathBuf| -> u64 {
        if x == 123_456 && std::fs::OpenOptions::new().write(true).create_new(true).open(marker).is_ok() {
            std::process::abort();
        }
        Ok(2 * x)
    }
);

try_task!(
    FailsAt = |x: u64| -> u64 {
        if x == 250_000 {
            return Err("bad item".into());
        }
        Ok(2 * x)
    }
);

try_task!(
    /// Item 5 parks on its first attempt after writing its pid to the file given as args; the
    /// test SIGKILLs that process; the retry (which finds the file) returns at once.
    Victim = |x: u64, marker: &PathBuf| -> u64 {
        if x == 5 && !marker.exists() {
            std::fs::write(marker, std::process::id().to_string())?;
            std::thread::sleep(Duration::from_secs(60));
        }
        Ok(x * 10)
    }
);

#[test]
fn a_worker_killed_from_outside_is_replaced_and_its_items_rerun() {
    let _g = lock();
    let dir = std::env::temp_dir().join(format!("adpe-victim-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let marker = dir.join("pid");
    let _ = std::fs::remove_file(&marker);
    let killer = {
        let marker = marker.clone();
        std::thread::spawn(move || -> Option<Instant> {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Some(pid) = std::fs::read_to_string(&marker).ok().and_then(|s| s.parse::<i32>().ok()) {
                    std::thread::sleep(Duration::from_millis(50));
                    // SAFETY: plain kill(2) of the worker process.
                    unsafe { libc_kill(pid) };
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        })
    };
    let e = processes(2);
    let out = e.map(Victim, 0..20u64).args(marker.clone()).batched(Batching::ChunkSize(3)).run().unwrap();
    let finished = Instant::now();
    assert_eq!(out, (0..20).map(|x| x * 10).collect::<Vec<_>>());
    let killed_at = killer.join().unwrap().expect("the victim never showed up");
    let recovery = finished.duration_since(killed_at);
    eprintln!("SIGKILLed worker detected and its items rerun within {recovery:?}");
    assert!(recovery < Duration::from_secs(30), "recovery took {recovery:?}");
    let _ = std::fs::remove_dir_all(&dir);
    assert_only_idle_workers(&e, "after a SIGKILL");
    drop(e);
    assert_no_worker_left("after a SIGKILL, engine dropped");
}

unsafe fn libc_kill(pid: i32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: kill(2) takes plain integers; the caller vouches for the pid.
    unsafe { kill(pid, 9) };
}

task!(
    /// Item 2 hangs.
    Hangs = |x: u64| -> u64 {
        if x == 2 {
            std::thread::sleep(Duration::from_secs(600));
        }
        x
    }
);

#[test]
fn an_item_timeout_kills_only_its_worker() {
    let _g = lock();
    let e = processes(2);
    let t0 = Instant::now();
    let all = e
        .map(Hangs, 0..8u64)
        .batched(false)
        .item_timeout(Duration::from_millis(300))
        .retries(1)
        .collect_results()
        .unwrap();
    let took = t0.elapsed();
    for (i, r) in all.iter().enumerate() {
        if i == 2 {
            let err = r.as_ref().unwrap_err();
            assert_eq!(err.kind, FailureKind::Timeout, "{err}");
            assert!(err.to_string().starts_with("item 2 timed out"), "{err}");
        } else {
            assert_eq!(r.as_ref().unwrap(), &(i as u64));
        }
    }
    assert!(took < Duration::from_secs(60), "a hung item held the job for {took:?}");
    assert_only_idle_workers(&e, "after a timeout");
    drop(e);
    assert_no_worker_left("after a timeout, engine dropped");
}

/// A task whose name differs in every process: workers do not know it.
struct Elusive;
impl Task for Elusive {
    type Item = u8;
    type Output = u8;
    type Args = ();
    type Init = ();
    type State = ();
    fn name() -> &'static str {
        static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        NAME.get_or_init(|| format!("elusive-{}", std::process::id()))
    }
    fn init(_: &(), _: &()) -> Result<(), BoxError> {
        Ok(())
    }
    fn run(x: u8, _: &(), _: &mut ()) -> Result<u8, BoxError> {
        Ok(x)
    }
}
register_task!(Elusive);

#[test]
fn a_worker_that_does_not_know_the_task_says_so() {
    let _g = lock();
    let e = processes(2);
    let err = e.map(Elusive, [1u8, 2, 3]).run().unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    assert!(err.to_string().contains("is not registered"), "{err}");
    assert_only_idle_workers(&e, "after a refusal");
    drop(e);
    assert_no_worker_left("after a refusal, engine dropped");
}

task!(
    Slowish = |x: u64| -> u64 {
        std::thread::sleep(Duration::from_millis(20));
        x
    }
);

#[test]
fn dropping_a_job_or_the_engine_leaves_no_worker() {
    let _g = lock();
    let e = processes(2);
    let mut s = e.map(Slowish, 0..10_000u64).batched(false).stream().unwrap();
    assert_eq!(s.next().unwrap().unwrap(), 0);
    drop(s);
    assert_only_idle_workers(&e, "after dropping a stream");
    let out = e.map(Slowish, 0..4u64).run().unwrap();
    assert_eq!(out, vec![0, 1, 2, 3]);
    drop(e);
    assert_no_worker_left("after dropping the engine");
}

task!(
    /// Takes its time (a quarter of a second), then doubles.
    Slow = |x: u64| -> u64 {
        std::thread::sleep(Duration::from_millis(250));
        2 * x
    }
);

/// Whether `pid` is a child of this process, running or a zombie not yet reaped.
fn is_our_child(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // pid (comm) state ppid ...
    let ppid = stat.rfind(')').and_then(|i| stat[i + 2..].split_whitespace().nth(1).map(str::to_string));
    ppid == Some(std::process::id().to_string())
}

#[test]
fn a_leaked_streams_workers_end_when_the_engine_is_dropped() {
    let _g = lock();
    let e = processes(2);
    let mut s = e.map(Slow, 0..40u64).batched(Batching::ChunkSize(1)).stream().unwrap();
    assert_eq!(s.next().unwrap().unwrap(), 0);
    // Both workers hold slow items, and more are queued for them.
    let workers = live_children();
    assert_eq!(workers.len(), 2, "{workers:?}");
    // Leaked: the stream's job never ends, nor cancels its workers.
    std::mem::forget(s);
    drop(e);
    // Every worker is gone, and reaped (by the leaked job's reader threads): neither running
    // nor a zombie of this process.
    // The reader that reaps a worker forgets it a moment later (the registry of live
    // workers, for Ctrl-C): both are waited for.
    let listed = || adparallelengine::backends::live_workers();
    let deadline = Instant::now() + Duration::from_secs(5);
    while (workers.iter().any(|p| is_our_child(*p)) || !listed().is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<i32> = workers.iter().copied().filter(|p| is_our_child(*p)).collect();
    assert!(left.is_empty(), "the leaked stream's workers {left:?} outlived the engine");
    assert!(listed().is_empty(), "still listed as live: {:?}", listed());

    // A fresh engine afterwards works, and leaves nothing either.
    let e = processes(2);
    assert_eq!(e.map(Slow, 0..4u64).run().unwrap(), vec![0, 2, 4, 6]);
    assert_only_idle_workers(&e, "a fresh engine after a leaked stream");
    drop(e);
    assert_no_worker_left("a fresh engine after a leaked stream, dropped");
}

use common::example;

/// Starts `interrupt_me`, waits for its first result, sends `signal`, and checks its workers
/// and its shared files; returns the driver's exit status.
fn interrupt_driver(signal: i32) -> std::process::ExitStatus {
    let bin = example("interrupt_me");
    if !bin.exists() {
        // `cargo test --test process` alone does not build examples.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = std::process::Command::new(cargo).args(["build", "--example", "interrupt_me"]).status().unwrap();
        assert!(st.success());
    }
    assert!(bin.exists(), "{} missing", bin.display());
    let shared = std::env::temp_dir().join(format!("adpe-ctrlc-{}", std::process::id()));
    let mut child = std::process::Command::new(&bin)
        .arg("process")
        .arg(&shared)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(line.starts_with("started "), "{line:?}");
    let driver = child.id() as i32;
    // The driver's workers, seen from /proc before the interrupt.
    let workers: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 2..];
            let ppid: i32 = after.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == driver).then(|| e.file_name().to_string_lossy().parse().ok()).flatten()
        })
        .collect();
    assert_eq!(workers.len(), 2, "expected 2 worker processes, found {workers:?}");
    let stores: Vec<PathBuf> = std::fs::read_dir(&shared).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(stores.len(), 1, "one share store under {}: {stores:?}", shared.display());
    assert!(std::fs::read_dir(&stores[0]).unwrap().count() >= 1, "the shared block is on disk");
    // SAFETY: plain kill(2).
    unsafe {
        extern "C" {
            fn kill(pid: i32, sig: i32) -> i32;
        }
        kill(driver, signal);
    }
    let status = child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let alive = |pid: &i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rfind(')').map(|i| &s[i + 2..i + 3] != "Z").unwrap_or(false))
            .unwrap_or(false)
    };
    while workers.iter().any(alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<&i32> = workers.iter().filter(|p| alive(p)).collect();
    assert!(left.is_empty(), "workers {left:?} outlived an interrupted driver");
    if signal != 9 {
        // The shared block had been written under `shared`; nothing of it is left. (SIGKILL
        // gives the driver no chance to remove it.)
        let leftovers: Vec<_> =
            std::fs::read_dir(&shared).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(leftovers.is_empty(), "shared files outlived an interrupted driver: {leftovers:?}");
    }
    let _ = std::fs::remove_dir_all(&shared);
    status
}

#[test]
fn ctrl_c_kills_every_worker_and_removes_shared_files() {
    let _g = lock();
    let status = interrupt_driver(2);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), None, "{status}");
    assert_eq!(status.code(), Some(130), "{status}");
}

#[test]
fn workers_die_with_a_driver_killed_by_sigkill() {
    let _g = lock();
    let status = interrupt_driver(9);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{status}");
}

struct DiesInInit;
impl Task for DiesInInit {
    type Item = u64;
    type Output = u64;
    type Args = ();
    type Init = ();
    type State = ();
    fn init(_: &(), _: &()) -> Result<(), BoxError> {
        std::process::abort()
    }
    fn run(x: u64, _: &(), _: &mut ()) -> Result<u64, BoxError> {
        Ok(x)
    }
}
register_task!(DiesInInit);

#[test]
fn workers_that_always_die_at_start_end_the_job_instead_of_looping() {
    let _g = lock();
    let e = processes(2);
    let err = e.map(DiesInInit, 0..10u64).run().unwrap_err();
    assert!(err.to_string().contains("died before their init finished"), "{err}");
    assert!(err.to_string().contains("SIGABRT"), "{err}");
    assert_only_idle_workers(&e, "after workers dying at start");
    drop(e);
    assert_no_worker_left("after workers dying at start, engine dropped");
}

task!(
    /// Hangs on the item that starts with `H`; returns the length of the others.
    BigItems = |s: String| -> usize {
        if s.starts_with('H') {
            std::thread::sleep(Duration::from_secs(600));
        }
        s.len()
    }
);

#[test]
fn a_hung_worker_with_a_full_socket_does_not_stall_the_others() {
    let _g = lock();
    // 4 MiB items: more than a socket buffer holds, so the batch queued behind the hung item
    // cannot be written to that worker. The dispatch loop must not wait for it: the other
    // worker gets on with the job and the timeout still fires.
    let item = |c: char| std::iter::repeat_n(c, 4 << 20).collect::<String>();
    let items: Vec<String> = (0..8).map(|i| if i == 0 { item('H') } else { item('x') }).collect();
    let e = processes(2);
    let t0 = Instant::now();
    let all = e
        .map(BigItems, items)
        .batched(false)
        .item_timeout(Duration::from_millis(500))
        .retries(0)
        .collect_results()
        .unwrap();
    assert_eq!(all[0].as_ref().unwrap_err().kind, FailureKind::Timeout);
    for r in &all[1..] {
        assert_eq!(r.as_ref().unwrap(), &(4 << 20));
    }
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    assert_only_idle_workers(&e, "after a hung worker with a full socket");
    drop(e);
    assert_no_worker_left("after a hung worker with a full socket, engine dropped");
}

/// Where `the_driver_of_a_build_mismatch` waits (set by the test that runs it).
const MISMATCH_DIR: &str = "ADPE_TEST_MISMATCH_DIR";

#[test]
#[ignore = "the driver of workers_of_another_build_fail_the_first_job_at_once_naming_both_builds, run by it"]
fn the_driver_of_a_build_mismatch() {
    let dir = PathBuf::from(std::env::var_os(MISMATCH_DIR).expect("run by the mismatch test"));
    // The backend knows its executable's path now; the test then puts another build there.
    let e = processes(2);
    std::fs::write(dir.join("ready"), b"").unwrap();
    while !dir.join("go").exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    match e.map(Double, 0..100u64).batched(Batching::ChunkSize(10)).run() {
        Ok(_) => println!("mismatch: the job ran"),
        Err(err) => println!("mismatch: {err}"),
    }
}

#[test]
fn workers_of_another_build_fail_the_first_job_at_once_naming_both_builds() {
    let _g = lock();
    let dir = std::env::temp_dir().join(format!("adpe-mismatch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The driver runs a copy of this test binary; once its backend is built, that path gets
    // another program of this project (the `complete` example: another build ID) by rename,
    // so every worker it starts is of another build.
    let exe = dir.join("driver");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    let other = dir.join("other");
    std::fs::copy(example("complete"), &other).unwrap();
    let driver = std::process::Command::new(&exe)
        .args(["--ignored", "--exact", "the_driver_of_a_build_mismatch", "--nocapture", "--test-threads=1"])
        .env(MISMATCH_DIR, &dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join("ready").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::rename(&other, &exe).unwrap();
    let t0 = Instant::now();
    std::fs::write(dir.join("go"), b"").unwrap();
    let out = driver.wait_with_output().unwrap();
    let took = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::remove_dir_all(&dir).unwrap();
    let line = stdout.lines().find(|l| l.contains("mismatch: ")).unwrap_or_default().to_string();
    assert!(line.contains("no worker can run this job"), "{stdout}");
    assert!(line.contains("another build of the program (worker build-id-"), "{line}");
    assert!(line.contains(", driver build-id-"), "{line}");
    // Not a speed assert: no start timeout or retry loop is waited for.
    assert!(took < Duration::from_secs(30), "{took:?}");
}
