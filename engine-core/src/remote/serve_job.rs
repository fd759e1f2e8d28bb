//! One job of one task on a worker: decodes args and init, runs the worker loop, sends every
//! batch's outputs.

use super::protocol::{FromWorker, JobSpec, ToWorker};
use super::transport::{io_err, recv_msg, send_msg, skip_job, Transport};
use crate::error::{Error, ItemError, Result};
use crate::plumbing::batch::Batch;
use crate::plumbing::int_range::RangeItems;
use crate::plumbing::plain::{is_plain, read_in_place, PlainItems, WriteInPlace};
use crate::plumbing::worker::{Worker, WorkerOptions};
use crate::remote::wire::{decode_items, encode_items, encode_msg, split_frame};
use crate::store::SharedStore;
use crate::task::Task;
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

fn decode_value<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Codec(format!("cannot decode the job's {what}: {e}")))
}

/// Runs one job of `T` on this worker: decodes args and init, runs `init`, then every batch
/// until `EndJob`.
pub fn serve_job<T: Task>(
    t: &mut dyn Transport,
    worker: usize,
    spec: JobSpec,
    store: Option<Arc<dyn SharedStore>>,
) -> std::result::Result<(), String> {
    let opts = WorkerOptions {
        fail_fast: spec.fail_fast,
        item_stats: spec.item_stats,
        cancel: None,
        retry_errors: spec.retry_errors,
    };
    let decode_args = || {
        let args = decode_value::<T::Args>("args", &spec.args.0)?;
        let init = decode_value::<T::Init>("init argument", &spec.init.0)?;
        Ok::<_, Error>((args, init))
    };
    let decoded = match store {
        Some(store) => crate::share_ctx::with_store(store, decode_args),
        None => decode_args(),
    };
    let (args, init) = match decoded {
        Ok(x) => x,
        Err(e) => {
            send_msg(t, &FromWorker::InitFailed { message: e.to_string() })?;
            return skip_job(t);
        }
    };
    if is_plain::<T::Item>() && is_plain::<T::Output>() {
        return serve_plain::<T>(t, worker, &init, args, opts);
    }
    // The worker loop is the one every backend runs (`plumbing::serve_worker`); here its messages are
    // frames on the transport.
    let t = RefCell::new(t);
    let trouble: RefCell<Option<String>> = RefCell::new(None);
    let (ended, init_failed) = (Cell::new(false), Cell::new(false));
    let send_parts = |head: &[u8], tail: &[u8]| match t.borrow_mut().send(head, tail).map_err(io_err) {
        Ok(()) => true,
        Err(e) => {
            trouble.borrow_mut().get_or_insert(e);
            false
        }
    };
    let recv = || loop {
        let mut guard = t.borrow_mut();
        let msg = match recv_msg(&mut **guard) {
            Ok(Some((ToWorker::Batch { seq, start, count }, tail))) => match decode_items::<T::Item>(tail, count) {
                Ok(items) => return Some(Batch { seq, start, items }),
                Err(e) => Err((seq, start, count, e.to_string())),
            },
            Ok(Some((ToWorker::Range { seq, start, count }, tail))) => {
                match RangeItems::<T::Item>::from_bytes(tail, count) {
                    Ok(items) => return Some(Batch { seq, start, items: items.iter().collect() }),
                    Err(e) => Err((seq, start, count, e)),
                }
            }
            Ok(Some((ToWorker::EndJob, _))) => {
                ended.set(true);
                return None;
            }
            Ok(Some((other, _))) => Ok(format!("protocol error: expected a batch or EndJob, got {other:?}")),
            Ok(None) => Ok("the driver closed the connection in the middle of a job".to_string()),
            Err(e) => Ok(e),
        };
        drop(guard);
        match msg {
            // A batch that cannot be decoded fails its first item; the job goes on.
            Err((seq, start, count, e)) => {
                let done = undecodable::<T::Output>(worker, seq, start, count, &e);
                if !send_done(&done, &[], &send_parts) {
                    return None;
                }
            }
            Ok(problem) => {
                trouble.borrow_mut().get_or_insert(problem);
                return None;
            }
        }
    };
    let send = |ev: crate::plumbing::batch::Event<T::Output>| {
        use crate::plumbing::batch::Event;
        let msg = match ev {
            Event::Ready { .. } => FromWorker::Ready,
            Event::InitFailed { message, .. } => {
                init_failed.set(true);
                FromWorker::InitFailed { message }
            }
            Event::Done(b) => return send_done(&b, &b.outputs, &send_parts),
            Event::Fatal { .. } | Event::Lost { .. } => return true,
        };
        match encode_msg(&msg) {
            Ok(head) => send_parts(&head, &[]),
            Err(e) => {
                trouble.borrow_mut().get_or_insert(e.to_string());
                false
            }
        }
    };
    crate::plumbing::worker::serve_worker::<T, _>(worker, &init, Arc::new(args), opts, recv, send);
    if let Some(e) = trouble.into_inner() {
        return Err(e);
    }
    let t = t.into_inner();
    if init_failed.get() {
        return skip_job(t);
    }
    if ended.get() {
        send_msg(t, &FromWorker::JobEnded)?;
    }
    Ok(())
}

/// One job of a task whose items and outputs are plain numbers: each batch's items are read
/// where they arrived (the transport's buffer or shared memory), never decoded into a vector
/// of their own, and its outputs are written straight into room the transport lends in its
/// shared memory ([`Transport::recv_with_room`]) or, without one, to one vector kept for the
/// whole job and sent from there. The messages are those of the general loop
/// (`serve_worker`), in the same order.
fn serve_plain<T: Task>(
    t: &mut dyn Transport,
    worker: usize,
    init: &T::Init,
    args: T::Args,
    opts: WorkerOptions,
) -> std::result::Result<(), String> {
    let mut w = match Worker::<T>::start(worker, init, Arc::new(args), opts) {
        Ok(w) => w,
        Err(e) => {
            let message = match e {
                Error::Init { message, .. } => message,
                other => other.to_string(),
            };
            send_msg(t, &FromWorker::InitFailed { message })?;
            return skip_job(t);
        }
    };
    send_msg(t, &FromWorker::Ready)?;
    let size = std::mem::size_of::<T::Output>();
    // Room for a batch's outputs: one per item (a count the driver sent, so saturating).
    let room_for = |payload: &[u8]| match split_frame::<ToWorker>(payload) {
        Ok((ToWorker::Batch { count, .. } | ToWorker::Range { count, .. }, _)) => count.saturating_mul(size),
        _ => 0,
    };
    let mut outputs: Vec<T::Output> = Vec::new();
    loop {
        outputs.clear();
        let Some((incoming, room)) = t.recv_with_room(&room_for).map_err(io_err)? else {
            return Err("the driver closed the connection in the middle of a job".to_string());
        };
        let (msg, tail) = incoming.split::<ToWorker>().map_err(|e| format!("bad message from the driver: {e}"))?;
        // The batch's answer, and how many outputs it wrote into the room (`None`: none lent).
        let (done, in_room) = match msg {
            ToWorker::Batch { seq, start, count } => match read_in_place::<T::Item>(tail, count) {
                Some(Ok(items)) => run_plain_batch(&mut w, seq, start, items, room, &mut outputs),
                // A batch whose bytes are not its items fails its first item; the job goes on.
                Some(Err(e)) => (undecodable(worker, seq, start, count, &e), None),
                None => (undecodable(worker, seq, start, count, &"its items are not plain numbers"), None),
            },
            ToWorker::Range { seq, start, count } => match RangeItems::<T::Item>::from_bytes(tail, count) {
                Ok(items) => run_plain_batch(&mut w, seq, start, items, room, &mut outputs),
                Err(e) => (undecodable(worker, seq, start, count, &e), None),
            },
            ToWorker::EndJob => return send_msg(t, &FromWorker::JobEnded),
            other => return Err(format!("protocol error: expected a batch or EndJob, got {other:?}")),
        };
        if let Some(count) = in_room {
            let head = encode_msg(&done_head(&done, count, done.failures.clone())).map_err(|e| e.to_string())?;
            t.send_in_place(&head, count * size).map_err(io_err)?;
            continue;
        }
        let trouble = RefCell::new(None);
        let conn = RefCell::new(&mut *t);
        let send_parts = |head: &[u8], tail: &[u8]| match conn.borrow_mut().send(head, tail) {
            Ok(()) => true,
            Err(e) => {
                trouble.borrow_mut().get_or_insert(io_err(e));
                false
            }
        };
        if !send_done(&done, &outputs, &send_parts) {
            return Err(trouble.into_inner().unwrap_or_else(|| "cannot encode a batch's answer".to_string()));
        }
    }
}

/// Runs a batch of plain items: its outputs written into `room` when the transport lent one
/// (with how many were), else into `outputs` (and `None`).
fn run_plain_batch<T: Task>(
    w: &mut Worker<T>,
    seq: u64,
    start: usize,
    items: impl PlainItems<T::Item>,
    room: Option<&mut [u8]>,
    outputs: &mut Vec<T::Output>,
) -> (crate::plumbing::batch::BatchDone<T::Output>, Option<usize>) {
    match room.and_then(WriteInPlace::<T::Output>::new) {
        Some(mut out) => {
            let done = w.run_plain(seq, start, items, &mut out);
            (done, Some(out.count()))
        }
        None => (w.run_items_of(seq, start, items.rest(0), outputs), None),
    }
}

/// The `Done` message of batch `b` with `count` outputs and these failures.
fn done_head<O>(b: &crate::plumbing::batch::BatchDone<O>, count: usize, failures: Vec<ItemError>) -> FromWorker {
    FromWorker::Done {
        seq: b.seq,
        start: b.start,
        len: b.len,
        count,
        failures,
        busy: b.busy,
        item_stats: b.item_stats.clone(),
    }
}

/// The answer to a batch whose items cannot be decoded: its first item fails, saying why.
fn undecodable<O>(
    worker: usize,
    seq: u64,
    start: usize,
    count: usize,
    e: &dyn std::fmt::Display,
) -> crate::plumbing::batch::BatchDone<O> {
    let failure = ItemError {
        index: start,
        kind: crate::error::FailureKind::Error,
        message: format!("cannot decode the batch's items: {e}"),
    };
    crate::plumbing::batch::BatchDone {
        seq,
        start,
        len: count,
        outputs: Vec::new(),
        failures: vec![failure],
        worker,
        busy: Duration::ZERO,
        item_stats: None,
        placed: false,
    }
}

/// Sends the `Done` message of batch `b`, whose outputs are `outputs`: its head, and the
/// outputs as the tail (plain numbers straight from the outputs' memory). Outputs that cannot
/// be encoded fail the batch's first item instead. `false` when sending failed.
fn send_done<O: Serialize + 'static>(
    b: &crate::plumbing::batch::BatchDone<O>,
    outputs: &[O],
    send: &dyn Fn(&[u8], &[u8]) -> bool,
) -> bool {
    let header = |count, failures| done_head(b, count, failures);
    let encoded =
        encode_items(outputs).and_then(|tail| Ok((encode_msg(&header(outputs.len(), b.failures.clone()))?, tail)));
    match encoded {
        Ok((head, tail)) => send(&head, &tail),
        Err(e) => {
            let mut failures = b.failures.clone();
            failures.push(ItemError {
                index: b.start,
                kind: crate::error::FailureKind::Error,
                message: format!("cannot encode the batch's outputs: {e}"),
            });
            match encode_msg(&header(0, failures)) {
                Ok(head) => send(&head, &[]),
                Err(_) => false,
            }
        }
    }
}
