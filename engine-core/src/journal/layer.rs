//! [`JournalLayer`]: what a journaled job does with every batch its backend hands back —
//! appends its outputs to the journal, puts it back in the input's numbering (the backend
//! numbers only the items the journal lacks), and merges in the results the journal holds,
//! so that the job's terminal sees the batches an uninterrupted run would give.

use super::done::Done;
use super::file::{JournalFile, RecordAt};
use super::identity::Identity;
use super::skip::Leave;
use super::Journal;
use crate::error::{Error, ItemError, Result};
use crate::plumbing::batch::BatchDone;
use crate::task::Task;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Largest payload of one record: a batch of large outputs (10,000 Arrow tables of 1 MiB)
/// is journaled as several records.
const RECORD_BYTES: usize = 64 << 20;

/// How outputs are written to the journal and read back: as on the wire
/// ([`encode_items`](crate::remote::wire::encode_items)), plain numbers as their own bytes (a
/// record of them is the outputs' memory, written as it is), other values as their postcard
/// encodings one after the other (Arrow data as IPC).
struct Codec<O> {
    encode: Encode<O>,
    decode: fn(&[u8], usize) -> std::result::Result<Vec<O>, String>,
}

/// Encodes a prefix of the outputs, at least one and about [`RECORD_BYTES`] at most, into a
/// record's payload: returns how many, and the payload (the outputs' own bytes, or `buf`).
type Encode<O> = for<'o> fn(&'o [O], &'o mut Vec<u8>) -> std::result::Result<(usize, &'o [u8]), String>;

fn encode<'o, O: Serialize + 'static>(
    outputs: &'o [O],
    buf: &'o mut Vec<u8>,
) -> std::result::Result<(usize, &'o [u8]), String> {
    if let Some(raw) = crate::plumbing::plain::as_bytes(outputs) {
        let k = outputs.len().min((RECORD_BYTES / std::mem::size_of::<O>().max(1)).max(1));
        return Ok((k, &raw[..k * std::mem::size_of::<O>()]));
    }
    let mut b = std::mem::take(buf);
    b.clear();
    let mut k = 0;
    for o in outputs {
        b = crate::remote::wire::encode_into(o, b).map_err(|e| e.to_string())?;
        k += 1;
        if b.len() >= RECORD_BYTES {
            break;
        }
    }
    *buf = b;
    Ok((k, buf))
}

fn decode<O: DeserializeOwned + 'static>(bytes: &[u8], count: usize) -> std::result::Result<Vec<O>, String> {
    crate::remote::wire::decode_items(bytes, count).map_err(|e| e.to_string())
}

/// A journal opened for a job, before the job starts.
pub(crate) struct Opened {
    file: JournalFile,
    done: Done,
}

impl Opened {
    /// Opens `journal` for a job of `T` with these args, init argument and declared length.
    pub(crate) fn open<T: Task>(
        journal: &Journal,
        args: &T::Args,
        init: &T::Init,
        declared: Option<usize>,
    ) -> Result<Opened> {
        let identity = Identity::of::<T>(&journal.version, args, init, declared)?;
        let (file, records) = JournalFile::open(journal, &identity)?;
        let done =
            Done::new(records).map_err(|message| Error::Journal { path: journal.path.as_path().into(), message })?;
        if let Some(n) = declared {
            if done.end() > n {
                return Err(Error::JournalMismatch {
                    path: journal.path.as_path().into(),
                    differences: vec![format!(
                        "length: the journal holds item {}, this job has {n} items",
                        done.end() - 1
                    )],
                });
            }
        }
        tracing::debug!(path = %journal.path.display(), items = done.len(), "journal opened");
        Ok(Opened { file, done })
    }

    /// Items the journal holds already.
    pub(crate) fn held(&self) -> usize {
        self.done.len()
    }

    /// The job's layer and what its iterator leaves out. `ordered`: the terminal wants
    /// batches in input order; `fail_fast`: the first failure ends the job.
    pub(crate) fn start<O: Serialize + DeserializeOwned + 'static>(
        self,
        ordered: bool,
        fail_fast: bool,
        declared: Option<usize>,
    ) -> (Leave, JournalLayer<O>) {
        let walked = Arc::new(AtomicUsize::new(0));
        let ranges = self.done.records().map(|r| (r.start, r.start + r.count)).collect();
        let leave = Leave::new(ranges, Arc::clone(&walked));
        let layer = JournalLayer {
            file: self.file,
            done: self.done,
            codec: Codec { encode: encode::<O>, decode: decode::<O> },
            ordered,
            fail_fast,
            walked,
            declared,
            waiting: BTreeMap::new(),
            next_seq_in: 0,
            ready: VecDeque::new(),
            urgent: None,
            next_input: 0,
            next_old: 0,
            ended: false,
            over: false,
            out_seq: 0,
            emitted: VecDeque::new(),
            payload: Vec::new(),
        };
        (leave, layer)
    }
}

/// The journal of a running job (see the module's doc).
pub(crate) struct JournalLayer<O> {
    file: JournalFile,
    done: Done,
    codec: Codec<O>,
    ordered: bool,
    fail_fast: bool,
    walked: Arc<AtomicUsize>,
    /// The job's length in the input's numbering, if known.
    declared: Option<usize>,
    /// Fresh batches back before an earlier one, as pieces in the input's numbering.
    waiting: BTreeMap<u64, Vec<BatchDone<O>>>,
    next_seq_in: u64,
    /// Fresh pieces ready to go out (in input order when `ordered`).
    ready: VecDeque<BatchDone<O>>,
    /// A failed piece of a fail-fast job: it goes out first, and ends the job.
    urgent: Option<BatchDone<O>>,
    /// The next input index to go out (ordered).
    next_input: usize,
    /// The next journal record to go out.
    next_old: usize,
    /// The backend has handed back everything.
    ended: bool,
    over: bool,
    out_seq: u64,
    /// What went out, in order: (items, fresh), to tell the job's cap how many fresh items
    /// its terminal returned.
    emitted: VecDeque<(usize, bool)>,
    payload: Vec<u8>,
}

impl<O> JournalLayer<O> {
    /// The input index of fresh item `j`.
    pub(crate) fn to_input(&self, j: usize) -> usize {
        self.done.to_input(j).0
    }

    /// Items the journal held when the job started.
    pub(crate) fn held(&self) -> usize {
        self.done.len()
    }

    /// A batch the backend handed back (checked by the audit, in the fresh numbering).
    pub(crate) fn arrive(&mut self, b: BatchDone<O>) -> Result<()> {
        let seq = b.seq;
        let failed = !b.failures.is_empty();
        let pieces = self.split(b);
        for p in &pieces {
            self.journal(p)?;
        }
        if self.fail_fast && failed {
            self.urgent = pieces.into_iter().find(|p| !p.failures.is_empty());
            return Ok(());
        }
        if !self.ordered {
            self.ready.extend(pieces);
            return Ok(());
        }
        self.waiting.insert(seq, pieces);
        while let Some(ps) = self.waiting.remove(&self.next_seq_in) {
            self.next_seq_in += 1;
            self.ready.extend(ps);
        }
        Ok(())
    }

    /// Cuts a fresh batch where journaled items fall between its items: pieces of
    /// consecutive input indices.
    fn split(&self, b: BatchDone<O>) -> Vec<BatchDone<O>> {
        let BatchDone { start, len, outputs, failures, worker, busy, item_stats, .. } = b;
        let mut outputs = outputs.into_iter();
        let mut failures = failures.into_iter().peekable();
        let mut stats = item_stats.map(Vec::into_iter);
        let mut pieces = Vec::with_capacity(1);
        let (mut j, end) = (start, start + len);
        while j < end {
            let (input, run) = self.done.to_input(j);
            let n = run.min(end - j);
            let mut fails = Vec::new();
            while let Some(mut f) = failures.next_if(|f| f.index < j + n) {
                f.index = self.to_input(f.index);
                fails.push(f);
            }
            let k = (n - fails.len()).min(outputs.len());
            let outs: Vec<O> = match k == outputs.len() {
                // The whole rest (most batches: one piece): its buffer is reused.
                true => std::mem::replace(&mut outputs, Vec::new().into_iter()).collect(),
                false => outputs.by_ref().take(k).collect(),
            };
            let item_stats = stats.as_mut().map(|s| s.by_ref().take(n).collect());
            pieces.push(BatchDone {
                seq: 0,
                start: input,
                len: n,
                outputs: outs,
                failures: fails,
                worker,
                busy,
                item_stats,
                placed: false,
            });
            j += n;
        }
        pieces
    }

    /// Appends a piece's outputs to the journal: one record per run of consecutive
    /// successes (failed items are not journaled, a rerun runs them again).
    fn journal(&mut self, p: &BatchDone<O>) -> Result<()> {
        if p.failures.is_empty() {
            return self.append(p.start, &p.outputs);
        }
        let (mut run_start, mut from, mut o) = (p.start, 0, 0);
        let mut fails = p.failures.iter().peekable();
        for x in p.start..p.start + p.len {
            if fails.next_if(|f| f.index == x).is_some() {
                self.append(run_start, &p.outputs[from..o])?;
                run_start = x + 1;
                from = o;
                continue;
            }
            if o == p.outputs.len() {
                break;
            }
            o += 1;
        }
        self.append(run_start, &p.outputs[from..o])
    }

    /// Appends the outputs of the items from `start` on, in records of about
    /// [`RECORD_BYTES`] at most.
    fn append(&mut self, start: usize, outputs: &[O]) -> Result<()> {
        let mut payload = std::mem::take(&mut self.payload);
        let mut at = 0;
        while at < outputs.len() {
            let (k, bytes) = (self.codec.encode)(&outputs[at..], &mut payload)
                .map_err(|e| self.error(format!("cannot encode an output: {e}")))?;
            self.file.append(start + at, k, bytes)?;
            at += k;
        }
        if payload.capacity() <= RECORD_BYTES * 2 {
            self.payload = payload;
        }
        Ok(())
    }

    fn error(&self, message: String) -> Error {
        Error::Journal { path: self.file.path().into(), message }
    }

    /// The next batch for the terminal, if one can go out now.
    pub(crate) fn pop(&mut self) -> Option<Result<BatchDone<O>>> {
        if self.over {
            return None;
        }
        if let Some(u) = self.urgent.take() {
            return Some(Ok(self.emit(u, true)));
        }
        let next_old = self.done.record(self.next_old).copied();
        if !self.ordered {
            if let Some(r) = next_old {
                self.next_old += 1;
                return Some(self.old(&r));
            }
            if let Some(p) = self.ready.pop_front() {
                return Some(Ok(self.emit(p, true)));
            }
        } else {
            if let Some(r) = next_old.filter(|r| r.start == self.next_input) {
                self.next_old += 1;
                self.next_input += r.count;
                return Some(self.old(&r));
            }
            if self.ready.front().is_some_and(|p| p.start == self.next_input) {
                let p = self.ready.pop_front()?;
                self.next_input += p.len;
                return Some(Ok(self.emit(p, true)));
            }
        }
        if self.ended {
            self.over = true;
            let left = self.done.count() - self.next_old + self.ready.len();
            if left > 0 {
                return Some(Err(Error::Backend {
                    backend: "engine",
                    message: format!("the journaled job ended with {left} batch(es) that could not go out in order"),
                }));
            }
        }
        None
    }

    /// Whether every batch went out.
    pub(crate) fn is_over(&self) -> bool {
        self.over
    }

    /// A journal record, decoded, as a batch.
    fn old(&mut self, r: &RecordAt) -> Result<BatchDone<O>> {
        let bytes = self.file.read(r)?;
        let outputs = (self.codec.decode)(&bytes, r.count).map_err(|e| {
            self.error(format!("the outputs of items {}..{} cannot be read back: {e}", r.start, r.start + r.count))
        })?;
        let b = BatchDone {
            seq: 0,
            start: r.start,
            len: r.count,
            outputs,
            failures: Vec::<ItemError>::new(),
            worker: 0,
            busy: Duration::ZERO,
            item_stats: None,
            placed: false,
        };
        Ok(self.emit(b, false))
    }

    fn emit(&mut self, mut b: BatchDone<O>, fresh: bool) -> BatchDone<O> {
        b.seq = self.out_seq;
        self.out_seq += 1;
        self.emitted.push_back((b.len, fresh));
        b
    }

    /// The backend handed back everything: checks what is left.
    pub(crate) fn end(&mut self) -> Result<()> {
        self.ended = true;
        if !self.waiting.is_empty() {
            self.over = true;
            return Err(Error::Backend {
                backend: "engine",
                message: format!("{} batch(es) finished after a batch that never did", self.waiting.len()),
            });
        }
        let walked = self.walked.load(Ordering::Relaxed);
        if self.done.end() > walked {
            self.over = true;
            return Err(Error::JournalMismatch {
                path: self.file.path().into(),
                differences: vec![format!(
                    "length: the journal holds item {}, this job's iterator ended after {walked} items",
                    self.done.end() - 1
                )],
            });
        }
        self.file.sync_at_end()
    }

    /// The terminal returned `n` more items: how many of them ran in this job.
    pub(crate) fn returned(&mut self, mut n: usize) -> usize {
        let mut fresh = 0;
        while n > 0 {
            let Some(front) = self.emitted.front_mut() else { break };
            let k = n.min(front.0);
            if front.1 {
                fresh += k;
            }
            front.0 -= k;
            n -= k;
            if front.0 == 0 {
                self.emitted.pop_front();
            }
        }
        fresh
    }

    /// An error of the job's item source, in the input's numbering.
    pub(crate) fn translate(&self, e: Error) -> Error {
        match (e, self.declared) {
            (Error::LengthMismatch { actual, .. }, Some(declared)) => {
                let walked = self.walked.load(Ordering::Relaxed);
                let actual = match actual.parse::<usize>() {
                    Ok(_) => walked.to_string(),
                    Err(_) => format!("more than {declared}"),
                };
                Error::LengthMismatch { declared, actual }
            }
            (e, _) => e,
        }
    }

    /// The job is over (or dropped): what was appended goes to disk per the policy.
    pub(crate) fn finish(&mut self) {
        if let Err(e) = self.file.sync_at_end() {
            tracing::warn!(error = %e, "journal: the last records could not be synced");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes every output into records as `append` does; returns each record's count and
    /// decoded outputs.
    fn records<O: Serialize + DeserializeOwned + 'static>(outputs: &[O]) -> Vec<(usize, Vec<O>)> {
        let mut buf = Vec::new();
        let mut at = 0;
        let mut out = Vec::new();
        while at < outputs.len() {
            let (k, bytes) = encode(&outputs[at..], &mut buf).unwrap();
            assert!(k >= 1);
            out.push((k, decode::<O>(bytes, k).unwrap()));
            at += k;
        }
        out
    }

    #[test]
    fn plain_numbers_are_their_own_bytes_and_round_trip() {
        let v: Vec<u64> = (0..1000).map(|x| x * 0x1_0000_0001).collect();
        let mut buf = Vec::new();
        let (k, bytes) = encode(&v, &mut buf).unwrap();
        assert_eq!((k, bytes.len()), (1000, 8000));
        assert!(buf.is_empty(), "nothing copied");
        assert_eq!(records(&v), vec![(1000, v.clone())]);
        let f: Vec<f64> = vec![1.5, -0.0, f64::MAX];
        assert_eq!(records(&f), vec![(3, f)]);
    }

    #[test]
    fn other_values_round_trip_in_records_of_bounded_size() {
        let v: Vec<(String, u64)> = (0..50).map(|x| (format!("item {x}"), x)).collect();
        assert_eq!(records(&v), vec![(50, v.clone())]);
        // Outputs of 20 MiB: a record ends at the first output past the bound.
        let big: Vec<String> = (0..5).map(|x| char::from(b'a' + x).to_string().repeat(20 << 20)).collect();
        let got = records(&big);
        assert_eq!(got.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![4, 1]);
        assert_eq!(got.into_iter().flat_map(|(_, o)| o).collect::<Vec<_>>(), big);
    }
}
