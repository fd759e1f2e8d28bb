//! Lists of plain numbers travel as their raw bytes.
//!
//! A list of `u64` or `f64` items (the commonest tiny items) encoded through serde costs one
//! call per element on each side, about 10 ns per item each way: that, not the socket, was
//! what kept a million tiny items in worker processes 10× slower than threads. Both ends of
//! a worker link run the same build (the handshake checks its fingerprint), so a list of a
//! primitive number type can be sent as the bytes it holds in memory: one `memcpy` to encode,
//! one to decode. Every other type goes through serde as before.
//!
//! Stable Rust has no specialization, so the choice is made by [`TypeId`] (items are
//! `'static`), a check the compiler folds away for each concrete type.

use std::any::TypeId;

/// Whether a `[T]` may be sent as its bytes: `T` is a primitive integer or float, a type with
/// no padding and for which every bit pattern is a valid value (so decoding never needs a
/// check). `bool` and `char` are left to serde: not every byte is a valid one.
/// Big-endian targets use serde too, so the bytes on the wire are always little-endian.
pub fn is_plain<T: 'static>() -> bool {
    if cfg!(target_endian = "big") {
        return false;
    }
    let t = TypeId::of::<T>();
    macro_rules! any_of {
        ($($ty:ty),*) => { false $(|| t == TypeId::of::<$ty>())* };
    }
    any_of!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64)
}

/// The bytes of a list of plain values, or `None` when `T` is not plain.
pub fn as_bytes<T: 'static>(values: &[T]) -> Option<&[u8]> {
    if !is_plain::<T>() {
        return None;
    }
    // SAFETY: `T` is a primitive number (checked above): no padding, so every byte of the
    // slice is initialized; a `u8` view of it has alignment 1 and the same byte length.
    Some(unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) })
}

/// The list of `count` plain values held in `bytes`; `None` when `T` is not plain, an error
/// message when the byte count does not match.
pub fn from_bytes<T: 'static>(bytes: &[u8], count: usize) -> Option<Result<Vec<T>, String>> {
    if !is_plain::<T>() {
        return None;
    }
    let size = std::mem::size_of::<T>();
    if Some(bytes.len()) != count.checked_mul(size) {
        return Some(Err(format!("expected {count} values of {size} bytes, got {} bytes", bytes.len())));
    }
    let mut out = Vec::<T>::with_capacity(count);
    // SAFETY: `T` is a primitive number, valid for every bit pattern; the destination has
    // room for `count` values (`count * size` bytes, the source length), the regions are
    // distinct allocations, and the length is set only after the bytes are written.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr().cast::<u8>(), bytes.len());
        out.set_len(count);
    }
    Some(Ok(out))
}

/// The `count` plain values held in `bytes`, read where they lie, one by one (no vector, no
/// copy of the whole list first); `None` when `T` is not plain, an error message when the byte
/// count does not match. The bytes need no alignment.
pub fn read_in_place<T: 'static>(bytes: &[u8], count: usize) -> Option<Result<InPlace<'_, T>, String>> {
    if !is_plain::<T>() {
        return None;
    }
    let size = std::mem::size_of::<T>();
    if Some(bytes.len()) != count.checked_mul(size) {
        return Some(Err(format!("expected {count} values of {size} bytes, got {} bytes", bytes.len())));
    }
    Some(Ok(InPlace { rest: bytes, _t: std::marker::PhantomData }))
}

/// The values of a list of plain values read in place ([`read_in_place`]).
pub struct InPlace<'a, T> {
    /// The values not read yet, as bytes: a whole number of them.
    rest: &'a [u8],
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T> Iterator for InPlace<'_, T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        let size = std::mem::size_of::<T>();
        let (c, rest) = self.rest.split_at_checked(size)?;
        self.rest = rest;
        // SAFETY: `InPlace` is made only for a plain `T` (`read_in_place` checks), valid for
        // every bit pattern, and `c` is `size_of::<T>()` bytes; an unaligned read needs no
        // alignment.
        Some(unsafe { c.as_ptr().cast::<T>().read_unaligned() })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.rest.len() / std::mem::size_of::<T>().max(1);
        (n, Some(n))
    }
}

impl<T> ExactSizeIterator for InPlace<'_, T> {}

/// A batch's plain items, read by index where they are: the bytes a transport received
/// ([`InPlace`]), or a range's, made from its first ([`RangeItems`](super::int_range::RangeItems)).
/// A worker's loop over them (`Worker::run_plain`) checks no iterator's end per item.
pub(crate) trait PlainItems<X> {
    /// Number of items.
    fn len(&self) -> usize;
    /// Item `i`.
    ///
    /// # Safety
    /// `i < self.len()`.
    unsafe fn get(&self, i: usize) -> X;
    /// The items from the `k`-th on.
    fn rest(&self, k: usize) -> impl ExactSizeIterator<Item = X>;
}

impl<'a, T: 'static> PlainItems<T> for InPlace<'a, T> {
    fn len(&self) -> usize {
        self.rest.len() / std::mem::size_of::<T>().max(1)
    }

    #[inline(always)]
    unsafe fn get(&self, i: usize) -> T {
        // SAFETY: `i < len` (the caller's promise), so the `size_of::<T>()` bytes at
        // `i * size` lie in `rest`; `InPlace` is made only for a plain `T` (`read_in_place`
        // checks), valid for every bit pattern, and an unaligned read needs no alignment.
        unsafe { self.rest.as_ptr().add(i * std::mem::size_of::<T>()).cast::<T>().read_unaligned() }
    }

    fn rest(&self, k: usize) -> impl ExactSizeIterator<Item = T> {
        let at = (k * std::mem::size_of::<T>()).min(self.rest.len());
        InPlace::<'a, T> { rest: &self.rest[at..], _t: std::marker::PhantomData }
    }
}

/// Plain values written one after the other, as their bytes, into memory the reader reads
/// them from (a transport's room: see [`crate::remote::Transport::recv_with_room`]). Values
/// past the room's end are dropped; a batch never has more outputs than its room was sized for.
pub(crate) struct WriteInPlace<'a, T> {
    bytes: &'a mut [u8],
    count: usize,
    _t: std::marker::PhantomData<fn(T)>,
}

impl<'a, T: 'static> WriteInPlace<'a, T> {
    /// Writes into `bytes`; `None` when `T` is not plain.
    pub(crate) fn new(bytes: &'a mut [u8]) -> Option<Self> {
        is_plain::<T>().then_some(WriteInPlace { bytes, count: 0, _t: std::marker::PhantomData })
    }

    /// Values written.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// The room not written yet.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        let at = (self.count * std::mem::size_of::<T>()).min(self.bytes.len());
        &mut self.bytes[at..]
    }

    /// `n` more values were written into [`WriteInPlace::spare`], as their bytes.
    pub(crate) fn advance(&mut self, n: usize) {
        let fits = self.bytes.len() / std::mem::size_of::<T>().max(1);
        self.count = (self.count + n).min(fits);
    }
}

impl<T> crate::plumbing::worker::Outputs<T> for WriteInPlace<'_, T> {
    #[inline]
    fn push(&mut self, value: T) {
        let size = std::mem::size_of::<T>();
        let at = self.count * size;
        if let Some(dst) = self.bytes.get_mut(at..at + size) {
            // SAFETY: `dst` is `size_of::<T>()` writable bytes (an unaligned write needs no
            // alignment), and `T` is plain (checked in `new`): its bytes are all initialized
            // and it needs no drop, so writing it as bytes loses nothing.
            unsafe { dst.as_mut_ptr().cast::<T>().write_unaligned(value) };
            self.count += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_plain_and_round_trip() {
        assert!(is_plain::<u64>() && is_plain::<f32>() && is_plain::<i128>());
        assert!(!is_plain::<bool>() && !is_plain::<String>() && !is_plain::<(u64, u64)>());
        let v = [1.5f64, -2.0, f64::MAX];
        let b = as_bytes(&v).unwrap();
        assert_eq!(b.len(), 24);
        assert_eq!(from_bytes::<f64>(b, 3).unwrap().unwrap(), v);
        assert!(from_bytes::<f64>(b, 2).unwrap().is_err());
        assert!(from_bytes::<f64>(b, usize::MAX).unwrap().is_err());
        assert!(as_bytes(&["a".to_string()]).is_none());
    }

    #[test]
    fn values_are_read_in_place_from_any_offset_and_short_lists_are_refused() {
        let v = [7u64, u64::MAX, 0];
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(as_bytes(&v).unwrap());
        let got: Vec<u64> = read_in_place(&shifted[1..], 3).unwrap().unwrap().collect();
        assert_eq!(got, v, "unaligned bytes read right, in order");
        assert!(read_in_place::<u64>(&shifted[1..], 4).unwrap().is_err(), "a count the bytes do not hold");
        assert!(read_in_place::<u64>(&shifted[..20], 3).unwrap().is_err(), "a short list");
        assert!(read_in_place::<u64>(&shifted[1..], usize::MAX).unwrap().is_err());
        assert!(read_in_place::<String>(&shifted, 1).is_none(), "not plain");
    }

    #[test]
    fn values_are_written_in_place_and_never_past_the_room() {
        use crate::plumbing::worker::Outputs;
        let mut room = [0u8; 17];
        let mut w = WriteInPlace::<u64>::new(&mut room[1..]).unwrap();
        w.push(3);
        w.push(u64::MAX);
        w.push(9);
        assert_eq!(w.count(), 2, "the third does not fit");
        assert_eq!(&room[1..9], &3u64.to_le_bytes());
        assert_eq!(&room[9..], &u64::MAX.to_le_bytes());
        assert!(WriteInPlace::<String>::new(&mut room).is_none());
    }
}
