//! Sending to a worker without ever blocking the dispatch loop: a frame goes straight to the
//! socket when it fits in the socket's buffer (the common case, and no thread hop), and what
//! does not fit goes to the worker's writer thread, which writes it while the dispatch loop
//! serves the other workers and keeps time. Order is kept: once anything waits in the writer
//! thread, later frames queue behind it.

use crate::remote::wire::EncodedBatch;
use crossbeam_channel::{unbounded, Sender};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

enum Chunk {
    /// Owned bytes, from an offset.
    Bytes(Vec<u8>, usize),
    /// A frame's tail, from an offset.
    Tail(Tail, usize),
}

/// A frame's tail, sent without being copied.
pub enum Tail {
    /// A batch's encoded items (shared with its retry copy).
    Items(EncodedBatch),
    /// A shared value's bytes (shipped to a worker that cannot see the driver's store).
    Shared(crate::store::SharedBytes),
}

impl Tail {
    fn bytes(&self) -> &[u8] {
        match self {
            Tail::Items(b) => b.item_bytes(),
            Tail::Shared(s) => (**s).as_ref(),
        }
    }
}

/// Join handles of the threads a job starts, joined when the job ends.
pub type Threads = Arc<Mutex<Vec<JoinHandle<()>>>>;

/// The sending side of one worker's socket.
pub struct Outbox {
    stream: OwnedFd,
    /// The writer thread's queue, once the thread is started: only when a frame does not fit
    /// in the socket (most jobs never need it: large tails go through shared memory).
    queue: OnceLock<Sender<Chunk>>,
    name: String,
    threads: Threads,
    /// Chunks handed to the writer thread and not written yet.
    pending: Arc<AtomicUsize>,
}

/// Writes as much of `buf` as the socket takes now; returns how much.
fn send_now(stream: &OwnedFd, buf: &[u8]) -> std::io::Result<usize> {
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
    /// An outbox on `stream`; its writer thread, if it ever starts, is named `name` and
    /// registered in `threads`.
    pub fn new(stream: OwnedFd, name: String, threads: Threads) -> Outbox {
        Outbox { stream, queue: OnceLock::new(), name, threads, pending: Arc::new(AtomicUsize::new(0)) }
    }

    fn writer(&self) -> std::io::Result<&Sender<Chunk>> {
        if let Some(q) = self.queue.get() {
            return Ok(q);
        }
        let (queue, rx) = unbounded::<Chunk>();
        let mut w = std::fs::File::from(self.stream.try_clone()?);
        let left = Arc::clone(&self.pending);
        let handle = std::thread::Builder::new().name(self.name.clone()).spawn(move || {
            for chunk in rx {
                let res = match &chunk {
                    Chunk::Bytes(b, off) => w.write_all(&b[*off..]),
                    Chunk::Tail(t, off) => w.write_all(&t.bytes()[*off..]),
                };
                left.fetch_sub(1, Ordering::Release);
                if res.is_err() {
                    // The worker is gone (its reader reports it).
                    break;
                }
            }
        })?;
        if let Ok(mut g) = self.threads.lock() {
            g.push(handle);
        }
        Ok(self.queue.get_or_init(|| queue))
    }

    fn enqueue(&self, c: Chunk) -> std::io::Result<()> {
        let queue = self.writer()?;
        self.pending.fetch_add(1, Ordering::AcqRel);
        queue.send(c).map_err(|_| {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the worker's writer stopped")
        })
    }

    /// Sends a frame made of `head` and, when given, a batch's encoded items.
    pub fn send(&self, head: Vec<u8>, items: Option<EncodedBatch>) -> std::io::Result<()> {
        self.send_parts(head, items.map(Tail::Items))
    }

    /// Sends a frame made of `head` and, when given, a tail that is never copied.
    pub fn send_parts(&self, head: Vec<u8>, tail: Option<Tail>) -> std::io::Result<()> {
        if self.pending.load(Ordering::Acquire) > 0 {
            self.enqueue(Chunk::Bytes(head, 0))?;
            return match tail {
                Some(t) => self.enqueue(Chunk::Tail(t, 0)),
                None => Ok(()),
            };
        }
        let n = send_now(&self.stream, &head)?;
        if n < head.len() {
            self.enqueue(Chunk::Bytes(head, n))?;
            return match tail {
                Some(t) => self.enqueue(Chunk::Tail(t, 0)),
                None => Ok(()),
            };
        }
        if let Some(t) = tail {
            let n = send_now(&self.stream, t.bytes())?;
            if n < t.bytes().len() {
                self.enqueue(Chunk::Tail(t, n))?;
            }
        }
        Ok(())
    }
}
