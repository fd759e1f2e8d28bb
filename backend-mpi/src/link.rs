//! The driver's link to one worker rank, for the dispatch loop.

use crate::endpoint::Endpoint;
use adparallelengine_core::plumbing::Event;
use adparallelengine_core::plumbing::{Parcel, WorkerLink};
use adparallelengine_core::remote::ToWorker;
use adparallelengine_core::remote::{encode_msg, EncodedBatch};
use adparallelengine_core::Result;
use std::sync::Arc;

/// Worker `worker` of a job, played by MPI rank `rank`.
pub(crate) struct RankLink<O> {
    rank: i32,
    worker: usize,
    endpoint: Arc<Endpoint>,
    /// To report the rank lost when it is given up on (an item timeout).
    events: crossbeam_channel::Sender<Event<O>>,
    open: bool,
}

impl<O> RankLink<O> {
    pub(crate) fn new(
        rank: i32,
        worker: usize,
        endpoint: Arc<Endpoint>,
        events: crossbeam_channel::Sender<Event<O>>,
    ) -> Self {
        RankLink { rank, worker, endpoint, events, open: true }
    }
}

impl<O: Send> WorkerLink<EncodedBatch> for RankLink<O> {
    fn send(&mut self, parcel: EncodedBatch) -> Result<()> {
        let mut msg = encode_msg(&ToWorker::Batch { seq: parcel.seq(), start: parcel.start(), count: parcel.len() })?;
        msg.extend_from_slice(parcel.item_bytes());
        self.endpoint.sent_batch(self.rank, parcel.seq(), parcel.start(), parcel.len());
        self.endpoint.send(self.rank, msg)
    }

    /// Ends the job on the rank; it serves another once it has answered.
    fn close(&mut self) {
        if std::mem::take(&mut self.open) {
            self.endpoint.release(self.rank);
        }
    }

    /// An MPI rank cannot be killed: it is told the job is over, finishes the batches it
    /// holds, and serves another job once it has answered. What it still sends for this job
    /// is dropped.
    fn cancel(&mut self) {
        self.close()
    }

    /// Gives up on the rank (an item timed out): the job goes on without it, its batches are
    /// retried elsewhere, and the rank rejoins the engine when its item ends.
    fn kill(&mut self) {
        self.close();
        let reason = format!(
            "MPI rank {} was given up on after an item timeout (a rank cannot be killed; it rejoins when the item ends)",
            self.rank
        );
        let _ = self.events.send(Event::Lost { worker: self.worker, reason });
    }
}
