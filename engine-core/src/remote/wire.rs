//! Framing shared by every out-of-process transport (pipes, TCP): length-prefixed frames with
//! a bounded size, a byte-buffer serde helper, and batches encoded once and splittable.

use crate::error::{Error, Result};
use crate::plumbing::batch::Batch;
use crate::plumbing::Parcel;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

/// Largest frame accepted from an untrusted peer (a network connection): 1 GiB, so a bad peer
/// cannot make us allocate more. Put larger values in a `Shared`.
pub const DEFAULT_MAX_FRAME: usize = 1 << 30;

/// Largest frame between a driver and the worker processes it started itself (16 GiB): the
/// bound only guards against a corrupted length.
pub const LOCAL_MAX_FRAME: usize = 1 << 34;

/// A postcard output that appends to a `Vec`, byte by byte for small writes: postcard's own
/// `Vec` output copies every varint with a `memcpy` call, which costs more than encoding a
/// small number (measured: it was the largest cost of sending a million tiny items).
struct VecOut(Vec<u8>);

impl postcard::ser_flavors::Flavor for VecOut {
    type Output = Vec<u8>;

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() <= 16 {
            for b in data {
                self.0.push(*b);
            }
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Appends the postcard encoding of `value` to `buf`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, buf: Vec<u8>) -> Result<Vec<u8>> {
    postcard::serialize_with_flavor(value, VecOut(buf)).map_err(|e| Error::Codec(e.to_string()))
}

/// Encodes `msg` as one frame: an 8-byte little-endian length, then the postcard bytes.
pub fn encode_frame<M: Serialize>(msg: &M) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 8];
    buf = encode_into(msg, buf)?;
    let len = (buf.len() - 8) as u64;
    buf[..8].copy_from_slice(&len.to_le_bytes());
    Ok(buf)
}

/// Writes one frame made of `head` (an encoded message) and `tail`: the length, then both.
pub fn write_parts(w: &mut impl Write, head: &[u8], tail: &[u8]) -> io::Result<()> {
    let len = (head.len() + tail.len()) as u64;
    if head.len() + tail.len() <= 64 << 10 {
        // One write for a small frame: a syscall costs more than the copy.
        let mut buf = Vec::with_capacity(8 + head.len() + tail.len());
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(head);
        buf.extend_from_slice(tail);
        return w.write_all(&buf);
    }
    w.write_all(&len.to_le_bytes())?;
    w.write_all(head)?;
    w.write_all(tail)
}

/// Set in a frame's length when the frame's tail travels apart (in a transport's shared
/// memory): the payload is the head and where to find the tail. Not part of the length.
pub const TAIL_APART: u64 = 1 << 63;

/// Reads one frame's payload into `buf` (replacing its contents, reusing its allocation: a
/// reader that keeps one buffer does not fault in fresh pages for every batch). `None` at a
/// clean end of stream, else whether the frame is marked [`TAIL_APART`]. A frame longer than
/// `max` is an `InvalidData` error.
pub fn read_frame_into(r: &mut impl Read, max: usize, buf: &mut Vec<u8>) -> io::Result<Option<bool>> {
    let mut len = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended inside a frame header")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u64::from_le_bytes(len);
    let apart = len & TAIL_APART != 0;
    let len = (len & !TAIL_APART) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {max}-byte limit"),
        ));
    }
    buf.clear();
    buf.reserve_exact(len);
    // `read_to_end` reads into the spare capacity without zeroing it first.
    let n = r.take(len as u64).read_to_end(buf)?;
    if n < len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended inside a frame"));
    }
    Ok(Some(apart))
}

/// Reads one frame's payload into a new buffer; `None` at a clean end of stream. A frame
/// marked [`TAIL_APART`] is an error here: this reader has nowhere to find its tail.
#[cfg(test)]
pub fn read_frame(r: &mut impl Read, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    match read_frame_into(r, max, &mut buf)? {
        None => Ok(None),
        Some(false) => Ok(Some(buf)),
        Some(true) => Err(io::Error::new(io::ErrorKind::InvalidData, "a frame whose tail travels apart")),
    }
}

/// Decodes a frame payload.
pub fn decode<'de, M: Deserialize<'de>>(payload: &'de [u8]) -> Result<M> {
    postcard::from_bytes(payload).map_err(|e| Error::Codec(e.to_string()))
}

/// Bytes serialized as one byte string (not a sequence of numbers).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ByteBuf(pub Vec<u8>);

impl fmt::Debug for ByteBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ByteBuf({} bytes)", self.0.len())
    }
}

impl Serialize for ByteBuf {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

struct BufVisitor;

impl<'de> Visitor<'de> for BufVisitor {
    type Value = ByteBuf;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("bytes")
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> std::result::Result<ByteBuf, E> {
        Ok(ByteBuf(v.to_vec()))
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> std::result::Result<ByteBuf, E> {
        Ok(ByteBuf(v))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<ByteBuf, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(b) = seq.next_element::<u8>()? {
            v.push(b);
        }
        Ok(ByteBuf(v))
    }
}

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<ByteBuf, D::Error> {
        d.deserialize_bytes(BufVisitor)
    }
}

/// Encodes a message alone (no length prefix): the head of a frame, for
/// [`crate::remote::Transport::send`].
pub fn encode_msg<M: Serialize>(msg: &M) -> Result<Vec<u8>> {
    encode_into(msg, Vec::new())
}

/// The bytes of a list of values, a frame's tail (its length travels in the head): the
/// values' own bytes for plain numbers (integers and floats; nothing is copied), else their
/// postcard encodings one after the other.
pub fn encode_items<T: Serialize + 'static>(values: &[T]) -> Result<std::borrow::Cow<'_, [u8]>> {
    if let Some(raw) = crate::plumbing::plain::as_bytes(values) {
        return Ok(std::borrow::Cow::Borrowed(raw));
    }
    let mut buf = Vec::with_capacity(values.len() * (std::mem::size_of::<T>() + 1));
    for v in values {
        buf = encode_into(v, buf)?;
    }
    Ok(std::borrow::Cow::Owned(buf))
}

/// Decodes `count` values written by [`encode_items`]; every byte must be used. The list is
/// allocated once at its final size.
pub fn decode_items<T: serde::de::DeserializeOwned + 'static>(bytes: &[u8], count: usize) -> Result<Vec<T>> {
    if let Some(plain) = crate::plumbing::plain::from_bytes::<T>(bytes, count) {
        return plain.map_err(Error::Codec);
    }
    let codec = |e: postcard::Error| Error::Codec(e.to_string());
    // Each value takes at least one byte: a count beyond the bytes is a bad frame, not an
    // allocation to attempt.
    if count > bytes.len() && std::mem::size_of::<T>() > 0 {
        return Err(Error::Codec(format!("{count} values cannot fit in {} bytes", bytes.len())));
    }
    let mut out = Vec::with_capacity(count);
    let mut rest = bytes;
    for _ in 0..count {
        let (v, r) = postcard::take_from_bytes::<T>(rest).map_err(codec)?;
        out.push(v);
        rest = r;
    }
    if !rest.is_empty() {
        return Err(Error::Codec(format!("{} bytes left after {count} values", rest.len())));
    }
    Ok(out)
}

/// The start of a frame made of `header` and an already encoded tail of `tail_len` bytes:
/// write it, then the tail, and no byte of the tail is copied.
pub fn frame_prefix<H: Serialize>(header: &H, tail_len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 8];
    buf = encode_into(header, buf)?;
    let len = (buf.len() - 8 + tail_len) as u64;
    buf[..8].copy_from_slice(&len.to_le_bytes());
    Ok(buf)
}

/// Splits a frame payload into its header message and its tail.
pub fn split_frame<'a, H: Deserialize<'a>>(payload: &'a [u8]) -> Result<(H, &'a [u8])> {
    postcard::take_from_bytes(payload).map_err(|e| Error::Codec(e.to_string()))
}

type SplitFn = fn(&[u8], usize) -> Result<Vec<Arc<dyn ItemBytes>>>;

fn split_items<I: Serialize + serde::de::DeserializeOwned + 'static>(
    bytes: &[u8],
    count: usize,
) -> Result<Vec<Arc<dyn ItemBytes>>> {
    let items: Vec<I> = decode_items(bytes, count)?;
    items.into_iter().map(|i| held(vec![i])).collect()
}

/// The items of a batch of a range, one by one, as single-item lists (see [`split_items`]).
fn split_range<I: Serialize + serde::de::DeserializeOwned + 'static>(
    first: &[u8],
    count: usize,
) -> Result<Vec<Arc<dyn ItemBytes>>> {
    let items = crate::plumbing::int_range::RangeItems::<I>::from_bytes(first, count).map_err(Error::Codec)?;
    items.iter().map(|i| held(vec![i])).collect()
}

/// The encoded items of a batch, whatever holds them: a vector, or the place in a
/// transport's shared memory where they were cut straight into (see
/// [`WorkerLink::room`](crate::plumbing::WorkerLink::room)).
pub trait ItemBytes: Send + Sync {
    /// The bytes.
    fn bytes(&self) -> &[u8];
    /// What holds them, for a transport that recognises its own memory (and then sends
    /// only where the items are); `None` (the default) for anything else.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

impl ItemBytes for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// A list of plain numbers, which is its own encoding. Built only for a `T` that
/// [`crate::plumbing::plain::is_plain`] accepts.
struct PlainItems<T>(Vec<T>);

// SAFETY: only built for primitive numbers (checked in `held`), which are `Send` and `Sync`.
unsafe impl<T> Send for PlainItems<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for PlainItems<T> {}

impl<T: 'static> ItemBytes for PlainItems<T> {
    fn bytes(&self) -> &[u8] {
        crate::plumbing::plain::as_bytes(&self.0).unwrap_or_default()
    }
}

/// Encodes `items`: plain numbers are kept as they are (no copy), others are encoded.
fn held<I: Serialize + 'static>(items: Vec<I>) -> Result<Arc<dyn ItemBytes>> {
    if crate::plumbing::plain::is_plain::<I>() {
        return Ok(Arc::new(PlainItems(items)));
    }
    Ok(Arc::new(encode_items(&items)?.into_owned()))
}

/// A batch encoded once (one list, raw bytes for plain numbers),
/// so a batch whose worker died can be resent cheaply (the bytes are shared) or split into
/// single items to find the one that kills (decoding it again: a rare path).
#[derive(Clone)]
pub struct EncodedBatch {
    seq: u64,
    start: usize,
    count: usize,
    /// The items, or for a batch of a range ([`EncodedBatch::range`]) its first item.
    bytes: Arc<dyn ItemBytes>,
    split: SplitFn,
    /// A batch of a range: `count` consecutive integers from the one `bytes` holds.
    range: bool,
}

impl fmt::Debug for EncodedBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EncodedBatch(seq {}, items {}..{}, {} bytes{})",
            self.seq,
            self.start,
            self.start + self.count,
            self.bytes.bytes().len(),
            if self.range { ", a range" } else { "" }
        )
    }
}

impl EncodedBatch {
    /// Encodes a batch (a list of plain numbers is kept as it is: it is its own encoding).
    pub fn encode<I: Serialize + serde::de::DeserializeOwned + 'static>(batch: Batch<I>) -> Result<Self> {
        Ok(EncodedBatch {
            seq: batch.seq,
            start: batch.start,
            count: batch.items.len(),
            bytes: held(batch.items)?,
            split: split_items::<I>,
            range: false,
        })
    }

    /// A batch of `count` consecutive integers from `first`, cut from a range (see
    /// `plumbing::int_range`): only `first` and the count travel, and the worker makes the
    /// items. `None` when `I` is not an integer type or the last item would not fit in it.
    pub fn range<I: Serialize + serde::de::DeserializeOwned + 'static>(
        seq: u64,
        start: usize,
        count: usize,
        first: &I,
    ) -> Option<Self> {
        crate::plumbing::int_range::offset(first, count.saturating_sub(1))?;
        let first = crate::plumbing::plain::as_bytes(std::slice::from_ref(first))?.to_vec();
        Some(EncodedBatch { seq, start, count, bytes: Arc::new(first), split: split_range::<I>, range: true })
    }

    /// The message that heads this batch's frame, before [`item_bytes`](Self::item_bytes):
    /// a [`ToWorker::Batch`](crate::remote::ToWorker::Batch), or a
    /// [`ToWorker::Range`](crate::remote::ToWorker::Range) for a batch of a range.
    pub fn header(&self) -> crate::remote::ToWorker {
        let (seq, start, count) = (self.seq, self.start, self.count);
        match self.range {
            true => crate::remote::ToWorker::Range { seq, start, count },
            false => crate::remote::ToWorker::Batch { seq, start, count },
        }
    }

    /// A batch of `count` plain items of type `I` already written, as their bytes, where
    /// `bytes` holds them (a link's shared memory: see
    /// [`WorkerLink::room`](crate::plumbing::WorkerLink::room)). `None` when `I` is not plain
    /// or the bytes are not `count` items.
    pub fn in_place<I: Serialize + serde::de::DeserializeOwned + 'static>(
        seq: u64,
        start: usize,
        count: usize,
        bytes: Arc<dyn ItemBytes>,
    ) -> Option<Self> {
        let whole = count.checked_mul(std::mem::size_of::<I>()) == Some(bytes.bytes().len());
        (crate::plumbing::plain::is_plain::<I>() && whole).then_some(EncodedBatch {
            seq,
            start,
            count,
            bytes,
            split: split_items::<I>,
            range: false,
        })
    }

    /// The frame's tail: the encoded items, as [`encode_items`] wrote them (for a batch of a
    /// range, its first item alone).
    pub fn item_bytes(&self) -> &[u8] {
        self.bytes.bytes()
    }

    /// What holds the encoded items.
    pub fn holder(&self) -> &dyn ItemBytes {
        &*self.bytes
    }
}

impl Parcel for EncodedBatch {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn start(&self) -> usize {
        self.start
    }
    fn len(&self) -> usize {
        self.count
    }
    fn bytes(&self) -> usize {
        self.bytes.bytes().len()
    }
    fn keep(&self) -> Option<Self> {
        Some(self.clone())
    }
    fn split(self) -> Vec<Self> {
        if self.count <= 1 {
            return vec![self];
        }
        match (self.split)(self.bytes.bytes(), self.count) {
            Ok(parts) => parts
                .into_iter()
                .enumerate()
                .map(|(i, bytes)| EncodedBatch {
                    seq: self.seq,
                    start: self.start + i,
                    count: 1,
                    bytes,
                    split: self.split,
                    // One item: a batch of it is the same bytes either way.
                    range: false,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot split a batch to retry its items one by one");
                vec![self]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_are_bounded() {
        let frame = encode_frame(&(1u32, "abc".to_string())).unwrap();
        let mut r = &frame[..];
        let payload = read_frame(&mut r, 1 << 20).unwrap().unwrap();
        assert_eq!(decode::<(u32, String)>(&payload).unwrap(), (1, "abc".to_string()));
        assert!(read_frame(&mut r, 1 << 20).unwrap().is_none());
        let mut r = &frame[..];
        assert_eq!(read_frame(&mut r, 3).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let mut cut = &frame[..frame.len() - 1];
        assert!(read_frame(&mut cut, 1 << 20).is_err());
    }

    #[test]
    fn frames_with_tails_split_back() {
        let tail = encode_items(&[1u64, 2, 3]).unwrap();
        assert!(matches!(tail, std::borrow::Cow::Borrowed(_)), "plain numbers are their own encoding");
        let mut f = Vec::new();
        write_parts(&mut f, &encode_msg(&(7u8, "h".to_string())).unwrap(), &tail).unwrap();
        let mut r = &f[..];
        let payload = read_frame(&mut r, 1 << 20).unwrap().unwrap();
        let ((a, b), tail): ((u8, String), &[u8]) = split_frame(&payload).unwrap();
        assert_eq!((a, b.as_str()), (7, "h"));
        assert_eq!(decode_items::<u64>(tail, 3).unwrap(), vec![1, 2, 3]);
        let words = ["x".to_string(), "yz".into()];
        let items = encode_items(&words).unwrap();
        let mut whole = frame_prefix(&9u16, items.len()).unwrap();
        whole.extend_from_slice(&items);
        let mut r = &whole[..];
        let payload = read_frame(&mut r, 1 << 20).unwrap().unwrap();
        let (h, tail): (u16, &[u8]) = split_frame(&payload).unwrap();
        assert_eq!(h, 9);
        assert_eq!(decode_items::<String>(tail, 2).unwrap(), vec!["x".to_string(), "yz".into()]);
        assert!(decode_items::<String>(tail, 1).is_err(), "bytes left over");
        assert!(decode_items::<String>(tail, 3).is_err(), "too few bytes");
        assert!(decode_items::<u64>(&[0; 12], 2).is_err(), "plain size mismatch");
    }

    #[test]
    fn a_batch_of_a_range_is_its_first_item_and_splits_into_its_items() {
        let b = EncodedBatch::range::<i16>(4, 30, 5, &-2).unwrap();
        assert_eq!(b.item_bytes(), &(-2i16).to_le_bytes());
        assert!(matches!(b.header(), crate::remote::ToWorker::Range { seq: 4, start: 30, count: 5 }));
        let parts = b.split();
        assert_eq!(parts.len(), 5);
        for (i, p) in parts.iter().enumerate() {
            assert_eq!((p.seq(), p.start(), p.len()), (4, 30 + i, 1));
            assert_eq!(decode_items::<i16>(p.item_bytes(), 1).unwrap(), vec![i as i16 - 2]);
            assert!(matches!(p.header(), crate::remote::ToWorker::Batch { count: 1, .. }));
        }
        assert!(EncodedBatch::range::<u8>(0, 0, 7, &250).is_none(), "past u8::MAX");
        assert!(EncodedBatch::range::<f64>(0, 0, 2, &1.0).is_none(), "not an integer");
        let plain = EncodedBatch::encode(Batch { seq: 1, start: 0, items: vec![5u32, 6] }).unwrap();
        assert!(matches!(plain.header(), crate::remote::ToWorker::Batch { seq: 1, start: 0, count: 2 }));
    }

    #[test]
    fn encoded_batches_split_into_items() {
        let items = vec!["a".to_string(), "bb".into(), "ccc".into()];
        let e = EncodedBatch::encode(Batch { seq: 7, start: 100, items: items.clone() }).unwrap();
        assert_eq!((e.seq(), e.start(), e.len()), (7, 100, 3));
        assert_eq!(decode_items::<String>(e.item_bytes(), 3).unwrap(), items);
        assert!(decode_items::<String>(e.item_bytes(), 2).is_err());
        let parts = e.split();
        assert_eq!(parts.iter().map(|p| (p.start(), p.len())).collect::<Vec<_>>(), vec![(100, 1), (101, 1), (102, 1)]);
        assert_eq!(decode_items::<String>(parts[1].item_bytes(), 1).unwrap(), vec!["bb".to_string()]);
        let plain = EncodedBatch::encode(Batch { seq: 1, start: 0, items: vec![5u32, 6] }).unwrap();
        assert_eq!(plain.item_bytes(), &[5, 0, 0, 0, 6, 0, 0, 0]);
        assert_eq!(plain.split()[1].item_bytes(), &[6, 0, 0, 0]);
    }
}
