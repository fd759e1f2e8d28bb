//! Dial-in workers without a cluster: a [`Launcher`] that starts local processes of the
//! running executable, each dialing the driver over loopback, for tests and benches of
//! engine-core's dial-in layer itself (its scale, its faults) at hundreds of workers.

use adparallelengine_core::remote::dial_in::{
    DialIn, Launcher, OverDialIn, RunEnd, ShareVia, WorkerStatus, ENV_DRIVER, ENV_NAME, ENV_SECRET,
};
use adparallelengine_core::Result;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// The processes this launcher starts are this executable: they serve before `main`.
adparallelengine_core::worker_entry!(adparallelengine_store::dial_in_worker);

/// Local processes of this executable, started with the driver's address and secret.
pub struct LocalProcesses {
    workers: usize,
    env: Vec<(String, String)>,
    children: Mutex<Vec<(String, Child)>>,
}

impl LocalProcesses {
    fn child_pids(&self) -> Vec<u32> {
        self.children.lock().map(|g| g.iter().map(|(_, c)| c.id()).collect()).unwrap_or_default()
    }
}

impl Launcher for LocalProcesses {
    fn noun(&self) -> &'static str {
        "local process"
    }

    fn launch(&self, _end: RunEnd) -> Result<()> {
        let exe = std::env::current_exe().map_err(|e| adparallelengine_core::Error::Config(e.to_string()))?;
        let mut g = self.children.lock().map_err(|_| adparallelengine_core::Error::Config("poisoned".into()))?;
        for i in 0..self.workers {
            let name = format!("local-{i}");
            let child = Command::new(&exe)
                .envs(self.env.iter().cloned())
                .env(ENV_NAME, &name)
                .stdin(Stdio::null())
                .spawn()
                .map_err(|e| adparallelengine_core::Error::Config(format!("cannot start {}: {e}", exe.display())))?;
            g.push((name, child));
        }
        Ok(())
    }

    fn failure(&self) -> Option<String> {
        None
    }

    fn workers(&self) -> Vec<WorkerStatus> {
        let mut g = match self.children.lock() {
            Ok(g) => g,
            Err(_) => return Vec::new(),
        };
        g.iter_mut()
            .map(|(name, c)| {
                let state = match c.try_wait() {
                    Ok(Some(s)) => format!("local process {name} ({s})"),
                    _ => format!("local process {name} (running)"),
                };
                WorkerStatus { name: name.clone(), state }
            })
            .collect()
    }

    fn stop_worker(&self, name: &str) {
        if let Ok(mut g) = self.children.lock() {
            for (n, c) in g.iter_mut().filter(|(n, _)| n == name) {
                tracing::debug!(worker = n.as_str(), "killing a local dial-in worker");
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    fn stop(&self) {
        let children = self.children.lock().map(|mut g| std::mem::take(&mut *g)).unwrap_or_default();
        for (_, mut c) in children {
            // Their connections are closed: they exit 0 on their own; a stuck one is killed.
            for _ in 0..100 {
                if !matches!(c.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A backend of `workers` local dial-in processes (shared values sent over each connection).
pub struct LocalDialIn {
    dial: DialIn,
    launcher: Arc<LocalProcesses>,
}

impl LocalDialIn {
    /// `workers` processes, started with the first job, dialing `127.0.0.1`.
    pub fn new(workers: usize) -> Result<LocalDialIn> {
        adparallelengine_core::remote::become_worker_if_asked();
        let listening = DialIn::listen("local-dial-in", "127.0.0.1:0", "127.0.0.1")?;
        let env = vec![
            (ENV_DRIVER.to_string(), listening.address().to_string()),
            (ENV_SECRET.to_string(), listening.secret().to_hex()),
        ];
        let launcher = Arc::new(LocalProcesses { workers, env, children: Mutex::new(Vec::new()) });
        let share = ShareVia::ship(Arc::new(adparallelengine_store::MemoryStore::default()));
        let dial = listening.serve(launcher.clone(), workers, Duration::from_secs(60), share);
        Ok(LocalDialIn { dial, launcher })
    }

    /// The processes started so far.
    pub fn child_pids(&self) -> Vec<u32> {
        self.launcher.child_pids()
    }

    /// The driver's address and the run's secret (hex), to start one more worker by hand.
    pub fn dial_env(&self) -> (String, String) {
        let get = |k: &str| self.launcher.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
        (get(ENV_DRIVER), get(ENV_SECRET))
    }

    /// Workers connected and idle.
    pub fn idle_workers(&self) -> usize {
        self.dial.idle_workers()
    }
}

impl OverDialIn for LocalDialIn {
    fn dial_in(&self) -> &DialIn {
        &self.dial
    }
}
