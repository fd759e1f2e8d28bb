//! What the engine asks of Slurm: where the tasks run (partition, account, QoS), what each
//! task gets (time, CPUs, memory), and how the driver is reached. Every option has a builder
//! method on [`SlurmBuilder`]; they also come from `ADPARALLELENGINE_SLURM_*` variables
//! ([`SlurmBuilder::from_env`]), so that `Kind::Slurm` runs a program unchanged.

use crate::slurm_err;
use adparallelengine_core::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The partition (`--partition`).
pub const ENV_PARTITION: &str = "ADPARALLELENGINE_SLURM_PARTITION";
/// The account (`--account`).
pub const ENV_ACCOUNT: &str = "ADPARALLELENGINE_SLURM_ACCOUNT";
/// The QoS (`--qos`).
pub const ENV_QOS: &str = "ADPARALLELENGINE_SLURM_QOS";
/// Each task's time limit, in Slurm's format (`--time`: `30`, `1:00:00`, `2-00:00:00`).
pub const ENV_TIME: &str = "ADPARALLELENGINE_SLURM_TIME";
/// CPUs per task (`--cpus-per-task`).
pub const ENV_CPUS_PER_TASK: &str = "ADPARALLELENGINE_SLURM_CPUS_PER_TASK";
/// Memory per task, in Slurm's format (`--mem`: `500M`, `4G`).
pub const ENV_MEM: &str = "ADPARALLELENGINE_SLURM_MEM";
/// More `sbatch` arguments, split on whitespace (`--constraint=avx512 --exclusive`).
pub const ENV_SBATCH_ARGS: &str = "ADPARALLELENGINE_SLURM_SBATCH_ARGS";
/// The jobs' name (`--job-name`).
pub const ENV_JOB_NAME: &str = "ADPARALLELENGINE_SLURM_JOB_NAME";
/// The program's path on the compute nodes, when not this executable's own path.
pub const ENV_PROGRAM: &str = "ADPARALLELENGINE_SLURM_PROGRAM";
/// The driver's address as the tasks reach it: `host` or `host:port`.
pub const ENV_ADVERTISE: &str = "ADPARALLELENGINE_SLURM_ADVERTISE";
/// Seconds the tasks have to start and dial in.
pub const ENV_START_TIMEOUT: &str = "ADPARALLELENGINE_SLURM_START_TIMEOUT";
/// The tasks' output file (`--output`; default `/dev/null`).
pub const ENV_OUTPUT: &str = "ADPARALLELENGINE_SLURM_OUTPUT";

/// Settings of a Slurm engine. Start from [`SlurmBuilder::new`] or
/// [`SlurmBuilder::from_env`], then [`build`](SlurmBuilder::build).
///
/// ```no_run
/// use adparallelengine_slurm::SlurmBuilder;
/// use std::time::Duration;
/// let backend = SlurmBuilder::new(8)
///     .partition("compute")
///     .account("physics")
///     .time_limit("02:00:00")
///     .cpus_per_task(1)
///     .mem_per_task("2G")
///     .start_timeout(Duration::from_secs(600))
///     .build()?;
/// # Ok::<(), adparallelengine_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SlurmBuilder {
    pub(crate) workers: usize,
    pub(crate) partition: Option<String>,
    pub(crate) account: Option<String>,
    pub(crate) qos: Option<String>,
    pub(crate) time: Option<String>,
    pub(crate) cpus_per_task: Option<u32>,
    pub(crate) mem: Option<String>,
    pub(crate) extra: Vec<String>,
    pub(crate) job_name: Option<String>,
    pub(crate) output: String,
    pub(crate) program: Option<PathBuf>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) advertise: Option<String>,
    pub(crate) listen: String,
    pub(crate) start_timeout: Duration,
    pub(crate) path_shared: Option<PathBuf>,
    pub(crate) shared_volume: bool,
    pub(crate) max_relaunches: Option<usize>,
    pub(crate) sbatch: PathBuf,
    pub(crate) squeue: PathBuf,
    pub(crate) scancel: PathBuf,
}

impl SlurmBuilder {
    /// An array of `workers` tasks (each one worker of the engine).
    pub fn new(workers: usize) -> Self {
        SlurmBuilder {
            workers: workers.max(1),
            partition: None,
            account: None,
            qos: None,
            time: None,
            cpus_per_task: None,
            mem: None,
            extra: Vec::new(),
            job_name: None,
            output: "/dev/null".into(),
            program: None,
            env: BTreeMap::new(),
            advertise: None,
            listen: "0.0.0.0".into(),
            start_timeout: Duration::from_secs(300),
            path_shared: None,
            shared_volume: false,
            max_relaunches: None,
            sbatch: "sbatch".into(),
            squeue: "squeue".into(),
            scancel: "scancel".into(),
        }
    }

    /// [`new`](Self::new), with the options the environment gives:
    /// `ADPARALLELENGINE_SLURM_PARTITION`, `_ACCOUNT`, `_QOS`, `_TIME`, `_CPUS_PER_TASK`,
    /// `_MEM`, `_SBATCH_ARGS`, `_JOB_NAME`, `_OUTPUT`, `_PROGRAM`, `_ADVERTISE`,
    /// `_START_TIMEOUT` (seconds). A malformed value is an error that names it.
    pub fn from_env(workers: usize) -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut b = SlurmBuilder::new(workers);
        b.partition = var(ENV_PARTITION);
        b.account = var(ENV_ACCOUNT);
        b.qos = var(ENV_QOS);
        b.time = var(ENV_TIME);
        b.mem = var(ENV_MEM);
        b.job_name = var(ENV_JOB_NAME);
        b.program = var(ENV_PROGRAM).map(PathBuf::from);
        b.advertise = var(ENV_ADVERTISE);
        if let Some(o) = var(ENV_OUTPUT) {
            b.output = o;
        }
        if let Some(a) = var(ENV_SBATCH_ARGS) {
            b.extra = a.split_whitespace().map(String::from).collect();
        }
        if let Some(c) = var(ENV_CPUS_PER_TASK) {
            b.cpus_per_task =
                Some(
                    c.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        slurm_err(format!("{ENV_CPUS_PER_TASK}={c:?} is not a positive whole number"))
                    })?,
                );
        }
        if let Some(t) = var(ENV_START_TIMEOUT) {
            let secs: f64 =
                t.trim().parse().ok().filter(|s: &f64| s.is_finite() && *s > 0.0).ok_or_else(|| {
                    slurm_err(format!("{ENV_START_TIMEOUT}={t:?} is not a positive number of seconds"))
                })?;
            b.start_timeout = Duration::from_secs_f64(secs);
        }
        Ok(b)
    }

    /// The partition the tasks run in (`--partition`; default: the cluster's default).
    pub fn partition(mut self, name: impl Into<String>) -> Self {
        self.partition = Some(name.into());
        self
    }

    /// The account charged (`--account`).
    pub fn account(mut self, name: impl Into<String>) -> Self {
        self.account = Some(name.into());
        self
    }

    /// The quality of service (`--qos`).
    pub fn qos(mut self, name: impl Into<String>) -> Self {
        self.qos = Some(name.into());
        self
    }

    /// Each task's time limit, in Slurm's format (`--time`: `30` minutes, `1:00:00`,
    /// `2-00:00:00`). A task that reaches it is ended by Slurm: its items run on the others
    /// and a new task is submitted.
    pub fn time_limit(mut self, limit: impl Into<String>) -> Self {
        self.time = Some(limit.into());
        self
    }

    /// CPUs per task (`--cpus-per-task`).
    pub fn cpus_per_task(mut self, cpus: u32) -> Self {
        self.cpus_per_task = Some(cpus.max(1));
        self
    }

    /// Memory per task, in Slurm's format (`--mem`: `500M`, `4G`).
    pub fn mem_per_task(mut self, mem: impl Into<String>) -> Self {
        self.mem = Some(mem.into());
        self
    }

    /// One more `sbatch` argument (`--constraint=avx512`, `--exclusive`, ...), given after
    /// the others.
    pub fn sbatch_arg(mut self, arg: impl Into<String>) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// The jobs' name (`--job-name`; default `adpe-<random>`, which `squeue` shows).
    pub fn job_name(mut self, name: impl Into<String>) -> Self {
        self.job_name = Some(name.into());
        self
    }

    /// Where the tasks' output goes (`--output`, with Slurm's `%A`/`%a` patterns; default
    /// `/dev/null`, so a run leaves no files behind). The engine's own errors never depend on
    /// it: they come from the connections and from `squeue`.
    pub fn output(mut self, pattern: impl Into<String>) -> Self {
        self.output = pattern.into();
        self
    }

    /// The program's path on the compute nodes, when they do not see this executable at its
    /// own path.
    pub fn program_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.program = Some(path.into());
        self
    }

    /// An environment variable for the tasks (on top of the driver's environment, which
    /// `sbatch` exports).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// The driver's address as the tasks reach it: `host` (the port is any free one) or
    /// `host:port` (that port is listened on). Default: this machine's address on its route
    /// to the Slurm controller.
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.advertise = Some(address.into());
        self
    }

    /// The address the driver listens on (default `0.0.0.0`, every interface).
    pub fn listen(mut self, address: impl Into<String>) -> Self {
        self.listen = address.into();
        self
    }

    /// How long a job waits for a task to dial in before it fails naming the missing tasks
    /// and Slurm's reason for each (default 300 s: clusters queue).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How many times, in all, a task that ended mid-run is replaced by a new one (default:
    /// 3 per worker); past that the run fails naming the last task and how it ended.
    pub fn max_relaunches(mut self, n: usize) -> Self {
        self.max_relaunches = Some(n);
        self
    }

    /// The directory under which the driver keeps shared values (default: the temp dir).
    pub fn path_shared(mut self, dir: Option<PathBuf>) -> Self {
        self.path_shared = dir;
        self
    }

    /// The tasks see `path_shared` at the same path (a shared file system, the usual case on
    /// a cluster): shared values are read from there instead of being sent to each task.
    pub fn shared_volume(mut self, yes: bool) -> Self {
        self.shared_volume = yes;
        self
    }

    /// The directory of Slurm's commands (`sbatch`, `squeue`, `scancel`), when they are not
    /// on the `PATH`.
    pub fn slurm_bin(mut self, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        self.sbatch = dir.join("sbatch");
        self.squeue = dir.join("squeue");
        self.scancel = dir.join("scancel");
        self
    }

    /// The backend. Nothing is submitted until the first job.
    pub fn build(self) -> Result<crate::SlurmBackend> {
        crate::SlurmBackend::from_builder(self)
    }

    /// The `sbatch` arguments of these options (the array and the program come on top).
    pub(crate) fn sbatch_args(&self) -> Vec<String> {
        let mut a = vec![format!("--output={}", self.output)];
        let opt = |a: &mut Vec<String>, flag: &str, v: &Option<String>| {
            if let Some(v) = v {
                a.push(format!("--{flag}={v}"));
            }
        };
        opt(&mut a, "partition", &self.partition);
        opt(&mut a, "account", &self.account);
        opt(&mut a, "qos", &self.qos);
        opt(&mut a, "time", &self.time);
        opt(&mut a, "mem", &self.mem);
        if let Some(c) = self.cpus_per_task {
            a.push(format!("--cpus-per-task={c}"));
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// The controller's host, toward which the driver's address is routed: from `scontrol
    /// show config` (`SlurmctldHost = name(addr)`), else this machine.
    pub(crate) fn controller_host(&self) -> String {
        let scontrol = self.sbatch.with_file_name("scontrol");
        let out = Command::new(&scontrol)
            .args(["show", "config"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        controller_from_config(&out).unwrap_or_else(|| "127.0.0.1".into())
    }
}

/// The first controller's address in `scontrol show config`'s text.
fn controller_from_config(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.trim_start().starts_with("SlurmctldHost"))?;
    let value = line.split_once('=')?.1.trim();
    let host = match value.split_once('(') {
        Some((_, addr)) => addr.trim_end_matches(')'),
        None => value,
    };
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_sbatch_arguments() {
        let b = SlurmBuilder::new(2)
            .partition("p")
            .account("a")
            .qos("q")
            .time_limit("1:00")
            .cpus_per_task(2)
            .mem_per_task("1G")
            .sbatch_arg("--exclusive");
        assert_eq!(
            b.sbatch_args(),
            [
                "--output=/dev/null",
                "--partition=p",
                "--account=a",
                "--qos=q",
                "--time=1:00",
                "--mem=1G",
                "--cpus-per-task=2",
                "--exclusive"
            ]
        );
    }

    #[test]
    fn the_controller_is_read_from_the_config() {
        let text = "Configuration data as of ...\nSlurmctldHost[0]        = vm(127.0.0.1)\nSlurmctldPort = 6817\n";
        assert_eq!(controller_from_config(text).as_deref(), Some("127.0.0.1"));
        assert_eq!(controller_from_config("SlurmctldHost[0] = head01\n").as_deref(), Some("head01"));
        assert_eq!(controller_from_config("nothing"), None);
    }

    #[test]
    fn malformed_environment_values_are_named() {
        std::env::set_var(ENV_CPUS_PER_TASK, "two");
        let e = SlurmBuilder::from_env(2).unwrap_err().to_string();
        std::env::remove_var(ENV_CPUS_PER_TASK);
        assert!(e.contains(ENV_CPUS_PER_TASK) && e.contains("two"), "{e}");
    }
}
