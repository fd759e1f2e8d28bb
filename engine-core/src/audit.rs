//! The engine's audit of its backend: every batch the job cut comes back exactly once, with
//! one output or one failure per item, before the job may end well. A backend that drops,
//! repeats, invents, shortens or lengthens a batch fails the job with an
//! [`Error::Backend`] naming the batch, instead of handing the user fewer results. The rules
//! are those of [`crate::plumbing`]'s contract.

use crate::error::{Error, Result};
use crate::plumbing::batch::BatchDone;
use crate::plumbing::cuts::{CutLog, Mismatch};
use crate::plumbing::Placement;
use std::ops::Range;
use std::sync::Arc;

/// What the audit knows of a job.
pub(crate) struct Audit<O> {
    backend: &'static str,
    /// The batches the job's source cut (the backend walks it).
    cuts: Arc<CutLog>,
    /// The job's length, when it was handed to the backend as a slice: such a backend may
    /// split the items itself, and its batches must then tile `0..len` in `seq` order.
    slice_len: Option<usize>,
    /// In fail-fast mode a batch may stop at its first failure.
    fail_fast: bool,
    /// Where placed batches must have been written.
    placement: Option<Placement<O>>,
    /// Batches of a slice job that split its items itself: `(seq, items)`.
    split: Vec<(u64, Range<usize>)>,
}

/// Items `start..start + len` as text, for messages.
fn items(start: usize, len: usize) -> String {
    match len {
        0 => format!("no items (at {start})"),
        1 => format!("item {start}"),
        _ => format!("items {start}..{}", start.saturating_add(len)),
    }
}

/// A batch as errors name it: `batch 3 (items 30..40)`.
#[derive(Clone, Copy)]
struct BatchName {
    seq: u64,
    start: usize,
    len: usize,
}

impl std::fmt::Display for BatchName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "batch {} ({})", self.seq, items(self.start, self.len))
    }
}

impl<O> Audit<O> {
    pub(crate) fn new(
        backend: &'static str,
        cuts: Arc<CutLog>,
        slice_len: Option<usize>,
        fail_fast: bool,
        placement: Option<Placement<O>>,
    ) -> Self {
        Audit { backend, cuts, slice_len, fail_fast, placement, split: Vec::new() }
    }

    fn wrong(&self, message: String) -> Error {
        Error::Backend { backend: self.backend, message }
    }

    /// Checks one batch as it comes back.
    pub(crate) fn check(&mut self, b: &BatchDone<O>) -> Result<()> {
        // Formatted only into an error: nothing is allocated for a batch that is right.
        let what = BatchName { seq: b.seq, start: b.start, len: b.len };
        if self.slice_len.is_some() && self.cuts.is_untouched() {
            self.check_split(b, what)?;
        } else {
            match self.cuts.retire(b.seq, b.start, b.len) {
                Ok(()) => {}
                Err(Mismatch::NeverCut) => return Err(self.wrong(format!("{what} was never cut"))),
                Err(Mismatch::Twice) => return Err(self.wrong(format!("{what} came back twice"))),
                Err(Mismatch::Items(start, len)) => {
                    return Err(self.wrong(format!(
                        "batch {} was cut as {} but came back as {}",
                        b.seq,
                        items(start, len),
                        items(b.start, b.len)
                    )))
                }
            }
        }
        self.check_items(b, what)
    }

    /// A batch of a slice job whose backend splits the items itself: within the slice, and
    /// its `seq` not seen before.
    fn check_split(&mut self, b: &BatchDone<O>, what: BatchName) -> Result<()> {
        let len = self.slice_len.unwrap_or(0);
        if b.len == 0 || b.start.checked_add(b.len).is_none_or(|end| end > len) {
            return Err(self.wrong(format!("{what} is not within the job's {len} items")));
        }
        if self.split.iter().any(|(seq, _)| *seq == b.seq) {
            return Err(self.wrong(format!("{what} came back twice")));
        }
        self.split.push((b.seq, b.start..b.start + b.len));
        Ok(())
    }

    /// One output or one failure per item (rule 2); placed outputs really written (rule 3).
    fn check_items(&self, b: &BatchDone<O>, what: BatchName) -> Result<()> {
        let range = b.start..b.start.saturating_add(b.len);
        if let Some(f) = b.failures.iter().find(|f| !range.contains(&f.index)) {
            return Err(self.wrong(format!("{what} reports a failure of item {}, outside the batch", f.index)));
        }
        if b.failures.windows(2).any(|w| w[0].index >= w[1].index) {
            return Err(self.wrong(format!("{what} reports its failures out of order or twice")));
        }
        if b.placed {
            if !b.outputs.is_empty() || !b.failures.is_empty() {
                return Err(self.wrong(format!("{what} is marked placed but also carries outputs or failures")));
            }
            let written = self.placement.as_ref().is_some_and(|p| p.was_written(b.start, b.len));
            if !written {
                return Err(self.wrong(format!("{what} is marked placed but its outputs were not written in place")));
            }
            return Ok(());
        }
        let accounted = b.outputs.len() + b.failures.len();
        let stopped_early = self.fail_fast && !b.failures.is_empty() && accounted < b.len;
        if accounted != b.len && !stopped_early {
            return Err(self.wrong(format!(
                "{what} came back with {} output(s) and {} failure(s) for its {} item(s)",
                b.outputs.len(),
                b.failures.len(),
                b.len
            )));
        }
        Ok(())
    }

    /// Checks, when the backend says the job is over, that nothing is missing (rule 1).
    pub(crate) fn check_end(&mut self) -> Result<()> {
        if self.cuts.is_untouched() && self.slice_len.is_some() {
            return self.check_split_end();
        }
        let (cut, done, oldest, missing) = self.cuts.summary();
        if let Some((seq, start, len)) = oldest {
            return Err(self.wrong(format!(
                "the job ended with {missing} of its {cut} batch(es) never returned, the first batch {seq} ({})",
                items(start, len)
            )));
        }
        if !done {
            return Err(self.wrong(format!(
                "the job ended after {cut} batch(es) with items left that were never cut from the input"
            )));
        }
        Ok(())
    }

    /// A slice job split by its backend: its batches tile the slice in `seq` order.
    fn check_split_end(&mut self) -> Result<()> {
        let len = self.slice_len.unwrap_or(0);
        self.split.sort_by_key(|(seq, _)| *seq);
        let mut next = 0;
        for (i, (seq, range)) in self.split.iter().enumerate() {
            if *seq != i as u64 || range.start != next {
                return Err(self.wrong(format!(
                    "the slice's batches do not cover its {len} items in order: batch {seq} holds {}, expected batch {i} from item {next}",
                    items(range.start, range.len())
                )));
            }
            next = range.end;
        }
        if next != len {
            return Err(self.wrong(format!("the job ended with items {next}..{len} of the slice never returned")));
        }
        Ok(())
    }
}
