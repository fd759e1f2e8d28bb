//! `ci`: everything CI checks, in the order that fails fastest: formatting, clippy with
//! `-D warnings`, every test of the workspace (unit, integration and doc tests), then the
//! test matrix. `.ci/run` and the README's test command both run this.

use crate::matrix;
use std::process::{Command, ExitCode};

/// One step: a cargo command line.
struct Step {
    name: &'static str,
    args: &'static [&'static str],
}

const STEPS: &[Step] = &[
    Step { name: "format", args: &["fmt", "--all", "--", "--check"] },
    Step { name: "clippy", args: &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"] },
    Step { name: "tests", args: &["test", "--workspace"] },
    // The benches compile and link (in the dev profile, reusing the tests' build: an optimized
    // build of every bench took 5 of CI's 11 minutes; `cargo xtask bench` runs them).
    Step { name: "benches build", args: &["build", "--workspace", "--benches"] },
];

/// Runs every step; stops at the first failure.
pub fn ci() -> ExitCode {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = matrix::workspace_root();
    let features = match crate::mpi::feature_args() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("== ci: {e}");
            return ExitCode::FAILURE;
        }
    };
    for step in STEPS {
        // The `mpi` feature (MPI installed here) goes before any `--` of the step.
        let mut args: Vec<&str> = step.args.to_vec();
        if step.name != "format" {
            let at = args.iter().position(|a| *a == "--").unwrap_or(args.len());
            args.splice(at..at, features.iter().copied());
        }
        eprintln!("== ci: {} (cargo {})", step.name, args.join(" "));
        let status = Command::new(&cargo).current_dir(&root).args(&args).status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                eprintln!("== ci: {} failed: {s}", step.name);
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("== ci: cannot run cargo for {}: {e}", step.name);
                return ExitCode::FAILURE;
            }
        }
    }
    eprintln!("== ci: test matrix");
    matrix::test_matrix(&matrix::Options::default())
}
