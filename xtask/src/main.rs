//! `cargo xtask`: the workspace's development tasks (std, plus the facade for its conformance kit's
//! expected values of the test matrix).
//!
//! ```text
//! cargo xtask test-matrix [--kinds serial,threads,...] [--release|--debug]
//! cargo xtask bench [--table] [CRITERION ARGS]
//! cargo xtask ci
//! cargo xtask with-cluster dask|slurm -- COMMAND...
//! cargo xtask help
//! ```
//!
//! Modules: [`matrix`] builds the `complete` example and runs it over every argument
//! combination, [`check`] parses and checks its output against independently computed values,
//! [`run`] runs one child process with a timeout, [`mpi`] finds the MPI launcher.

mod bench;
mod check;
mod ci;
mod dask;
mod k8s;
mod matrix;
mod mpi;
mod run;
mod service;
mod slurm;
mod with_cluster;

use std::process::ExitCode;

/// Usage text, printed by `help` and on a usage error.
const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test-matrix [--kinds K1,K2,...] [--release|--debug]
        Build the `complete` example once (release by default), then run it for every
        combination of GATHER x BATCHED x SHARE x GENERATOR x MAX_WORKERS (64 cells per kind)
        and check its output. Kinds: serial, threads, process, mpi, k8s, dask, slurm (default: all);
        kinds not built in this version are skipped. Exits non-zero if any cell fails.
  bench [--table] [CRITERION ARGS]
        Run every bench, then print one table: each tracked criterion figure divided into
        its baseline (bare rayon, fs::write) from the same group of the same run.
        --table: only the benches the table reads (threads, shares, process, streams;
        no MPI, Kubernetes, Dask or Slurm), about 8 minutes here.
  ci    Everything CI checks: cargo fmt --check, clippy -D warnings, every test (unit,
        integration, doc), benches build, then the test matrix.
  with-cluster dask|slurm -- COMMAND...
        Start a local cluster of that kind (dask: a scheduler and two workers; slurm: a private
        one-node Slurm), run COMMAND against it, stop it. Its exit code is COMMAND's.
  help    Print this message.
";

/// Prints the usage on stderr after an error; exit code 2.
pub(crate) fn usage_error(msg: &str) -> ExitCode {
    eprintln!("error: {msg}\n");
    eprint!("{USAGE}");
    ExitCode::from(2)
}

/// Parses the options of `test-matrix`.
fn parse_test_matrix(args: &[String]) -> Result<matrix::Options, String> {
    let mut opts = matrix::Options::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let kinds = if arg == "--kinds" {
            let value = it.next();
            Some(value.ok_or("--kinds needs a value, e.g. --kinds serial,threads")?.as_str())
        } else {
            arg.strip_prefix("--kinds=")
        };
        if let Some(value) = kinds {
            opts.kinds = parse_kinds(value)?;
            continue;
        }
        match arg.as_str() {
            "--release" => opts.release = true,
            "--debug" => opts.release = false,
            other => return Err(format!("unknown option for test-matrix: {other:?}")),
        }
    }
    Ok(opts)
}

/// Parses a comma-separated list of canonical kind names.
fn parse_kinds(value: &str) -> Result<Vec<String>, String> {
    let mut kinds: Vec<String> = Vec::new();
    for k in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        if !matrix::KINDS.contains(&k) {
            return Err(format!(
                "unknown kind {k:?}: expected some of {} (a backend of your own runs the same checks \
                 from its own tests: adparallelengine::conformance, see README \"Writing a backend\")",
                matrix::KINDS.join(", ")
            ));
        }
        if !kinds.iter().any(|x| x == k) {
            kinds.push(k.to_string());
        }
    }
    if kinds.is_empty() {
        return Err("--kinds needs at least one kind".into());
    }
    Ok(kinds)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        return usage_error("no command given");
    };
    match command.as_str() {
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        "test-matrix" => match parse_test_matrix(rest) {
            Ok(opts) => matrix::test_matrix(&opts),
            Err(e) => usage_error(&e),
        },
        "bench" => bench::bench(rest),
        "ci" => ci::ci(),
        "with-cluster" => with_cluster::with_cluster(rest),
        other => usage_error(&format!("unknown command {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn test_matrix_options() {
        assert_eq!(parse_test_matrix(&[]).unwrap(), matrix::Options::default());
        let o = parse_test_matrix(&args(&["--kinds", "threads,serial", "--debug"])).unwrap();
        assert_eq!(o.kinds, ["threads", "serial"]);
        assert!(!o.release);
        let o = parse_test_matrix(&args(&["--debug", "--kinds=serial", "--release"])).unwrap();
        assert_eq!(o.kinds, ["serial"]);
        assert!(o.release);
        assert!(parse_test_matrix(&args(&["--kinds"])).is_err());
        assert!(parse_test_matrix(&args(&["--kinds", "gpu"])).is_err());
        assert!(parse_test_matrix(&args(&["--kinds", ","])).is_err());
        assert!(parse_test_matrix(&args(&["--fast"])).is_err());
    }
}
