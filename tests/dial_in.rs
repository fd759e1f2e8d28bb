//! engine-core's dial-in layer on its own, with local processes dialing over loopback (the
//! launcher of `test-support`'s `local_dial_in`): 128 workers at once, a worker dialing in
//! twice under one name, a worker lost mid-job. Results are counted by items, never by
//! workers: nothing is lost or returned twice, and the driver's threads stay bounded by the
//! number of workers, never by the items.

use adparallelengine::{task, Engine};
use adparallelengine_core::remote::dial_in::{ENV_DRIVER, ENV_NAME, ENV_SECRET};
use adparallelengine_test_support::local_dial_in::LocalDialIn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

task!(Double = |x: u64| -> u64 { x * 2 });
task!(
    Nap = |x: u64| -> u64 {
        std::thread::sleep(Duration::from_millis(10));
        x + 1
    }
);

/// Tests here count processes and threads: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn threads_now() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

fn rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Whether a process is gone (or a zombie not yet reaped).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rfind(')').and_then(|i| stat[i + 2..].chars().next()) == Some('Z'),
    }
}

/// The most threads this process had while `f` ran (sampled every 5 ms).
fn peak_threads<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(threads_now()));
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                peak.fetch_max(threads_now(), Ordering::AcqRel);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let r = f();
    stop.store(true, Ordering::Release);
    sampler.join().unwrap();
    // The sampler itself is not the engine's.
    (r, peak.load(Ordering::Acquire).saturating_sub(1))
}

/// Per-item wall time of `n` tiny items on `workers` dial-in workers (after a warm-up job
/// that brings every worker in), in nanoseconds.
fn per_item_ns(workers: usize, n: u64) -> f64 {
    let engine = Engine::from_backend(LocalDialIn::new(workers).unwrap());
    assert_eq!(engine.map(Double, 0..(4 * workers as u64)).run().unwrap().len(), 4 * workers);
    let t = Instant::now();
    let out = engine.map(Double, 0..n).run().unwrap();
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    assert!(out.iter().enumerate().all(|(i, &v)| v == 2 * i as u64));
    ns
}

#[test]
fn a_hundred_and_twenty_eight_dial_in_workers_run_big_jobs_with_bounded_threads() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    const WORKERS: usize = 128;
    let threads_before = threads_now();
    let rss_before = rss_kib();
    let engine = Engine::from_backend(LocalDialIn::new(WORKERS).unwrap());
    let started = Instant::now();
    let (tiny, tiny_peak) = peak_threads(|| engine.map(Double, 0..1_000_000u64).run().unwrap());
    let tiny_time = started.elapsed();
    assert_eq!(tiny.len(), 1_000_000);
    assert!(tiny.iter().enumerate().all(|(i, &v)| v == 2 * i as u64), "every tiny item once, in order");
    let pids = engine.backend().child_pids();
    assert_eq!(pids.len(), WORKERS, "one process per worker, none started twice");
    let naps_started = Instant::now();
    let (naps, naps_peak) = peak_threads(|| engine.map(Nap, 0..1000u64).run().unwrap());
    let naps_time = naps_started.elapsed();
    assert_eq!(naps, (1..=1000u64).collect::<Vec<_>>());
    let rss_during = rss_kib();
    // Each worker costs the driver a reader thread and, only while a frame does not fit its
    // socket, a writer: the driver's threads are bounded by the workers, not by the items.
    let bound = threads_before + 2 * WORKERS + 16;
    assert!(tiny_peak <= bound, "{tiny_peak} threads for 1,000,000 items on {WORKERS} workers (bound {bound})");
    assert!(naps_peak <= bound, "{naps_peak} threads for 1,000 items on {WORKERS} workers (bound {bound})");
    drop(engine);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids.iter().all(|&p| gone(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pids.iter().all(|&p| gone(p)), "every worker ended with the engine");
    // The jobs' reader threads end as their connections close, a moment after the drop.
    let deadline = Instant::now() + Duration::from_secs(10);
    while threads_now() > threads_before + 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let threads_after = threads_now();
    assert!(threads_after <= threads_before + 4, "threads left: {threads_before} before, {threads_after} after");
    // Figures for the record (no timed asserts: the machine is shared).
    let (ns2, ns128) = (per_item_ns(2, 200_000), per_item_ns(WORKERS, 200_000));
    eprintln!(
        "dial-in scale: {WORKERS} workers; 1,000,000 tiny items in {tiny_time:?} (peak {tiny_peak} threads); \
         1,000 x 10 ms in {naps_time:?} (peak {naps_peak} threads); driver RSS {rss_before} -> {rss_during} KiB; \
         tiny items: {ns2:.0} ns/item on 2 workers, {ns128:.0} ns/item on {WORKERS} ({:.2}x)",
        ns128 / ns2
    );
}

#[test]
fn a_worker_dialing_in_twice_under_one_name_is_one_more_worker_and_nothing_is_counted_twice() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let backend = LocalDialIn::new(2).unwrap();
    let engine = Engine::from_backend(backend);
    assert_eq!(engine.map(Double, 0..10u64).run().unwrap(), (0..10u64).map(|x| 2 * x).collect::<Vec<_>>());
    let pids = engine.backend().child_pids();
    assert_eq!(pids.len(), 2);
    // A worker is lost mid-job (a Dask worker killed, a pod evicted), and one more process
    // dials in under a name already seen: the lost one's items are re-run, none twice.
    let (addr, secret) = engine.backend().dial_env();
    let extra = std::process::Command::new(std::env::current_exe().unwrap())
        .env(ENV_DRIVER, &addr)
        .env(ENV_SECRET, &secret)
        .env(ENV_NAME, "local-0")
        .spawn()
        .unwrap();
    let victim = pids[0] as i32;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        // SAFETY: kill(2) of a child process of this test by its pid, which it has not
        // reaped yet (the launcher keeps its Child until the engine stops it).
        unsafe { libc::kill(victim, libc::SIGKILL) };
    });
    let out = engine.map(Nap, 0..200u64).run().unwrap();
    killer.join().unwrap();
    assert_eq!(out, (1..=200u64).collect::<Vec<_>>(), "every item once, in order");
    drop(engine);
    // It ends with the driver, whether it was taken in as the replacement or still waited.
    let mut extra = extra;
    extra.wait().unwrap();
}
