//! A worker pod's connection, as engine-core's pooled machinery sees it.

use crate::cluster::Cluster;
use adparallelengine_core::remote::DEFAULT_MAX_FRAME;
use adparallelengine_core::remote::{Conn, ConnHandle};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A pod that dialed in and knocked with the run's secret.
pub(crate) struct PodConn {
    pub(crate) stream: Arc<TcpStream>,
    /// The pod's name (it gave it when knocking).
    pub(crate) pod: String,
    pub(crate) peer: SocketAddr,
    pub(crate) cluster: Arc<Cluster>,
    /// Connected pods of the run; this one counts until dropped.
    pub(crate) live: Arc<AtomicUsize>,
}

impl Drop for PodConn {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AsFd for PodConn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// Stops a pod: its connection is shut (it exits when it next reads) and the pod deleted
/// (it may be deep in a long item); the Job controller starts a replacement.
fn stop(stream: &TcpStream, cluster: &Cluster, pod: &str) {
    let _ = stream.shutdown(Shutdown::Both);
    cluster.delete_pod(pod.to_string());
}

impl Conn for PodConn {
    type Handle = PodHandle;

    /// Frames from a pod are bounded: a bad peer cannot make the driver allocate much.
    fn max_frame(&self) -> usize {
        DEFAULT_MAX_FRAME
    }

    fn handle(&self) -> PodHandle {
        PodHandle { stream: Arc::clone(&self.stream), pod: self.pod.clone(), cluster: Arc::clone(&self.cluster) }
    }

    /// Still connected: a peek finds data or nothing yet, not the end of the stream.
    fn alive(&mut self) -> bool {
        let mut b = [0u8; 1];
        // SAFETY: one byte into a valid buffer; MSG_PEEK leaves it in the socket.
        let n = unsafe {
            libc::recv(self.stream.as_raw_fd(), b.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
        };
        n > 0 || (n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock)
    }

    fn reset(&mut self) {
        let _ = self.stream.set_read_timeout(None);
    }

    fn kill(&mut self) {
        stop(&self.stream, &self.cluster, &self.pod);
    }

    fn ended(&mut self) -> String {
        let _ = self.stream.shutdown(Shutdown::Both);
        format!("the connection of pod {} ({}) ended: the pod exited or was deleted", self.pod, self.peer)
    }

    /// Closing a pod's connection makes it exit 0, its part of the Job done.
    fn retire(conns: Vec<Self>) {
        for c in conns {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }
}

/// What a job's link keeps of a pod.
pub(crate) struct PodHandle {
    stream: Arc<TcpStream>,
    pod: String,
    cluster: Arc<Cluster>,
}

impl ConnHandle for PodHandle {
    fn name(&self) -> String {
        format!("pod {}", self.pod)
    }

    fn kill(&self) {
        stop(&self.stream, &self.cluster, &self.pod);
    }

    /// A pod costs seconds to replace: a cancelled job's pod is told to end the job, and
    /// kept, unless it has not within [`DRAIN_LIMIT`] (its reader's read times out).
    fn cancel(&self) -> bool {
        self.stream.set_read_timeout(Some(DRAIN_LIMIT)).is_ok()
    }
}

/// How long a pod of a cancelled job has to finish its batches in hand and end the job
/// before it is deleted.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(30);
