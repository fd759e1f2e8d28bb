//! A dialed-in worker's connection, as the pooled machinery sees it.

use super::Launcher;
use crate::remote::pooled::{Conn, ConnHandle};
use crate::remote::wire::DEFAULT_MAX_FRAME;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a worker of a cancelled job has to finish its batches in hand and end the job
/// before it is stopped: a dialed-in worker costs seconds to replace (a pod, a Dask task).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// A worker that dialed in and knocked with the run's secret.
pub(crate) struct DialConn {
    stream: Arc<TcpStream>,
    /// The name it knocked with.
    name: String,
    peer: SocketAddr,
    launcher: Arc<dyn Launcher>,
    /// Connected workers of the run; this one counts until dropped.
    live: Arc<AtomicUsize>,
}

impl DialConn {
    pub(crate) fn new(
        stream: Arc<TcpStream>,
        name: String,
        peer: SocketAddr,
        launcher: Arc<dyn Launcher>,
        live: Arc<AtomicUsize>,
    ) -> DialConn {
        live.fetch_add(1, Ordering::AcqRel);
        DialConn { stream, name, peer, launcher, live }
    }
}

impl Drop for DialConn {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AsFd for DialConn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// Stops a worker: its connection is shut (it exits when it next reads) and its launcher
/// told (it may be deep in a long item).
fn stop(stream: &TcpStream, launcher: &dyn Launcher, name: &str) {
    let _ = stream.shutdown(Shutdown::Both);
    launcher.stop_worker(name);
}

impl Conn for DialConn {
    type Handle = DialHandle;

    /// Frames from a dialed-in worker are bounded: a bad peer cannot make the driver
    /// allocate much.
    fn max_frame(&self) -> usize {
        DEFAULT_MAX_FRAME
    }

    fn handle(&self) -> DialHandle {
        DialHandle {
            stream: Arc::clone(&self.stream),
            name: self.name.clone(),
            noun: self.launcher.noun(),
            launcher: Arc::clone(&self.launcher),
        }
    }

    /// Still connected: a peek finds data or nothing yet, not the end of the stream.
    fn alive(&mut self) -> bool {
        let mut b = [0u8; 1];
        // SAFETY: a one-byte read into a live local buffer of one byte; MSG_PEEK leaves the
        // byte in the socket and MSG_DONTWAIT keeps the call from blocking.
        let n = unsafe {
            libc::recv(self.stream.as_raw_fd(), b.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
        };
        n > 0 || (n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock)
    }

    fn reset(&mut self) {
        let _ = self.stream.set_read_timeout(None);
    }

    fn kill(&mut self) {
        stop(&self.stream, &*self.launcher, &self.name);
    }

    fn ended(&mut self) -> String {
        let _ = self.stream.shutdown(Shutdown::Both);
        format!(
            "the connection of {} {} ({}) ended: it exited or was stopped",
            self.launcher.noun(),
            self.name,
            self.peer
        )
    }

    /// Closing a worker's connection makes it exit 0, its part done.
    fn retire(conns: Vec<Self>) {
        for c in conns {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }
}

/// What a job's link keeps of a dialed-in worker.
pub(crate) struct DialHandle {
    stream: Arc<TcpStream>,
    name: String,
    noun: &'static str,
    launcher: Arc<dyn Launcher>,
}

impl ConnHandle for DialHandle {
    fn name(&self) -> String {
        format!("{} {}", self.noun, self.name)
    }

    fn kill(&self) {
        stop(&self.stream, &*self.launcher, &self.name);
    }

    /// A cancelled job's worker is told to end the job, and kept, unless it has not within
    /// [`DRAIN_LIMIT`] (its reader's read times out).
    fn cancel(&self) -> bool {
        self.stream.set_read_timeout(Some(DRAIN_LIMIT)).is_ok()
    }
}
