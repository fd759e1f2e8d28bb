//! The driver's link to one worker rank, for the dispatch loop, and the ranks a job holds.

use crate::endpoint::Endpoint;
use adparallelengine_core::plumbing::Event;
use adparallelengine_core::plumbing::{Parcel, WorkerLink};
use adparallelengine_core::remote::SentBatches;
use adparallelengine_core::remote::{encode_msg, EncodedBatch};
use adparallelengine_core::Result;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The ranks a job holds now, each with its worker slot and the batches sent to it and not
/// answered: what the job checks each rank's answers against. A rank the job let go of is
/// not here: what it still says is not for this job.
#[derive(Clone, Default)]
pub(crate) struct JobRanks(Arc<Mutex<HashMap<i32, (usize, SentBatches)>>>);

impl JobRanks {
    fn lock(&self) -> MutexGuard<'_, HashMap<i32, (usize, SentBatches)>> {
        // Each update is one insert or remove: consistent through a panic elsewhere.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rank `rank` is the job's worker `worker` now.
    fn hold(&self, rank: i32, worker: usize, sent: SentBatches) {
        self.lock().insert(rank, (worker, sent));
    }

    /// The job is done with `rank`.
    pub(crate) fn let_go(&self, rank: i32) {
        self.lock().remove(&rank);
    }

    /// The worker slot `rank` holds in the job, and what was sent to it.
    pub(crate) fn get(&self, rank: i32) -> Option<(usize, SentBatches)> {
        self.lock().get(&rank).cloned()
    }
}

/// Worker `worker` of a job, played by MPI rank `rank`.
pub(crate) struct RankLink<O> {
    rank: i32,
    worker: usize,
    endpoint: Arc<Endpoint>,
    /// To report the rank lost when it is given up on (an item timeout).
    events: crossbeam_channel::Sender<Event<O>>,
    /// The batches sent to the rank and not answered.
    sent: SentBatches,
    /// The job's ranks, this one among them while the link is open.
    ranks: JobRanks,
    open: bool,
}

impl<O> RankLink<O> {
    pub(crate) fn new(
        rank: i32,
        worker: usize,
        endpoint: Arc<Endpoint>,
        events: crossbeam_channel::Sender<Event<O>>,
        ranks: JobRanks,
    ) -> Self {
        let sent = endpoint.open_batches(rank);
        ranks.hold(rank, worker, sent.clone());
        RankLink { rank, worker, endpoint, events, sent, ranks, open: true }
    }
}

impl<O: Send> WorkerLink<EncodedBatch> for RankLink<O> {
    fn send(&mut self, parcel: EncodedBatch) -> Result<()> {
        let mut msg = encode_msg(&parcel.header())?;
        msg.extend_from_slice(parcel.item_bytes());
        // Before it leaves: the answer may be heard before `send` returns.
        self.sent.record(parcel.seq(), parcel.start(), parcel.len());
        self.endpoint.send(self.rank, msg)
    }

    /// Ends the job on the rank; it serves another once it has answered.
    fn close(&mut self) {
        if std::mem::take(&mut self.open) {
            self.ranks.let_go(self.rank);
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
