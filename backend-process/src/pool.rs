//! Worker processes that outlive a job: how they are started and retired; the pool itself is
//! engine-core's [`Pool`](adparallelengine_core::remote::Pool).
//!
//! Starting a process costs about 1.5 ms (exec, dynamic linking, a fresh heap), more than
//! a whole job of small work, so workers stay up between jobs, the way a thread pool's
//! threads do. At most the backend's worker count of idle workers are kept; the rest are
//! retired. Dropping the pool (with the engine) retires every idle worker: its socket is
//! closed, it exits on its own, and gets SIGKILL if it has not within a moment.
//!
//! Processes are started by one long-lived thread of the pool: `PR_SET_PDEATHSIG` fires when
//! the *thread* that started a process ends, so a worker started by a job's thread would be
//! killed when that thread ends, though the pool keeps it for later jobs.

use crate::cleanup;
use crate::hook::{ENV_PARENT_PID, ENV_WORKER_FD, WORKER_FD};
use crate::shm::{send_fd, Dir, RingReader, RingWriter, Shm};
use crate::started::{PidFd, Registration, Started};
use adparallelengine_core::remote::ConnSource;
use adparallelengine_core::{Error, Result};
use crossbeam_channel::{bounded, unbounded, Sender};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn backend_err(message: String) -> Error {
    Error::Backend { backend: "process", message }
}

/// A worker process, the driver's end of its socket, and of its shared memory.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) stream: UnixStream,
    pub(crate) rings: Option<Rings>,
    /// The process by pidfd, for whoever stops it without its `Child` (a job's link), and
    /// its place among the backend's [`Started`] workers; `None` on kernels without pidfds.
    pub(crate) pidfd: Option<(Arc<PidFd>, Registration)>,
}

/// The driver's ends of a worker's shared rings (see [`crate::shm`]).
pub(crate) struct Rings {
    /// Where batches' items go; shared with the job's link to this worker.
    pub(crate) to_worker: Arc<Mutex<RingWriter>>,
    /// Where outputs come from; read by the job's reader thread.
    pub(crate) to_driver: RingReader,
}

type SpawnReply = Sender<Result<Proc>>;

/// Where new workers come from: this executable, started by the pool's spawner thread, each
/// recorded in `started`.
pub(crate) struct ProcSource {
    exe: PathBuf,
    started: Arc<Started>,
    spawner: Mutex<Option<Sender<SpawnReply>>>,
}

impl ProcSource {
    pub(crate) fn new(exe: PathBuf, started: Arc<Started>) -> Self {
        ProcSource { exe, started, spawner: Mutex::new(None) }
    }
}

impl ConnSource<Proc> for ProcSource {
    fn connect(&self, _worker: usize) -> Result<Proc> {
        let (reply, answer) = bounded(1);
        let sent = {
            let mut g = self.spawner.lock().map_err(|_| backend_err("the worker spawner is poisoned".into()))?;
            if g.is_none() {
                *g = Some(start_spawner(self.exe.clone(), Arc::clone(&self.started))?);
            }
            g.as_ref().is_some_and(|s| s.send(reply).is_ok())
        };
        if !sent {
            return Err(backend_err("the worker spawner thread is gone".into()));
        }
        answer.recv().map_err(|_| backend_err("the worker spawner thread is gone".into()))?
    }
}

fn start_spawner(exe: PathBuf, started: Arc<Started>) -> Result<Sender<SpawnReply>> {
    let (tx, rx) = unbounded::<SpawnReply>();
    std::thread::Builder::new()
        .name("adparallelengine-spawner".into())
        .spawn(move || {
            for reply in rx {
                let _ = reply.send(spawn_process(&exe, &started));
            }
        })
        .map_err(|e| backend_err(format!("cannot start the worker spawner thread: {e}")))?;
    Ok(tx)
}

/// Starts this executable as a worker, connected to us by a socketpair given as its stdin.
///
/// No `pre_exec` hook: without one the standard library spawns with `posix_spawn` (vfork and
/// exec), whose cost does not grow with the driver's memory, where `fork` copies its page
/// tables (measured: 130 ms per worker for a driver holding 3 GiB). The worker arms
/// `PR_SET_PDEATHSIG` itself, first thing in its pre-main hook. It is recorded in `started`.
fn spawn_process(exe: &Path, started: &Arc<Started>) -> Result<Proc> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| backend_err(format!("cannot create a socketpair: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.env(ENV_WORKER_FD, WORKER_FD.to_string())
        .env(ENV_PARENT_PID, std::process::id().to_string())
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)));
    let child = cmd.spawn().map_err(|e| backend_err(format!("cannot start worker process {}: {e}", exe.display())))?;
    cleanup::track(child.id() as i32);
    // Not reaped yet (nothing waits for it but its `Child`): the pid is still its own.
    let pidfd = match PidFd::open(child.id()) {
        Ok(fd) => {
            let fd = Arc::new(fd);
            Some((Arc::clone(&fd), started.record(fd)))
        }
        Err(e) => {
            tracing::debug!(error = %e, "no pidfd for a worker (Linux before 5.3?)");
            None
        }
    };
    // The worker's shared memory first; without it, everything goes through the socket.
    let shm = Shm::create().map_err(|e| tracing::debug!(error = %e, "no shared memory for a worker")).ok();
    // If this fails, the worker is gone: its reader will say how.
    if let Err(e) = send_fd(&ours, shm.as_ref().map(|(_, fd)| fd)) {
        tracing::debug!(error = %e, "cannot send a new worker its shared memory");
    }
    let rings = shm.map(|(shm, _fd)| Rings {
        to_worker: Arc::new(Mutex::new(RingWriter::new(Arc::clone(&shm), Dir::ToWorker))),
        to_driver: RingReader::new(shm, Dir::ToDriver),
    });
    Ok(Proc { child, stream: ours, rings, pidfd })
}

/// Ends idle workers: closing its socket makes a worker exit; one still there after a
/// moment gets SIGKILL. Every one is reaped before this returns.
pub(crate) fn retire(mut procs: Vec<Proc>) {
    for p in &procs {
        let _ = p.stream.shutdown(std::net::Shutdown::Both);
    }
    let deadline = Instant::now() + Duration::from_millis(200);
    while !procs.is_empty() {
        procs.retain_mut(|p| match p.child.try_wait() {
            Ok(None) if Instant::now() < deadline => true,
            Ok(None) => {
                // Not reaped yet: `Child::kill` signals the process itself.
                let _ = p.child.kill();
                let _ = p.child.wait();
                cleanup::untrack(p.child.id() as i32);
                false
            }
            _ => {
                cleanup::untrack(p.child.id() as i32);
                false
            }
        });
        if !procs.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
