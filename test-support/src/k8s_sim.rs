//! Test support: the local Kubernetes API of `tools/k8s-sim` (plain HTTP on loopback, a Job
//! controller, and a node agent running each pod's command as a local process), started for
//! a test and stopped when dropped (SIGTERM: it ends its pods).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};
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

/// The simulator's script in this repository (this crate is never published: the path is
/// the workspace's own).
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

impl Simulator {
    /// The processes of this simulator's worker pods (its children running a worker).
    pub fn worker_pids(&self) -> Vec<i32> {
        pids_with_env("ADPARALLELENGINE_DRIVER=", Some(self.child.id()))
    }

    /// Jobs, pods and Secrets in `namespace` with the label `selector`.
    pub fn count_objects(&self, namespace: &str, selector: &str) -> usize {
        let Ok(rt) = adparallelengine_k8s::runtime() else { return usize::MAX };
        rt.block_on(async {
            let Ok(c) = adparallelengine_k8s::client_from_kubeconfig(&self.kubeconfig).await else { return usize::MAX };
            let lp = ListParams::default().labels(selector);
            let n = |r: Result<usize, kube::Error>| r.unwrap_or(usize::MAX / 4);
            n(Api::<Job>::namespaced(c.clone(), namespace).list(&lp).await.map(|l| l.items.len()))
                + n(Api::<Pod>::namespaced(c.clone(), namespace).list(&lp).await.map(|l| l.items.len()))
                + n(Api::<Secret>::namespaced(c, namespace).list(&lp).await.map(|l| l.items.len()))
        })
    }
}

/// Live processes of this machine serving as worker pods, whose environment has `needle`:
/// a whole `NAME=value`, or every value of `NAME=` when it ends with `=`.
pub fn worker_pids(needle: &str) -> Vec<i32> {
    pids_with_env(needle, None)
}

fn pids_with_env(needle: &str, parent: Option<u32>) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return pids };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(env) = std::fs::read(e.path().join("environ")) else { continue };
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .map(|s| s.rfind(')').is_some_and(|i| s.get(i + 2..i + 3) == Some("Z")))
            .unwrap_or(true);
        let ppid = std::fs::read_to_string(e.path().join("stat")).ok().and_then(|s| {
            let after = s.get(s.rfind(')')? + 2..)?.to_string();
            after.split_whitespace().nth(1)?.parse::<u32>().ok()
        });
        if parent.is_some_and(|p| ppid != Some(p)) {
            continue;
        }
        if !zombie
            && env
                .split(|b| *b == 0)
                .any(|v| v == needle.as_bytes() || (needle.ends_with('=') && v.starts_with(needle.as_bytes())))
        {
            pids.push(pid);
        }
    }
    pids
}

/// Waits until `cond` holds, for at most 30 s; whether it did.
pub fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let t0 = std::time::Instant::now();
    while !cond() {
        if t0.elapsed() > std::time::Duration::from_secs(30) {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    true
}
