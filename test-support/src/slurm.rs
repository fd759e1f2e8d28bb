//! Test support: a private one-node Slurm cluster (Debian's `munged`, `slurmctld` and
//! `slurmd`), with its own config, spool and state directories, ports and munge socket, so
//! that it never meets a Slurm the machine already runs.
//!
//! One cluster serves a whole test process ([`SlurmCluster::shared`]): it starts on first use
//! (about 2 s), and its daemons die with the process (`PR_SET_PDEATHSIG` on a thread that
//! lives as long as the process), so a test binary that panics or is killed leaves no daemon
//! behind; its directory is removed by the next cluster started on the machine (its daemons
//! write there until the process dies), and `.ci/run` removes the last one. [`SLURM_CONF`] is
//! set in the process's environment, so `sbatch`, `squeue` and `scancel`, as the backend runs
//! them, talk to it.
//!
//! A test asks [`slurm_or_skip`] first, which fails under `CI=true` when Slurm is not
//! installed (`.ci/run` installs it).

use crate::wait::wait_until;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The variable that points Slurm's commands at a config file.
pub const SLURM_CONF: &str = "SLURM_CONF";

/// The local cluster's only partition (the default one).
pub const PARTITION: &str = "debug";

/// The memory the local node offers, in MiB (the node's `RealMemory`).
pub const NODE_MEMORY_MIB: u64 = 4000;

/// A private one-node Slurm cluster.
#[derive(Debug)]
pub struct SlurmCluster {
    dir: PathBuf,
    conf: PathBuf,
    node: String,
}

/// Whether Slurm's daemons and munge are installed.
pub fn slurm_installed() -> bool {
    ["/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged"].iter().all(|p| Path::new(p).exists())
        && which("sbatch").is_some()
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(cmd)).find(|p| p.exists()))
}

/// The shared cluster for a test named `what`: `None` (the test returns early, said on
/// stderr) when Slurm is not installed, but a panic under `CI=true`, where that is a broken
/// setup; a cluster that fails to start is a panic too.
pub fn slurm_or_skip(what: &str) -> Option<&'static SlurmCluster> {
    if !slurm_installed() {
        let msg =
            format!("{what}: Slurm is not installed (slurmctld, slurmd, munge, slurm-client); `.ci/run` installs them");
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("{msg}");
        }
        eprintln!("skipped: {msg}");
        return None;
    }
    match SlurmCluster::shared() {
        Ok(c) => Some(c),
        Err(e) => panic!("{what}: the local Slurm cluster did not start: {e}"),
    }
}

/// A free TCP port on loopback (free now; the daemons bind it a moment later).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn hostname() -> Result<String, String> {
    let out = Command::new("hostname").arg("-s").output().map_err(|e| format!("hostname: {e}"))?;
    let h = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if h.is_empty() {
        return Err("hostname -s printed nothing".into());
    }
    Ok(h)
}

fn uid_gid_of(user: &str) -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id").args([flag, user]).output().map_err(|e| e.to_string())?;
        String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| format!("no user {user:?}"))
    };
    Ok((id("-u")?, id("-g")?))
}

/// The prefix of a cluster's directory in the temp dir; the test process's id follows.
const DIR_PREFIX: &str = "adpe-slurm-";

/// Removes the directories of clusters whose process has ended. A cluster's daemons write
/// into its directory until the moment its process dies, so no process removes its own: the
/// next cluster started on the machine does.
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Spawns `cmd` so that it dies with the calling thread.
fn spawn_tied(cmd: &mut Command) -> Result<Child, String> {
    // SAFETY: the closure only calls `prctl`, which is async-signal-safe, between fork and
    // exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    cmd.spawn().map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))
}

impl SlurmCluster {
    /// The process's cluster, started on first use on a thread that lives as long as the
    /// process (its daemons die with it).
    pub fn shared() -> Result<&'static SlurmCluster, String> {
        static CLUSTER: OnceLock<Result<SlurmCluster, String>> = OnceLock::new();
        CLUSTER
            .get_or_init(|| {
                let (tx, rx) = std::sync::mpsc::channel();
                let keeper = std::thread::Builder::new().name("slurm-cluster".into()).spawn(move || {
                    let _ = tx.send(SlurmCluster::start());
                    // The daemons die with this thread: it parks until the process exits.
                    loop {
                        std::thread::park();
                    }
                });
                if let Err(e) = keeper {
                    return Err(format!("cannot start the cluster's thread: {e}"));
                }
                rx.recv().map_err(|_| "the cluster's thread died".to_string())?
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn start() -> Result<SlurmCluster, String> {
        sweep_stale_dirs();
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["state", "spool", "log", "munge"] {
            std::fs::create_dir_all(dir.join(d)).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        mode(&dir, 0o755).map_err(|e| e.to_string())?;
        let (uid, gid) = uid_gid_of("munge")?;
        let munge = dir.join("munge");
        std::os::unix::fs::chown(&munge, Some(uid), Some(gid)).map_err(|e| format!("chown munge dir: {e}"))?;
        mode(&munge, 0o711).map_err(|e| e.to_string())?;
        let socket = munge.join("munge.socket");
        // munged as its own user, with a private socket: never the machine's munge.
        spawn_tied(
            Command::new("/usr/sbin/munged")
                .arg("-F")
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--pid-file={}", munge.join("munged.pid").display()))
                .arg(format!("--log-file={}", munge.join("munged.log").display()))
                .arg(format!("--seed-file={}", munge.join("seed").display()))
                .arg("--key-file=/etc/munge/munge.key")
                .uid(uid)
                .gid(gid),
        )?;
        if !wait_until(Duration::from_secs(10), || socket.exists()) {
            return Err("munged did not make its socket".into());
        }
        let host = hostname()?;
        let node = "adpe-node".to_string();
        let (ctld, slurmd) = (free_port()?, free_port()?);
        let d = dir.display();
        let conf = dir.join("slurm.conf");
        let text = format!(
            "ClusterName=adpe-test\nSlurmctldHost={host}(127.0.0.1)\nSlurmUser=root\nSlurmdUser=root\n\
             SlurmctldPort={ctld}\nSlurmdPort={slurmd}\nAuthType=auth/munge\nCredType=cred/munge\n\
             AuthInfo=socket={sock}\nStateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
             SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
             SlurmctldLogFile={d}/log/slurmctld.log\nSlurmdLogFile={d}/log/slurmd.log\n\
             ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSelectType=select/cons_tres\n\
             SelectTypeParameters=CR_Core_Memory\nDefMemPerCPU=200\nSchedulerType=sched/backfill\n\
             SchedulerParameters=sched_interval=1\nReturnToService=2\nMpiDefault=none\n\
             JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n\
             SlurmctldTimeout=30\nSlurmdTimeout=30\nInactiveLimit=0\nMinJobAge=30\nKillWait=2\n\
             MessageTimeout=10\n\
             NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory={NODE_MEMORY_MIB} State=UNKNOWN\n\
             PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n",
            sock = socket.display(),
        );
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        std::env::set_var(SLURM_CONF, &conf);
        spawn_tied(Command::new("/usr/sbin/slurmctld").args(["-D", "-i", "-f"]).arg(&conf))?;
        spawn_tied(Command::new("/usr/sbin/slurmd").args(["-D", "-f"]).arg(&conf).args(["-N", &node]))?;
        let cluster = SlurmCluster { dir, conf, node };
        if !wait_until(Duration::from_secs(60), || cluster.node_state().is_some_and(|s| s.starts_with("idle"))) {
            return Err(format!("the node did not come up idle: {:?}\n{}", cluster.node_state(), cluster.logs()));
        }
        Ok(cluster)
    }

    /// The config file (what [`SLURM_CONF`] points at).
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The cluster's directory (config, state, spool, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The node's state as `sinfo` says it (`idle`, `mixed`, `allocated`...).
    pub fn node_state(&self) -> Option<String> {
        let out = Command::new("sinfo").args(["-h", "-N", "-o", "%T"]).env(SLURM_CONF, &self.conf).output().ok()?;
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    }

    /// The jobs named `name` that Slurm still runs or queues (`squeue`'s default states), as
    /// `id state` lines.
    pub fn queued(&self, name: &str) -> Result<Vec<String>, String> {
        let out = Command::new("squeue")
            .args(["-h", "-r", "-n", name, "-o", "%i %T"])
            .env(SLURM_CONF, &self.conf)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect())
    }

    /// The ids of the running tasks of jobs named `name` (`<job>_<index>`).
    pub fn running(&self, name: &str) -> Vec<String> {
        self.queued(name)
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l.ends_with(" RUNNING"))
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    }

    /// `scancel` of one task or job.
    pub fn cancel(&self, id: &str) -> Result<(), String> {
        let s = Command::new("scancel").arg(id).env(SLURM_CONF, &self.conf).status().map_err(|e| e.to_string())?;
        s.success().then_some(()).ok_or_else(|| format!("scancel {id}: {s}"))
    }

    /// The tail of the daemons' logs, for a failure's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for f in ["log/slurmctld.log", "log/slurmd.log", "munge/munged.log"] {
            let text = std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {f}\n{}\n", lines[lines.len().saturating_sub(15)..].join("\n")));
        }
        out
    }
}

/// Live processes whose environment names the driver at `address` (`ADPARALLELENGINE_DRIVER`):
/// the workers of that driver on this node, orphaned or not.
pub fn workers_of(address: &str) -> Vec<i32> {
    let mine = format!("ADPARALLELENGINE_DRIVER={address}");
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(env) = std::fs::read(e.path().join("environ")) else { continue };
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')))
            .unwrap_or(true);
        if !zombie && env.split(|b| *b == 0).any(|v| v == mine.as_bytes()) {
            out.push(pid);
        }
    }
    out
}
