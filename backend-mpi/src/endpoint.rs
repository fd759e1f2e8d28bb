//! The driver's (rank 0's) side of MPI: sends that never block, receiving what has arrived,
//! and which job each worker rank belongs to.
//!
//! Every MPI call of the driver goes through one lock, so jobs may run on any thread. Sends
//! are immediate (`MPI_Isend`): the driver must never block on a worker that is itself
//! blocked sending its results, so it keeps each message's bytes until MPI is done with them.
//! Received messages are routed by their source rank to the job that holds the rank; a rank
//! whose job ended or was dropped is *draining* until it answers the end of the job, and only
//! then serves another one.

use crate::launch::mpi_err;
use crate::transport::TAG;
use adparallelengine_core::remote::{blobs_to_ship, fingerprint, FromWorker, ToWorker};
use adparallelengine_core::remote::{encode_msg, split_frame};
use adparallelengine_core::{Result, ShareKey, SharedStore};
use mpi::point_to_point::{Destination, Source};
use mpi::request::{Request, StaticScope};
use mpi::topology::{Communicator, SimpleCommunicator};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where a worker rank's messages go.
enum Route {
    /// To a job's inbox, as that job's worker `usize`.
    Job(crossbeam_channel::Sender<(usize, Vec<u8>)>, usize),
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

/// Batches in flight, by rank, under their own lock so that a signal handler can read them
/// while a job holds the MPI lock.
#[derive(Default)]
pub(crate) struct Ledger {
    batches: Mutex<HashMap<i32, InFlight>>,
}

/// A rank's batches in flight: (sequence number, first item, length).
type InFlight = Vec<(u64, usize, usize)>;

impl Ledger {
    fn sent(&self, rank: i32, seq: u64, start: usize, len: usize) {
        if let Ok(mut g) = self.batches.lock() {
            g.entry(rank).or_default().push((seq, start, len));
        }
    }

    fn answered(&self, rank: i32, seq: u64, start: usize) {
        if let Ok(mut g) = self.batches.lock() {
            if let Some(v) = g.get_mut(&rank) {
                v.retain(|&(s, st, _)| (s, st) != (seq, start));
            }
        }
    }

    fn forget(&self, rank: i32) {
        if let Ok(mut g) = self.batches.lock() {
            g.remove(&rank);
        }
    }

    /// The items in flight, rank by rank, e.g. `rank 2: items 7..8; rank 1: items 8..9`.
    pub(crate) fn describe(&self) -> String {
        let Ok(g) = self.batches.try_lock() else { return "(unknown: the ledger is busy)".into() };
        let mut ranks: Vec<_> = g.iter().filter(|(_, v)| !v.is_empty()).collect();
        ranks.sort_by_key(|(r, _)| **r);
        if ranks.is_empty() {
            return "none".into();
        }
        let part = |(rank, v): (&i32, &InFlight)| {
            let items: Vec<String> = v.iter().map(|&(_, s, n)| format!("{s}..{}", s + n)).collect();
            format!("rank {rank}: items {}", items.join(", "))
        };
        ranks.into_iter().map(|(r, v)| part((r, v))).collect::<Vec<_>>().join("; ")
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

    /// Records a batch sent to a rank.
    pub(crate) fn sent_batch(&self, rank: i32, seq: u64, start: usize, len: usize) {
        self.ledger.sent(rank, seq, start, len);
    }

    /// Number of worker ranks.
    pub(crate) fn ranks(&self) -> usize {
        self.ranks
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| mpi_err("the MPI endpoint lock is poisoned"))
    }

    /// Up to `want` idle ranks for a job whose messages go to `inbox` (as workers
    /// `first_worker..`), each greeted and given `job` (the job's frame payload). With `wait`,
    /// ranks still draining from an earlier job are waited for, briefly (a rank busy with an
    /// abandoned item is left out); without, only ranks idle now are taken.
    pub(crate) fn take(
        &self,
        want: usize,
        first_worker: usize,
        wait: bool,
        inbox: &crossbeam_channel::Sender<(usize, Vec<u8>)>,
        job: &[u8],
        ship: Option<&dyn SharedStore>,
    ) -> Result<Vec<i32>> {
        let began = Instant::now();
        let mut backoff = adparallelengine_core::plumbing::Backoff::new();
        loop {
            let mut s = self.lock()?;
            s.poll_into(&self.ledger);
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
                for (i, &rank) in ranks.iter().enumerate() {
                    s.routes.insert(rank, Route::Job(inbox.clone(), first_worker + i));
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
            s.poll_into(&self.ledger);
        }
    }

    /// Ends a job on a rank: `EndJob` is sent, and the rank drains until it answers.
    pub(crate) fn release(&self, rank: i32) {
        if let Ok(mut s) = self.lock() {
            if s.refused.contains(&rank) {
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

    /// Closes every worker rank (they finalize MPI and exit) and completes every send. A
    /// rank that does not come back from its job within `grace` (an item that was abandoned
    /// after a timeout, still running) cannot be closed: then the whole MPI job is aborted,
    /// rather than left hanging in `MPI_Finalize`.
    pub(crate) fn shutdown(&self, grace: Duration) {
        let began = Instant::now();
        let mut backoff = adparallelengine_core::plumbing::Backoff::new();
        loop {
            let Ok(mut s) = self.lock() else { return };
            s.poll_into(&self.ledger);
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
                    s.poll_into(&self.ledger);
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

    fn poll_into(&mut self, ledger: &Ledger) {
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
            match split_frame::<FromWorker>(&bytes) {
                Ok((FromWorker::Done { seq, start, .. }, _)) => ledger.answered(rank, seq, start),
                Ok((FromWorker::Refused { .. }, _)) => {
                    // It left its serve loop: its job hears why, and it is not waited for.
                    self.refused.insert(rank);
                    if let Some(Route::Job(inbox, worker)) = self.routes.remove(&rank) {
                        let _ = inbox.send((worker, bytes));
                    }
                    self.idle.retain(|r| *r != rank);
                    continue;
                }
                _ => {}
            }
            match self.routes.get(&rank) {
                Some(Route::Job(inbox, worker)) => {
                    if inbox.send((*worker, bytes)).is_err() {
                        // The job is gone without releasing the rank (it should not happen).
                        self.routes.insert(rank, Route::Draining);
                    }
                }
                Some(Route::Draining) => {
                    if matches!(split_frame::<FromWorker>(&bytes), Ok((FromWorker::JobEnded, _))) {
                        self.routes.remove(&rank);
                        self.idle.push(rank);
                    }
                }
                None => tracing::warn!(rank, "message from a worker rank that holds no job; dropped"),
            }
        }
    }
}
