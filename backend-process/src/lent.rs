//! Batches cut straight into a worker's ring: the room the driver's dispatch loop writes a
//! batch's plain items into, and the slot that then holds them until the batch is answered.
//!
//! The slot is the batch's only copy in the driver: it serves the first send (only its place
//! travels) and, should the worker die, the retry on another worker (copied into that one's
//! ring). So its space is not reused when the worker consumes it, but only once the driver
//! drops the batch too (it was answered, or given up): the ring keeps it *held* until then.
//!
//! What a retry trusts: the rings are shared memory the worker can write, so a batch retried
//! after its worker died holds whatever that worker left in its place. The items are plain
//! numbers, for which any bytes are valid values (no undefined behaviour, and the retry's
//! answer is checked like any other); a worker that corrupts its own items before dying can
//! change the results no more than one that answers wrong outputs, which no driver can tell
//! either. The driver-side bookkeeping (where a batch is, how long) is never read from the
//! shared memory.

use crate::shm::{Dir, RingWriter, Shm};
use adparallelengine_core::plumbing::{Lender, Room};
use adparallelengine_core::remote::ItemBytes;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

fn lock(w: &Mutex<RingWriter>) -> std::sync::MutexGuard<'_, RingWriter> {
    // Each update of a ring's bookkeeping is one step: consistent through a panic elsewhere.
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// Room for `bytes` bytes of a batch's items in the ring `writer` (to the worker), or `None`
/// when they do not fit now.
pub(crate) fn room(writer: &Arc<Mutex<RingWriter>>, bytes: usize) -> Option<Room> {
    let ptr = NonNull::new(lock(writer).room(bytes)?)?;
    let lender = Box::new(Lent { writer: Arc::clone(writer), ptr, filled: false });
    // SAFETY: the ring lent `bytes` bytes at `ptr`, aligned to `shm::ALIGN` (64), inside the
    // mapping, which `lender` keeps alive (its writer holds the `Shm`); the ring puts nothing
    // there until the loan is committed (`filled`) or taken back (`Lent`'s drop), and the
    // worker reads it only once a frame names it, after the commit.
    Some(unsafe { Room::new(ptr, bytes, lender) })
}

/// A loan of ring space, taken back if dropped unfilled.
struct Lent {
    writer: Arc<Mutex<RingWriter>>,
    ptr: NonNull<u8>,
    filled: bool,
}

// SAFETY: `ptr` points into the shared mapping `writer` keeps alive, which any thread may
// write (see `Shm`); the loan is one thread's at a time (it moves with the `Room`).
unsafe impl Send for Lent {}

impl Lender for Lent {
    fn filled(mut self: Box<Self>, len: usize) -> Arc<dyn ItemBytes> {
        self.filled = true;
        let (shm, committed) = {
            let mut w = lock(&self.writer);
            (Arc::clone(w.shm()), w.commit(len, true))
        };
        match committed {
            Some((at, number)) => Arc::new(Slot {
                shm,
                writer: Arc::clone(&self.writer),
                at,
                len,
                number,
                framed: AtomicBool::new(false),
            }),
            // Never: a ring lends one room at a time, and only this loan's drop or commit
            // ends it. Were it gone, the items are copied out, so the batch is still right.
            None => {
                // SAFETY: the loan was at least `len` bytes at `ptr` (`Room::filled` caps
                // `len` at the capacity), inside the mapping `shm` keeps alive, and just
                // written by the dispatch loop.
                let bytes = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), len) }.to_vec();
                drop(shm);
                Arc::new(bytes)
            }
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if !self.filled {
            lock(&self.writer).unlend();
        }
    }
}

/// A batch's items in a worker's ring, held there while the driver keeps the batch.
pub(crate) struct Slot {
    shm: Arc<Shm>,
    writer: Arc<Mutex<RingWriter>>,
    at: usize,
    len: usize,
    /// Its number among the ring's tails.
    number: u64,
    /// Its place was sent: the ring's reader counts it as read once, so a second send (never
    /// made today) must copy it as a new tail.
    framed: AtomicBool,
}

impl Slot {
    /// Where the items are in `writer`'s ring, to send once: `None` when they are in
    /// another ring, or their place was sent before.
    pub(crate) fn place_in(&self, writer: &Arc<Mutex<RingWriter>>) -> Option<(usize, usize)> {
        let first = Arc::ptr_eq(&self.writer, writer) && !self.framed.swap(true, Ordering::AcqRel);
        first.then_some((self.at, self.len))
    }
}

impl ItemBytes for Slot {
    fn bytes(&self) -> &[u8] {
        // SAFETY: a committed tail is inside the ring, and it is held (not reused by the
        // driver) until this slot is dropped.
        unsafe { self.shm.slice(Dir::ToWorker, self.at, self.len) }
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.writer).unhold(self.number);
    }
}
