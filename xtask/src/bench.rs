//! `bench`: runs the criterion benches and prints each measurement with its ratio to the
//! baseline measured in the same group and run (bare rayon, a raw socket, ...). Ratios, not
//! absolute times, are what we track: this machine's timings drift from run to run.

use crate::matrix;
use std::path::Path;
use std::process::{Command, ExitCode};

/// A bench target, its criterion group, and the function that is the group's baseline.
struct Group {
    bench: &'static str,
    group: &'static str,
    baseline: &'static str,
}

const GROUPS: &[Group] = &[Group { bench: "threads_vs_rayon", group: "tiny_items_1M", baseline: "rayon_par_iter" }];

/// Benches with their own timing, that print their own ratio tables (their baselines need
/// processes of their own: a raw socket ping-pong, a serial run).
const OWN_TIMING: &[&str] = &["process"];

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

/// Runs every bench group (extra arguments go to criterion) and prints the ratio table.
pub fn bench(extra: &[String]) -> ExitCode {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = matrix::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR").map(|d| root.join(d)).unwrap_or_else(|| root.join("target"));
    let mut ok = true;
    for g in GROUPS {
        let dir = target.join("criterion").join(g.group);
        // Stale results of renamed functions must not show up in the table.
        let _ = std::fs::remove_dir_all(&dir);
        let status =
            Command::new(&cargo).current_dir(&root).args(["bench", "--bench", g.bench, "--"]).args(extra).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("bench {} failed: {status:?}", g.bench);
            ok = false;
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("no criterion results under {}", dir.display());
            ok = false;
            continue;
        };
        // criterion lays results out as GROUP/FUNCTION/PARAMETER/new/estimates.json.
        let mut rows = vec![];
        for f in entries.flatten().filter(|e| e.path().is_dir() && e.file_name() != "report") {
            for p in std::fs::read_dir(f.path()).into_iter().flatten().flatten() {
                if let Some(ns) = mean_ns(&p.path()) {
                    rows.push((
                        f.file_name().to_string_lossy().into_owned(),
                        p.file_name().to_string_lossy().into_owned(),
                        ns,
                    ));
                }
            }
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let base = rows.iter().find(|r| r.0 == g.baseline).map(|r| r.2);
        println!("\n{} (baseline: {})", g.group, g.baseline);
        println!("{:<32} {:>8} {:>12} {:>22}", "function", "param", "mean", "baseline / this");
        for (f, p, ns) in &rows {
            let ratio = base.map(|b| format!("{:.2}", b / ns)).unwrap_or_else(|| "-".into());
            println!("{f:<32} {p:>8} {:>12} {ratio:>22}", human(*ns));
        }
    }
    let mut own: Vec<(&str, Vec<&str>)> = OWN_TIMING.iter().map(|b| (*b, vec![])).collect();
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
    for (bench, features) in own {
        let status = Command::new(&cargo).current_dir(&root).args(["bench", "--bench", bench]).args(features).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("bench {bench} failed: {status:?}");
            ok = false;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
