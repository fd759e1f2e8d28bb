//! The MPI installation xtask builds and runs with: whether there is one, how to launch
//! `N` ranks, and the environment a launch needs.
//!
//! The `mpi` feature needs an MPI library (OpenMPI or MPICH, with `mpicc`) and libclang to
//! build. When the machine has `mpirun`, xtask builds and tests with the feature; without it,
//! the `mpi` cells are skipped as not built, except under `CI=true`, where a missing MPI is
//! an error (`.ci/run` installs it).

use std::process::Command;

/// The launcher program, if one is on the PATH.
fn launcher_program() -> Option<&'static str> {
    ["mpirun", "mpiexec"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// Whether MPI is installed here (a launcher answers `--version`).
pub fn available() -> bool {
    launcher_program().is_some()
}

/// Whether this run must have MPI (CI).
pub fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether to build with the `mpi` feature: MPI is here. Under CI a missing MPI is an error.
pub fn build_with_mpi() -> Result<bool, String> {
    match (available(), required()) {
        (true, _) => Ok(true),
        (false, false) => Ok(false),
        (false, true) => Err("CI=true but no mpirun/mpiexec on the PATH: install OpenMPI or MPICH \
                              (.ci/run does: apt-get install -y libopenmpi-dev openmpi-bin libclang-dev)"
            .into()),
    }
}

/// The command prefix that starts `ranks` ranks, e.g. `mpirun -n 3 --oversubscribe` (OpenMPI,
/// which otherwise refuses more ranks than cores) or `mpiexec -n 3` (MPICH).
pub fn launch_prefix(ranks: usize) -> Vec<String> {
    let Some(program) = launcher_program() else { return Vec::new() };
    let mut v = vec![program.to_string(), "-n".into(), ranks.to_string()];
    let version = Command::new(program).arg("--version").output().map(|o| o.stdout).unwrap_or_default();
    if String::from_utf8_lossy(&version).contains("Open MPI") {
        v.push("--oversubscribe".into());
    }
    v
}

/// Sets what a launch needs on `cmd`: OpenMPI refuses to run as root without these (CI
/// containers run as root); MPICH ignores them.
pub fn launch_env(cmd: &mut Command) {
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
}

/// Cargo arguments that turn the backends' features on: `k8s` and `dask` always (they need
/// nothing installed to build; Dask's tests need Python with `distributed`), `mpi` when MPI is
/// here.
pub fn feature_args() -> Result<Vec<&'static str>, String> {
    Ok(if build_with_mpi()? { vec!["--features", "mpi,k8s,dask,slurm"] } else { vec!["--features", "k8s,dask,slurm"] })
}
