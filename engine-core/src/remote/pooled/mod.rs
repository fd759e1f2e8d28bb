//! Out-of-process workers on byte-stream connections, kept between jobs: the driver's side
//! shared by every backend whose workers talk over a socket (worker processes over a
//! socketpair, pods over TCP).
//!
//! A backend supplies the [`Conn`] (one worker's connection and how to stop it) and a
//! [`ConnSource`] (how a new worker is found: a process started, a pod dialing in); this
//! module does the rest once: the [`Pool`] of idle workers, each worker's reader thread (kept
//! with the worker between jobs; frames to engine events, through [`hear`](crate::remote::hear)), the [`ConnLink`] that sends
//! batches without ever blocking the dispatch loop ([`Outbox`](crate::remote::outbox::Outbox)),
//! shipping shared values to workers that cannot see the driver's files, and the job itself
//! ([`start_pooled`]) on engine-core's [`Dispatch`](crate::plumbing::dispatch::Dispatch).
//!
//! A worker goes back to the pool when it answered a job's end in good order; one that died,
//! was cancelled or misbehaved is never reused.

mod link;
mod pool;
mod reader;
mod reader_thread;
mod run;

pub use pool::{ConnSource, Pool, Pooled};
pub use run::start_pooled;

use crate::remote::wire::EncodedBatch;
use crate::remote::Incoming;
use crate::Result;
use std::os::fd::AsFd;

/// One worker's connection, as the driver holds it between and during jobs.
///
/// The socket (`AsFd`) is read by the worker's reader thread and written through an outbox;
/// both use their own duplicate of the descriptor, so the connection outlives a job.
pub trait Conn: AsFd + Send + Sized + 'static {
    /// What a job's link keeps to reach the worker while the reader thread holds the `Conn`.
    type Handle: ConnHandle;

    /// The largest frame accepted from this worker.
    fn max_frame(&self) -> usize;

    /// The link's handle on this worker.
    fn handle(&self) -> Self::Handle;

    /// A frame from the worker as a message. `apart`: the frame's tail is not in the frame
    /// but in the connection's own side channel (shared memory); a connection without one
    /// refuses such a frame (the default).
    fn incoming<'a>(&'a self, payload: &'a [u8], apart: bool) -> std::io::Result<Incoming<'a>> {
        match apart {
            false => Ok(Incoming { payload, bulk: None }),
            true => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a frame marked for shared memory on a plain connection",
            )),
        }
    }

    /// The tail of the last frame marked apart has been decoded: its space can be reused.
    fn release_apart(&mut self) {}

    /// Whether the worker is still there (checked before an idle worker is reused).
    fn alive(&mut self) -> bool;

    /// The worker is going back to the pool: undo what a job set on it (a read timeout).
    fn reset(&mut self) {}

    /// Stops the worker now (it misbehaved, or its job is gone).
    fn kill(&mut self);

    /// The connection ended or was given up: waits for the worker's end where that is
    /// possible and says how it ended, for the error that names its lost items.
    fn ended(&mut self) -> String;

    /// Ends idle workers (the pool is dropped): each is closed, and stopped if it does not
    /// go on its own within a moment. Returns once none is left.
    fn retire(conns: Vec<Self>);
}

/// The part of a worker a job's link keeps.
pub trait ConnHandle: Send + 'static {
    /// The worker in words, for errors ("worker process 1234", "pod run-x-7hq2k").
    fn name(&self) -> String;

    /// Puts a large batch's items in the connection's side channel, returning the frame to
    /// send in their place; `None` to send them in the frame (the default).
    fn apart(&self, _parcel: &EncodedBatch) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// Memory of the connection's side channel that the next batch's items (`bytes` of
    /// them) may be cut straight into; that batch's parcel is the next one given to
    /// [`apart`](Self::apart), which then sends only where its items are. `None` (the
    /// default): batches are cut into vectors.
    fn room(&self, _bytes: usize) -> Option<crate::plumbing::Room> {
        None
    }

    /// Stops the worker (an item overran its time limit, or its job was cancelled).
    fn kill(&self);

    /// The worker's job was cancelled (it failed, or was dropped unfinished). By default the
    /// worker is killed. A worker that is costly to replace (a pod) may instead be told to end
    /// the job: bound how long its reader waits for that end (a read timeout) and return
    /// `true`; the reader then drops its last results and gives it back to the pool.
    fn cancel(&self) -> bool {
        self.kill();
        false
    }
}
