//! Test support: a real Dask cluster on loopback (`dask scheduler` and `dask worker`
//! processes of the `distributed` package), started for a test and ended when dropped.
//!
//! The Python comes from [`PYTHON_ENV`] (CI's `.ci/run` points it at `target/dask-venv`),
//! else `target/dask-venv/bin/python` under the workspace root, else `python3`; a test asks
//! [`dask_python_or_skip`] first, which fails under `CI=true` when no Dask is there.
//!
//! Each process is in a process group of its own and dies with the thread that started the
//! cluster (`PR_SET_PDEATHSIG`): a test that panics, or a test binary that is killed, leaves
//! no cluster behind. Start the cluster on the thread that lives as long as it does (a
//! test's own thread, not a short-lived helper thread).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The environment variable naming the python that has `distributed`.
pub const PYTHON_ENV: &str = "ADPARALLELENGINE_DASK_PYTHON";

/// Set on every process of a cluster (and so inherited by the native workers that its Dask
/// workers start), with a value of that cluster's own: [`DaskCluster::native_pids`] finds
/// them by it, orphaned or not.
pub const CLUSTER_ENV: &str = "ADPARALLELENGINE_DASK_TEST_CLUSTER";

/// The workspace's root (this crate is never published: the path is the repository's own).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Dask helper script in this repository (what `backend-dask` ships).
pub fn helper_script() -> PathBuf {
    workspace_root().join("backend-dask/helper/adpe_dask.py")
}

/// The python that would be used, whether or not it has `distributed`: [`PYTHON_ENV`], else
/// the workspace's `target/dask-venv/bin/python` if it exists, else `python3`.
pub fn python_candidate() -> PathBuf {
    if let Some(p) = std::env::var_os(PYTHON_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join("target/dask-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// The python with `distributed` importable, if there is one (asked once per process).
pub fn dask_python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let py = python_candidate();
            let ok = Command::new(&py)
                .args(["-c", "import distributed"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            ok.then_some(py)
        })
        .clone()
}

/// [`dask_python`] for a test named `what`: `None` (the test returns early, said on stderr)
/// when there is no Dask, but a panic under `CI=true`, where a missing Dask is a broken setup.
pub fn dask_python_or_skip(what: &str) -> Option<PathBuf> {
    if let Some(p) = dask_python() {
        return Some(p);
    }
    let msg = format!(
        "{what}: no python with `distributed` ({} = {:?}; tried {}); `.ci/run` makes target/dask-venv",
        PYTHON_ENV,
        std::env::var_os(PYTHON_ENV),
        python_candidate().display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{msg}");
    }
    eprintln!("skipped: {msg}");
    None
}

/// How a cluster is started.
#[derive(Clone, Debug)]
pub struct DaskOptions {
    /// Each worker's `--resources` (e.g. `"ADPE=1"`), or none.
    pub resources: Option<String>,
    /// Each worker's `--nthreads`.
    pub nthreads: usize,
    /// How long the scheduler and all workers may take to be up.
    pub start_timeout: Duration,
}

impl Default for DaskOptions {
    fn default() -> Self {
        DaskOptions { resources: Some("ADPE=1".into()), nthreads: 1, start_timeout: Duration::from_secs(60) }
    }
}

/// The processes of one Dask worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerPids {
    /// The nanny (`dask worker`), which restarts its worker process when it dies.
    pub nanny: i32,
    /// The worker process running the tasks, if one is up (none for a moment after it died).
    pub worker: Option<i32>,
}

/// A running cluster: one scheduler, N workers (each a nanny and its worker process).
pub struct DaskCluster {
    python: PathBuf,
    address: String,
    dir: PathBuf,
    marker: String,
    scheduler: Option<Child>,
    nannies: Vec<Child>,
}

impl DaskCluster {
    /// Starts a scheduler and `workers` workers with [`DaskOptions::default`] (one thread and
    /// the resource `ADPE=1` each, no memory limit), and waits until all are registered.
    pub fn start(workers: usize) -> Result<DaskCluster, String> {
        Self::start_with(workers, &DaskOptions::default())
    }

    /// [`DaskCluster::start`] with options.
    pub fn start_with(workers: usize, opts: &DaskOptions) -> Result<DaskCluster, String> {
        let python = dask_python().ok_or_else(|| {
            format!("no python with `distributed` (set {PYTHON_ENV}; tried {})", python_candidate().display())
        })?;
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let marker = format!("{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("adpe-dask-{marker}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut cluster =
            DaskCluster { python, address: String::new(), dir, marker, scheduler: None, nannies: Vec::new() };
        let t0 = Instant::now();

        // Port 0 and the scheduler file: the port is the scheduler's own pick, no race.
        let file = cluster.dir.join("scheduler.json");
        let scheduler = cluster.spawn(
            "scheduler",
            &[
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
            ],
            &[file.as_os_str()],
        )?;
        cluster.scheduler = Some(scheduler);
        loop {
            if let Some(addr) = std::fs::read_to_string(&file).ok().as_deref().and_then(address_of) {
                cluster.address = addr;
                break;
            }
            if let Some(Ok(Some(status))) = cluster.scheduler.as_mut().map(|c| c.try_wait()) {
                return Err(format!("the Dask scheduler exited ({status}):\n{}", cluster.logs()));
            }
            if t0.elapsed() > opts.start_timeout {
                return Err(format!(
                    "the Dask scheduler did not start in {:?}:\n{}",
                    opts.start_timeout,
                    cluster.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }

        for i in 0..workers {
            let local = cluster.dir.join(format!("w{i}"));
            let nthreads = opts.nthreads.to_string();
            let mut args = vec![
                "distributed.cli.dask_worker",
                &cluster.address,
                "--host",
                "127.0.0.1",
                "--nworkers",
                "1",
                "--nthreads",
                &nthreads,
                "--no-dashboard",
                "--memory-limit",
                "0",
            ];
            if let Some(r) = &opts.resources {
                args.extend(["--resources", r]);
            }
            args.push("--local-directory");
            let args: Vec<String> = args.into_iter().map(String::from).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let child = cluster.spawn(&format!("worker{i}"), &args, &[local.as_os_str()])?;
            cluster.nannies.push(child);
        }
        let left = opts.start_timeout.saturating_sub(t0.elapsed()).max(Duration::from_secs(5));
        cluster.wait_workers(workers, left)?;
        Ok(cluster)
    }

    fn spawn(&self, name: &str, args: &[&str], more: &[&std::ffi::OsStr]) -> Result<Child, String> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.python);
        cmd.arg("-m")
            .args(args)
            .args(more)
            .env(CLUSTER_ENV, &self.marker)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of ours; the hook runs in
        // the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().map_err(|e| format!("cannot start {} -m {}: {e}", self.python.display(), args[0]))
    }

    /// The scheduler's address, `tcp://127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The python running the cluster (it has `distributed`: the helper's interpreter).
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// This cluster's folder: its logs and each worker's `--local-directory` (`w0`, `w1`, ...),
    /// where Dask keeps what the workers were sent (uploaded programs among it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The value of [`CLUSTER_ENV`] in this cluster's processes.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// Each worker's processes, in the order they were started.
    pub fn worker_pids(&self) -> Vec<WorkerPids> {
        self.nannies
            .iter()
            .map(|c| {
                let nanny = c.id() as i32;
                let worker = proc_children(nanny).into_iter().find(|p| cmdline(*p).contains("spawn_main"));
                WorkerPids { nanny, worker }
            })
            .collect()
    }

    /// SIGKILLs worker `i`'s worker process, not its nanny (which starts a new one, and Dask
    /// reruns the tasks that were running there); the pid killed.
    pub fn kill_worker(&self, i: usize) -> Result<i32, String> {
        let pids = self.worker_pids();
        let w = pids.get(i).ok_or_else(|| format!("no worker {i} (there are {})", pids.len()))?;
        let pid = w.worker.ok_or_else(|| format!("worker {i} has no worker process now (nanny {})", w.nanny))?;
        // SAFETY: plain kill(2) of a process of this cluster.
        if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
            return Err(format!("kill {pid}: {}", std::io::Error::last_os_error()));
        }
        Ok(pid)
    }

    /// SIGKILLs the scheduler (its process group) and reaps it; the workers keep running,
    /// trying to reconnect.
    pub fn kill_scheduler(&mut self) {
        if let Some(mut c) = self.scheduler.take() {
            kill_group(&mut c);
        }
    }

    /// Waits until at least `n` workers are registered with the scheduler (one client call).
    pub fn wait_workers(&self, n: usize, timeout: Duration) -> Result<(), String> {
        const WAIT: &str = "import sys\n\
            from distributed import Client\n\
            c = Client(sys.argv[1], timeout=float(sys.argv[3]), set_as_default=False)\n\
            try:\n    c.wait_for_workers(int(sys.argv[2]), timeout=float(sys.argv[3]))\n\
            finally:\n    c.close()\n";
        let secs = format!("{:.1}", timeout.as_secs_f64().max(1.0));
        let mut child = Command::new(&self.python)
            .args(["-c", WAIT, &self.address, &n.to_string(), &secs])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.python.display()))?;
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
                break Some(s);
            }
            if t0.elapsed() > timeout + Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        match status {
            Some(s) if s.success() => Ok(()),
            _ => Err(format!(
                "{n} Dask workers did not register with {} within {timeout:?}: {}\n{}",
                self.address,
                err.lines().last().unwrap_or("(timed out)"),
                self.logs()
            )),
        }
    }

    /// Live processes started by this cluster's workers (the native workers and anything
    /// they started), whether or not their Dask worker is still alive: those whose
    /// environment has both `ADPARALLELENGINE_DRIVER` and this cluster's [`CLUSTER_ENV`].
    pub fn native_pids(&self) -> Vec<i32> {
        let mine = format!("{CLUSTER_ENV}={}", self.marker);
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else { return out };
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(env) = std::fs::read(e.path().join("environ")) else { continue };
            let mut vars = env.split(|b| *b == 0);
            let (mut driver, mut marked) = (false, false);
            for v in vars.by_ref() {
                driver |= v.starts_with(b"ADPARALLELENGINE_DRIVER=");
                marked |= v == mine.as_bytes();
            }
            if driver && marked && !is_zombie(pid) {
                out.push(pid);
            }
        }
        out
    }

    /// How many tasks the scheduler holds now, in any state (one client call): 0 once every
    /// task of every client is cancelled or forgotten.
    pub fn tasks_held(&self) -> Result<usize, String> {
        const COUNT: &str = "import sys\n\
            from distributed import Client\n\
            c = Client(sys.argv[1], timeout=10, set_as_default=False)\n\
            try:\n    print(c.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)))\n\
            finally:\n    c.close()\n";
        let out = Command::new(&self.python)
            .args(["-c", COUNT, &self.address])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.python.display()))?;
        if !out.status.success() {
            return Err(format!("cannot count the scheduler's tasks: {}", String::from_utf8_lossy(&out.stderr)));
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|e| format!("not a count: {e}"))
    }

    /// The last lines of the scheduler's and each worker's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut names = vec!["scheduler".to_string()];
        names.extend((0..self.nannies.len()).map(|i| format!("worker{i}")));
        for name in names {
            let text = std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {name}.log\n"));
            for l in &lines[lines.len().saturating_sub(15)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for DaskCluster {
    fn drop(&mut self) {
        // Workers first (each group: nanny, worker process, resource tracker), then the
        // scheduler; every one reaped. Native workers die with their worker (PDEATHSIG).
        for c in &mut self.nannies {
            kill_group(c);
        }
        if let Some(mut c) = self.scheduler.take() {
            kill_group(&mut c);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn kill_group(c: &mut Child) {
    // SAFETY: plain kill(2) of the process group our child leads (process_group(0)).
    unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
    let _ = c.wait();
}

/// `"address": "tcp://..."` out of a scheduler file (a partly written one gives `None`).
fn address_of(json: &str) -> Option<String> {
    let rest = &json[json.find("\"address\"")? + "\"address\"".len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let addr = &rest[..rest.find('"')?];
    addr.starts_with("tcp://").then(|| addr.to_string())
}

fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(s.get(s.rfind(')')? + 2..)?.split_whitespace().map(String::from).collect())
}

fn is_zombie(pid: i32) -> bool {
    stat_fields(pid).is_none_or(|f| f.first().is_some_and(|s| s == "Z"))
}

fn proc_children(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if let Some(f) = stat_fields(pid) {
            if f.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(parent) && f[0] != "Z" {
                out.push(pid);
            }
        }
    }
    out
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_of_a_scheduler_file() {
        let f = "{\n  \"type\": \"Scheduler\",\n  \"address\": \"tcp://127.0.0.1:45009\",\n  \"services\": {}\n}";
        assert_eq!(address_of(f).as_deref(), Some("tcp://127.0.0.1:45009"));
        assert_eq!(address_of("{\n  \"type\": \"Scheduler\",\n  \"addr"), None);
        assert_eq!(address_of("{\"address\": \"tcp://127.0.0.1:4"), None);
    }

    #[test]
    fn a_cluster_starts_restarts_a_killed_worker_and_ends() {
        if dask_python_or_skip("a_cluster_starts_restarts_a_killed_worker_and_ends").is_none() {
            return;
        }
        let t0 = Instant::now();
        let mut cluster = DaskCluster::start(2).unwrap();
        eprintln!("cluster of 2 up in {:?} at {}", t0.elapsed(), cluster.address());
        let pids = cluster.worker_pids();
        assert_eq!(pids.len(), 2);
        assert!(pids.iter().all(|w| w.worker.is_some()), "{pids:?}");
        let killed = cluster.kill_worker(0).unwrap();
        let t1 = Instant::now();
        let restarted = crate::k8s_sim::eventually(|| cluster.worker_pids()[0].worker.is_some_and(|p| p != killed));
        assert!(restarted, "the nanny did not restart worker 0");
        cluster.wait_workers(2, Duration::from_secs(30)).unwrap();
        eprintln!("worker 0 restarted and registered in {:?}", t1.elapsed());
        assert_eq!(cluster.worker_pids()[1], pids[1]);
        let all: Vec<i32> = cluster.worker_pids().iter().flat_map(|w| [Some(w.nanny), w.worker]).flatten().collect();
        cluster.kill_scheduler();
        let dir = cluster.dir().to_path_buf();
        drop(cluster);
        assert!(
            crate::k8s_sim::eventually(|| all.iter().all(|p| is_zombie(*p))),
            "a process of the cluster outlived it"
        );
        assert!(!dir.exists());
    }
}
