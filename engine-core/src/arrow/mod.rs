//! Arrow data as items, results, args and shared values, serialized as Arrow IPC.
//!
//! [`Frame`] is a `RecordBatch` (the Python original's DataFrame); [`Series`] is one array (the Python original's
//! Series or ndarray). In-process backends move them without copying their buffers; the
//! serde impls write one Arrow IPC stream, so out-of-process workers get the same columns.
//!
//! ```
//! use adparallelengine_core::arrow::array::{ArrayRef, Int64Array, RecordBatch};
//! use adparallelengine_core::arrow::{Frame, Series};
//! use std::sync::Arc;
//!
//! let col: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
//! let frame = Frame(RecordBatch::try_from_iter([("0", col.clone())]).unwrap());
//! let bytes = postcard::to_allocvec(&frame).unwrap();
//! let back: Frame = postcard::from_bytes(&bytes).unwrap();
//! assert_eq!(back, frame);
//! let s = Series(col);
//! let back: Series = postcard::from_bytes(&postcard::to_allocvec(&s).unwrap()).unwrap();
//! assert_eq!(back, s);
//! ```

use arrow_array::{ArrayRef, RecordBatch};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
pub mod ipc_file;

/// The Arrow crates this crate is built with, re-exported so that a program's arrays and
/// batches are of the same Arrow version as ours without pinning `arrow-array` by hand:
/// `adparallelengine::arrow::array::Int64Array`, `adparallelengine::arrow::schema::Schema`.
pub use arrow_array as array;
/// See [the `array` re-export](self::array).
pub use arrow_buffer as buffer;
/// See [the `array` re-export](self::array); `cast::pretty` prints batches as tables.
pub use arrow_cast as cast;
/// See [the `array` re-export](self::array).
pub use arrow_ipc as ipc;
/// See [the `array` re-export](self::array).
pub use arrow_schema as schema;

use crate::remote::wire::ByteBuf;
use crate::share_ctx;
use crate::store::ShareKey;
use serde::de;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ops::Deref;

/// A `RecordBatch` that can travel to workers (the Python original's DataFrame).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame(pub RecordBatch);

/// One Arrow array that can travel to workers (the Python original's Series or ndarray).
#[derive(Debug, Clone)]
pub struct Series(pub ArrayRef);

impl PartialEq for Series {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_data() == other.0.to_data()
    }
}

impl Deref for Frame {
    type Target = RecordBatch;
    fn deref(&self) -> &RecordBatch {
        &self.0
    }
}

impl Deref for Series {
    type Target = ArrayRef;
    fn deref(&self) -> &ArrayRef {
        &self.0
    }
}

impl From<RecordBatch> for Frame {
    fn from(b: RecordBatch) -> Self {
        Frame(b)
    }
}

impl From<ArrayRef> for Series {
    fn from(a: ArrayRef) -> Self {
        Series(a)
    }
}

impl Frame {
    /// The frame as a text table.
    pub fn pretty(&self) -> String {
        arrow_cast::pretty::pretty_format_batches(std::slice::from_ref(&self.0))
            .map(|t| t.to_string())
            .unwrap_or_else(|e| format!("<unprintable frame: {e}>"))
    }
}

/// Writes a batch as one Arrow IPC stream.
pub fn to_ipc(batch: &RecordBatch) -> Result<Vec<u8>, arrow_schema::ArrowError> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() + 512);
    {
        let mut w = StreamWriter::try_new(&mut buf, &batch.schema())?;
        w.write(batch)?;
        w.finish()?;
    }
    Ok(buf)
}

/// Reads the one batch of an Arrow IPC stream.
pub fn from_ipc(bytes: &[u8]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut r = StreamReader::try_new(bytes, None)?;
    match r.next() {
        Some(b) => b,
        None => Err(arrow_schema::ArrowError::IpcError("Arrow IPC stream holds no batch".into())),
    }
}

fn series_batch(a: &ArrayRef) -> Result<RecordBatch, arrow_schema::ArrowError> {
    RecordBatch::try_from_iter([("series", a.clone())])
}

/// How Arrow data travels: an IPC stream inline (items, results, plain args), or, inside a
/// [`Shared`](crate::Shared) sent to out-of-process workers, the key of an aligned IPC file in
/// the share store, which workers map and use without copying.
#[derive(Deserialize)]
enum Repr {
    Inline(ByteBuf),
    Stored(ShareKey),
}

fn serialize_batch<S: Serializer>(name: &'static str, batch: &RecordBatch, s: S) -> Result<S::Ok, S::Error> {
    if share_ctx::inside_shared() {
        if let Some(store) = share_ctx::current() {
            // Streamed into the store as it is encoded: no copy of the table in memory.
            let key = store
                .put_with(&mut |out| ipc_file::write_ipc_file(std::slice::from_ref(batch), out))
                .map_err(serde::ser::Error::custom)?;
            return s.serialize_newtype_variant(name, 1, "Stored", &key);
        }
    }
    let bytes = to_ipc(batch).map_err(serde::ser::Error::custom)?;
    s.serialize_newtype_variant(name, 0, "Inline", &ByteBuf(bytes))
}

fn deserialize_batch<'de, D: Deserializer<'de>>(d: D) -> Result<RecordBatch, D::Error> {
    match Repr::deserialize(d)? {
        Repr::Inline(bytes) => from_ipc(&bytes.0).map_err(de::Error::custom),
        Repr::Stored(key) => {
            let store = share_ctx::current().ok_or_else(|| {
                de::Error::custom(format!("Arrow data {key} is in a share store, but no store is open here"))
            })?;
            let bytes = store.get(&key).map_err(de::Error::custom)?;
            let mut batches = ipc_file::map_ipc_file(bytes).map_err(de::Error::custom)?;
            match batches.len() {
                1 => Ok(batches.remove(0)),
                n => Err(de::Error::custom(format!("shared Arrow file {key} holds {n} batches, not 1"))),
            }
        }
    }
}

impl Serialize for Frame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_batch("Frame", &self.0, s)
    }
}

impl Serialize for Series {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let batch = series_batch(&self.0).map_err(serde::ser::Error::custom)?;
        serialize_batch("Series", &batch, s)
    }
}

impl<'de> Deserialize<'de> for Frame {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_batch(d).map(Frame)
    }
}

impl<'de> Deserialize<'de> for Series {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let batch = deserialize_batch(d)?;
        if batch.num_columns() != 1 {
            return Err(de::Error::custom(format!(
                "a Series is one column, this Arrow data has {}",
                batch.num_columns()
            )));
        }
        Ok(Series(batch.column(0).clone()))
    }
}
