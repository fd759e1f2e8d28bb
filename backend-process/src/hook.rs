//! Becoming a worker: a re-executed copy of the program finds the driver's socket in its
//! environment and serves it from a hook that runs **before `main`**, so a worker never runs
//! the user's `main` (no re-run side effects, no fork bombs) and test binaries work as they
//! are: the hook runs before the test harness too.

use crate::shm::{apart_frame, recv_fd, split_apart, Dir, RingReader, RingWriter, Shm, APART_MIN};
use adparallelengine_core::remote::{read_frame_into, write_parts, LOCAL_MAX_FRAME};
use adparallelengine_core::remote::{serve_connection, Incoming, Transport};
use std::io::{self, BufReader, Write};
use std::os::unix::io::FromRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

/// The variable that tells a process it is a worker: the number of its socket's descriptor.
pub const ENV_WORKER_FD: &str = "ADPARALLELENGINE_WORKER_FD";
/// The variable holding the driver's process id, for the worker to check it is still there.
pub const ENV_PARENT_PID: &str = "ADPARALLELENGINE_PARENT_PID";
/// The descriptor the driver puts the worker's socket on: its stdin.
pub(crate) const WORKER_FD: i32 = 0;

// Runs before `main`, through engine-core's one pre-main hook.
adparallelengine_core::worker_entry!(become_worker_if_asked);

/// If this process was started as a worker, serves the driver and exits; otherwise returns at
/// once. engine-core's pre-`main` hook calls it; engine construction calls it again as a
/// safety net.
pub fn become_worker_if_asked() {
    become_worker_with(|t| {
        // For tests of the driver only: one worker process of a test may forge its answers.
        #[cfg(feature = "testing")]
        if let Some(lie) = crate::testing::chosen_to_lie() {
            adparallelengine_core::remote::testing::serve_lying(t, lie);
            return Ok(());
        }
        serve_connection(t, &adparallelengine_store::open_dir_view, &adparallelengine_store::local_dir_store)
    })
}

/// [`become_worker_if_asked`], serving the driver with `serve` over this worker's connection
/// to it (its socket and shared-memory rings); the process exits with 0 when `serve` returns
/// `Ok`, 3 (the message on stderr) when it returns an error, 4 when it panics.
pub(crate) fn become_worker_with(serve: impl FnOnce(&mut dyn Transport) -> Result<(), String>) {
    let Some(fd) = std::env::var(ENV_WORKER_FD).ok().and_then(|v| v.parse::<i32>().ok()) else {
        return;
    };
    // Die with the driver: the kernel sends SIGKILL when the thread that spawned us exits.
    // The driver may already be gone by now: then nobody would, so check.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: plain prctl(2) and getppid(2).
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let parent = std::env::var(ENV_PARENT_PID).ok().and_then(|p| p.parse::<i32>().ok());
        // SAFETY: plain getppid(2).
        if parent.is_some_and(|p| p != unsafe { libc::getppid() }) {
            std::process::exit(1);
        }
    }
    keep_freed_memory();
    // Children of this worker (if a task starts processes) are not workers.
    std::env::remove_var(ENV_WORKER_FD);
    std::env::remove_var(ENV_PARENT_PID);
    // SAFETY: the driver put our end of a socketpair on this descriptor (our stdin), and
    // nothing else in this process uses it before `main`, which a worker never reaches.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // Nothing `serve` touches is looked at after a panic: the process exits.
    let serving = std::panic::AssertUnwindSafe(move || connect(stream).and_then(|mut t| serve(&mut t)));
    let code = match std::panic::catch_unwind(serving) {
        Ok(Ok(())) => 0,
        Ok(Err(msg)) => {
            eprintln!("adparallelengine worker {}: {msg}", std::process::id());
            3
        }
        Err(_) => 4,
    };
    std::process::exit(code);
}

/// A worker allocates and frees a buffer of the same few sizes for every batch. glibc's
/// `malloc` gives large ones their own `mmap` and unmaps them when freed, and trims the heap
/// top, so every batch faulted in fresh zeroed pages: that was most of the CPU a worker spent
/// on a million tiny items. Workers are our processes (they never run the user's `main`), so
/// they keep freed memory for reuse, up to 64 MiB beyond what they use. Other allocators
/// (a `#[global_allocator]`) ignore this.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt(3) only changes glibc malloc's tuning; called before any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// This worker's transport: its socket to the driver, and the shared-memory rings the driver
/// sends first on it, if it made them.
fn connect(stream: UnixStream) -> Result<SocketTransport, String> {
    // First on the socket: our shared memory, if the driver made one.
    let shm = match recv_fd(&stream).map_err(|e| format!("cannot receive the shared memory: {e}"))? {
        Some(fd) => Some(Shm::open(fd).map_err(|e| format!("cannot map the shared memory: {e}"))?),
        None => None,
    };
    let writer = stream.try_clone().map_err(|e| format!("cannot clone the driver socket: {e}"))?;
    Ok(SocketTransport {
        reader: BufReader::with_capacity(1 << 16, stream),
        writer,
        buf: Vec::new(),
        rings: shm.map(|s| (RingWriter::new(Arc::clone(&s), Dir::ToDriver), RingReader::new(s, Dir::ToWorker))),
        holding: false,
    })
}

/// The worker's end of a socket, speaking engine-core's frames; large tails go through the
/// shared rings (see [`crate::shm`]).
struct SocketTransport {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    buf: Vec<u8>,
    rings: Option<(RingWriter, RingReader)>,
    /// The last message's tail is in the ring, borrowed until the next `recv`.
    holding: bool,
}

impl SocketTransport {
    /// Reads the next frame, first giving back what the last one held in the ring (its tail,
    /// and room lent with it and not used). `None` at the end of the stream; else, for a
    /// frame whose tail is in the ring, the head's length and the tail's place.
    fn next_frame(&mut self) -> io::Result<Option<Option<(usize, u64, u64)>>> {
        if let Some((w, r)) = self.rings.as_mut() {
            if std::mem::take(&mut self.holding) {
                r.release();
            }
            w.unlend();
        }
        match read_frame_into(&mut self.reader, LOCAL_MAX_FRAME, &mut self.buf)? {
            None => Ok(None),
            Some(false) => Ok(Some(None)),
            Some(true) => {
                if self.rings.is_none() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a tail in shared memory, but none is mapped",
                    ));
                }
                let (head, at, len) = split_apart(&self.buf)?;
                self.holding = true;
                Ok(Some(Some((head.len(), at, len))))
            }
        }
    }
}

/// The message of a frame read by [`SocketTransport::next_frame`].
fn message<'a>(
    buf: &'a [u8],
    reader: Option<&'a RingReader>,
    apart: Option<(usize, u64, u64)>,
) -> io::Result<Incoming<'a>> {
    match (apart, reader) {
        (None, _) => Ok(Incoming { payload: buf, bulk: None }),
        (Some((head, at, len)), Some(r)) => Ok(Incoming { payload: &buf[..head], bulk: Some(r.get(at, len)?) }),
        (Some(_), None) => {
            Err(io::Error::new(io::ErrorKind::InvalidData, "a tail in shared memory, but none is mapped"))
        }
    }
}

impl Transport for SocketTransport {
    fn send(&mut self, head: &[u8], tail: &[u8]) -> io::Result<()> {
        if tail.len() >= APART_MIN {
            if let Some(at) = self.rings.as_mut().and_then(|(w, _)| w.put(tail)) {
                return self.writer.write_all(&apart_frame(head, at, tail.len()));
            }
        }
        write_parts(&mut self.writer, head, tail)
    }

    fn recv(&mut self) -> io::Result<Option<Incoming<'_>>> {
        let Some(apart) = self.next_frame()? else { return Ok(None) };
        message(&self.buf, self.rings.as_ref().map(|(_, r)| r), apart).map(Some)
    }

    /// Room from [`APART_MIN`] bytes, in the ring to the driver.
    fn recv_with_room(
        &mut self,
        room_for: &dyn Fn(&[u8]) -> usize,
    ) -> io::Result<Option<(Incoming<'_>, Option<&mut [u8]>)>> {
        let Some(apart) = self.next_frame()? else { return Ok(None) };
        let want = room_for(&self.buf[..apart.map_or(self.buf.len(), |(head, _, _)| head)]);
        let (writer, reader) = match self.rings.as_mut() {
            Some((w, r)) => (Some(w), Some(&*r)),
            None => (None, None),
        };
        let incoming = message(&self.buf, reader, apart)?;
        let room = writer.filter(|_| want >= APART_MIN).and_then(|w| w.room(want)).map(|p| {
            // SAFETY: the ring lent `want` bytes at `p`, inside the mapping; nothing on this
            // side writes them until they are committed (`send_in_place`) or taken back (the
            // next `recv`), both after this borrow of `self` ends, and the driver reads them
            // only once a frame names them.
            unsafe { std::slice::from_raw_parts_mut(p, want) }
        });
        Ok(Some((incoming, room)))
    }

    fn send_in_place(&mut self, head: &[u8], len: usize) -> io::Result<()> {
        let no_room = || io::Error::new(io::ErrorKind::InvalidInput, "no room lent for this tail");
        let (w, _) = self.rings.as_mut().ok_or_else(no_room)?;
        if len == 0 {
            w.unlend();
            return write_parts(&mut self.writer, head, &[]);
        }
        let (at, _) = w.commit(len, false).ok_or_else(no_room)?;
        self.writer.write_all(&apart_frame(head, at, len))
    }
}
