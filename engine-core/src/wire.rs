//! Framing shared by every out-of-process transport (pipes, TCP): length-prefixed frames with
//! a bounded size, a byte-buffer serde helper, and batches encoded once and splittable.

use crate::batch::Batch;
use crate::dispatch::Parcel;
use crate::error::{Error, Result};
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

/// Encodes `msg` as one frame: an 8-byte little-endian length, then the postcard bytes.
pub fn encode_frame<M: Serialize>(msg: &M) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 8];
    buf = postcard::to_extend(msg, buf).map_err(|e| Error::Codec(e.to_string()))?;
    let len = (buf.len() - 8) as u64;
    buf[..8].copy_from_slice(&len.to_le_bytes());
    Ok(buf)
}

/// Writes an encoded frame (from [`encode_frame`]).
pub fn write_frame(w: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    w.write_all(frame)
}

/// Reads one frame's payload; `None` at a clean end of stream. A frame longer than `max` is an
/// `InvalidData` error.
pub fn read_frame(r: &mut impl Read, max: usize) -> io::Result<Option<Vec<u8>>> {
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
    let len = u64::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {max}-byte limit"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
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

/// Encodes a list of values as one postcard sequence (what [`decode_seq`] reads).
pub fn encode_seq<T: Serialize>(values: &[T]) -> Result<Vec<u8>> {
    postcard::to_allocvec(values).map_err(|e| Error::Codec(e.to_string()))
}

/// Decodes a list written by [`encode_seq`], checking it holds `count` values.
pub fn decode_seq<T: serde::de::DeserializeOwned>(bytes: &[u8], count: usize) -> Result<Vec<T>> {
    let v: Vec<T> = postcard::from_bytes(bytes).map_err(|e| Error::Codec(e.to_string()))?;
    if v.len() != count {
        return Err(Error::Codec(format!("expected {count} values, decoded {}", v.len())));
    }
    Ok(v)
}

type SplitFn = fn(&[u8]) -> Result<Vec<Vec<u8>>>;

fn split_items<I: Serialize + serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let items: Vec<I> = postcard::from_bytes(bytes).map_err(|e| Error::Codec(e.to_string()))?;
    items.iter().map(|i| encode_seq(std::slice::from_ref(i))).collect()
}

/// A batch encoded once (one postcard sequence: a memcpy-speed loop, not one call per item),
/// so a batch whose worker died can be resent cheaply (the bytes are shared) or split into
/// single items to find the one that kills (decoding it again: a rare path).
#[derive(Clone)]
pub struct EncodedBatch {
    seq: u64,
    start: usize,
    count: usize,
    bytes: Arc<Vec<u8>>,
    split: SplitFn,
}

impl fmt::Debug for EncodedBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EncodedBatch(seq {}, items {}..{}, {} bytes)",
            self.seq,
            self.start,
            self.start + self.count,
            self.bytes.len()
        )
    }
}

impl EncodedBatch {
    /// Encodes a batch.
    pub fn encode<I: Serialize + serde::de::DeserializeOwned>(batch: &Batch<I>) -> Result<Self> {
        Ok(EncodedBatch {
            seq: batch.seq,
            start: batch.start,
            count: batch.items.len(),
            bytes: Arc::new(encode_seq(&batch.items)?),
            split: split_items::<I>,
        })
    }

    /// The encoded items (read them with [`decode_seq`]).
    pub fn item_bytes(&self) -> &[u8] {
        &self.bytes
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
    fn keep(&self) -> Option<Self> {
        Some(self.clone())
    }
    fn split(self) -> Vec<Self> {
        if self.count <= 1 {
            return vec![self];
        }
        match (self.split)(&self.bytes) {
            Ok(parts) => parts
                .into_iter()
                .enumerate()
                .map(|(i, bytes)| EncodedBatch {
                    seq: self.seq,
                    start: self.start + i,
                    count: 1,
                    bytes: Arc::new(bytes),
                    split: self.split,
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
    fn encoded_batches_split_into_items() {
        let b = Batch { seq: 7, start: 100, items: vec!["a".to_string(), "bb".into(), "ccc".into()] };
        let e = EncodedBatch::encode(&b).unwrap();
        assert_eq!((e.seq(), e.start(), e.len()), (7, 100, 3));
        assert_eq!(decode_seq::<String>(e.item_bytes(), 3).unwrap(), b.items);
        assert!(decode_seq::<String>(e.item_bytes(), 2).is_err());
        let parts = e.split();
        assert_eq!(parts.iter().map(|p| (p.start(), p.len())).collect::<Vec<_>>(), vec![(100, 1), (101, 1), (102, 1)]);
        assert_eq!(decode_seq::<String>(parts[1].item_bytes(), 1).unwrap(), vec!["bb".to_string()]);
    }
}
