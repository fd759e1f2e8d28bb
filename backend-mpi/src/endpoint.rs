//! The driver's (rank 0's) side of MPI: sends that never block, receiving what has arrived,
//! and which job each worker rank belongs to.
//!
//! Every MPI call of the driver goes through one lock, so jobs may run on any thread. Sends
//! are immediate (`MPI_Isend`): the driver must never block on a worker that is itself
//! blocked sending its results, so it keeps each message's bytes until MPI is done with them.
//! Received messages are routed by their source rank to the job that holds the rank; a rank
//! whose job ended or was dropped is *draining* until it answers the end of the job, and only
//! then serves another one. A rank that broke the protocol (an answer that does not match
//! what it was sent) is *banned*: drained like the others, it never serves again.

use crate::launch::mpi_err;
use crate::transport::TAG;
use adparallelengine_core::remote::{blobs_to_ship, fingerprint, FromWorker, SentBatches, ToWorker};
use adparallelengine_core::remote::{encode_msg, split_frame};
use adparallelengine_core::{Result, ShareKey, SharedStore};
use mpi::point_to_point::{Destination, Source};
use mpi::request::{Request, StaticScope};
use mpi::topology::{Communicator, SimpleCommunicator};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where a job hears its ranks' messages: (the rank, its message).
pub(crate) type Inbox = crossbeam_channel::Sender<(i32, Vec<u8>)>;

/// Where a worker rank's messages go.
enum Route {
    /// To a job's inbox.
    Job(Inbox),
    /// Nowhere, until the rank answers the end of its job (`JobEnded`).
    Draining,
}

/// A send in flight and the bytes it reads.
struct Pending {
    request: Request<'static, [u8], StaticScope>,
    bytes: *mut [u8],
}

struct State {
    world: SimpleCommunicator,
    /// Worker ranks free for a job.
    idle: Vec<i32>,
    routes: HashMap<i32, Route>,
    /// Ranks that refused to serve (another build of the program): they have left their serve
    /// loop, so they are never given a job, drained or closed again.
    refused: HashSet<i32>,
    /// Ranks that broke the protocol: drained, and never given a job again.
    banned: HashSet<i32>,
    /// Ranks that got the handshake.
    greeted: HashSet<i32>,
    /// Shared values each rank has been sent.
    shipped: HashMap<i32, HashSet<ShareKey>>,
    pending: Vec<Pending>,
    /// Polls so far.
    polls: u32,
}

// SAFETY: MPI handles are plain values; MPI was initialized with at least
// MPI_THREAD_SERIALIZED and every call is made under the endpoint's lock.
unsafe impl Send for State {}

/// The driver's MPI endpoint, shared by the jobs of an engine.
pub(crate) struct Endpoint {
    state: Mutex<State>,
    ranks: usize,
    /// Batches sent and not answered, by rank: what is lost if the job is torn down.
    ledger: Arc<Ledger>,
}

/// The batches sent to each rank of a job and not answered (what its answers are checked
/// against, shared with its link and its job), under their own lock so that a signal handler
/// can read them while a job holds the MPI lock.
#[derive(Default)]
pub(crate) struct Ledger {
    batches: Mutex<HashMap<i32, SentBatches>>,
}

impl Ledger {
    /// The batches of `rank`'s new link (none yet).
    fn open(&self, rank: i32) -> SentBatches {
        let sent = SentBatches::default();
        if let Ok(mut g) = self.batches.lock() {
            g.insert(rank, sent.clone());
        }
        sent
    }

    fn forget(&self, rank: i32) {
        if let Ok(mut g) = self.batches.lock() {
            g.remove(&rank);
        }
    }

    /// The items in flight, rank by rank, e.g. `rank 2: items 7..8; rank 1: items 8..9`.
    pub(crate) fn describe(&self) -> String {
        let busy = || "(unknown: the ledger is busy)".to_string();
        let Ok(g) = self.batches.try_lock() else { return busy() };
        let mut ranks = Vec::with_capacity(g.len());
        for (rank, sent) in g.iter() {
            let Some(v) = sent.try_pending() else { return busy() };
            if !v.is_empty() {
                ranks.push((*rank, v));
            }
        }
        ranks.sort_by_key(|(r, _)| *r);
        if ranks.is_empty() {
            return "none".into();
        }
        let part = |(rank, v): (i32, Vec<(u64, usize, usize)>)| {
            let items: Vec<String> = v.iter().map(|&(_, s, n)| format!("{s}..{}", s.saturating_add(n))).collect();
            format!("rank {rank}: items {}", items.join(", "))
        };
        ranks.into_iter().map(part).collect::<Vec<_>>().join("; ")
    }
}

impl Endpoint {
    /// The endpoint of rank 0 of a world of `size` ranks.
    pub(crate) fn new(size: usize) -> Self {
        let idle = (1..size as i32).rev().collect();
        let state = State {
            world: SimpleCommunicator::world(),
            idle,
            routes: HashMap::new(),
            refused: HashSet::new(),
            banned: HashSet::new(),
            greeted: HashSet::new(),
            shipped: HashMap::new(),
            pending: Vec::new(),
            polls: 0,
        };
        Endpoint { state: Mutex::new(state), ranks: size.saturating_sub(1), ledger: Arc::default() }
    }

    /// The batches in flight, for a report when the job is torn down.
    pub(crate) fn ledger(&self) -> Arc<Ledger> {
        Arc::clone(&self.ledger)
    }

    /// The batches sent to `rank` by its new link, and not answered: none yet.
    pub(crate) fn open_batches(&self, rank: i32) -> SentBatches {
        self.ledger.open(rank)
    }

    /// Number of worker ranks.
    pub(crate) fn ranks(&self) -> usize {
        self.ranks
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| mpi_err("the MPI endpoint lock is poisoned"))
    }

    /// Up to `want` idle ranks for a job whose messages go to `inbox`, each greeted and given
    /// `job` (the job's frame payload). With `wait`, ranks still draining from an earlier job
    /// are waited for, briefly (a rank busy with an abandoned item is left out); without, only
    /// ranks idle now are taken.
    pub(crate) fn take(
        &self,
        want: usize,
        wait: bool,
        inbox: &Inbox,
        job: &[u8],
        ship: Option<&dyn SharedStore>,
    ) -> Result<Vec<i32>> {
        let began = Instant::now();
        let mut backoff = adparallelengine_core::plumbing::Backoff::new();
        loop {
            let mut s = self.lock()?;
            s.poll_into();
            let draining = s.routes.values().filter(|r| matches!(r, Route::Draining)).count();
            let enough = s.idle.len() >= want || draining == 0 || !wait;
            if !wait && s.idle.is_empty() {
                return Ok(Vec::new());
            }
            let waited = began.elapsed();
            if (enough || waited > Duration::from_secs(2)) && !s.idle.is_empty() {
                let n = want.min(s.idle.len());
                let start = s.idle.len() - n;
                let ranks: Vec<i32> = s.idle.drain(start..).rev().collect();
                for &rank in &ranks {
                    s.routes.insert(rank, Route::Job(inbox.clone()));
                    if s.greeted.insert(rank) {
                        let hello = encode_msg(&ToWorker::Hello {
                            fingerprint: fingerprint().to_string(),
                            worker: rank as usize,
                        })?;
                        s.send(rank, hello);
                    }
                    if let Some(store) = ship {
                        let blobs = blobs_to_ship(store, s.shipped.entry(rank).or_default())?;
                        for (head, bytes) in blobs {
                            let bytes: &[u8] = (*bytes).as_ref();
                            let mut msg = Vec::with_capacity(head.len() + bytes.len());
                            msg.extend_from_slice(&head);
                            msg.extend_from_slice(bytes);
                            s.send(rank, msg);
                        }
                    }
                    s.send(rank, job.to_vec());
                }
                return Ok(ranks);
            }
            if waited > Duration::from_secs(600) || (s.idle.is_empty() && draining == 0) {
                if s.routes.is_empty() && !s.refused.is_empty() {
                    let mut refused: Vec<i32> = s.refused.iter().copied().collect();
                    refused.sort_unstable();
                    return Err(mpi_err(format!(
                        "no worker rank can serve: rank(s) {refused:?} refused (another build of the program; \
                         run the same binary on every rank)"
                    )));
                }
                if s.routes.is_empty() && !s.banned.is_empty() {
                    let mut banned: Vec<i32> = s.banned.iter().copied().collect();
                    banned.sort_unstable();
                    return Err(mpi_err(format!(
                        "no worker rank can serve: rank(s) {banned:?} were stopped for breaking the protocol"
                    )));
                }
                return Err(mpi_err("no worker rank is free: every one is held by another job of this engine"));
            }
            drop(s);
            backoff.wait();
        }
    }

    /// Sends a message to a rank, without blocking.
    pub(crate) fn send(&self, rank: i32, bytes: Vec<u8>) -> Result<()> {
        self.lock()?.send(rank, bytes);
        Ok(())
    }

    /// Receives what has arrived (routing it) and completes finished sends.
    pub(crate) fn poll(&self) {
        if let Ok(mut s) = self.lock() {
            s.poll_into();
        }
    }

    /// Ends a job on a rank: `EndJob` is sent, and the rank drains until it answers.
    pub(crate) fn release(&self, rank: i32) {
        if let Ok(mut s) = self.lock() {
            // A refusing rank is out of its serve loop; a banned one is draining already.
            if s.refused.contains(&rank) || s.banned.contains(&rank) {
                drop(s);
                self.ledger.forget(rank);
                return;
            }
            if let Ok(end) = encode_msg(&ToWorker::EndJob) {
                s.send(rank, end);
            }
            s.routes.insert(rank, Route::Draining);
        }
        self.ledger.forget(rank);
    }

    /// Stops using a rank that broke the protocol: its job is ended (it drains until it
    /// answers, what it sends meanwhile dropped) and it is never given a job again. An MPI
    /// rank cannot be killed; it is closed with the others when the engine ends.
    pub(crate) fn ban(&self, rank: i32) {
        if let Ok(mut s) = self.lock() {
            if !s.refused.contains(&rank) && s.banned.insert(rank) {
                if let Ok(end) = encode_msg(&ToWorker::EndJob) {
                    s.send(rank, end);
                }
                s.routes.insert(rank, Route::Draining);
                s.idle.retain(|r| *r != rank);
            }
        }
        self.ledger.forget(rank);
    }

    /// Closes every worker rank (they finalize MPI and exit) and completes every send. A
    /// rank that does not come back from its job within `grace` (an item that was abandoned
    /// after a timeout, still running) cannot be closed: then the whole MPI job is aborted,
    /// rather than left hanging in `MPI_Finalize`.
    pub(crate) fn shutdown(&self, grace: Duration) {
        let began = Instant::now();
        let mut backoff = adparallelengine_core::plumbing::Backoff::new();
        loop {
            let Ok(mut s) = self.lock() else { return };
            s.poll_into();
            let busy: Vec<i32> = s.routes.keys().copied().collect();
            if busy.is_empty() || began.elapsed() > grace {
                if !busy.is_empty() {
                    eprintln!(
                        "adparallelengine: MPI rank(s) {busy:?} did not finish their job within {grace:?} of the \
                         engine's end (an abandoned item still running?); aborting the MPI job"
                    );
                    crate::launch::abort(3);
                }
                for rank in 1..=self.ranks as i32 {
                    if !s.refused.contains(&rank) {
                        s.send(rank, Vec::new());
                    }
                }
                while !s.pending.is_empty() {
                    s.poll_into();
                    s.complete_sends();
                    std::hint::spin_loop();
                }
                return;
            }
            drop(s);
            backoff.wait();
        }
    }
}

impl State {
    /// Frees the buffers of the sends MPI is done with.
    fn complete_sends(&mut self) {
        for Pending { request, bytes } in std::mem::take(&mut self.pending) {
            match request.test() {
                // SAFETY: MPI is done with the buffer; it came from `Box::into_raw`.
                Ok(_) => drop(unsafe { Box::from_raw(bytes) }),
                Err(request) => self.pending.push(Pending { request, bytes }),
            }
        }
    }

    fn send(&mut self, rank: i32, bytes: Vec<u8>) {
        let bytes: *mut [u8] = Box::into_raw(bytes.into_boxed_slice());
        // SAFETY: the box is leaked until the request completes (`poll`), so the buffer
        // outlives the send as `StaticScope` requires.
        let buf: &'static [u8] = unsafe { &*bytes };
        let request = self.world.process_at_rank(rank).immediate_send_with_tag(StaticScope, buf, TAG);
        self.pending.push(Pending { request, bytes });
    }

    fn poll_into(&mut self) {
        // Sends that are done give their bytes back. Every MPI call makes the library's
        // progress loop run (and, on an oversubscribed machine, yield the CPU), so small
        // sends, done at once, are collected every 16th poll or when they pile up; the receive
        // probe below runs every time.
        self.polls = self.polls.wrapping_add(1);
        if self.pending.len() >= 8 || self.polls % 16 == 0 {
            self.complete_sends();
        }
        // Everything that has arrived.
        while let Some((msg, status)) = self.world.any_process().immediate_matched_probe_with_tag(TAG) {
            let len = status.count(<u8 as mpi::datatype::Equivalence>::equivalent_datatype()).max(0) as usize;
            let mut bytes = vec![0u8; len];
            msg.matched_receive_into(&mut bytes[..]);
            let rank = status.source_rank();
            if let Ok((FromWorker::Refused { .. }, _)) = split_frame::<FromWorker>(&bytes) {
                // It left its serve loop: its job hears why, and it is not waited for.
                self.refused.insert(rank);
                if let Some(Route::Job(inbox)) = self.routes.remove(&rank) {
                    let _ = inbox.send((rank, bytes));
                }
                self.idle.retain(|r| *r != rank);
                continue;
            }
            match self.routes.get(&rank) {
                Some(Route::Job(inbox)) => {
                    if inbox.send((rank, bytes)).is_err() {
                        // The job is gone without releasing the rank (it should not happen).
                        self.routes.insert(rank, Route::Draining);
                    }
                }
                Some(Route::Draining) => {
                    if matches!(split_frame::<FromWorker>(&bytes), Ok((FromWorker::JobEnded, _))) {
                        self.routes.remove(&rank);
                        if !self.banned.contains(&rank) {
                            self.idle.push(rank);
                        }
                    }
                }
                None => tracing::warn!(rank, "message from a worker rank that holds no job; dropped"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_reports_what_each_rank_was_sent_and_has_not_answered() {
        let ledger = Ledger::default();
        let (one, two) = (ledger.open(1), ledger.open(2));
        one.record(0, 0, 4);
        one.record(2, 8, 4);
        two.record(1, 4, 4);
        assert_eq!(one.answer(0, 0, 4), Ok(()));
        assert_eq!(ledger.describe(), "rank 1: items 8..12; rank 2: items 4..8");
        // A rank's new link starts with nothing; a released rank is not reported.
        ledger.open(1);
        ledger.forget(2);
        assert_eq!(ledger.describe(), "none");
    }
}
