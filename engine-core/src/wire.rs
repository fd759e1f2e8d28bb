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

/// Largest frame accepted by default (1 GiB): a bad peer cannot make us allocate more.
pub const DEFAULT_MAX_FRAME: usize = 1 << 30;

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

/// Encodes values one after the other into one buffer (no per-value allocation).
pub fn encode_seq<'a, T: Serialize + 'a>(values: impl IntoIterator<Item = &'a T>, out: &mut Vec<u8>) -> Result<usize> {
    let mut n = 0;
    for v in values {
        let buf = std::mem::take(out);
        *out = postcard::to_extend(v, buf).map_err(|e| Error::Codec(e.to_string()))?;
        n += 1;
    }
    Ok(n)
}

/// Decodes `count` values written by [`encode_seq`].
pub fn decode_seq<T: serde::de::DeserializeOwned>(mut bytes: &[u8], count: usize) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let (v, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| Error::Codec(e.to_string()))?;
        out.push(v);
        bytes = rest;
    }
    Ok(out)
}

/// A batch encoded once, keeping item boundaries, so a batch whose worker died can be resent
/// (cheaply: the bytes are shared) or split into single items to find the one that kills.
#[derive(Clone, Debug)]
pub struct EncodedBatch {
    seq: u64,
    base: usize,
    bytes: Arc<Vec<u8>>,
    /// Byte offset of each item, plus the end.
    offsets: Arc<Vec<usize>>,
    /// The items of this parcel, as positions in `offsets`.
    from: usize,
    to: usize,
}

impl EncodedBatch {
    /// Encodes a batch.
    pub fn encode<I: Serialize>(batch: &Batch<I>) -> Result<Self> {
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(batch.items.len() + 1);
        for item in &batch.items {
            offsets.push(bytes.len());
            encode_seq(std::iter::once(item), &mut bytes)?;
        }
        offsets.push(bytes.len());
        let n = batch.items.len();
        Ok(EncodedBatch {
            seq: batch.seq,
            base: batch.start,
            bytes: Arc::new(bytes),
            offsets: Arc::new(offsets),
            from: 0,
            to: n,
        })
    }

    /// The encoded items of this parcel.
    pub fn item_bytes(&self) -> &[u8] {
        &self.bytes[self.offsets[self.from]..self.offsets[self.to]]
    }
}

impl Parcel for EncodedBatch {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn start(&self) -> usize {
        self.base + self.from
    }
    fn len(&self) -> usize {
        self.to - self.from
    }
    fn keep(&self) -> Option<Self> {
        Some(self.clone())
    }
    fn split(self) -> Vec<Self> {
        (self.from..self.to).map(|i| EncodedBatch { from: i, to: i + 1, ..self.clone() }).collect()
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
        let parts = e.split();
        assert_eq!(parts.iter().map(|p| (p.start(), p.len())).collect::<Vec<_>>(), vec![(100, 1), (101, 1), (102, 1)]);
        assert_eq!(decode_seq::<String>(parts[1].item_bytes(), 1).unwrap(), vec!["bb".to_string()]);
    }
}
