//! [`Room`]: memory a worker link lends so that a batch of plain items is cut from the user's
//! iterator straight to where its worker reads it.
//!
//! Cut into a vector first, a batch of a million tiny items was copied twice in the driver
//! (iterator to vector, vector to the worker's shared ring), the second copy nearly half of
//! what the driver spent per batch. A link whose worker reads its items from memory the
//! driver can write (the process backend's rings) lends that memory for the next batch, and
//! the dispatch loop writes the items there, one pass, when they are plain numbers
//! ([`crate::plumbing::plain`]); the batch's parcel then points at them, and the link sends
//! only where they are. Any other link, or item type, takes the vector path as before.

use crate::remote::ItemBytes;
use std::ptr::NonNull;
use std::sync::Arc;

/// What lent a [`Room`]: told how much of it was written, it keeps those bytes (for the
/// batch's retry) and returns them. Dropped without being told, it takes the room back.
pub trait Lender: Send {
    /// The first `len` bytes of the room hold a batch's items: keep them until the returned
    /// holder is dropped (every copy of the batch's parcel), and do not reuse them before.
    fn filled(self: Box<Self>, len: usize) -> Arc<dyn ItemBytes>;
}

/// Writable memory lent by a link for the next batch's items (see the module docs).
pub struct Room {
    ptr: NonNull<u8>,
    capacity: usize,
    lender: Box<dyn Lender>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Room({} bytes)", self.capacity)
    }
}

impl Room {
    /// Lends `capacity` bytes at `ptr`; `lender` is told how many were written.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for writes of `capacity` bytes and aligned to 64, and nothing else
    /// in this process may read or write them until `lender` is told they were written
    /// ([`Lender::filled`]) or dropped.
    pub unsafe fn new(ptr: NonNull<u8>, capacity: usize, lender: Box<dyn Lender>) -> Room {
        Room { ptr, capacity, lender }
    }

    /// Bytes lent.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Where the bytes start (aligned to 64: see [`Room::new`]).
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The first `len` bytes (at most the capacity) hold the batch's items.
    pub(crate) fn filled(self, len: usize) -> Arc<dyn ItemBytes> {
        self.lender.filled(len.min(self.capacity))
    }
}
