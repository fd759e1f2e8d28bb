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
//! [`placed`]: crate::plumbing::batch::BatchDone::placed

use std::collections::BTreeMap;
use std::mem::ManuallyDrop;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

/// The output vector of a job, written in place by batch (see the module docs). Cloning it
/// shares it.
///
/// Every write claims its range first, and a range that overlaps one claimed before is
/// refused, so no two writers ever touch one slot, whoever holds a clone; the engine reads the
/// outputs only once every slot was written, and checks that each batch a backend marks
/// [`placed`](crate::plumbing::BatchDone::placed) was.
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
    claims: Mutex<Claims>,
}

/// The ranges of a slab claimed by writers, and whether each was written.
#[derive(Default)]
struct Claims {
    /// `start -> (end, written)`, disjoint.
    ranges: BTreeMap<usize, (usize, bool)>,
    /// Slots written in all.
    written: usize,
}

impl Claims {
    /// Claims `start..end` (not empty) unless it overlaps a range claimed before.
    fn claim(&mut self, start: usize, end: usize) -> bool {
        let before = self.ranges.range(..=start).next_back().is_some_and(|(_, (e, _))| *e > start);
        let after = self.ranges.range((Bound::Excluded(start), Bound::Unbounded)).next().is_some_and(|(s, _)| *s < end);
        if before || after {
            return false;
        }
        self.ranges.insert(start, (end, false));
        true
    }

    /// The claim at `start` is written.
    fn written(&mut self, start: usize) {
        if let Some((end, done)) = self.ranges.get_mut(&start) {
            if !*done {
                *done = true;
                self.written += *end - start;
            }
        }
    }
}

// SAFETY: slots are written only through `put_bytes`, each write to a range it claimed alone
// (`Claims::claim` refuses overlaps under the lock), and read only once every slot was
// written (`into_vec` checks `Claims::written`), after which no claim can succeed. `O` is a
// plain number (checked in `new`): `Send` and `Sync`.
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

impl<O> Placement<O> {
    fn claims(&self) -> MutexGuard<'_, Claims> {
        // The claims stay consistent through a panic elsewhere (each update is one step).
        self.slab.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether outputs `start..start + count` were written, by one write of exactly that
    /// range (as a backend does for a batch it marks placed).
    pub fn was_written(&self, start: usize, count: usize) -> bool {
        start.checked_add(count).is_some_and(|end| self.claims().ranges.get(&start) == Some(&(end, true)))
    }
}

impl<O: 'static> Placement<O> {
    /// Slots for `len` outputs, when `O` is a plain number; `None` otherwise.
    pub fn new(len: usize) -> Option<Self> {
        if !crate::plumbing::plain::is_plain::<O>() {
            return None;
        }
        let mut v = ManuallyDrop::new(Vec::<O>::with_capacity(len));
        Some(Placement { slab: Arc::new(Slab { ptr: v.as_mut_ptr(), len, claims: Mutex::default() }) })
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slab.len
    }

    /// Whether there are no slots.
    pub fn is_empty(&self) -> bool {
        self.slab.len == 0
    }

    /// Copies `count` outputs given as their bytes (as [`crate::remote::encode_items`]
    /// writes plain numbers) to the slots from `start`. `false`, and nothing written, when the
    /// bytes are not `count` outputs, go past the end, or overlap slots written (or being
    /// written) before.
    pub fn put_bytes(&self, start: usize, count: usize, bytes: &[u8]) -> bool {
        let size = std::mem::size_of::<O>();
        if size == 0 || Some(bytes.len()) != count.checked_mul(size) {
            return false;
        }
        let Some(end) = start.checked_add(count).filter(|end| *end <= self.slab.len) else { return false };
        if count == 0 {
            return true;
        }
        if !self.claims().claim(start, end) {
            return false;
        }
        // SAFETY: in bounds (checked); `O` is a plain number, valid for any bytes; the range
        // was claimed by this call alone, so no other writer touches it and no reader reads
        // it before `written` below (see `Slab`).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.slab.ptr.add(start).cast::<u8>(), bytes.len()) };
        self.claims().written(start);
        true
    }

    /// Moves `outputs` to the slots from `start`; `false` if they go past the end.
    pub(crate) fn put(&self, start: usize, outputs: Vec<O>) -> bool {
        // SAFETY: a `[O]` of plain numbers is its bytes (see `plain`).
        let bytes = crate::plumbing::plain::as_bytes(&outputs).unwrap_or_default();
        outputs.is_empty() || self.put_bytes(start, outputs.len(), bytes)
    }

    /// The outputs, or `None` unless every slot was written. Should a clone remain (a
    /// backend kept one), the outputs are copied out and the slots freed with the last clone.
    pub(crate) fn into_vec(self) -> Option<Vec<O>> {
        if self.claims().written != self.slab.len {
            return None;
        }
        Some(match Arc::try_unwrap(self.slab) {
            Ok(slab) => {
                let slab = ManuallyDrop::new(slab);
                // SAFETY: the buffer came from a `Vec<O>` of capacity `len`, every slot was
                // written (checked above), and `slab` will not free it (ManuallyDrop).
                unsafe { Vec::from_raw_parts(slab.ptr, slab.len, slab.len) }
            }
            Err(shared) => {
                let mut out = Vec::<O>::with_capacity(shared.len);
                // SAFETY: every slot was written (checked above) and no write can start
                // again (every claim would overlap); plain numbers copy bitwise.
                unsafe {
                    std::ptr::copy_nonoverlapping(shared.ptr, out.as_mut_ptr(), shared.len);
                    out.set_len(shared.len);
                }
                out
            }
        })
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
        std::thread::spawn(move || {
            assert!(q.put_bytes(3, 3, crate::plumbing::plain::as_bytes(&[4u32, 5, 6]).unwrap()))
        })
        .join()
        .unwrap();
        assert!(p.put(0, vec![1, 2, 3]));
        assert!(!p.put_bytes(5, 2, &[0; 8]), "past the end");
        assert!(!p.put_bytes(0, 1, &[0; 3]), "not whole outputs");
        assert!(!p.put_bytes(0, 1, &[0; 8]), "not the count announced");
        assert!(!p.put(usize::MAX, vec![1]));
        assert!(!p.put(2, vec![9, 9]), "overlaps slots written before");
        assert!(p.was_written(3, 3) && p.was_written(0, 3) && !p.was_written(0, 6));
        assert_eq!(p.into_vec(), Some(vec![1, 2, 3, 4, 5, 6]));
        let p = Placement::<f64>::new(1).unwrap();
        let keep = p.clone();
        assert!(p.put(0, vec![2.5]));
        assert_eq!(p.into_vec(), Some(vec![2.5]), "copied out while a clone remains");
        drop(keep);
    }
}
