//! Test support: starting a program on N ranks under the machine's MPI launcher, with a time
//! limit, so that a hang fails the test instead of holding it.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `mpirun -n RANKS` (OpenMPI, with `--oversubscribe`: the tests start more ranks than this
/// machine may have cores) or `mpiexec -n RANKS` (MPICH), allowed to run as root (CI
/// containers). Add the program and its arguments (or MPMD `:` contexts).
pub fn launcher(ranks: usize) -> Command {
    let openmpi = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Open MPI"));
    let mut cmd = Command::new(if openmpi { "mpirun" } else { "mpiexec" });
    cmd.args(["-n", &ranks.to_string()]);
    if openmpi {
        cmd.arg("--oversubscribe");
        // When a rank dies, mpirun sends the others SIGTERM, then SIGKILL after this many
        // seconds (default 1): on a loaded machine the driver's SIGTERM handler, which reports
        // the items lost with the rank, did not always print within the default.
        cmd.env("OMPI_MCA_odls_base_sigkill_timeout", "5");
    }
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    cmd
}

/// How a launch ended.
#[derive(Debug)]
pub struct Run {
    /// Its exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Everything the ranks printed on stdout.
    pub stdout: String,
    /// Everything the ranks printed on stderr.
    pub stderr: String,
    /// How long it took.
    pub took: Duration,
}

/// Runs `cmd` (a [`launcher`] with its program), its output read as it comes; kills it
/// after `limit` and panics then, with what it printed.
pub fn run(mut cmd: Command, limit: Duration) -> Run {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn().expect("start the MPI launcher");
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read_all(Box::new(child.stdout.take().expect("piped stdout")));
    let err = read_all(Box::new(child.stderr.take().expect("piped stderr")));
    let status = loop {
        if let Some(s) = child.try_wait().expect("the launcher's status") {
            break Some(s);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        took: t0.elapsed(),
    };
    assert!(status.is_some(), "{cmd:?} hung for {limit:?}\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    run
}
