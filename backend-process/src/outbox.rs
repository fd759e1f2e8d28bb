//! Sending to a worker without ever blocking the dispatch loop: a frame goes straight to the
//! socket when it fits in the socket's buffer (the common case, and no thread hop), and what
//! does not fit goes to the worker's writer thread, which writes it while the dispatch loop
//! serves the other workers and keeps time. Order is kept: once anything waits in the writer
//! thread, later frames queue behind it.

use crossbeam_channel::{unbounded, Sender};
use engine_core::wire::EncodedBatch;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

enum Chunk {
    /// Owned bytes, from an offset.
    Bytes(Vec<u8>, usize),
    /// A batch's encoded items (shared with its retry copy), from an offset.
    Items(EncodedBatch, usize),
}

/// The sending side of one worker's socket.
pub(crate) struct Outbox {
    stream: UnixStream,
    queue: Sender<Chunk>,
    /// Chunks handed to the writer thread and not written yet.
    pending: Arc<AtomicUsize>,
}

/// Writes as much of `buf` as the socket takes now; returns how much.
fn send_now(stream: &UnixStream, buf: &[u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &buf[done..];
        // SAFETY: `rest` is valid for `rest.len()` bytes; MSG_DONTWAIT makes this one call
        // non-blocking without changing the descriptor's flags (the reader shares them).
        let n = unsafe {
            libc::send(stream.as_raw_fd(), rest.as_ptr().cast(), rest.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        if n >= 0 {
            done += n as usize;
            continue;
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => {}
            std::io::ErrorKind::WouldBlock => break,
            _ => return Err(e),
        }
    }
    Ok(done)
}

impl Outbox {
    /// An outbox on `stream`, with its writer thread (returned, to be joined).
    pub(crate) fn new(stream: UnixStream, name: String) -> std::io::Result<(Outbox, JoinHandle<()>)> {
        let (queue, rx) = unbounded::<Chunk>();
        let pending = Arc::new(AtomicUsize::new(0));
        let mut w = stream.try_clone()?;
        let left = Arc::clone(&pending);
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            for chunk in rx {
                let res = match &chunk {
                    Chunk::Bytes(b, off) => w.write_all(&b[*off..]),
                    Chunk::Items(b, off) => w.write_all(&b.item_bytes()[*off..]),
                };
                left.fetch_sub(1, Ordering::Release);
                if res.is_err() {
                    // The worker is gone (its reader reports it).
                    break;
                }
            }
        })?;
        Ok((Outbox { stream, queue, pending }, handle))
    }

    fn enqueue(&self, c: Chunk) -> std::io::Result<()> {
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.queue.send(c).map_err(|_| {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the worker's writer stopped")
        })
    }

    /// Sends a frame made of `head` and, when given, a batch's encoded items.
    pub(crate) fn send(&self, head: Vec<u8>, items: Option<EncodedBatch>) -> std::io::Result<()> {
        if self.pending.load(Ordering::Acquire) > 0 {
            self.enqueue(Chunk::Bytes(head, 0))?;
            return match items {
                Some(b) => self.enqueue(Chunk::Items(b, 0)),
                None => Ok(()),
            };
        }
        let n = send_now(&self.stream, &head)?;
        if n < head.len() {
            self.enqueue(Chunk::Bytes(head, n))?;
            return match items {
                Some(b) => self.enqueue(Chunk::Items(b, 0)),
                None => Ok(()),
            };
        }
        if let Some(b) = items {
            let n = send_now(&self.stream, b.item_bytes())?;
            if n < b.item_bytes().len() {
                self.enqueue(Chunk::Items(b, n))?;
            }
        }
        Ok(())
    }
}
