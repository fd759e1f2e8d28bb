//! `bench`: runs the criterion benches and prints each measurement with its ratio to the
//! baseline measured in the same group and run (bare rayon, a raw socket, ...). Ratios, not
//! absolute times, are what we track: this machine's timings drift from run to run.

use crate::matrix;
use std::path::Path;
use std::process::{Command, ExitCode};

/// One line of the ratio table: a criterion measurement of ours and its baseline, from the
/// same group of the same run, and the goal the ratio is held to (issue 13).
struct Pair {
    /// What is measured.
    work: &'static str,
    /// The criterion group (its directory under `target/criterion`).
    group: &'static str,
    /// Our function in the group.
    ours: &'static str,
    /// The baseline's function in the group.
    baseline: &'static str,
    /// The least `baseline time / our time` we aim at; for a [`Pair::bytes`] row, the least
    /// throughput in GB/s.
    goal: f64,
    /// Bytes one measurement writes: the row's goal is then a throughput.
    bytes: Option<f64>,
}

/// Every ratio `cargo xtask bench` prints, in order.
const PAIRS: &[Pair] = &[
    Pair {
        work: "threads map(vec), 100k",
        group: "tiny_items_100k",
        ours: "engine_vec",
        baseline: "rayon_vec",
        goal: 0.8,
        bytes: None,
    },
    Pair {
        work: "threads map(vec), 1M",
        group: "tiny_items_1M",
        ours: "engine_vec",
        baseline: "rayon_vec",
        goal: 0.8,
        bytes: None,
    },
    Pair {
        work: "threads map(0..n), 100k",
        group: "tiny_items_100k",
        ours: "engine_range",
        baseline: "rayon_range",
        goal: 0.8,
        bytes: None,
    },
    Pair {
        work: "threads map(0..n), 1M",
        group: "tiny_items_1M",
        ours: "engine_range",
        baseline: "rayon_range",
        goal: 0.8,
        bytes: None,
    },
    Pair {
        work: "threads map(iter().copied()), 1M",
        group: "tiny_items_1M",
        ours: "engine_copied",
        baseline: "rayon_copied",
        goal: 0.8,
        bytes: None,
    },
    Pair {
        work: "threads map(from_fn) vs par_bridge, 1M",
        group: "tiny_items_1M",
        ours: "engine_from_fn",
        baseline: "rayon_par_bridge",
        goal: 0.5,
        bytes: None,
    },
    Pair {
        work: "first job of a fresh engine, 100k",
        group: "first_job_100k",
        ours: "engine_fresh",
        baseline: "rayon_fresh_pool",
        goal: 0.5,
        bytes: None,
    },
    Pair {
        work: "process Auto, 1M",
        group: "tiny_items_1M",
        ours: "process_auto",
        baseline: "rayon_into_par_iter",
        goal: 0.25,
        bytes: None,
    },
    Pair {
        work: "1 GiB share written (streamed put)",
        group: "share_write_1GiB",
        ours: "streamed_put",
        baseline: "fs_write",
        goal: 1.0,
        bytes: Some(SHARE_FILE_BYTES),
    },
];

/// The size of the 1 GiB table's IPC file in `benches/share_write.rs` (two f64 columns of
/// 2^26 rows, plus about 1 KiB of IPC framing).
const SHARE_FILE_BYTES: f64 = (1u64 << 30) as f64;

/// The criterion benches the table reads, with their features.
const CRITERION: &[(&str, &[&str])] =
    &[("threads_vs_rayon", &["--features", "threads"]), ("share_write", &["--features", "process,arrow"])];

/// Benches with their own timing, that print their own ratio tables (their baselines need
/// processes of their own: a raw socket ping-pong, a serial run). `process` also measures
/// the criterion group `tiny_items_1M`'s process functions.
const OWN_TIMING: &[(&str, &[&str])] = &[("process", &[]), ("stream_memory", &["--features", "process"])];

/// The mean (ns) of `function` in `group`, under its one parameter directory.
fn measured(criterion: &Path, group: &str, function: &str) -> Option<f64> {
    let dir = criterion.join(group).join(function);
    if dir.join("new").is_dir() {
        // A function without a parameter (`BenchmarkId::from_parameter`).
        return mean_ns(&dir);
    }
    let mut params: Vec<_> = std::fs::read_dir(&dir).ok()?.flatten().map(|e| e.path()).collect();
    params.retain(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "report"));
    params.sort();
    params.first().and_then(|p| mean_ns(p))
}

/// The ratio table: one row per [`PAIRS`] entry found under `criterion`.
fn table(criterion: &Path) -> String {
    let mut out = format!(
        "{:<42} {:>22} {:>22} {:>16} {:>10} {:>4}\n",
        "work", "ours", "baseline", "baseline / ours", "goal", "met"
    );
    for p in PAIRS {
        let (ours, base) = (measured(criterion, p.group, p.ours), measured(criterion, p.group, p.baseline));
        // A throughput row shows GB/s next to the time, and its goal is one.
        let show = |ns: f64| match p.bytes {
            Some(bytes) => format!("{} ({:.2} GB/s)", human(ns), bytes / ns),
            None => human(ns),
        };
        let (o, b, r) = match (ours, base) {
            (Some(o), Some(b)) => (show(o), show(b), format!("{:.2}", b / o)),
            (o, b) => (o.map(show).unwrap_or("-".into()), b.map(show).unwrap_or("-".into()), "-".into()),
        };
        let (goal, met) = match (p.bytes, ours, base) {
            (Some(bytes), Some(o), _) => (format!(">={:.2} GB/s", p.goal), bytes / o >= p.goal),
            (Some(_), None, _) => (format!(">={:.2} GB/s", p.goal), false),
            (None, Some(o), Some(b)) => (format!(">={:.2}", p.goal), b / o >= p.goal),
            (None, _, _) => (format!(">={:.2}", p.goal), false),
        };
        let met = if ours.is_none() {
            "-"
        } else if met {
            "yes"
        } else {
            "no"
        };
        out.push_str(&format!("{:<42} {o:>22} {b:>22} {r:>16} {goal:>10} {met:>4}\n", p.work));
    }
    out
}

/// The row of `benches/stream_memory.rs` (which writes its worst `Auto` run to `file`): the
/// driver's peak RSS of a 10M-item process stream (goal: 64 MiB at most), and its time against
/// `ChunkSize(10_000)` in the same run.
fn stream_row(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let field = |k: &str| -> Option<f64> { text.lines().find_map(|l| l.strip_prefix(k)?.trim().parse().ok()) };
    match (field("driver_peak_mib "), field("time_vs_chunk ")) {
        (Some(mib), Some(ratio)) => format!(
            "{:<42} {:>22} {:>22} {:>16} {:>10} {:>4}\n",
            "10M-item process stream, driver peak RSS",
            format!("{mib:.1} MiB"),
            "ChunkSize(10_000)",
            format!("time {ratio:.2}x"),
            "<=64 MiB",
            if mib <= 64.0 { "yes" } else { "no" }
        ),
        _ => format!("{:<42} {:>22}\n", "10M-item process stream, driver peak RSS", "-"),
    }
}

/// The mean point estimate (ns) of one criterion measurement, read from its `estimates.json`.
fn mean_ns(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("new").join("estimates.json")).ok()?;
    let mean = &text[text.find("\"mean\"")?..];
    let pe = &mean[mean.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = pe.find([',', '}'])?;
    pe[..end].trim().parse().ok()
}

fn human(ns: f64) -> String {
    match ns {
        n if n >= 1e9 => format!("{:.3} s", n / 1e9),
        n if n >= 1e6 => format!("{:.3} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.1} µs", n / 1e3),
        n => format!("{n:.0} ns"),
    }
}

/// Runs every bench (extra arguments go to the criterion ones) and prints the ratio table;
/// with `--table` among them, only the benches the table reads (no MPI, no cluster: three
/// runs of the table fit in half an hour).
pub fn bench(extra: &[String]) -> ExitCode {
    let table_only = extra.iter().any(|a| a == "--table");
    let extra: Vec<&String> = extra.iter().filter(|a| *a != "--table").collect();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = matrix::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR").map(|d| root.join(d)).unwrap_or_else(|| root.join("target"));
    let criterion = target.join("criterion");
    // Stale results (of renamed functions, of an earlier run) must not show up in the table.
    for p in PAIRS {
        let _ = std::fs::remove_dir_all(criterion.join(p.group));
    }
    let mut ok = true;
    for (bench, features) in CRITERION {
        let status = Command::new(&cargo)
            .current_dir(&root)
            .args(["bench", "--bench", bench])
            .args(*features)
            .arg("--")
            .args(&extra)
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("bench {bench} failed: {status:?}");
            ok = false;
        }
    }
    let mut own: Vec<(&str, Vec<&str>)> = OWN_TIMING.iter().map(|(b, f)| (*b, f.to_vec())).collect();
    if !table_only {
        ok &= cluster_benches(&mut own);
    }
    for (bench, features) in own {
        let status = Command::new(&cargo).current_dir(&root).args(["bench", "--bench", bench]).args(features).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("bench {bench} failed: {status:?}");
            ok = false;
        }
    }
    println!("\nratios, each against its baseline in the same run (rayon, fs::write):");
    print!("{}", table(&criterion));
    print!("{}", stream_row(&target.join("adpe-bench").join("stream_memory")));
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Adds the benches of MPI (when installed) and of the clusters (Kubernetes' local API, Dask,
/// Slurm) to `own`; false if MPI's build check failed.
fn cluster_benches(own: &mut Vec<(&str, Vec<&str>)>) -> bool {
    let mut ok = true;
    // The MPI bench re-launches itself under `mpirun -n 3`, when MPI is installed here.
    match crate::mpi::build_with_mpi() {
        Ok(true) => own.push(("mpi", vec!["--features", "mpi"])),
        Ok(false) => eprintln!("bench mpi skipped: no MPI launcher on this machine"),
        Err(e) => {
            eprintln!("bench mpi: {e}");
            ok = false;
        }
    }
    // The Kubernetes bench runs its pods on the local API of tools/k8s-sim (python3).
    own.push(("k8s", vec!["--features", "k8s"]));
    // The Dask and Slurm benches start a local cluster of their own (and say so when they cannot).
    own.push(("dask", vec!["--features", "dask,process"]));
    own.push(("slurm", vec!["--features", "slurm,process"]));
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(dir: &Path, ns: f64) {
        std::fs::create_dir_all(dir.join("new")).unwrap();
        let json =
            format!("{{\"mean\":{{\"confidence_interval\":{{}},\"point_estimate\":{ns},\"standard_error\":1.0}}}}");
        std::fs::write(dir.join("new").join("estimates.json"), json).unwrap();
    }

    #[test]
    fn the_table_divides_each_baseline_by_ours() {
        let root = std::env::temp_dir().join(format!("adpe-bench-table-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        estimate(&root.join("tiny_items_1M/engine_range/2"), 2_000_000.0);
        estimate(&root.join("tiny_items_1M/rayon_range/2"), 1_000_000.0);
        estimate(&root.join("share_write_1GiB/streamed_put"), 4e9);
        estimate(&root.join("share_write_1GiB/fs_write"), 1e9);
        let t = table(&root);
        let row = |work: &str| t.lines().find(|l| l.starts_with(work)).unwrap_or_default().to_string();
        let range = row("threads map(0..n), 1M");
        assert!(range.contains("2.000 ms") && range.contains("1.000 ms") && range.contains(" 0.50 "), "{t}");
        let share = row("1 GiB share written");
        assert!(share.contains(" 0.25 ") && share.contains("(0.27 GB/s)") && share.ends_with(" no"), "{t}");
        assert!(range.ends_with(" no"), "0.50 is below the goal of 0.8: {t}");
        // Not measured: dashes, never a made-up figure.
        assert!(row("process Auto, 1M").contains(" - "), "{t}");
        std::fs::write(root.join("stream"), "driver_peak_mib 14.5\ntime_vs_chunk 1.020\n").unwrap();
        let s = stream_row(&root.join("stream"));
        assert!(s.contains("14.5 MiB") && s.contains("time 1.02x") && s.trim_end().ends_with("yes"), "{s}");
        assert!(stream_row(&root.join("missing")).trim_end().ends_with('-'));
        let _ = std::fs::remove_dir_all(&root);
    }
}
