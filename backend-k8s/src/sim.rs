//! Test support: the local Kubernetes API of `tools/k8s-sim` (plain HTTP on loopback, a Job
//! controller, and a node agent running each pod's command as a local process), started for
//! a test and stopped when dropped (SIGTERM: it ends its pods). Not public API.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running simulator.
pub struct Simulator {
    child: Child,
    /// The kubeconfig it wrote (its one context, namespace `default`).
    pub kubeconfig: PathBuf,
    /// Its URL.
    pub url: String,
}

/// The simulator's script in this repository.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/k8s-sim/k8s_sim.py")
}

impl Simulator {
    /// Starts one with the simulator's extra `args` (e.g. `--node-labels`).
    pub fn start(args: &[&str]) -> std::io::Result<Simulator> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let kubeconfig = std::env::temp_dir().join(format!("adpe-k8s-sim-{}-{n}.kubeconfig", std::process::id()));
        let mut child = Command::new("python3")
            .arg(script())
            .args(["--port", "0", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!("the simulator did not start: {line:?}")));
        };
        Ok(Simulator { url: url.to_string(), child, kubeconfig })
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}
