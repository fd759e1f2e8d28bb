//! The dispatch loop shared by every backend whose workers are reached through links
//! (threads, processes, MPI ranks, pods): pull-based with a small prefetch window, a bounded
//! reorder window, per-item timeouts, and retries of the batches of a worker that died.

use super::completions::Completions;
use super::parcel::Parcel;
use crate::batching::Batcher;
use crate::error::{Error, FailureKind, ItemError, Result};
use crate::plumbing::batch::{Batch, BatchDone, Event};
use crate::plumbing::source::{ItemSource, RangeCut};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// What a dispatch loop over parcels is made of ([`Dispatch::with_parcels`]).
pub struct DispatchParts<'a, I: Iterator, O, P> {
    /// The backend's name, for errors and logs.
    pub backend: &'static str,
    /// The job's items ([`Plan::source`](crate::plumbing::Plan::source)).
    pub source: ItemSource<I>,
    /// Sizes the batches ([`Plan::batcher`](crate::plumbing::Plan::batcher)).
    pub batcher: Box<dyn Batcher + 'a>,
    /// Makes each batch its parcel (e.g. [`EncodedBatch::encode`](crate::remote::EncodedBatch::encode)).
    pub prepare: Box<dyn FnMut(Batch<I::Item>) -> Result<P> + 'a>,
    /// One link per worker.
    pub links: Vec<Box<dyn WorkerLink<P> + 'a>>,
    /// Replaces a worker that died; `None`: its slot stays empty.
    pub respawn: Option<Respawn<'a, P>>,
    /// The workers' events.
    pub events: Receiver<Event<O>>,
    /// Prefetch, reorder window, retries and timeouts ([`Plan::dispatch`](crate::plumbing::Plan::dispatch)).
    pub config: DispatchConfig,
}

/// The driver's end of one worker.
pub trait WorkerLink<P>: Send {
    /// Queues a parcel for the worker.
    fn send(&mut self, parcel: P) -> Result<()>;
    /// No more parcels: the worker finishes what it holds, then stops.
    fn close(&mut self);
    /// Stop now: the worker drops what it holds (the job failed or was dropped).
    fn cancel(&mut self) {
        self.close()
    }
    /// Kill the worker (an item timed out). Its loss is then reported as an [`Event::Lost`].
    fn kill(&mut self) {
        self.cancel()
    }
    /// Memory of the worker's own (shared with it) that the next batch's items, `bytes` of
    /// them as plain numbers, may be written straight into; the parcel then made of them
    /// ([`Dispatch::with_rooms`]) is sent to this link next. `None` (the default): the batch
    /// is cut into a vector and prepared as usual.
    fn room(&mut self, _bytes: usize) -> Option<super::room::Room> {
        None
    }
}

/// Makes the parcel of a batch cut into a link's [`Room`](super::room::Room): its sequence
/// number, first index, length and where its items are; `None` when they cannot be one.
pub type PlaceParcel<P> = fn(u64, usize, usize, std::sync::Arc<dyn crate::remote::ItemBytes>) -> Option<P>;

/// Makes the parcel of a batch of a range ([`Dispatch::with_ranges`]) from its sequence
/// number, first index, length and first item; `None` when it cannot be one.
pub type PlaceRange<X, P> = fn(u64, usize, usize, &X) -> Option<P>;

/// Starts a replacement worker in a slot whose worker died.
pub type Respawn<'a, P> = Box<dyn FnMut(usize) -> Result<Box<dyn WorkerLink<P> + 'a>> + 'a>;

/// How long the dispatch loop spins for an event from a channel before it parks (a thread
/// that sends to a channel wakes the receiver, so this spin is short; polled transports
/// back off with [`crate::plumbing::backoff::Backoff`] instead).
pub const SPIN: Duration = Duration::from_micros(30);

/// How often a slot whose worker died and could not be replaced at once asks for a
/// replacement again while the job runs (a pod replaced by its Job controller joins then).
pub const REFILL_EVERY: Duration = Duration::from_millis(250);

/// Prefetch, ordering and failure knobs of the dispatch loop.
#[derive(Debug, Clone, Copy)]
pub struct DispatchConfig {
    /// Batches queued per worker (1 running + the rest waiting), so a worker never idles
    /// waiting for its next batch.
    pub prefetch: usize,
    /// Most batches between the oldest unfinished one and the newest cut: bounds what an
    /// ordered stream buffers. `None` when every result is kept anyway.
    pub max_ahead: Option<usize>,
    /// How many times the items of a worker that died are tried again (on a fresh worker)
    /// before they are reported as failed.
    pub max_retries: usize,
    /// Longest time one item may take; its worker is killed past it (per batch: this times
    /// the batch's length). `None`: no limit.
    pub item_timeout: Option<Duration>,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig { prefetch: 2, max_ahead: None, max_retries: 2, item_timeout: None }
    }
}

struct InFlight<P> {
    seq: u64,
    start: usize,
    len: usize,
    kept: Option<P>,
    attempt: usize,
    /// The worker was gone before it got this parcel.
    unsent: bool,
}

struct Slot<'a, P> {
    link: Option<Box<dyn WorkerLink<P> + 'a>>,
    /// Whether the current worker finished its `init` (it said so, or finished a batch).
    ready: bool,
    in_flight: VecDeque<InFlight<P>>,
    head_since: Instant,
    timed_out: Option<Duration>,
    /// The worker was lost and no replacement was at hand: [`Dispatch::refill`] offers one.
    /// (A slot whose link failed a send is not vacant yet: its loss is on its way.)
    vacant: bool,
    /// The worker refused the job (another build, an unknown task): the slot stays empty.
    refused: bool,
}

/// Parts of a batch split after its worker died, gathered until all are back.
struct Parts<O> {
    remaining: usize,
    done: Vec<BatchDone<O>>,
}

/// Runs a job over worker links: hands out batches as workers free up and returns completed
/// batches. Dropping it cancels every worker.
pub struct Dispatch<'a, I: Iterator, O, P: Parcel> {
    backend: &'static str,
    source: ItemSource<I>,
    batcher: Box<dyn Batcher + 'a>,
    prepare: Box<dyn FnMut(Batch<I::Item>) -> Result<P> + 'a>,
    slots: Vec<Slot<'a, P>>,
    respawn: Option<Respawn<'a, P>>,
    events: Receiver<Event<O>>,
    config: DispatchConfig,
    retry: VecDeque<(P, usize)>,
    parts: HashMap<u64, Parts<O>>,
    ready: VecDeque<BatchDone<O>>,
    outstanding: usize,
    oldest: u64,
    done_flags: VecDeque<bool>,
    broken: Option<Error>,
    /// Workers lost before their `init` finished, since one last did: past a bound the job
    /// itself (its args, its init, the environment) kills them, and retrying would loop.
    barren_losses: usize,
    /// How long the last wait for an event took: spinning pays only when events come fast.
    last_wait: Duration,
    /// For backends whose messages must be polled (MPI): moves what has arrived into
    /// `events`. Waiting then polls it with a backoff instead of parking on the channel.
    pump: Option<Box<dyn FnMut() + 'a>>,
    /// When slots left without a worker are next offered a replacement.
    next_refill: Instant,
    /// Makes parcels of batches cut into links' rooms, when the items are plain numbers
    /// ([`Dispatch::with_rooms`]).
    place: Option<PlaceParcel<P>>,
    /// Makes parcels of batches of a range, when the job maps over one
    /// ([`Dispatch::with_ranges`]).
    place_range: Option<PlaceRange<I::Item, P>>,
    over: bool,
}

impl<'a, I: Iterator, O> Dispatch<'a, I, O, Batch<I::Item>>
where
    I::Item: Send + 'a,
{
    /// A dispatch loop whose links take batches as they are (in-process workers).
    pub fn new(
        backend: &'static str,
        source: ItemSource<I>,
        batcher: Box<dyn Batcher + 'a>,
        links: Vec<Box<dyn WorkerLink<Batch<I::Item>> + 'a>>,
        events: Receiver<Event<O>>,
        config: DispatchConfig,
    ) -> Self {
        Dispatch::with_parcels(DispatchParts {
            backend,
            source,
            batcher,
            prepare: Box::new(Ok),
            links,
            respawn: None,
            events,
            config,
        })
    }
}

impl<'a, I: Iterator, O, P: Parcel> Dispatch<'a, I, O, P> {
    /// Waits for events by calling `pump` (which moves arrived messages into the events
    /// channel), for transports that cannot wake a thread when a message arrives (MPI).
    /// Between calls the loop backs off ([`crate::plumbing::backoff::Backoff`]), so a driver waiting for
    /// long batches does not spin a core.
    pub fn with_pump(mut self, pump: Box<dyn FnMut() + 'a>) -> Self {
        self.pump = Some(pump);
        self
    }

    /// Cuts batches of plain-number items straight into memory their link lends
    /// ([`WorkerLink::room`]), one pass from the iterator, and makes their parcels with
    /// `place` (e.g. [`EncodedBatch::in_place`](crate::remote::EncodedBatch::in_place));
    /// batches of any other item type, or for links that lend nothing, are cut into vectors
    /// and prepared as usual.
    pub fn with_rooms(mut self, place: PlaceParcel<P>) -> Self
    where
        I::Item: 'static,
    {
        let plain = crate::plumbing::plain::is_plain::<I::Item>();
        self.place = plain.then_some(place);
        self
    }

    /// Cuts the batches of a job that maps over a range of integers as ranges: only their
    /// first item and length, made into parcels by `place` (e.g.
    /// [`EncodedBatch::range`](crate::remote::EncodedBatch::range)), whose workers make the
    /// items (see `plumbing::int_range`). Batches of any other iterator are cut as usual.
    pub fn with_ranges(mut self, place: PlaceRange<I::Item, P>) -> Self {
        self.place_range = Some(place);
        self
    }

    /// Cuts the next batch, of at most `size` items, as a range: `None` when the job is not
    /// over a range (cut it another way then), `Some(None)` when the iterator is done.
    fn cut_range(&mut self, size: usize) -> Result<Option<Option<P>>> {
        let Some(place) = self.place_range.filter(|_| self.source.cuts_ranges()) else { return Ok(None) };
        let Some(RangeCut { seq, start, count, first }) = self.source.next_range(size)? else {
            return Ok(Some(None));
        };
        match place(seq, start, count, &first) {
            Some(p) => Ok(Some(Some(p))),
            None => Err(Error::Backend {
                backend: self.backend,
                message: format!("batch {seq} was cut from a range but cannot be sent as one"),
            }),
        }
    }

    /// Cuts the next batch, of at most `size` items, into worker `w`'s room: `None` when it
    /// lends none (cut it into a vector then), `Some(None)` when the iterator is done.
    fn cut_in_room(&mut self, w: usize, size: usize) -> Result<Option<Option<P>>> {
        let Some(place) = self.place else { return Ok(None) };
        let item = std::mem::size_of::<I::Item>();
        let size = size.max(1).min(self.source.remaining().unwrap_or(usize::MAX).max(1));
        let Some(bytes) = size.checked_mul(item) else { return Ok(None) };
        let Some(room) = self.slots[w].link.as_mut().and_then(|l| l.room(bytes)) else { return Ok(None) };
        if room.capacity() < bytes || (room.ptr() as usize) % std::mem::align_of::<I::Item>() != 0 {
            return Ok(None);
        }
        // SAFETY: the room is valid for writes of `bytes` = `size` items and aligned for them
        // (checked above; see `Room::new`), and `I::Item` is a plain number (`with_rooms`
        // sets `place` only then), which has no drop glue.
        let cut = unsafe { self.source.next_batch_into(size, room.ptr().cast::<I::Item>()) }?;
        let Some((seq, start, count)) = cut else { return Ok(Some(None)) };
        let held = room.filled(count * item);
        match place(seq, start, count, held) {
            Some(p) => Ok(Some(Some(p))),
            None => Err(Error::Backend {
                backend: self.backend,
                message: format!("batch {seq} was cut into a worker's memory but cannot be sent from there"),
            }),
        }
    }

    /// Polls the pump until an event arrives or `wait` runs out (`None`: no limit).
    fn pump_for_event(&mut self, wait: Option<Duration>) -> std::result::Result<Event<O>, RecvTimeoutError> {
        let mut backoff = crate::plumbing::backoff::Backoff::new();
        loop {
            if let Some(pump) = self.pump.as_mut() {
                pump();
            }
            match self.events.try_recv() {
                Ok(ev) => return Ok(ev),
                Err(crossbeam_channel::TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(crossbeam_channel::TryRecvError::Empty) => {}
            }
            if wait.is_some_and(|w| backoff.elapsed() >= w) {
                return Err(RecvTimeoutError::Timeout);
            }
            backoff.wait();
        }
    }

    /// A dispatch loop whose links take parcels made by `parts.prepare` (encoded batches,
    /// for out-of-process workers), with `parts.respawn` replacing workers that die.
    pub fn with_parcels(parts: DispatchParts<'a, I, O, P>) -> Self {
        let DispatchParts { backend, source, batcher, prepare, links, respawn, events, config } = parts;
        let now = Instant::now();
        let slots = links
            .into_iter()
            .map(|l| Slot {
                link: Some(l),
                ready: false,
                in_flight: VecDeque::new(),
                head_since: now,
                timed_out: None,
                vacant: false,
                refused: false,
            })
            .collect();
        Dispatch {
            backend,
            source,
            batcher,
            prepare,
            slots,
            respawn,
            events,
            config: DispatchConfig { prefetch: config.prefetch.max(1), ..config },
            retry: VecDeque::new(),
            parts: HashMap::new(),
            ready: VecDeque::new(),
            outstanding: 0,
            oldest: 0,
            done_flags: VecDeque::new(),
            broken: None,
            barren_losses: 0,
            last_wait: Duration::ZERO,
            next_refill: Instant::now(),
            pump: None,
            place: None,
            place_range: None,
            over: false,
        }
    }

    fn window_open(&self) -> bool {
        match self.config.max_ahead {
            None => true,
            Some(m) => self.source.batches_cut() - self.oldest < m.max(1) as u64,
        }
    }

    fn send_to(&mut self, w: usize, parcel: P, attempt: usize) -> Result<()> {
        let slot = &mut self.slots[w];
        let Some(link) = slot.link.as_mut() else {
            return Err(Error::Backend { backend: self.backend, message: format!("worker {w} is gone") });
        };
        let entry = InFlight {
            seq: parcel.seq(),
            start: parcel.start(),
            len: parcel.len(),
            kept: parcel.keep(),
            attempt,
            unsent: false,
        };
        if slot.in_flight.is_empty() {
            slot.head_since = Instant::now();
        }
        if let Err(e) = link.send(parcel) {
            // The worker is gone; the reason (its init failed, it died) is on its way as an
            // event. A kept parcel waits for it and is resent then, without counting an
            // attempt; otherwise the job cannot complete: keep this error for when no better
            // one comes.
            slot.link = None;
            if entry.kept.is_some() {
                slot.in_flight.push_back(InFlight { unsent: true, ..entry });
            } else {
                self.broken.get_or_insert(e);
            }
            return Ok(());
        }
        slot.in_flight.push_back(entry);
        Ok(())
    }

    /// Gives every live worker parcels up to the prefetch depth, breadth first: retries first,
    /// then new batches.
    fn fill(&mut self) -> Result<()> {
        for depth in 1..=self.config.prefetch {
            for w in 0..self.slots.len() {
                if self.slots[w].link.is_none() || self.slots[w].in_flight.len() >= depth {
                    continue;
                }
                if let Some((parcel, attempt)) = self.retry.pop_front() {
                    self.send_to(w, parcel, attempt)?;
                    continue;
                }
                if self.source.is_done() || !self.window_open() {
                    continue;
                }
                let size = self.batcher.next_size(self.source.remaining());
                let cut = match self.cut_range(size)? {
                    Some(cut) => Some(cut),
                    None => self.cut_in_room(w, size)?,
                };
                let parcel = match cut {
                    Some(Some(parcel)) => parcel,
                    Some(None) => continue,
                    None => {
                        let Some(batch) = self.source.next_batch(size)? else {
                            continue;
                        };
                        (self.prepare)(batch)?
                    }
                };
                self.done_flags.push_back(false);
                self.outstanding += 1;
                // What this batch costs the driver until it is consumed: its items as sent
                // (kept for a retry) and its outputs. Bounds Auto batches in bytes.
                let n = parcel.len();
                self.batcher.observe_bytes(n, parcel.bytes() + n * std::mem::size_of::<O>());
                self.send_to(w, parcel, 0)?;
            }
        }
        Ok(())
    }

    /// Offers slots left without a worker a replacement, at most every [`REFILL_EVERY`]:
    /// whether one joined, and how long to wait at most before the next offer while slots are
    /// vacant.
    fn refill(&mut self) -> (bool, Option<Duration>) {
        let vacant = self.slots.iter().any(|s| s.vacant);
        let Some(respawn) = self.respawn.as_mut() else { return (false, None) };
        if !vacant || (self.outstanding == 0 && self.source.is_done()) {
            return (false, None);
        }
        let mut joined = false;
        let now = Instant::now();
        if now >= self.next_refill {
            self.next_refill = now + REFILL_EVERY;
            for (w, slot) in self.slots.iter_mut().enumerate().filter(|(_, s)| s.vacant) {
                match respawn(w) {
                    Ok(link) => {
                        tracing::debug!(backend = self.backend, worker = w, "a replacement worker joined the job");
                        slot.vacant = false;
                        slot.link = Some(link);
                        slot.ready = false;
                        slot.head_since = Instant::now();
                        joined = true;
                    }
                    Err(e) => {
                        tracing::trace!(backend = self.backend, worker = w, error = %e, "no replacement yet");
                        break;
                    }
                }
            }
        }
        (joined, Some(self.next_refill.saturating_duration_since(Instant::now())))
    }

    fn mark_done(&mut self, seq: u64) {
        if let Some(flag) = seq.checked_sub(self.oldest).and_then(|i| self.done_flags.get_mut(i as usize)) {
            *flag = true;
        }
        while self.done_flags.front() == Some(&true) {
            self.done_flags.pop_front();
            self.oldest += 1;
        }
    }

    fn shut(&mut self, cancel: bool) {
        if self.over {
            return;
        }
        self.over = true;
        for l in self.slots.iter_mut().filter_map(|s| s.link.as_mut()) {
            if cancel {
                l.cancel()
            } else {
                l.close()
            }
        }
    }

    fn fail(&mut self, e: Error) -> Option<Result<BatchDone<O>>> {
        self.shut(true);
        Some(Err(e))
    }

    /// A batch (or a part of a split one) is back.
    fn finished(&mut self, b: BatchDone<O>) {
        let seq = b.seq;
        let Some(p) = self.parts.get_mut(&seq) else {
            self.complete(b);
            return;
        };
        p.remaining = p.remaining.saturating_sub(b.len);
        p.done.push(b);
        if p.remaining == 0 {
            if let Some(merged) = self.parts.remove(&seq).and_then(|p| merge(p.done)) {
                self.complete(merged);
            }
        }
    }

    fn complete(&mut self, b: BatchDone<O>) {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.batcher.observe(b.len, b.busy);
        self.mark_done(b.seq);
        self.ready.push_back(b);
    }

    /// A worker refused the job (another build of the program, a task it does not know): it
    /// ran nothing, so its parcels go to the others as they are, uncharged; it is not replaced
    /// (a replacement would run the same build); and the job fails, with its reason, only when
    /// no worker is left to run it. Healthy workers finish what they can.
    fn refused(&mut self, w: usize, reason: String) -> Result<()> {
        let Some(slot) = self.slots.get_mut(w) else { return Ok(()) };
        if slot.refused {
            return Ok(());
        }
        tracing::warn!(backend = self.backend, worker = w, %reason, "worker refused the job; the others go on without it");
        slot.refused = true;
        slot.ready = false;
        slot.vacant = false;
        if let Some(mut link) = slot.link.take() {
            link.cancel();
        }
        let entries: Vec<InFlight<P>> = slot.in_flight.drain(..).collect();
        for e in entries {
            let Some(parcel) = e.kept else {
                return Err(Error::Backend {
                    backend: self.backend,
                    message: format!(
                        "worker {w} refused the job with items {}..{} sent to it: {reason}",
                        e.start,
                        e.start + e.len
                    ),
                });
            };
            self.retry.push_back((parcel, e.attempt));
        }
        if self.slots.iter().all(|s| s.link.is_none()) && (self.outstanding > 0 || !self.source.is_done()) {
            return Err(Error::Backend {
                backend: self.backend,
                message: format!("no worker can run this job: {reason}"),
            });
        }
        Ok(())
    }

    /// A worker died: its parcels are retried (split into single items) on the others, items
    /// past the retry limit fail, and the slot gets a fresh worker.
    fn lost(&mut self, w: usize, reason: String) -> Result<()> {
        let Some(slot) = self.slots.get_mut(w) else { return Ok(()) };
        if slot.refused {
            // A refusing worker that then ends: nothing left to do for it.
            return Ok(());
        }
        slot.link = None;
        let was_ready = std::mem::take(&mut slot.ready);
        if !was_ready {
            self.barren_losses += 1;
        }
        let (reason, timed_out) = match slot.timed_out.take() {
            Some(limit) => (format!("timed out after {limit:?}"), true),
            None => (reason, false),
        };
        let entries: Vec<InFlight<P>> = slot.in_flight.drain(..).collect();
        tracing::warn!(backend = self.backend, worker = w, %reason, batches = entries.len(), "worker lost");
        // Only the head parcel was running, and only if the worker was ready: the others are
        // resent as they are.
        for (pos, e) in entries.into_iter().enumerate() {
            let Some(parcel) = e.kept else {
                return Err(Error::Backend {
                    backend: self.backend,
                    message: format!("worker {w} lost with items {}..{} in flight: {reason}", e.start, e.start + e.len),
                });
            };
            if e.unsent || pos > 0 || !was_ready {
                self.retry.push_back((parcel, e.attempt));
                continue;
            }
            // The head parcel was running: some of its items may have run. Running any of them
            // again is a retry, so with no retries left (`retries(0)`: at most once) every item
            // of it fails. A single item that overran its time limit is not retried either:
            // the limit says how long an item may take, and its hang is reported at once.
            let attempt = e.attempt + 1;
            let retry = attempt <= self.config.max_retries && !(timed_out && e.len == 1);
            if !retry {
                let kind = if timed_out { FailureKind::Timeout } else { FailureKind::Lost };
                let message = format!("its worker was lost {attempt} time(s); last: {reason}");
                let failures = (e.start..e.start + e.len)
                    .map(|index| ItemError { index, kind, message: message.clone() })
                    .collect();
                self.finished(BatchDone {
                    seq: e.seq,
                    start: e.start,
                    len: e.len,
                    outputs: Vec::new(),
                    failures,
                    worker: w,
                    busy: Duration::ZERO,
                    item_stats: None,
                    placed: false,
                });
            } else if e.len > 1 {
                // Which item killed it is unknown: run each alone from now on.
                self.parts.entry(e.seq).or_insert_with(|| Parts { remaining: e.len, done: Vec::new() });
                for p in parcel.split() {
                    self.retry.push_back((p, attempt));
                }
            } else {
                self.retry.push_back((parcel, attempt));
            }
        }
        let bound = (self.config.max_retries + 1) * self.slots.len();
        if self.barren_losses > bound {
            return Err(Error::Backend {
                backend: self.backend,
                message: format!(
                    "{} workers died before their init finished, so the job itself kills them; last: {reason}",
                    self.barren_losses
                ),
            });
        }
        // Why no replacement came, if none did: with every worker gone, that is the cause the
        // user needs (a cluster that went away), more than how the last connection ended.
        let mut unreplaced = None;
        if let Some(respawn) = self.respawn.as_mut() {
            match respawn(w) {
                Ok(link) => {
                    let slot = &mut self.slots[w];
                    slot.link = Some(link);
                    slot.head_since = Instant::now();
                }
                Err(e) => {
                    tracing::warn!(backend = self.backend, worker = w, error = %e, "cannot replace worker yet");
                    self.slots[w].vacant = true;
                    unreplaced = Some(e);
                }
            }
        }
        if self.slots.iter().all(|s| s.link.is_none()) && (self.outstanding > 0 || !self.source.is_done()) {
            let message = match unreplaced {
                Some(e) => format!("every worker is gone and none could be replaced: {e}; the last lost: {reason}"),
                None => format!("every worker is gone; last: {reason}"),
            };
            return Err(Error::Backend { backend: self.backend, message });
        }
        Ok(())
    }

    /// Kills workers whose head batch overran its time; returns how long to wait at most.
    /// Waits for an event by spinning for at most [`SPIN`] before the caller parks, when the
    /// last event came that fast. A reply to a small batch often comes within that: catching
    /// it spinning saves a futex wake-up and a trip through the scheduler (measured: a quarter
    /// of a strict round trip to a worker process). Only then: a driver waiting for long
    /// batches must not burn CPU the workers need (on a 2-core machine, spinning before every
    /// event of a million-item job cost it 15 %).
    fn spin_for_event(&self) -> Option<Event<O>> {
        if self.last_wait > 2 * SPIN {
            return None;
        }
        let until = Instant::now() + SPIN;
        loop {
            match self.events.try_recv() {
                Ok(ev) => return Some(ev),
                Err(crossbeam_channel::TryRecvError::Disconnected) => return None,
                Err(crossbeam_channel::TryRecvError::Empty) if Instant::now() >= until => return None,
                Err(crossbeam_channel::TryRecvError::Empty) => std::hint::spin_loop(),
            }
        }
    }

    fn check_timeouts(&mut self) -> Option<Duration> {
        let limit = self.config.item_timeout?;
        let now = Instant::now();
        let mut wait: Option<Duration> = None;
        for slot in &mut self.slots {
            let (Some(head), Some(link)) = (slot.in_flight.front(), slot.link.as_mut()) else { continue };
            if slot.timed_out.is_some() {
                continue;
            }
            let allowed = limit * head.len as u32;
            let deadline = slot.head_since + allowed;
            if now >= deadline {
                slot.timed_out = Some(allowed);
                link.kill();
            } else {
                let left = deadline - now;
                wait = Some(wait.map_or(left, |w| w.min(left)));
            }
        }
        // Check again soon while a killed worker's loss is on its way.
        Some(wait.unwrap_or(Duration::from_millis(50)))
    }
}

/// The shorter of two optional waits.
fn min_wait(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Joins the parts of a split batch back into one.
fn merge<O>(mut parts: Vec<BatchDone<O>>) -> Option<BatchDone<O>> {
    parts.sort_by_key(|b| b.start);
    let mut it = parts.into_iter();
    let mut acc = it.next()?;
    for b in it {
        // Parts are single items, never placed (see `BatchDone::placed`); were one placed,
        // its output would be in place already and the merged batch would be missing it.
        debug_assert!(!acc.placed && !b.placed, "a split batch's part was placed");
        acc.placed = false;
        acc.len += b.len;
        acc.outputs.extend(b.outputs);
        acc.failures.extend(b.failures);
        acc.busy += b.busy;
        acc.worker = b.worker;
        acc.item_stats = match (acc.item_stats.take(), b.item_stats) {
            (Some(mut a), Some(s)) => {
                a.extend(s);
                Some(a)
            }
            _ => None,
        };
    }
    Some(acc)
}

impl<I: Iterator, O, P: Parcel> Completions<O> for Dispatch<'_, I, O, P> {
    fn next_done(&mut self) -> Option<Result<BatchDone<O>>> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Some(Ok(b));
            }
            if self.over {
                return None;
            }
            if let Err(e) = self.fill() {
                return self.fail(e);
            }
            if let Some(e) = self.broken.take() {
                // A parcel could not be sent: the job cannot complete. Prefer the worker's own
                // account of why, if it arrives promptly.
                let deadline = Instant::now() + Duration::from_secs(1);
                while let Ok(ev) = match self.pump.is_some() {
                    true => self.pump_for_event(Some(deadline.saturating_duration_since(Instant::now()))),
                    false => self.events.recv_deadline(deadline),
                } {
                    match ev {
                        Event::InitFailed { worker, message } => return self.fail(Error::Init { worker, message }),
                        Event::Fatal { worker, message } => {
                            let message = format!("worker {worker}: {message}");
                            return self.fail(Error::Backend { backend: self.backend, message });
                        }
                        _ => {}
                    }
                }
                return self.fail(e);
            }
            if self.outstanding == 0 && self.source.is_done() {
                self.shut(false);
                return None;
            }
            if self.outstanding == 0 && self.retry.is_empty() && self.source.room() == 0 {
                // Nothing will come back to free room under the job's max_in_flight.
                return self.fail(crate::plumbing::source::no_room());
            }
            let (joined, refill_wait) = self.refill();
            if joined {
                // A replacement joined: give it work before waiting.
                continue;
            }
            let waiting = Instant::now();
            let event = if self.pump.is_some() {
                let wait = min_wait(self.check_timeouts(), refill_wait);
                self.pump_for_event(wait)
            } else {
                match (self.spin_for_event(), min_wait(self.check_timeouts(), refill_wait)) {
                    (Some(ev), _) => Ok(ev),
                    (None, None) => self.events.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    (None, Some(wait)) => self.events.recv_timeout(wait),
                }
            };
            self.last_wait = waiting.elapsed();
            let res = match event {
                Ok(Event::Done(b)) => {
                    if let Some(slot) = self.slots.get_mut(b.worker) {
                        if let Some(pos) = slot.in_flight.iter().position(|f| f.seq == b.seq && f.start == b.start) {
                            slot.in_flight.remove(pos);
                        }
                        slot.ready = true;
                        slot.head_since = Instant::now();
                    }
                    self.finished(b);
                    Ok(())
                }
                Ok(Event::Ready { worker }) => {
                    if let Some(slot) = self.slots.get_mut(worker) {
                        slot.ready = true;
                        slot.head_since = Instant::now();
                    }
                    self.barren_losses = 0;
                    Ok(())
                }
                Ok(Event::InitFailed { worker, message }) => Err(Error::Init { worker, message }),
                Ok(Event::Fatal { worker, message }) => self.refused(worker, format!("worker {worker}: {message}")),
                Ok(Event::Lost { worker, reason }) => self.lost(worker, reason),
                Err(RecvTimeoutError::Timeout) => Ok(()),
                Err(RecvTimeoutError::Disconnected) => Err(Error::Backend {
                    backend: self.backend,
                    message: format!("every worker stopped with {} batch(es) outstanding", self.outstanding),
                }),
            };
            if let Err(e) = res {
                return self.fail(e);
            }
        }
    }
}

impl<I: Iterator, O, P: Parcel> Drop for Dispatch<'_, I, O, P> {
    fn drop(&mut self) {
        let unfinished = self.outstanding > 0 || !self.source.is_done();
        self.shut(unfinished);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::wire::EncodedBatch;
    use crossbeam_channel::{unbounded, Sender};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A worker answering each batch at once with its items doubled; it dies (reports
    /// `Lost`) at its batch number `dies_at`, if given.
    struct Fake {
        w: usize,
        events: Sender<Event<u64>>,
        sent: usize,
        dies_at: Option<usize>,
        dead: bool,
    }

    impl WorkerLink<EncodedBatch> for Fake {
        fn send(&mut self, b: EncodedBatch) -> Result<()> {
            if self.dead {
                return Err(Error::Backend { backend: "fake", message: "dead".into() });
            }
            self.sent += 1;
            // A batch takes a moment, so the job outlives a few refill rounds.
            std::thread::sleep(Duration::from_millis(3));
            if self.dies_at == Some(self.sent) {
                self.dead = true;
                let _ = self.events.send(Event::Lost { worker: self.w, reason: "killed".into() });
                return Ok(());
            }
            let _ = self.events.send(Event::Done(BatchDone {
                seq: b.seq(),
                start: b.start(),
                len: b.len(),
                outputs: crate::remote::wire::decode_items::<u64>(b.item_bytes(), b.len())?
                    .iter()
                    .map(|x| 2 * x)
                    .collect(),
                failures: vec![],
                worker: self.w,
                busy: Duration::ZERO,
                item_stats: None,
                placed: false,
            }));
            Ok(())
        }
        fn close(&mut self) {}
    }

    #[test]
    fn a_lost_workers_slot_is_refilled_when_a_replacement_comes_later() {
        let (tx, rx) = unbounded();
        let link = |w, dies_at| {
            Box::new(Fake { w, events: tx.clone(), sent: 0, dies_at, dead: false }) as Box<dyn WorkerLink<EncodedBatch>>
        };
        // Worker 0 dies at its 3rd batch; worker 1 is slow to be replaced: no replacement is
        // at hand for the first two asks.
        let links = vec![link(0, Some(3)), link(1, None)];
        let asks = Arc::new(AtomicUsize::new(0));
        let (asked, tx2) = (Arc::clone(&asks), tx.clone());
        let respawn: Respawn<'_, EncodedBatch> = Box::new(move |w| match asked.fetch_add(1, Ordering::SeqCst) {
            0 | 1 => Err(Error::Backend { backend: "fake", message: "not yet".into() }),
            _ => Ok(Box::new(Fake { w, events: tx2.clone(), sent: 0, dies_at: None, dead: false })),
        });
        let source = ItemSource::new(0..4000u64, Some(4000));
        let batcher = Box::new(crate::batching::FixedSize(10));
        let prepare = Box::new(EncodedBatch::encode);
        let mut d = Dispatch::with_parcels(DispatchParts {
            backend: "fake",
            source,
            batcher,
            prepare,
            links,
            respawn: Some(respawn),
            events: rx,
            config: Default::default(),
        });
        let mut out = vec![0u64; 4000];
        let mut by_worker = [0usize; 2];
        while let Some(b) = d.next_done() {
            let b = b.unwrap();
            by_worker[b.worker] += b.len;
            out[b.start..b.start + b.len].copy_from_slice(&b.outputs);
        }
        assert_eq!(out, (0..4000u64).map(|x| 2 * x).collect::<Vec<_>>());
        assert!(asks.load(Ordering::SeqCst) >= 3, "asked again after the first refusals");
        assert!(by_worker[0] > 20, "the replacement in slot 0 did work: {by_worker:?}");
    }
}
