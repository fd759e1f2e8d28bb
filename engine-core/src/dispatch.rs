//! The dispatch loop shared by every backend whose workers are reached through links
//! (threads, processes, MPI ranks, pods): pull-based, with a small prefetch window and a
//! bounded reorder window.

use crate::backend::Completions;
use crate::batch::{Batch, BatchDone, Event};
use crate::batching::Batcher;
use crate::error::{Error, Result};
use crate::source::ItemSource;
use crossbeam_channel::Receiver;
use std::collections::VecDeque;

/// The driver's end of one worker.
pub trait WorkerLink<I>: Send {
    /// Queues a batch for the worker.
    fn send(&mut self, batch: Batch<I>) -> Result<()>;
    /// No more batches: the worker finishes what it holds, then stops.
    fn close(&mut self);
    /// Stop now: the worker drops what it holds (the job failed or was dropped).
    fn cancel(&mut self) {
        self.close()
    }
}

/// Prefetch and ordering knobs of the dispatch loop.
#[derive(Debug, Clone, Copy)]
pub struct DispatchConfig {
    /// Batches queued per worker (1 running + the rest waiting), so a worker never idles
    /// waiting for its next batch.
    pub prefetch: usize,
    /// Most batches between the oldest unfinished one and the newest cut: bounds what an
    /// ordered stream buffers. `None` when every result is kept anyway.
    pub max_ahead: Option<usize>,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig { prefetch: 2, max_ahead: None }
    }
}

/// Runs a job over worker links: hands out batches as workers free up and returns completed
/// batches. Dropping it cancels every worker.
pub struct Dispatch<'a, I: Iterator, O> {
    backend: &'static str,
    source: ItemSource<I>,
    batcher: Box<dyn Batcher + 'a>,
    links: Vec<Box<dyn WorkerLink<I::Item> + 'a>>,
    events: Receiver<Event<O>>,
    in_flight: Vec<usize>,
    in_flight_total: usize,
    config: DispatchConfig,
    /// Sequence number of the oldest unfinished batch, and the done flags from there on.
    oldest: u64,
    done_flags: VecDeque<bool>,
    over: bool,
}

impl<'a, I: Iterator, O> Dispatch<'a, I, O> {
    /// A dispatch loop over `links`; workers report on `events`.
    pub fn new(
        backend: &'static str,
        source: ItemSource<I>,
        batcher: Box<dyn Batcher + 'a>,
        links: Vec<Box<dyn WorkerLink<I::Item> + 'a>>,
        events: Receiver<Event<O>>,
        config: DispatchConfig,
    ) -> Self {
        let n = links.len();
        Dispatch {
            backend,
            source,
            batcher,
            links,
            events,
            in_flight: vec![0; n],
            in_flight_total: 0,
            config: DispatchConfig { prefetch: config.prefetch.max(1), ..config },
            oldest: 0,
            done_flags: VecDeque::new(),
            over: false,
        }
    }

    fn window_open(&self) -> bool {
        match self.config.max_ahead {
            None => true,
            Some(m) => self.source.batches_cut() - self.oldest < m.max(1) as u64,
        }
    }

    /// Gives every worker batches up to the prefetch depth, breadth first.
    fn fill(&mut self) -> Result<()> {
        for depth in 1..=self.config.prefetch {
            for w in 0..self.links.len() {
                if self.in_flight[w] >= depth {
                    continue;
                }
                if self.source.is_done() || !self.window_open() {
                    return Ok(());
                }
                let size = self.batcher.next_size(self.source.remaining());
                let Some(batch) = self.source.next_batch(size)? else {
                    return Ok(());
                };
                self.done_flags.push_back(false);
                self.links[w].send(batch)?;
                self.in_flight[w] += 1;
                self.in_flight_total += 1;
            }
        }
        Ok(())
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
        for l in &mut self.links {
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
}

impl<I: Iterator, O> Completions<O> for Dispatch<'_, I, O> {
    fn next_done(&mut self) -> Option<Result<BatchDone<O>>> {
        if self.over {
            return None;
        }
        if let Err(e) = self.fill() {
            return self.fail(e);
        }
        if self.in_flight_total == 0 {
            self.shut(false);
            return None;
        }
        match self.events.recv() {
            Ok(Event::Done(b)) => {
                if let Some(n) = self.in_flight.get_mut(b.worker) {
                    *n = n.saturating_sub(1);
                }
                self.in_flight_total -= 1;
                self.batcher.observe(b.len, b.busy);
                self.mark_done(b.seq);
                Some(Ok(b))
            }
            Ok(Event::InitFailed { worker, message }) => self.fail(Error::Init { worker, message }),
            Ok(Event::Lost { worker, reason }) => self.fail(Error::Backend {
                backend: self.backend,
                message: format!("worker {worker} lost with batches in flight: {reason}"),
            }),
            Err(_) => {
                let n = self.in_flight_total;
                self.fail(Error::Backend {
                    backend: self.backend,
                    message: format!("every worker stopped with {n} batch(es) outstanding"),
                })
            }
        }
    }
}

impl<I: Iterator, O> Drop for Dispatch<'_, I, O> {
    fn drop(&mut self) {
        let unfinished = self.in_flight_total > 0 || !self.source.is_done();
        self.shut(unfinished);
    }
}
