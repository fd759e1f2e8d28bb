//! Large message tails (a batch's items, its outputs) travel through memory shared with the
//! worker instead of the socket.
//!
//! Through a socket, every byte is copied into the kernel and out again, in socket-buffer
//! sized pieces, with a wake-up each: for a million tiny items that was a third of the CPU
//! the job used. Each worker gets one `memfd` (passed over its socket with `SCM_RIGHTS`, no
//! name anywhere, gone when both ends close it) holding two rings, one per direction. The
//! sender copies a tail into its ring and sends only the head and the tail's place; the
//! receiver reads the tail where it lies and, once done with it, bumps the ring's shared
//! *consumed* counter so the sender can reuse the space. Tails are consumed in the order
//! they were sent (one reader per direction), so a counter is all the sender needs.
//!
//! Placement is first-fit from the start of the ring, so the pages in use stay those of the
//! largest set of tails in flight at once, not the whole ring. A tail that does not fit now
//! (or under [`APART_MIN`]) goes through the socket as before: the rings are an optimisation,
//! never a condition.
//!
//! The peer is our own child running our own build, but offsets from it are still checked
//! against the ring's bounds before any read.

use memmap2::MmapRaw;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Tails from this size on go through shared memory; smaller ones ride in the socket frame
/// (one write, cheaper than the bookkeeping).
pub(crate) const APART_MIN: usize = 32 << 10;

/// Capacity of each ring. Only the pages in use are ever touched (first-fit from the start),
/// so this is address space, not memory.
const RING: usize = 64 << 20;

/// The first page holds the two consumed counters, each on its own cache line.
const HEADER: usize = 4096;

/// A direction of a worker's shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// Driver to worker: batches' items.
    ToWorker,
    /// Worker to driver: batches' outputs.
    ToDriver,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::ToWorker => 0,
            Dir::ToDriver => 1,
        }
    }
}

/// One worker's shared memory: two rings and their consumed counters.
pub(crate) struct Shm {
    map: MmapRaw,
}

// SAFETY: the mapping is plain shared memory; every access goes through atomics (the// counters) or to ring regions that the protocol gives to one side at a time.
unsafe impl Send for Shm {}
// SAFETY: as above.
unsafe impl Sync for Shm {}

impl Shm {
    /// Creates a worker's shared memory; returns it and the descriptor to pass to the worker.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(crate) fn create() -> io::Result<(Arc<Shm>, OwnedFd)> {
        // SAFETY: memfd_create(2) with a NUL-terminated name; the descriptor it returns is
        // ours alone.
        let fd = unsafe { libc::memfd_create(c"adparallelengine-rings".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let file = std::fs::File::from(fd.try_clone()?);
        file.set_len((HEADER + 2 * RING) as u64)?;
        Ok((Self::map(&file)?, fd))
    }

    /// No shared memory where there is no `memfd`: every tail goes through the socket.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(crate) fn create() -> io::Result<(Arc<Shm>, OwnedFd)> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "no memfd on this system"))
    }

    /// Maps the shared memory the driver passed (on the worker).
    pub(crate) fn open(fd: OwnedFd) -> io::Result<Arc<Shm>> {
        let file = std::fs::File::from(fd);
        if file.metadata()?.len() != (HEADER + 2 * RING) as u64 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the shared rings have the wrong size"));
        }
        Self::map(&file)
    }

    fn map(file: &std::fs::File) -> io::Result<Arc<Shm>> {
        let map = MmapRaw::map_raw(file.as_raw_fd())?;
        Ok(Arc::new(Shm { map }))
    }

    fn consumed(&self, dir: Dir) -> &AtomicU64 {
        // SAFETY: the header page is inside the mapping, 64-byte aligned offsets of a
        // page-aligned mapping are aligned for `AtomicU64`, and these words are only ever
        // accessed atomically (by both processes).
        unsafe { &*self.map.as_mut_ptr().add(dir.index() * 64).cast::<AtomicU64>() }
    }

    /// Bytes `at..at + len` of a ring.
    ///
    /// # Safety
    ///
    /// `at + len` is at most the ring's size, and nobody on this side writes the range while
    /// the slice lives (the protocol gives it to one side at a time).
    pub(crate) unsafe fn slice(&self, dir: Dir, at: usize, len: usize) -> &[u8] {
        // SAFETY: in bounds, and not written on this side meanwhile (the caller's promise).
        unsafe { std::slice::from_raw_parts(self.ring(dir).add(at), len) }
    }

    fn ring(&self, dir: Dir) -> *mut u8 {
        // SAFETY: HEADER + 2 * RING bytes are mapped.
        unsafe { self.map.as_mut_ptr().add(HEADER + dir.index() * RING) }
    }
}

/// Where tails start in a ring: any plain number read there is aligned, whatever the sizes of
/// the tails before it.
pub(crate) const ALIGN: usize = 64;

/// A tail the reader may still be reading, or the driver still needs.
#[derive(Debug, Clone, Copy)]
struct Outstanding {
    /// Its number among the tails written (the reader consumes them in this order).
    number: u64,
    at: usize,
    len: usize,
    /// The writer's side still holds it (the driver keeps a batch's items in the ring for a
    /// retry until the batch is answered): it is not reused even once consumed.
    held: bool,
}

/// The sending end of one ring.
pub(crate) struct RingWriter {
    shm: Arc<Shm>,
    dir: Dir,
    /// Tails written so far.
    written: u64,
    /// Tails written and not free yet.
    outstanding: VecDeque<Outstanding>,
    /// Space lent to be written in place ([`RingWriter::room`]) and not committed yet.
    reserved: Option<(usize, usize)>,
}

impl RingWriter {
    pub(crate) fn new(shm: Arc<Shm>, dir: Dir) -> Self {
        RingWriter { shm, dir, written: 0, outstanding: VecDeque::new(), reserved: None }
    }

    /// The first place, from the start of the ring, where `len` bytes fit now.
    fn find(&mut self, len: usize) -> Option<usize> {
        if len == 0 || len > RING {
            return None;
        }
        let consumed = self.shm.consumed(self.dir).load(Ordering::Acquire);
        self.outstanding.retain(|o| o.number >= consumed || o.held);
        let taken = |at: usize| {
            self.outstanding.iter().map(|o| (o.at, o.len)).chain(self.reserved).any(|(o, l)| at < o + l && o < at + len)
        };
        let ends = self.outstanding.iter().map(|o| o.at + o.len).chain(self.reserved.map(|(o, l)| o + l));
        std::iter::once(0).chain(ends).map(|at| at.next_multiple_of(ALIGN)).find(|&at| at + len <= RING && !taken(at))
    }

    fn record(&mut self, at: usize, len: usize, held: bool) -> u64 {
        let number = self.written;
        self.outstanding.push_back(Outstanding { number, at, len, held });
        self.written += 1;
        number
    }

    /// Copies `bytes` into the ring; returns their offset, or `None` when they do not fit now.
    pub(crate) fn put(&mut self, bytes: &[u8]) -> Option<usize> {
        let len = bytes.len();
        let at = self.find(len)?;
        // SAFETY: [at, at + len) is inside the ring and overlaps no tail the reader may
        // still be reading, nor space lent out (checked in `find`); the reader reads it only
        // after our frame names it.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.shm.ring(self.dir).add(at), len) };
        self.record(at, len, false);
        Some(at)
    }

    /// Lends `len` bytes of the ring, aligned to [`ALIGN`], to be written in place: their
    /// start, or `None` when they do not fit now. Until [`RingWriter::commit`] or
    /// [`RingWriter::unlend`], nothing else is put there. One loan at a time.
    pub(crate) fn room(&mut self, len: usize) -> Option<*mut u8> {
        if self.reserved.is_some() {
            return None;
        }
        let at = self.find(len)?;
        self.reserved = Some((at, len));
        // SAFETY: `at + len <= RING` (checked in `find`): inside the ring.
        Some(unsafe { self.shm.ring(self.dir).add(at) })
    }

    /// The lent space's first `len` bytes (at most what was lent) are a tail, the next one
    /// written; returns its offset and number. `held`: the writer's side keeps it until
    /// [`RingWriter::unhold`], consumed or not.
    /// `None`, and the loan kept, when nothing is lent or `len` is more than was.
    pub(crate) fn commit(&mut self, len: usize, held: bool) -> Option<(usize, u64)> {
        let (at, _) = self.reserved.filter(|&(_, lent)| len <= lent)?;
        self.reserved = None;
        let number = self.record(at, len, held);
        Some((at, number))
    }

    /// Takes back space lent and not committed.
    pub(crate) fn unlend(&mut self) {
        self.reserved = None;
    }

    /// The writer's side no longer needs tail `number` (see [`RingWriter::commit`]).
    pub(crate) fn unhold(&mut self, number: u64) {
        if let Some(o) = self.outstanding.iter_mut().find(|o| o.number == number) {
            o.held = false;
        }
    }

    /// The shared memory this writer writes into.
    pub(crate) fn shm(&self) -> &Arc<Shm> {
        &self.shm
    }
}

/// The receiving end of one ring.
pub(crate) struct RingReader {
    shm: Arc<Shm>,
    dir: Dir,
    consumed: u64,
}

impl RingReader {
    pub(crate) fn new(shm: Arc<Shm>, dir: Dir) -> Self {
        RingReader { shm, dir, consumed: 0 }
    }

    /// The tail the peer put at `at`, `len` bytes long. Call [`RingReader::release`] when done
    /// with it, before reading the next one.
    pub(crate) fn get(&self, at: u64, len: u64) -> io::Result<&[u8]> {
        let (at, len) = (at as usize, len as usize);
        if at.checked_add(len).is_none_or(|end| end > RING) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "a tail outside the shared ring"));
        }
        // SAFETY: in bounds (checked above); the writer does not touch this region until we
        // release it.
        Ok(unsafe { std::slice::from_raw_parts(self.shm.ring(self.dir).add(at), len) })
    }

    /// Gives the oldest tail's space back to the writer.
    pub(crate) fn release(&mut self) {
        self.consumed += 1;
        self.shm.consumed(self.dir).store(self.consumed, Ordering::Release);
    }
}

/// A frame whose tail is in the ring: its length (flagged), the head, then the tail's offset
/// and length.
pub(crate) fn apart_frame(head: &[u8], at: usize, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + head.len() + 16);
    f.extend_from_slice(&((head.len() + 16) as u64 | adparallelengine_core::remote::TAIL_APART).to_le_bytes());
    f.extend_from_slice(head);
    f.extend_from_slice(&(at as u64).to_le_bytes());
    f.extend_from_slice(&(len as u64).to_le_bytes());
    f
}

/// Splits the payload of a flagged frame into its head and the tail's offset and length.
pub(crate) fn split_apart(payload: &[u8]) -> io::Result<(&[u8], u64, u64)> {
    let Some(cut) = payload.len().checked_sub(16) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "a frame too short for its tail's place"));
    };
    let word = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().unwrap_or_default());
    Ok((&payload[..cut], word(cut), word(cut + 8)))
}

/// Sends the shared memory's descriptor (or none) to a new worker: one byte, with the
/// descriptor attached. It is the first thing on the socket.
pub(crate) fn send_fd(sock: &impl AsRawFd, fd: Option<&OwnedFd>) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let raw = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage> = raw.as_ref().map(|r| ControlMessage::ScmRights(r)).into_iter().collect();
    let byte = [u8::from(fd.is_some())];
    sendmsg::<()>(sock.as_raw_fd(), &[io::IoSlice::new(&byte)], &cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(io::Error::from)?;
    Ok(())
}

/// Receives what [`send_fd`] sent (on the worker, before anything else is read).
pub(crate) fn recv_fd(sock: &impl AsRawFd) -> io::Result<Option<OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    if msg.bytes != 1 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the driver closed the socket before the start"));
    }
    let mut got = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed this descriptor in our table for us.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                got.get_or_insert(owned);
            }
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_go_round_the_ring_and_space_comes_back() {
        let (shm, _fd) = Shm::create().unwrap();
        let mut w = RingWriter::new(Arc::clone(&shm), Dir::ToWorker);
        let mut r = RingReader::new(shm, Dir::ToWorker);
        let a = vec![1u8; 40 << 20];
        let b = vec![2u8; 20 << 20];
        let at_a = w.put(&a).unwrap();
        let at_b = w.put(&b).unwrap();
        assert_eq!((at_a, at_b), (0, 40 << 20));
        assert!(w.put(&b).is_none(), "the ring is full until the reader releases");
        assert_eq!(r.get(at_a as u64, a.len() as u64).unwrap(), &a[..]);
        r.release();
        // First fit from the start again: the same pages are reused.
        let c = vec![3u8; 30 << 20];
        assert_eq!(w.put(&c), Some(0));
        assert_eq!(r.get(at_b as u64, b.len() as u64).unwrap(), &b[..]);
        r.release();
        assert_eq!(r.get(0, c.len() as u64).unwrap(), &c[..]);
        assert!(r.get(RING as u64 - 1, 2).is_err());
        assert!(r.get(u64::MAX, 2).is_err());
    }

    #[test]
    fn lent_space_is_aligned_kept_apart_and_held_until_the_writer_lets_go() {
        let (shm, _fd) = Shm::create().unwrap();
        let mut w = RingWriter::new(Arc::clone(&shm), Dir::ToWorker);
        let mut r = RingReader::new(Arc::clone(&shm), Dir::ToWorker);
        assert_eq!(w.put(&[1u8; 100]), Some(0));
        let p = w.room(1000).unwrap();
        let at = p as usize - shm.ring(Dir::ToWorker) as usize;
        assert_eq!(at, 128, "after the first tail, aligned to {ALIGN}");
        assert!(w.room(8).is_none(), "one loan at a time");
        assert_eq!(w.put(&[2u8; 10]), Some(128 + 1024), "a put avoids the lent space");
        // SAFETY: the loan is 1000 bytes at `p`.
        unsafe { std::ptr::write_bytes(p, 7, 800) };
        assert_eq!(w.commit(1001, true), None, "more than lent");
        assert_eq!(w.commit(800, true), Some((128, 2)));
        assert_eq!(w.commit(8, true), None, "nothing lent any more");
        // The reader consumes all three tails; the held one still is not reused.
        for _ in 0..3 {
            r.release();
        }
        assert_eq!(w.put(&[3u8; 64]), Some(0));
        let next = w.put(&[4u8; 64]).unwrap();
        assert!(!(128..928).contains(&next), "held space is not reused: {next}");
        assert_eq!(r.get(128, 800).unwrap(), &[7u8; 800][..]);
        w.unhold(2);
        r.release();
        r.release();
        assert_eq!(w.put(&[5u8; 900]), Some(0), "let go and consumed: free again");
        // A loan dropped unwritten is taken back.
        assert!(w.room(64).is_some());
        w.unlend();
        assert!(w.room(64).is_some());
        w.unlend();
        assert!(w.room(0).is_none() && w.room(RING + 1).is_none());
    }

    #[test]
    fn apart_frames_split_back() {
        let f = apart_frame(b"head", 4096, 12345);
        let len = u64::from_le_bytes(f[..8].try_into().unwrap());
        assert_eq!(len & adparallelengine_core::remote::TAIL_APART, adparallelengine_core::remote::TAIL_APART);
        assert_eq!((len & !adparallelengine_core::remote::TAIL_APART) as usize, f.len() - 8);
        let (head, at, n) = split_apart(&f[8..]).unwrap();
        assert_eq!((head, at, n), (&b"head"[..], 4096, 12345));
        assert!(split_apart(b"short").is_err());
    }

    #[test]
    fn a_descriptor_crosses_a_socket() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (shm, fd) = Shm::create().unwrap();
        let mut w = RingWriter::new(shm, Dir::ToDriver);
        send_fd(&a, Some(&fd)).unwrap();
        let theirs = Shm::open(recv_fd(&b).unwrap().unwrap()).unwrap();
        let at = w.put(b"across").unwrap();
        assert_eq!(RingReader::new(theirs, Dir::ToDriver).get(at as u64, 6).unwrap(), b"across");
        send_fd(&a, None).unwrap();
        assert!(recv_fd(&b).unwrap().is_none());
    }
}
