//! `ci`: everything CI checks, in the order that fails fastest: formatting, clippy with
//! `-D warnings`, every test of the workspace (unit, integration and doc tests), the docs with
//! `-D warnings`, the third-party backend of `examples/custom-backend` (its own workspace,
//! tested with the conformance kit), the benches' build, the local Kubernetes API's fidelity
//! with `kubectl`, the Dask helper's self-test on a local Dask cluster, then the test matrix.
//! `.ci/run` and the README's test command both run this.

use crate::matrix;
use std::process::{Command, ExitCode};

/// One step: a cargo command line.
struct Step {
    name: &'static str,
    args: &'static [&'static str],
    /// Whether the backends' features (`mpi`, `k8s`) are turned on: a workspace step.
    features: bool,
    /// Environment of the step.
    env: &'static [(&'static str, &'static str)],
}

const STEPS: &[Step] = &[
    Step { name: "format", args: &["fmt", "--all", "--", "--check"], features: false, env: &[] },
    Step {
        name: "clippy",
        args: &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
        features: true,
        env: &[],
    },
    Step { name: "tests", args: &["test", "--workspace"], features: true, env: &[] },
    Step {
        name: "docs",
        args: &["doc", "--workspace", "--no-deps"],
        features: true,
        env: &[("RUSTDOCFLAGS", "-D warnings")],
    },
    // A crate outside the workspace, depending on the facade alone, with its own lock file;
    // it shares the workspace's target directory so that nothing is built twice.
    Step {
        name: "custom backend",
        args: &["test", "--locked", "--manifest-path", "examples/custom-backend/Cargo.toml", "--target-dir", "target"],
        features: false,
        env: &[],
    },
    // The benches compile and link (in the dev profile, reusing the tests' build: an optimized
    // build of every bench took 5 of CI's 11 minutes; `cargo xtask bench` runs them).
    Step { name: "benches build", args: &["build", "--workspace", "--benches"], features: true, env: &[] },
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
        if step.features {
            let at = args.iter().position(|a| *a == "--").unwrap_or(args.len());
            args.splice(at..at, features.iter().copied());
        }
        eprintln!("== ci: {} (cargo {})", step.name, args.join(" "));
        let status = Command::new(&cargo).current_dir(&root).args(&args).envs(step.env.iter().copied()).status();
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
    if let Err(e) = k8s_sim_fidelity(&root) {
        eprintln!("== ci: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = dask_helper_selftest(&root) {
        eprintln!("== ci: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("== ci: test matrix");
    matrix::test_matrix(&matrix::Options::default())
}

/// The local Kubernetes API (`tools/k8s-sim`, which the Kubernetes backend's tests run
/// against) checked with the real `kubectl`. Skipped without kubectl, except under CI.
fn k8s_sim_fidelity(root: &std::path::Path) -> Result<(), String> {
    let have_kubectl = Command::new("kubectl").args(["version", "--client"]).output().is_ok_and(|o| o.status.success());
    if !have_kubectl {
        if crate::mpi::required() {
            return Err("CI=true but no kubectl on the PATH (.ci/run installs kubernetes-client)".into());
        }
        eprintln!("== ci: k8s simulator fidelity skipped: no kubectl on this machine");
        return Ok(());
    }
    eprintln!("== ci: k8s simulator fidelity (python3 tools/k8s-sim/fidelity_test.py)");
    let status = Command::new("python3")
        .current_dir(root)
        .arg("tools/k8s-sim/fidelity_test.py")
        .status()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("k8s simulator fidelity failed: {status}"))
    }
}

/// The Dask helper (`backend-dask/helper/adpe_dask.py`) on a real local Dask cluster, without
/// the Rust side: its self-test, run with the python that has `distributed` (the one of
/// `ADPARALLELENGINE_DASK_PYTHON`, else `target/dask-venv`, which `.ci/run` makes). Skipped
/// without one, except under CI.
fn dask_helper_selftest(root: &std::path::Path) -> Result<(), String> {
    let python = std::env::var_os("ADPARALLELENGINE_DASK_PYTHON")
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target/dask-venv/bin/python"));
    let has_dask = Command::new(&python).args(["-c", "import distributed"]).output().is_ok_and(|o| o.status.success());
    if !has_dask {
        if crate::mpi::required() {
            return Err(format!(
                "CI=true but {} has no `distributed` (.ci/run makes target/dask-venv)",
                python.display()
            ));
        }
        eprintln!("== ci: Dask helper self-test skipped: {} has no `distributed`", python.display());
        return Ok(());
    }
    eprintln!("== ci: Dask helper self-test ({} backend-dask/helper/test_helper.py)", python.display());
    let status = Command::new(&python)
        .current_dir(root)
        .arg("backend-dask/helper/test_helper.py")
        .status()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("Dask helper self-test failed: {status}"))
    }
}
