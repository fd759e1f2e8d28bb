//! The driver's side: what a driver makes of each worker message, and the shared values a
//! worker without the driver's file system must be sent.

use super::protocol::{FromWorker, ToWorker};
use super::sent::SentBatches;
use super::transport::Incoming;
use crate::error::ItemError;
use crate::error::Result;
use crate::remote::wire::{decode_items, encode_msg};
use crate::store::{ShareKey, SharedStore};

/// What a driver makes of a message from a worker.
#[derive(Debug)]
pub enum Heard<O> {
    /// An event for the dispatch loop.
    Event(crate::plumbing::batch::Event<O>),
    /// The worker ended its job in good order (`JobEnded`): it may serve another.
    JobEnded,
    /// Nothing to act on (the handshake's answer).
    Nothing,
    /// The worker broke the protocol (an answer about a batch it was not sent, a count that
    /// does not fit its batch, outputs that do not decode, a message that is none): stop it.
    /// Its batches are retried on the others like those of a worker that died.
    Misbehaved(String),
}

/// Turns a message from worker `worker` into what the driver acts on: every backend's
/// reader calls this, so the protocol is read in one place. Outputs of plain numbers go
/// straight to `placement` when there is one (whole batches only: the single-item parts of a
/// split batch are never placed, see [`crate::plumbing::BatchDone::placed`]).
///
/// Nothing a worker says is believed before it is checked: with `sent` (the batches sent to
/// this worker), a `Done` must answer the oldest of them, exactly; in any case its outputs and
/// failures must fit the batch's items. Only then are its outputs placed or decoded, so the
/// work a worker can cause is bounded by the batch the driver sent it.
pub fn hear<O: serde::de::DeserializeOwned + 'static>(
    worker: usize,
    incoming: Incoming<'_>,
    placement: Option<&crate::plumbing::Placement<O>>,
    sent: Option<&SentBatches>,
) -> Heard<O> {
    use crate::plumbing::batch::{BatchDone, Event};
    let fatal = |message: String| Heard::Event(Event::Fatal { worker, message });
    let (msg, outputs) = match incoming.split::<FromWorker>() {
        Ok(x) => x,
        Err(e) => return Heard::Misbehaved(format!("bad message: {e}")),
    };
    match msg {
        FromWorker::Hello { .. } => Heard::Nothing,
        FromWorker::JobEnded => Heard::JobEnded,
        FromWorker::Refused { reason } => fatal(reason),
        FromWorker::Ready => Heard::Event(Event::Ready { worker }),
        FromWorker::InitFailed { message } => Heard::Event(Event::InitFailed { worker, message }),
        FromWorker::Done { seq, start, len, count, failures, busy, item_stats } => {
            if let Some(sent) = sent {
                if let Err(why) = sent.answer(seq, start, len) {
                    return Heard::Misbehaved(why);
                }
            }
            if let Err(why) = fits(start, len, count, &failures, item_stats.as_ref().map(Vec::len)) {
                return Heard::Misbehaved(format!("batch {seq}: {why}"));
            }
            let placed = len >= 2
                && count == len
                && failures.is_empty()
                && placement.is_some_and(|p| p.put_bytes(start, count, outputs));
            let outputs = match placed {
                true => Vec::new(),
                false => match decode_items::<O>(outputs, count) {
                    Ok(o) => o,
                    Err(e) => return Heard::Misbehaved(format!("batch {seq}: cannot decode its outputs: {e}")),
                },
            };
            Heard::Event(Event::Done(BatchDone {
                seq,
                start,
                len,
                outputs,
                failures,
                worker,
                busy,
                item_stats,
                placed,
            }))
        }
    }
}

/// Whether a `Done` of `len` items from `start` can be one: at most one output or failure per
/// item (fewer only when an item failed: fail-fast stops a batch there), failures by ascending
/// index within the batch, at most one stats record per item.
fn fits(
    start: usize,
    len: usize,
    count: usize,
    failures: &[ItemError],
    stats: Option<usize>,
) -> std::result::Result<(), String> {
    let accounted = count.checked_add(failures.len()).filter(|n| *n <= len);
    let Some(accounted) = accounted else {
        return Err(format!("{count} output(s) and {} failure(s) for {len} item(s)", failures.len()));
    };
    if accounted < len && failures.is_empty() {
        return Err(format!("{count} output(s) and no failure for {len} item(s)"));
    }
    let end = start.checked_add(len).ok_or("items past the end of any input")?;
    if failures.iter().any(|f| f.index < start || f.index >= end)
        || failures.windows(2).any(|w| w[0].index >= w[1].index)
    {
        return Err(format!("failures outside items {start}..{end} or out of order"));
    }
    if stats.is_some_and(|n| n > len) {
        return Err(format!("more stats than its {len} item(s)"));
    }
    Ok(())
}

/// The `Blob` messages (encoded head, value bytes) that give a worker every value of `store`
/// it does not have yet (`sent`, which this updates): for workers that cannot reach the
/// driver's store. Each value goes to each worker once.
pub fn blobs_to_ship(
    store: &dyn SharedStore,
    sent: &mut std::collections::HashSet<ShareKey>,
) -> Result<Vec<(Vec<u8>, crate::store::SharedBytes)>> {
    let mut out = Vec::new();
    for key in store.keys() {
        if sent.contains(&key) {
            continue;
        }
        let bytes = store.get(&key)?;
        out.push((encode_msg(&ToWorker::Blob { key: key.clone() })?, bytes));
        sent.insert(key);
    }
    Ok(out)
}
