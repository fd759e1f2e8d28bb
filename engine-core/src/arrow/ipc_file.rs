//! Arrow IPC files for the store, decoded from mapped bytes without copying column data.
//!
//! [`to_ipc_file`] (in memory) and [`write_ipc_file`] (to any writer, as it encodes) write record batches in the Arrow IPC **file** format, whose buffers are
//! aligned (to 64 bytes by default) from the start of the file. [`map_ipc_file`] decodes such a
//! file from [`SharedBytes`] — typically a file mapped by the share store (`DirStore`), whose
//! start is page-aligned — by pointing the
//! arrays' buffers into those bytes: the columns of every worker process are the pages of the
//! one file, shared, never copied. The returned batches keep the bytes alive.
//!
//! ```
//! use arrow_array::{ArrayRef, Int64Array, RecordBatch};
//! use adparallelengine_core::arrow::ipc_file::{map_ipc_file, to_ipc_file};
//! use std::sync::Arc;
//!
//! let col: ArrayRef = Arc::new(Int64Array::from_iter_values(0..1000));
//! let batch = RecordBatch::try_from_iter([("x", col)]).unwrap();
//! let bytes = to_ipc_file(&[batch.clone()])?;
//! // A worker maps the file the store wrote; here, bytes in memory stand for it.
//! let back = map_ipc_file(Arc::new(bytes))?;
//! assert_eq!(back, vec![batch]);
//! # Ok::<(), adparallelengine_core::Error>(())
//! ```

use crate::{Error, Result, SharedBytes};
use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::convert::try_fb_to_schema;
use arrow_ipc::reader::{read_footer_length, FileDecoder};
use arrow_ipc::writer::FileWriter;
use arrow_ipc::Block;
use arrow_schema::ArrowError;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::ptr::NonNull;
use std::sync::Arc;

/// The magic bytes that start and end an Arrow IPC file.
const MAGIC: &[u8; 6] = b"ARROW1";
/// Trailer of an Arrow IPC file: the footer length (4 bytes) then the magic.
const TRAILER: usize = 4 + MAGIC.len();
/// Leading magic padded to 8 bytes.
const HEADER: usize = 8;

fn arrow_error(what: &str) -> impl Fn(ArrowError) -> Error + '_ {
    move |e| Error::Store(format!("{what}: {e}"))
}

fn invalid(why: impl std::fmt::Display) -> Error {
    Error::Store(format!("not a valid Arrow IPC file: {why}"))
}

/// Writes `batches` as one Arrow IPC file (the format [`map_ipc_file`] maps without copying).
///
/// All batches must have the schema of the first; an empty slice is an error, since the file
/// would have no schema. The bytes are [`write_ipc_file`]'s, collected in memory.
pub fn to_ipc_file(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let capacity = batches.iter().map(RecordBatch::get_array_memory_size).sum::<usize>() + 4096;
    let mut out = Vec::with_capacity(capacity);
    write_ipc_file(batches, &mut out)?;
    Ok(out)
}

/// Writes `batches` as one Arrow IPC file to `out`, as it encodes them: the column buffers go
/// to `out` straight from the arrays (Arrow's writer does not copy them into a message body
/// first), so a share store that streams them into its file holds no copy of the table.
/// The bytes are [`to_ipc_file`]'s, exactly.
///
/// `out` receives many small writes (message headers, padding) between the large ones: give
/// it a buffer if it has none.
pub fn write_ipc_file(batches: &[RecordBatch], out: &mut dyn Write) -> Result<()> {
    let first = batches
        .first()
        .ok_or_else(|| Error::Store("cannot write an Arrow IPC file of no batch: it would have no schema".into()))?;
    let schema = first.schema();
    let mut writer = FileWriter::try_new(out, &schema).map_err(arrow_error("cannot start the Arrow IPC file"))?;
    for (i, batch) in batches.iter().enumerate() {
        if batch.schema() != schema {
            return Err(Error::Store(format!(
                "cannot write batch {i} to the Arrow IPC file: its schema {} differs from \
                 the first batch's {}",
                batch.schema(),
                schema
            )));
        }
        writer.write(batch).map_err(arrow_error("cannot write a batch to the Arrow IPC file"))?;
    }
    writer.finish().map_err(arrow_error("cannot finish the Arrow IPC file"))
}

/// An Arrow buffer over all of `bytes`, keeping them alive, without copying them.
fn buffer_over(bytes: &SharedBytes) -> Buffer {
    let slice: &[u8] = (**bytes).as_ref();
    let ptr = NonNull::from(slice).cast::<u8>();
    let len = slice.len();
    // `Allocation` needs RefUnwindSafe: the bytes are read-only, so a panic cannot leave them
    // half-modified.
    let owner = Arc::new(AssertUnwindSafe(Arc::clone(bytes)));
    // SAFETY: `ptr` is valid for `len` bytes as long as the `SharedBytes` lives, and `owner`
    // keeps a reference to it for as long as the buffer (and every slice of it) lives. The
    // bytes are immutable: `SharedBytes` only gives `&[u8]`, and the stores' values (an
    // `Arc<Vec<u8>>`, a read-only file mapping) return the same slice on every `as_ref` call.
    // Arrow never writes through a buffer of a custom allocation.
    unsafe { Buffer::from_custom_allocation(ptr, len, owner) }
}

/// The bytes of one IPC block (message metadata then body) as a slice of `file`, bounds-checked.
fn block_buffer(file: &Buffer, block: &Block) -> Result<Buffer> {
    let offset = usize::try_from(block.offset()).ok();
    let meta = usize::try_from(block.metaDataLength()).ok();
    let body = usize::try_from(block.bodyLength()).ok();
    let range = match (offset, meta, body) {
        (Some(offset), Some(meta), Some(body)) => {
            meta.checked_add(body).and_then(|len| Some((offset, len, offset.checked_add(len)?)))
        }
        _ => None,
    };
    match range {
        Some((offset, len, end)) if end <= file.len() => Ok(file.slice_with_length(offset, len)),
        _ => Err(invalid(format!(
            "block at offset {} of {} + {} bytes lies outside the file of {} bytes",
            block.offset(),
            block.metaDataLength(),
            block.bodyLength(),
            file.len()
        ))),
    }
}

/// Decodes the record batches of an Arrow IPC file without copying their column data.
///
/// The arrays' buffers point into `bytes`, which the batches keep alive. A buffer that is not
/// aligned for its type (possible only when `bytes` itself is not 8-byte aligned, e.g. an
/// in-memory `Vec`) is copied into an aligned one instead; a mapped file (`adparallelengine_store::MappedFile`)
/// is page-aligned, so its data is never copied. Dictionaries are decoded too.
pub fn map_ipc_file(bytes: SharedBytes) -> Result<Vec<RecordBatch>> {
    let slice: &[u8] = (*bytes).as_ref();
    let len = slice.len();
    if len < HEADER + TRAILER {
        return Err(invalid(format!("{len} bytes is too short")));
    }
    if &slice[..MAGIC.len()] != MAGIC {
        return Err(invalid("it does not start with ARROW1"));
    }
    let trailer_start = len - TRAILER;
    let mut trailer = [0u8; TRAILER];
    trailer.copy_from_slice(&slice[trailer_start..]);
    let footer_len = read_footer_length(trailer).map_err(invalid)?;
    let footer_start = trailer_start
        .checked_sub(footer_len)
        .filter(|&start| start >= HEADER)
        .ok_or_else(|| invalid(format!("footer of {footer_len} bytes is longer than the file")))?;
    let footer = arrow_ipc::root_as_footer(&slice[footer_start..trailer_start]).map_err(invalid)?;
    let fb_schema = footer.schema().ok_or_else(|| invalid("its footer has no schema"))?;
    let schema = Arc::new(try_fb_to_schema(fb_schema).map_err(invalid)?);

    let file = buffer_over(&bytes);
    let mut decoder = FileDecoder::new(schema, footer.version());
    for block in footer.dictionaries().iter().flatten() {
        decoder
            .read_dictionary(block, &block_buffer(&file, block)?)
            .map_err(arrow_error("cannot decode a dictionary of the Arrow IPC file"))?;
    }
    let mut batches = Vec::new();
    for block in footer.recordBatches().iter().flatten() {
        let batch = decoder
            .read_record_batch(block, &block_buffer(&file, block)?)
            .map_err(arrow_error("cannot decode a batch of the Arrow IPC file"))?;
        batches.extend(batch);
    }
    Ok(batches)
}
