//! Every worker process a backend started, by pidfd, so that dropping the backend ends them
//! all: idle ones are retired by the pool, but a job that was leaked (`mem::forget` of a
//! stream or a job) never gives its workers back, and its reader threads would keep them
//! running until the driver exits.
//!
//! A pidfd (`pidfd_open(2)`) names one process for as long as it is open: signalling it
//! reaches that process or none, never one that was given the same pid after it was reaped,
//! which a bare pid does not promise. Workers stay reaped by whoever holds their `Child`
//! (the pool or a job's reader thread); this only signals them. Kernels before Linux 5.3 have
//! no pidfd: there, workers are tracked by nothing here, and a leaked job's workers live until
//! the driver exits (they still get SIGKILL then, from `PR_SET_PDEATHSIG`).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A handle on one process that never names another.
#[derive(Debug)]
pub(crate) struct PidFd(OwnedFd);

impl PidFd {
    /// A pidfd for child `pid` of this process, which must not have been reaped yet (its
    /// `Child` not waited for), so that `pid` is still its own.
    pub(crate) fn open(pid: u32) -> io::Result<PidFd> {
        let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: pidfd_open(2) takes a pid and flags (none) and returns a new descriptor
        // (close-on-exec) or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = RawFd::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        // SAFETY: a new descriptor, owned by nothing else.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends SIGKILL to the process; one that has ended already is left as it is.
    pub(crate) fn kill(&self) {
        // SAFETY: pidfd_send_signal(2) on a pidfd of ours, without siginfo or flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }

    /// Waits until the process has ended (its parent reaps it), for at most `limit`; whether
    /// it has. A pidfd becomes readable when its process ends.
    fn wait_ended(&self, limit: Duration) -> bool {
        let began = Instant::now();
        loop {
            let left = limit.saturating_sub(began.elapsed());
            let mut pfd = libc::pollfd { fd: self.0.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
            // SAFETY: poll(2) on one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n > 0 {
                return true;
            }
            let interrupted = n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
            if !interrupted || left.is_zero() {
                return false;
            }
        }
    }
}

/// The worker processes a backend started and has not dropped.
#[derive(Debug, Default)]
pub(crate) struct Started {
    procs: Mutex<HashMap<u64, Arc<PidFd>>>,
    next: AtomicU64,
}

impl Started {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<PidFd>>> {
        // Each update is one insert or remove: consistent through a panic elsewhere.
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a worker; it is forgotten when the returned registration is dropped (with the
    /// worker's `Proc`, after it was reaped).
    pub(crate) fn record(self: &Arc<Self>, pidfd: Arc<PidFd>) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, pidfd);
        Registration { id, started: Arc::clone(self) }
    }

    /// Kills every worker still recorded and waits, up to `limit` in all, until each has
    /// ended; returns how many there were.
    pub(crate) fn kill_all(&self, limit: Duration) -> usize {
        let procs: Vec<Arc<PidFd>> = self.lock().values().cloned().collect();
        for p in &procs {
            p.kill();
        }
        let deadline = Instant::now() + limit;
        for p in &procs {
            p.wait_ended(deadline.saturating_duration_since(Instant::now()));
        }
        procs.len()
    }
}

/// A worker's place in [`Started`], removed when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    id: u64,
    started: Arc<Started>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.started.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn kill_all_ends_every_recorded_process_and_none_once_dropped() {
        let started = Arc::new(Started::default());
        let mut a = Command::new("sleep").arg("60").spawn().unwrap();
        let mut b = Command::new("sleep").arg("60").spawn().unwrap();
        let ra = started.record(Arc::new(PidFd::open(a.id()).unwrap()));
        let rb = started.record(Arc::new(PidFd::open(b.id()).unwrap()));
        // `b` is forgotten (its `Proc` dropped): it is not killed.
        drop(rb);
        assert_eq!(started.kill_all(Duration::from_secs(10)), 1);
        let status = a.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
        assert!(b.try_wait().unwrap().is_none(), "b still runs");
        b.kill().unwrap();
        b.wait().unwrap();
        // A reaped process's pidfd reaches nothing: killing it again is harmless.
        started.kill_all(Duration::from_secs(1));
        drop(ra);
        assert_eq!(started.kill_all(Duration::from_secs(1)), 0);
    }
}
