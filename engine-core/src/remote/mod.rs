//! **For out-of-process backend authors**: the wire protocol every backend whose workers run
//! in another process shares (worker processes, MPI ranks, pods), and the machinery on both of
//! its ends. In-process backends need only [`crate::plumbing`].
//!
//! - **Framing** ([`encode_msg`], [`split_frame`], [`read_frame_into`], [`write_parts`],
//!   [`EncodedBatch`]): length-prefixed frames, bounded in size ([`DEFAULT_MAX_FRAME`] from a
//!   stranger, [`LOCAL_MAX_FRAME`] from a child), with batches encoded once and splittable.
//! - **The protocol** ([`ToWorker`], [`FromWorker`], [`JobSpec`]): a handshake with a build
//!   [`fingerprint`], then jobs. A worker serves a connection with [`serve_connection`] over
//!   any [`Transport`]; a driver reads each message with [`hear`].
//! - **Pooled workers** ([`Pool`], [`Conn`], [`ConnSource`], [`start_pooled`]): workers on
//!   byte-stream connections kept between jobs, each job run on [`Dispatch`](crate::plumbing::Dispatch).
//! - **Dial-in workers** ([`dial_in`]: [`DialIn`](dial_in::DialIn) and the
//!   [`Launcher`](dial_in::Launcher) a backend brings; beneath them [`Secret`], [`knock`],
//!   [`check_knock`], [`keep_alive`], [`StreamTransport`]): workers started by something else
//!   (a Kubernetes Job, Dask tasks) that connect to the driver over TCP and prove they belong
//!   to the run.
//! - **Process life** ([`worker_entry!`](crate::worker_entry), [`become_worker_if_asked`],
//!   [`register_cleanup`]): becoming a worker before `main`, cleanups on SIGINT/SIGTERM.

pub mod dial_in;
pub(crate) mod entry;
pub(crate) mod fingerprint;
pub(crate) mod hear;
pub(crate) mod interrupt;
pub(crate) mod net;
pub(crate) mod outbox;
pub(crate) mod pooled;
pub(crate) mod protocol;
pub(crate) mod registry;
pub(crate) mod sent;
pub(crate) mod serve;
pub(crate) mod serve_job;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub(crate) mod transport;
pub(crate) mod wire;

pub use entry::become_worker_if_asked;
pub use fingerprint::fingerprint;
pub use hear::{blobs_to_ship, hear, Heard};
pub use interrupt::{cleanup_id, register_cleanup, run_cleanups, unregister_cleanup};
pub use net::keepalive::{is_kept_alive, keep_alive, keep_alive_worker, unacked_limit, DEAD_AFTER};
pub use net::knock::{check_knock, knock, Secret};
pub use net::stream_transport::StreamTransport;
pub use pooled::{start_pooled, Conn, ConnHandle, ConnSource, Pool, Pooled};
pub use protocol::{FromWorker, JobSpec, ToWorker};
pub use registry::ServeJob;
pub use sent::SentBatches;
pub use serve::{serve_connection, LocalStore, OpenStore};
pub use transport::{Incoming, Transport};
pub use wire::{
    encode_items, encode_msg, read_frame_into, split_frame, write_parts, ByteBuf, EncodedBatch, ItemBytes,
    DEFAULT_MAX_FRAME, LOCAL_MAX_FRAME, TAIL_APART,
};
