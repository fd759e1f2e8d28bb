//! Arrow IPC files for the store: [`to_ipc_file`] (in memory) and [`write_ipc_file`] (streamed, as
//! [`SharedStore::put_with`](adparallelengine_core::SharedStore::put_with) takes it) write record batches in the aligned IPC
//! file format, [`map_ipc_file`] decodes them from a [`DirStore`](crate::DirStore) mapping
//! without copying column data. They live in `adparallelengine_core::arrow::ipc_file`, next to the
//! `Frame` and `Series` types whose shared values use them; they are re-exported here for
//! users of the store.

pub use adparallelengine_core::arrow::ipc_file::{map_ipc_file, to_ipc_file, write_ipc_file};
