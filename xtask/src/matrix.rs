//! `test-matrix`: build the `complete` example once, then run it over every combination of its
//! arguments for every engine kind, checking each output with [`crate::check`]. The
//! combinations (the cells) and the expected values come from the conformance kit
//! (`adparallelengine::conformance`), which also checks the same matrix in-process.
//!
//! A kind is probed first (`complete KIND False False False`); a kind whose probe fails with
//! "is not available" on stderr is not built in this version and is skipped. Cells run one at a
//! time: the parallel backends use every core of the machine themselves.

use crate::check::{self, Expectation};
use crate::run::{self, Outcome};
use crate::service::Service;
use adparallelengine::conformance::{self, py_bool, MatrixCell};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

/// Every engine kind, in canonical spelling and report order.
pub const KINDS: [&str; 7] = ["serial", "threads", "process", "mpi", "k8s", "dask", "slurm"];
/// Time limit of one run of the example (probe or cell).
const TIMEOUT: Duration = Duration::from_secs(120);
/// Name of the example that is built and run.
const EXAMPLE: &str = "complete";
/// Marker on the probe's stderr of a kind this version does not build.
const NOT_AVAILABLE: &str = "is not available";
/// Longest reason printed in the table (the failure details print it whole).
const REASON_WIDTH: usize = 70;
/// How many failing cells get their output printed.
const MAX_DETAILS: usize = 10;
/// How many trailing lines of stdout and stderr a failure detail shows.
const TAIL_LINES: usize = 12;

/// Options of `test-matrix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Kinds to run, canonical names from [`KINDS`].
    pub kinds: Vec<String>,
    /// Build and run the release profile (else debug).
    pub release: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { kinds: KINDS.iter().map(|k| k.to_string()).collect(), release: true }
    }
}

/// The command prefix that starts the example for `kind` (the binary and its arguments follow):
/// `mpirun -n 3` for `mpi` (rank 0 drives, 2 worker ranks), the local Kubernetes API's
/// command mode for `k8s`, nothing for the others.
pub fn launcher(kind: &str) -> Vec<String> {
    match kind {
        "mpi" => crate::mpi::launch_prefix(MPI_RANKS),
        "k8s" => crate::k8s::launch_prefix(&workspace_root()),
        _ => Vec::new(),
    }
}

/// Ranks of an `mpi` run: the driver and two workers.
pub const MPI_RANKS: usize = 3;

/// One combination of the example's arguments: a kind and a cell of the kit's matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// KIND.
    pub kind: String,
    /// GATHER, BATCHED, SHARE, GENERATOR, MAX_WORKERS.
    pub cell: MatrixCell,
}

impl Cell {
    /// The example's arguments: `KIND GATHER BATCHED SHARE GENERATOR MAX_WORKERS`.
    pub fn args(&self) -> Vec<String> {
        std::iter::once(self.kind.clone()).chain(self.cell.args()).collect()
    }

    /// What a correct run of this cell prints.
    pub fn expectation(&self) -> Expectation {
        Expectation::new(&self.kind, self.cell.gather, &self.cell.max_workers_arg())
    }
}

/// Every cell of one kind, in run order: the kit's [`conformance::matrix_cells`].
pub fn cells(kind: &str) -> Vec<Cell> {
    conformance::matrix_cells().into_iter().map(|cell| Cell { kind: kind.to_string(), cell }).collect()
}

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    dir.parent().map(Path::to_path_buf).unwrap_or(dir)
}

/// Builds the example; returns the path of its binary.
fn build(root: &Path, release: bool) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(root).arg("build");
    if release {
        cmd.arg("--release");
    }
    cmd.args(["--example", EXAMPLE]);
    cmd.args(crate::mpi::feature_args()?);
    eprintln!("building: {cmd:?}");
    let status = cmd.status().map_err(|e| format!("cannot run {}: {e}", cargo.to_string_lossy()))?;
    if !status.success() {
        return Err(format!("`cargo build --example {EXAMPLE}` failed: {status}"));
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    let profile = if release { "release" } else { "debug" };
    let bin = target.join(profile).join("examples").join(format!("{EXAMPLE}{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        return Err(format!("built, but {} does not exist", bin.display()));
    }
    Ok(bin)
}

/// The command running the example for `kind` with `args`, from the workspace root, against
/// the kind's cluster if it has one.
fn command(root: &Path, bin: &Path, kind: &str, args: &[String], service: Option<&Service>) -> Command {
    let prefix = launcher(kind);
    let mut cmd = match prefix.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(args).current_dir(root);
    match kind {
        "mpi" => crate::mpi::launch_env(&mut cmd),
        "k8s" => crate::k8s::launch_env(&mut cmd),
        _ => {}
    }
    if let Some(s) = service {
        s.launch_env(&mut cmd, Some(bin));
    }
    cmd
}

/// The command line of a run as shown in reports: `[launcher] complete ARGS`.
fn shown(kind: &str, args: &[String]) -> String {
    let mut words = launcher(kind);
    words.push(EXAMPLE.to_string());
    words.extend(args.iter().cloned());
    words.join(" ")
}

/// The last `n` lines of `text`, indented.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!("    ... ({skip} lines before)\n"));
    }
    for l in &lines[skip..] {
        out.push_str(&format!("    {l}\n"));
    }
    out
}

/// Everything worth knowing about a failed run: its command line, how it ended, its output.
fn detail(kind: &str, args: &[String], result: Result<&Outcome, &std::io::Error>) -> String {
    let mut s = format!("  $ {}\n", shown(kind, args));
    match result {
        Err(e) => s.push_str(&format!("  could not start: {e}\n")),
        Ok(o) => {
            s.push_str(&format!("  ended: {} after {} ms\n", o.describe(), o.elapsed.as_millis()));
            s.push_str(&format!("  stdout:\n{}", tail(&o.stdout, TAIL_LINES)));
            s.push_str(&format!("  stderr:\n{}", tail(&o.stderr, TAIL_LINES)));
        }
    }
    s
}

/// The most telling line of a failed run's stderr: the first `Error`/`panicked` line, else the
/// last non-empty one.
fn stderr_reason(stderr: &str) -> &str {
    let lines = || stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    lines().find(|l| l.starts_with("Error") || l.contains("panicked")).or_else(|| lines().next_back()).unwrap_or("")
}

/// How probing a kind went.
#[derive(Debug)]
enum Probe {
    /// The kind runs.
    Available,
    /// The kind is not built in this version; the reason line from stderr.
    NotBuilt(String),
    /// The probe failed otherwise: a short reason and the details.
    Failed(String, String),
}

/// The arguments of a probe: `KIND False False False`.
fn probe_args(kind: &str) -> Vec<String> {
    [kind, "False", "False", "False"].map(String::from).to_vec()
}

/// Runs `complete KIND False False False` once.
fn probe(root: &Path, bin: &Path, kind: &str, service: Option<&Service>) -> Probe {
    let args = probe_args(kind);
    classify_probe(kind, run::run(command(root, bin, kind, &args, service), TIMEOUT))
}

/// Classifies the outcome of a probe run.
fn classify_probe(kind: &str, result: std::io::Result<Outcome>) -> Probe {
    let args = probe_args(kind);
    match result {
        Err(e) => Probe::Failed(format!("cannot start: {e}"), detail(kind, &args, Err(&e))),
        Ok(o) if o.success() => Probe::Available,
        Ok(o) => {
            let not_built = o.stderr.lines().find(|l| l.contains(NOT_AVAILABLE));
            match not_built {
                Some(line) if !o.timed_out() => Probe::NotBuilt(line.trim().to_string()),
                _ => {
                    let mut reason = o.describe();
                    let line = stderr_reason(&o.stderr);
                    if !line.is_empty() {
                        reason = format!("{reason}: {line}");
                    }
                    Probe::Failed(reason, detail(kind, &args, Ok(&o)))
                }
            }
        }
    }
}

/// The result of one cell.
struct CellResult {
    /// The cell.
    cell: Cell,
    /// Ok, or a short reason.
    result: Result<(), String>,
    /// Run time in milliseconds.
    ms: u128,
    /// Command line and output of a failed run (None for a pass or a failed probe).
    detail: Option<String>,
}

/// Runs one cell and checks its output.
fn run_cell(root: &Path, bin: &Path, cell: Cell, service: Option<&Service>) -> CellResult {
    let args = cell.args();
    let (result, ms, detail) = match run::run(command(root, bin, &cell.kind, &args, service), TIMEOUT) {
        Err(e) => (Err(format!("cannot start: {e}")), 0, Some(detail(&cell.kind, &args, Err(&e)))),
        Ok(o) => {
            let ms = o.elapsed.as_millis();
            let result = if o.timed_out() {
                Err("timeout".to_string())
            } else if !o.success() {
                let line = stderr_reason(&o.stderr);
                Err(format!("{}: {line}", o.describe()))
            } else {
                check::check_output(&o.stdout, &cell.expectation())
            };
            let detail = result.is_err().then(|| detail(&cell.kind, &args, Ok(&o)));
            (result, ms, detail)
        }
    };
    CellResult { cell, result, ms, detail }
}

/// Cuts `s` to at most `n` characters, marking the cut.
fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(n.saturating_sub(3)).collect();
        out.push_str("...");
        out
    }
}

/// Prints the table's header line.
fn print_header() {
    println!(
        "{:<8} {:<6} {:<7} {:<5} {:<9} {:<11} {:<10} {:>9}",
        "kind", "gather", "batched", "share", "generator", "max_workers", "result", "ms"
    );
    println!("{}", "-".repeat(8 + 6 + 7 + 5 + 9 + 11 + 10 + 9 + 7));
}

/// Prints one row of the table.
fn print_row(r: &CellResult) {
    let (kind, c) = (&r.cell.kind, &r.cell.cell);
    let result = match &r.result {
        Ok(()) => "PASS".to_string(),
        Err(reason) => format!("FAIL: {}", shorten(reason, REASON_WIDTH)),
    };
    println!(
        "{:<8} {:<6} {:<7} {:<5} {:<9} {:<11} {:<10} {:>9}",
        kind,
        py_bool(c.gather),
        conformance::batched_arg(c.batched),
        py_bool(c.share),
        py_bool(c.generator),
        c.max_workers_arg(),
        result,
        r.ms
    );
}

/// Per-kind tally.
struct KindSummary {
    /// The kind.
    kind: String,
    /// Cells passed.
    passed: usize,
    /// Cells failed.
    failed: usize,
    /// Total run time of its cells, in milliseconds.
    ms: u128,
    /// Why the kind was skipped, if it was.
    skipped: Option<String>,
}

/// Runs `test-matrix`; the exit code is 1 if any cell failed or none ran.
pub fn test_matrix(opts: &Options) -> ExitCode {
    let root = workspace_root();
    let bin = match build(&root, opts.release) {
        Ok(bin) => bin,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("binary: {}", bin.display());

    let mut summaries = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut header_printed = false;
    for kind in &opts.kinds {
        let mut summary = KindSummary { kind: kind.clone(), passed: 0, failed: 0, ms: 0, skipped: None };
        // The kind's cluster lives as long as its cells run (and on this thread).
        let service = match Service::start(kind) {
            Ok(s) => s,
            Err(e) => {
                println!("kind {kind}: {e}; all its cells fail");
                failures.push(e);
                summary.failed = cells(kind).len();
                summaries.push(summary);
                continue;
            }
        };
        if let Some(why) = service.as_ref().and_then(Service::missing) {
            println!("kind {kind}: no cluster here, skipped ({why})");
            summary.skipped = Some(why.to_string());
            summaries.push(summary);
            continue;
        }
        let probe_failure = match probe(&root, &bin, kind, service.as_ref()) {
            Probe::Available => None,
            Probe::NotBuilt(reason) => {
                println!("kind {kind}: not built, skipped ({reason})");
                summary.skipped = Some(reason);
                summaries.push(summary);
                continue;
            }
            Probe::Failed(reason, details) => {
                println!("kind {kind}: probe failed ({reason}); all its cells fail");
                failures.push(format!("probe of kind {kind} failed: {reason}\n{details}"));
                Some(reason)
            }
        };
        if !header_printed {
            print_header();
            header_printed = true;
        }
        for cell in cells(kind) {
            let r = match &probe_failure {
                Some(reason) => {
                    CellResult { cell, result: Err(format!("probe failed: {reason}")), ms: 0, detail: None }
                }
                None => run_cell(&root, &bin, cell, service.as_ref()),
            };
            print_row(&r);
            summary.ms += r.ms;
            match &r.result {
                Ok(()) => summary.passed += 1,
                Err(reason) => {
                    summary.failed += 1;
                    if let Some(d) = &r.detail {
                        failures.push(format!("{reason}\n{d}"));
                    }
                }
            }
        }
        summaries.push(summary);
    }

    if !failures.is_empty() {
        println!();
        println!("failures:");
        for f in failures.iter().take(MAX_DETAILS) {
            println!("- {f}");
        }
        if failures.len() > MAX_DETAILS {
            println!("... and {} more failures", failures.len() - MAX_DETAILS);
        }
    }

    println!();
    let (mut passed, mut failed) = (0, 0);
    let mut skipped = Vec::new();
    for s in &summaries {
        match &s.skipped {
            Some(_) => {
                println!("{:<8} skipped (not built)", s.kind);
                skipped.push(s.kind.as_str());
            }
            None => println!("{:<8} {} passed, {} failed, {:.1} s", s.kind, s.passed, s.failed, s.ms as f64 / 1000.0),
        }
        passed += s.passed;
        failed += s.failed;
    }
    if skipped.is_empty() {
        println!("skipped kinds: none");
    } else {
        println!("skipped kinds: {}", skipped.join(", "));
    }
    let ran = passed + failed;
    if ran == 0 {
        println!("error: no cell ran");
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 || ran == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixty_four_cells_per_kind() {
        let cs = cells("threads");
        assert_eq!(cs.len(), 64);
        assert_eq!(cs[0].args(), ["threads", "True", "False", "True", "True", "default"]);
        assert_eq!(cs[63].args(), ["threads", "False", "auto", "False", "False", "1"]);
        let mut all: Vec<_> = cs.iter().map(Cell::args).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 64);
    }

    #[test]
    fn expected_backend() {
        let c = |kind: &str, max_workers: Option<usize>| Cell {
            kind: kind.into(),
            cell: MatrixCell {
                gather: true,
                batched: adparallelengine::Batching::Batches(16),
                share: false,
                generator: false,
                max_workers,
            },
        };
        assert_eq!(c("threads", None).expectation().backend, "threads");
        assert_eq!(c("threads", Some(1)).expectation().backend, "serial");
        assert_eq!(c("serial", None).expectation().backend, "serial");
        assert_eq!(c("process", None).expectation().backend, "process");
        assert_eq!(c("mpi", Some(1)).expectation().backend, "mpi");
    }

    #[test]
    fn only_mpi_and_k8s_have_a_launcher() {
        for k in KINDS.into_iter().filter(|k| *k != "mpi" && *k != "k8s") {
            assert!(launcher(k).is_empty(), "{k}");
        }
        let k8s = launcher("k8s");
        assert_eq!(k8s[0], "python3");
        assert!(k8s[1].ends_with("tools/k8s-sim/k8s_sim.py") && Path::new(&k8s[1]).is_file(), "{k8s:?}");
        assert_eq!(k8s.last().map(String::as_str), Some("--"));
        let mpi = launcher("mpi");
        if crate::mpi::available() {
            assert!(mpi[0] == "mpirun" || mpi[0] == "mpiexec", "{mpi:?}");
            assert_eq!(mpi[1..3], ["-n".to_string(), MPI_RANKS.to_string()]);
        } else {
            assert!(mpi.is_empty(), "{mpi:?}");
        }
        assert_eq!(shown("serial", &["serial".into(), "True".into()]), "complete serial True");
    }

    #[cfg(unix)]
    #[test]
    fn probe_outcomes() {
        let sh = |script: &str| {
            let mut c = Command::new("sh");
            c.args(["-c", script]);
            run::run(c, Duration::from_secs(30))
        };
        assert!(matches!(classify_probe("serial", sh("exit 0")), Probe::Available));
        let p = classify_probe("mpi", sh("echo 'Error: engine kind `mpi` is not available: not built' >&2; exit 1"));
        match p {
            Probe::NotBuilt(r) => {
                assert_eq!(r, "Error: engine kind `mpi` is not available: not built")
            }
            other => panic!("{other:?}"),
        }
        match classify_probe("mpi", sh("echo 'Error: boom' >&2; exit 1")) {
            Probe::Failed(reason, detail) => {
                assert_eq!(reason, "exit code 1: Error: boom");
                assert!(detail.contains("complete mpi False False False"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reasons() {
        assert_eq!(shorten("abcdef", 10), "abcdef");
        assert_eq!(shorten("abcdefghijkl", 8), "abcde...");
        let err = "Error: boom\n\nthread 'main' panicked at x\n";
        assert_eq!(stderr_reason(err), "Error: boom");
        assert_eq!(stderr_reason("a\nb\n\n"), "b");
        assert_eq!(stderr_reason(""), "");
    }
}
