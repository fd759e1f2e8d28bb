//! [`Placement`]: the output vector of [`Job::run`](crate::Job::run), handed to backends that
//! receive outputs as bytes so they copy each batch straight to its place.
//!
//! A backend that gets a batch's outputs over a wire would otherwise decode them into a new
//! vector (a copy, into freshly faulted pages), which the driver then appends to the result
//! (a second copy, on the one thread that also cuts and sends batches). For plain-number
//! outputs (see [`crate::plain`]) the bytes on the wire *are* the outputs, so the backend's
//! reader thread copies them once, into the result, and the batch arrives [`placed`].
//! Any batch not placed (other backends, batches with failures) is copied in by `run`.
//!
//! [`placed`]: crate::batch::BatchDone::placed

use std::mem::ManuallyDrop;
use std::sync::Arc;

/// The output vector of a job, written in place by batch (see the module docs). Cloning it
/// shares it.
pub struct Placement<O> {
    slab: Arc<Slab<O>>,
}

impl<O> Clone for Placement<O> {
    fn clone(&self) -> Self {
        Placement { slab: Arc::clone(&self.slab) }
    }
}

impl<O> std::fmt::Debug for Placement<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Placement({} outputs)", self.slab.len)
    }
}

/// `len` output slots (uninitialized until written), owned like a `Vec<O>`'s buffer.
struct Slab<O> {
    ptr: *mut O,
    len: usize,
}

// SAFETY: slots are written through `put_bytes` / `put`, each batch to its own disjoint range
// (a job's batches partition its items), and read only once every writer is gone
// (`into_vec`). `O` is a plain number (checked in `new`): `Send` and `Sync`.
unsafe impl<O> Send for Slab<O> {}
// SAFETY: as above.
unsafe impl<O> Sync for Slab<O> {}

impl<O> Drop for Slab<O> {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` come from a `Vec<O>` of capacity `len` (in `new`); with a
        // length of 0 nothing is dropped (plain numbers need no drop anyway), only freed.
        unsafe { drop(Vec::from_raw_parts(self.ptr, 0, self.len)) };
    }
}

impl<O: 'static> Placement<O> {
    /// Slots for `len` outputs, when `O` is a plain number; `None` otherwise.
    pub fn new(len: usize) -> Option<Self> {
        if !crate::plain::is_plain::<O>() {
            return None;
        }
        let mut v = ManuallyDrop::new(Vec::<O>::with_capacity(len));
        Some(Placement { slab: Arc::new(Slab { ptr: v.as_mut_ptr(), len }) })
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slab.len
    }

    /// Whether there are no slots.
    pub fn is_empty(&self) -> bool {
        self.slab.len == 0
    }

    /// Copies `count` outputs given as their bytes (as [`crate::wire::encode_items`] writes
    /// plain numbers) to the slots from `start`. `false`, and nothing written, when the
    /// bytes are not `count` outputs or go past the end.
    pub fn put_bytes(&self, start: usize, count: usize, bytes: &[u8]) -> bool {
        let size = std::mem::size_of::<O>();
        if size == 0 || Some(bytes.len()) != count.checked_mul(size) {
            return false;
        }
        if start.checked_add(count).is_none_or(|end| end > self.slab.len) {
            return false;
        }
        // SAFETY: in bounds (checked); `O` is a plain number, valid for any bytes; the range
        // is this batch's alone (see `Slab`).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.slab.ptr.add(start).cast::<u8>(), bytes.len()) };
        true
    }

    /// Moves `outputs` to the slots from `start`; `false` if they go past the end.
    pub(crate) fn put(&self, start: usize, outputs: Vec<O>) -> bool {
        // SAFETY: a `[O]` of plain numbers is its bytes (see `plain`).
        let bytes = crate::plain::as_bytes(&outputs).unwrap_or_default();
        outputs.is_empty() || self.put_bytes(start, outputs.len(), bytes)
    }

    /// The outputs, once every slot was written (the caller counted them) and every writer
    /// is done (the job's backend was dropped, and with it every clone). Should a clone
    /// remain, the outputs are copied out and the slots freed with the last clone.
    pub(crate) fn into_vec(self) -> Vec<O> {
        match Arc::try_unwrap(self.slab) {
            Ok(slab) => {
                let slab = ManuallyDrop::new(slab);
                // SAFETY: the buffer came from a `Vec<O>` of capacity `len`, every slot was
                // written, and `slab` will not free it (ManuallyDrop).
                unsafe { Vec::from_raw_parts(slab.ptr, slab.len, slab.len) }
            }
            Err(shared) => {
                let mut out = Vec::<O>::with_capacity(shared.len);
                // SAFETY: every slot was written; plain numbers copy bitwise.
                unsafe {
                    std::ptr::copy_nonoverlapping(shared.ptr, out.as_mut_ptr(), shared.len);
                    out.set_len(shared.len);
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_land_in_place_from_any_thread() {
        assert!(Placement::<String>::new(3).is_none(), "only plain numbers");
        let p = Placement::<u32>::new(6).unwrap();
        let q = p.clone();
        std::thread::spawn(move || assert!(q.put_bytes(3, 3, crate::plain::as_bytes(&[4u32, 5, 6]).unwrap())))
            .join()
            .unwrap();
        assert!(p.put(0, vec![1, 2, 3]));
        assert!(!p.put_bytes(5, 2, &[0; 8]), "past the end");
        assert!(!p.put_bytes(0, 1, &[0; 3]), "not whole outputs");
        assert!(!p.put_bytes(0, 1, &[0; 8]), "not the count announced");
        assert!(!p.put(usize::MAX, vec![1]));
        assert_eq!(p.into_vec(), vec![1, 2, 3, 4, 5, 6]);
        let p = Placement::<f64>::new(1).unwrap();
        let keep = p.clone();
        assert!(p.put(0, vec![2.5]));
        assert_eq!(p.into_vec(), vec![2.5], "copied out while a clone remains");
        drop(keep);
    }
}
