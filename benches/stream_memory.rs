//! Memory of a long ordered stream on the process backend, against a fixed chunk size
//! measured in the same run:
//!
//! a 10,000,000-item generator (`std::iter::from_fn`, no length) through
//! `engine.map(Double, gen).stream()` on 2 worker processes, every value consumed and checked
//! in order, with `Batching::Auto` and with `Batching::ChunkSize(10_000)`. Each configuration
//! runs in a fresh child process of this binary, so that the driver's peak RSS (`VmHWM`) is
//! its own; the workers' `VmHWM` is read from `/proc/<pid>/status` after the job, while they
//! idle in the pool, and summed with the driver's for the tree.
//!
//! `cargo bench --bench stream_memory --features process`. `ADPE_BENCH_STREAM_ITEMS` sets the
//! number of items (default 10,000,000), `ADPE_BENCH_RUNS` the runs (default 3).

use adparallelengine::{task, Batching, Engine, Kind, Progress};
use std::time::{Duration, Instant};

task!(Double = |x: u64| -> u64 { x * 2 });

/// Set in a child: the configuration it runs (`auto` or `chunk`).
const CONF_ENV: &str = "ADPE_BENCH_STREAM_CONF";

/// `VmHWM` of a process, in KiB (`self` or a pid).
fn vm_hwm_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// The pids of this process's children (the worker processes).
fn children() -> Vec<String> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    dir.filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        .filter(|p| {
            // `pid (comm) state ppid ...`: the comm may hold spaces, so split after its `)`.
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().nth(1) == Some(me.as_str())))
                .unwrap_or(false)
        })
        .collect()
}

/// One configuration, in a child: prints `RESULT <secs> <driver KiB> <workers KiB>`.
fn child(conf: &str) -> ! {
    let n: u64 = std::env::var("ADPE_BENCH_STREAM_ITEMS").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000_000);
    let batching = match conf {
        "auto" => Batching::Auto,
        _ => Batching::ChunkSize(10_000),
    };
    let engine = Engine::builder(Kind::Process)
        .max_workers(2)
        .batching(batching)
        .progress(Progress::quiet())
        .build()
        .expect("engine");
    // Workers up before the clock starts.
    engine.map(Double, 0..4u64).batched(false).run().expect("warm-up");
    let t0 = Instant::now();
    let mut i = 0u64;
    let generator = std::iter::from_fn(move || {
        (i < n).then(|| {
            i += 1;
            i - 1
        })
    });
    let mut seen = 0u64;
    for out in engine.map(Double, generator).stream().expect("stream") {
        assert_eq!(out.expect("item"), 2 * seen, "output {seen} out of order");
        seen += 1;
    }
    let took = t0.elapsed();
    assert_eq!(seen, n);
    let workers: u64 = children().iter().map(|p| vm_hwm_kib(p)).sum();
    println!("RESULT {} {} {}", took.as_secs_f64(), vm_hwm_kib("self"), workers);
    drop(engine);
    std::process::exit(0)
}

struct Run {
    time: Duration,
    driver_kib: u64,
    workers_kib: u64,
}

fn run_child(conf: &str) -> Run {
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env(CONF_ENV, conf)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("child");
    assert!(out.status.success(), "the {conf} child failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("RESULT ")).expect("a RESULT line");
    let f: Vec<f64> = line.split_whitespace().map(|v| v.parse().expect("number")).collect();
    Run { time: Duration::from_secs_f64(f[0]), driver_kib: f[1] as u64, workers_kib: f[2] as u64 }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    if let Ok(conf) = std::env::var(CONF_ENV) {
        child(&conf);
    }
    let runs: usize = std::env::var("ADPE_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    println!("10,000,000-item generator through the ordered stream(), process, 2 workers");
    println!(
        "    run  {:>9} {:>11} {:>11}   {:>9} {:>11} {:>11}   {:>9} {:>11}",
        "auto", "driver", "tree", "chunk:1e4", "driver", "tree", "time", "driver"
    );
    let (mut worst_driver, mut worst_ratio) = (0u64, 0f64);
    for r in 1..=runs {
        let a = run_child("auto");
        let c = run_child("chunk");
        worst_driver = worst_driver.max(a.driver_kib);
        worst_ratio = worst_ratio.max(a.time.as_secs_f64() / c.time.as_secs_f64());
        println!(
            "    {r:>3}  {:>8.2?} {:>7.1} MiB {:>7.1} MiB   {:>8.2?} {:>7.1} MiB {:>7.1} MiB   {:>8.2}x {:>10.2}x",
            a.time,
            mib(a.driver_kib),
            mib(a.driver_kib + a.workers_kib),
            c.time,
            mib(c.driver_kib),
            mib(c.driver_kib + c.workers_kib),
            a.time.as_secs_f64() / c.time.as_secs_f64(),
            a.driver_kib as f64 / c.driver_kib.max(1) as f64,
        );
    }
    println!("    (ratios: auto ÷ chunk:10000, time and driver peak RSS)");
    // For `cargo xtask bench`'s table: the worst run of `Auto`.
    let dir = std::env::var("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| "target".into());
    let dir = dir.join("adpe-bench");
    let text = format!("driver_peak_mib {:.1}\ntime_vs_chunk {:.3}\n", mib(worst_driver), worst_ratio);
    if std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join("stream_memory"), text)).is_err() {
        eprintln!("cannot write {}", dir.join("stream_memory").display());
    }
}
