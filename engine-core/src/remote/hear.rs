//! The driver's side: what a driver makes of each worker message, and the shared values a
//! worker without the driver's file system must be sent.

use super::protocol::{FromWorker, ToWorker};
use super::transport::Incoming;
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
}

/// Turns a message from worker `worker` into what the driver acts on: every backend's
/// reader calls this, so the protocol is read in one place. Outputs of plain numbers go
/// straight to `placement` when there is one (whole batches only: the single-item parts of a
/// split batch are never placed, see [`crate::plumbing::batch::BatchDone::placed`]).
pub fn hear<O: serde::de::DeserializeOwned + 'static>(
    worker: usize,
    incoming: Incoming<'_>,
    placement: Option<&crate::plumbing::Placement<O>>,
) -> Heard<O> {
    use crate::plumbing::batch::{BatchDone, Event};
    let fatal = |message: String| Heard::Event(Event::Fatal { worker, message });
    let (msg, outputs) = match incoming.split::<FromWorker>() {
        Ok(x) => x,
        Err(e) => return fatal(format!("bad message from worker: {e}")),
    };
    match msg {
        FromWorker::Hello { .. } => Heard::Nothing,
        FromWorker::JobEnded => Heard::JobEnded,
        FromWorker::Refused { reason } => fatal(reason),
        FromWorker::Ready => Heard::Event(Event::Ready { worker }),
        FromWorker::InitFailed { message } => Heard::Event(Event::InitFailed { worker, message }),
        FromWorker::Done { seq, start, len, count, failures, busy, item_stats } => {
            let placed = len >= 2
                && count == len
                && failures.is_empty()
                && placement.is_some_and(|p| p.put_bytes(start, count, outputs));
            let outputs = match placed {
                true => Vec::new(),
                false => match decode_items::<O>(outputs, count) {
                    Ok(o) => o,
                    Err(e) => return fatal(format!("cannot decode outputs: {e}")),
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
