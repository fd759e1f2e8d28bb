//! Streaming results: in input order with a bounded buffer, or as they complete.

use crate::error::{Error, Result};
use crate::order::Reorder;
use crate::run::Running;

/// Results in input order, as they become available. Fail-fast: after an `Err` it ends.
///
/// Its buffering is bounded: the engine never cuts a batch more than the job's reorder window
/// ahead of the oldest unfinished one, so a slow item holds back at most that many batches.
/// Dropping the stream cancels the rest of the job.
pub struct ResultStream<'a, O> {
    run: Running<'a, O>,
    reorder: Reorder<O>,
    current: std::vec::IntoIter<O>,
    over: bool,
    /// Items the caller took since the job's cap was last told.
    taken: usize,
}

impl<'a, O> ResultStream<'a, O> {
    pub(crate) fn new(run: Running<'a, O>) -> Self {
        ResultStream { run, reorder: Reorder::default(), current: Vec::new().into_iter(), over: false, taken: 0 }
    }

    /// Batches finished but held back behind an unfinished earlier one (for tests of the
    /// buffering bound).
    pub fn held_batches(&self) -> usize {
        self.reorder.held()
    }

    fn end(&mut self, e: Error) -> Option<Result<O>> {
        self.over = true;
        self.run.finish();
        Some(Err(e))
    }
}

impl<O> Iterator for ResultStream<'_, O> {
    type Item = Result<O>;

    fn next(&mut self) -> Option<Result<O>> {
        loop {
            if let Some(o) = self.current.next() {
                self.taken += 1;
                return Some(Ok(o));
            }
            if self.over {
                return None;
            }
            if let Some(b) = self.reorder.pop() {
                self.current = b.outputs.into_iter();
                continue;
            }
            // Items are pulled only inside `next_done`: what the caller took is told then, once
            // per batch rather than once per item.
            self.run.returned(std::mem::take(&mut self.taken));
            match self.run.next_done() {
                None => {
                    self.over = true;
                    if self.reorder.held() > 0 {
                        return self.end(Error::Backend {
                            backend: "engine",
                            message: format!("{} batch(es) finished after a batch that never did", self.reorder.held()),
                        });
                    }
                    return None;
                }
                Some(Err(e)) => return self.end(e),
                Some(Ok(b)) => {
                    if let Some(f) = b.failures.first() {
                        return self.end(Error::Item(f.clone()));
                    }
                    self.reorder.push(b);
                }
            }
        }
    }
}

/// Results as they complete, with their input index. Fail-fast: after an `Err` it ends.
pub struct UnorderedStream<'a, O> {
    run: Running<'a, O>,
    current: std::iter::Zip<std::ops::RangeFrom<usize>, std::vec::IntoIter<O>>,
    over: bool,
    /// Items the caller took since the job's cap was last told.
    taken: usize,
}

impl<'a, O> UnorderedStream<'a, O> {
    pub(crate) fn new(run: Running<'a, O>) -> Self {
        UnorderedStream { run, current: (0..).zip(Vec::new()), over: false, taken: 0 }
    }
}

impl<O> Iterator for UnorderedStream<'_, O> {
    type Item = Result<(usize, O)>;

    fn next(&mut self) -> Option<Result<(usize, O)>> {
        loop {
            if let Some(x) = self.current.next() {
                self.taken += 1;
                return Some(Ok(x));
            }
            if self.over {
                return None;
            }
            // Items are pulled only inside `next_done`: what the caller took is told then, once
            // per batch rather than once per item.
            self.run.returned(std::mem::take(&mut self.taken));
            match self.run.next_done() {
                None => {
                    self.over = true;
                    return None;
                }
                Some(Err(e)) => {
                    self.over = true;
                    return Some(Err(e));
                }
                Some(Ok(b)) => {
                    if let Some(f) = b.failures.first() {
                        self.over = true;
                        self.run.finish();
                        return Some(Err(Error::Item(f.clone())));
                    }
                    self.current = (b.start..).zip(b.outputs);
                }
            }
        }
    }
}
