//! [`SharedStore`](adparallelengine_core::SharedStore) implementations.
//!
//! - [`MemoryStore`]: content-addressed bytes in memory, for in-process backends and tests.
//! - [`DirStore`]: content-addressed files in a private directory (under `path_shared` or the
//!   system temporary directory), written once by the driver and mapped read-only by worker
//!   processes of the same machine ([`DirStore::open`]). Its `get` returns the mapping itself
//!   ([`MappedFile`]), so nothing is copied. Its name says whose it is (pid, start time, host
//!   tag), and each new store sweeps the directories that processes killed outright left in
//!   the same place ([`DirStore::create`]).
//! - [`LazyDirStore`]: a `DirStore` made on the first shared value and removed with the engine
//!   or on Ctrl-C; [`open_dir_view`] is the workers' side, and [`dial_in_worker`] the pre-`main`
//!   entry of dial-in workers (pods, Dask tasks) with these stores.
//! - With the `arrow` feature, record batches are written as Arrow IPC files
//!   (`adparallelengine_core::arrow::ipc_file::to_ipc_file`) and decoded straight from mapped
//!   bytes without copying column data (`map_ipc_file`).
//!
//! ```
//! use adparallelengine_core::SharedStore;
//! use adparallelengine_store::DirStore;
//!
//! let driver = DirStore::create(None)?;            // private dir, removed on drop
//! let key = driver.put(b"big table")?;
//! let worker = DirStore::open(driver.path())?;     // read-only view, removes nothing
//! assert_eq!((*worker.get(&key)?).as_ref(), b"big table");
//! # Ok::<(), adparallelengine_core::Error>(())
//! ```
#![warn(missing_docs)]

#[cfg(feature = "arrow")]
pub mod arrow;
mod dial_in;
mod dir;
mod lazy;
mod leftovers;
mod memory;
mod staging;

pub use dial_in::dial_in_worker;
pub use dir::{DirStore, MappedFile};
pub use lazy::{local_dir_store, open_dir_view, LazyDirStore};
pub use memory::MemoryStore;
