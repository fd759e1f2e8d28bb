//! One worker process as engine-core's pooled machinery sees it: a [`Conn`] (its socket, its
//! shared-memory rings, how to stop it and how it ended) and the [`ConnHandle`] a job's link
//! keeps (large batches into the ring, SIGKILL).

use crate::cleanup;
use crate::lent::Slot;
use crate::pool::{retire, Proc, Rings};
use crate::shm::{apart_frame, split_apart, RingWriter, APART_MIN};
use crate::started::PidFd;
use adparallelengine_core::plumbing::Room;
use adparallelengine_core::remote::Incoming;
use adparallelengine_core::remote::{encode_msg, EncodedBatch, LOCAL_MAX_FRAME};
use adparallelengine_core::remote::{Conn, ConnHandle};
use adparallelengine_core::Result;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};

/// How a process ended, in words.
fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("worker process exited with code {c}"),
            (None, Some(sig)) => {
                let name = Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("unknown");
                format!("worker process killed by signal {sig} ({name})")
            }
            _ => format!("worker process ended: {s}"),
        },
        Err(e) => format!("worker process vanished: {e}"),
    }
}

impl AsFd for Proc {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl Conn for Proc {
    type Handle = ProcHandle;

    fn max_frame(&self) -> usize {
        LOCAL_MAX_FRAME
    }

    fn handle(&self) -> ProcHandle {
        ProcHandle {
            pid: self.child.id() as i32,
            pidfd: self.pidfd.as_ref().map(|(fd, _)| Arc::clone(fd)),
            ring: self.rings.as_ref().map(|r| Arc::clone(&r.to_worker)),
        }
    }

    /// A frame's tail in the frame, or in the shared ring.
    fn incoming<'a>(&'a self, payload: &'a [u8], apart: bool) -> std::io::Result<Incoming<'a>> {
        if !apart {
            return Ok(Incoming { payload, bulk: None });
        }
        let Some(rings) = self.rings.as_ref() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a tail in shared memory, but none is mapped",
            ));
        };
        let (head, at, len) = split_apart(payload)?;
        Ok(Incoming { payload: head, bulk: Some(rings.to_driver.get(at, len)?) })
    }

    fn release_apart(&mut self) {
        if let Some(Rings { to_driver, .. }) = self.rings.as_mut() {
            to_driver.release();
        }
    }

    fn alive(&mut self) -> bool {
        match self.child.try_wait() {
            Ok(None) => true,
            _ => {
                let _ = self.child.wait();
                cleanup::untrack(self.child.id() as i32);
                false
            }
        }
    }

    /// SIGKILL through its `Child`, which never signals a process it has reaped.
    fn kill(&mut self) {
        let _ = self.child.kill();
    }

    fn ended(&mut self) -> String {
        let status = self.child.wait();
        cleanup::untrack(self.child.id() as i32);
        describe(status)
    }

    fn retire(conns: Vec<Self>) {
        retire(conns)
    }
}

/// What a job's link keeps of a worker process.
pub(crate) struct ProcHandle {
    pid: i32,
    /// The process itself, which its reader thread may have reaped (its pid then someone
    /// else's) by the time the link stops it.
    pidfd: Option<Arc<PidFd>>,
    /// The worker's shared ring for large batches.
    ring: Option<Arc<Mutex<RingWriter>>>,
}

impl ConnHandle for ProcHandle {
    fn name(&self) -> String {
        format!("worker process {}", self.pid)
    }

    /// Puts a large batch's items in the worker's shared ring; the frame to send, if it fit.
    /// A batch cut straight into this ring (see [`crate::lent`]) is already there: only its
    /// place is sent.
    fn apart(&self, parcel: &EncodedBatch) -> Result<Option<Vec<u8>>> {
        let Some(ring) = self.ring.as_ref() else { return Ok(None) };
        let head = || encode_msg(&parcel.header());
        let in_ring = parcel.holder().as_any().and_then(|h| h.downcast_ref::<Slot>()).and_then(|s| s.place_in(ring));
        if let Some((at, len)) = in_ring {
            return Ok(Some(apart_frame(&head()?, at, len)));
        }
        let items = parcel.item_bytes();
        if items.len() < APART_MIN {
            return Ok(None);
        }
        let Some(at) = ring.lock().ok().and_then(|mut r| r.put(items)) else { return Ok(None) };
        Ok(Some(apart_frame(&head()?, at, items.len())))
    }

    /// Batches from [`APART_MIN`] bytes are cut straight into the worker's ring.
    fn room(&self, bytes: usize) -> Option<Room> {
        let ring = self.ring.as_ref().filter(|_| bytes >= APART_MIN)?;
        crate::lent::room(ring, bytes)
    }

    fn kill(&self) {
        match &self.pidfd {
            Some(fd) => fd.kill(),
            // No pidfd (Linux before 5.3): by pid. Should its reader have reaped it a moment
            // before (it died on its own), the pid could name another process by now.
            None => {
                let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            }
        }
    }
}
