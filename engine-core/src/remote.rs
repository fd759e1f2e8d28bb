//! The worker protocol of every out-of-process backend (processes, MPI ranks, pods): the
//! messages, the handshake with a build fingerprint, and the worker's side of a connection.
//! A backend supplies only a [`Transport`].

use crate::batch::Batch;
use crate::error::{Error, ItemError, Result};
use crate::registry;
use crate::stats::ItemStats;
use crate::store::{ShareKey, SharedStore};
use crate::task::Task;
use crate::wire::{decode_items, encode_items, encode_msg, split_frame, ByteBuf};
use crate::worker::WorkerOptions;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

/// Driver to worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// First message: who the worker is and the driver's build fingerprint.
    Hello {
        /// The driver's [`fingerprint`].
        fingerprint: String,
        /// The worker's number.
        worker: usize,
    },
    /// A job starts.
    Job(JobSpec),
    /// A batch of the current job; its `count` items are the message's tail, as
    /// [`crate::wire::encode_items`] writes them.
    Batch {
        /// Sequence number.
        seq: u64,
        /// Index of the first item.
        start: usize,
        /// Number of items.
        count: usize,
    },
    /// The current job is over.
    EndJob,
    /// A shared value, for a worker that cannot reach the driver's store: the message's tail
    /// is the value's bytes, kept in a store of the worker's own (see [`JobSpec::shipped`]).
    /// Each value is sent once per worker, before the first job that may need it.
    Blob {
        /// The value's key (the hash of the tail, checked on arrival).
        key: ShareKey,
    },
}

/// A job, as sent to a worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobSpec {
    /// The task's registered name.
    pub task: String,
    /// The encoded args.
    pub args: ByteBuf,
    /// The encoded init argument.
    pub init: ByteBuf,
    /// Fail-fast mode.
    pub fail_fast: bool,
    /// Per-item stats.
    pub item_stats: bool,
    /// Where the job's shared values are stored (a directory, a URL...), for the worker's
    /// store opener.
    pub share_dir: Option<String>,
    /// The job's shared values came over this connection (`Blob` messages) into the worker's
    /// own store, instead of from `share_dir`: for workers without the driver's file system.
    pub shipped: bool,
}

impl JobSpec {
    /// The spec of a job from its plan. Its args and init are encoded once here; the shared
    /// values in them go to `store` (once: only their keys travel). `share_dir`, asked after
    /// encoding (a store may make its directory on its first value), tells workers where to
    /// read that store; `shipped`, that its values come over the connection instead.
    pub fn for_plan<T: Task, I: Iterator<Item = T::Item>>(
        plan: &crate::backend::Plan<T, I>,
        store: Arc<dyn SharedStore>,
        share_dir: impl FnOnce() -> Option<String>,
        shipped: bool,
    ) -> Result<JobSpec> {
        let encode = |what: &str, bytes: Result<Vec<u8>>| {
            bytes.map(ByteBuf).map_err(|e| Error::Codec(format!("cannot encode the job's {what}: {e}")))
        };
        let (args, init) = crate::share_ctx::with_store(store, || {
            Ok::<_, Error>((
                encode("args", encode_msg(&*plan.args))?,
                encode("init argument", encode_msg(&*plan.init))?,
            ))
        })?;
        Ok(JobSpec {
            task: T::name().to_string(),
            args,
            init,
            fail_fast: plan.options.fail_fast,
            item_stats: plan.options.item_stats,
            share_dir: if shipped { None } else { share_dir() },
            shipped,
        })
    }
}

/// Worker to driver.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// Handshake answer.
    Hello {
        /// The worker's fingerprint (equal to the driver's, or the worker refuses).
        fingerprint: String,
        /// Its process id.
        pid: u32,
    },
    /// The worker cannot serve: another build, an unknown task, a protocol error.
    Refused {
        /// Why.
        reason: String,
    },
    /// The job's `init` succeeded.
    Ready,
    /// The job's `init` (or decoding its args) failed.
    InitFailed {
        /// Why.
        message: String,
    },
    /// A batch is done; the outputs of the items that succeeded are the message's tail.
    Done {
        /// Sequence number.
        seq: u64,
        /// Index of its first item.
        start: usize,
        /// Number of items.
        len: usize,
        /// Number of outputs in the tail.
        count: usize,
        /// Items that failed.
        failures: Vec<ItemError>,
        /// Time spent.
        busy: Duration,
        /// Per-item stats, when asked for.
        item_stats: Option<Vec<ItemStats>>,
    },
    /// The job is over on this worker.
    JobEnded,
}

/// A worker's connection to its driver. It carries messages, each an encoded head (a
/// [`ToWorker`] or [`FromWorker`]) and a tail of bulk bytes (a batch's items or outputs); the
/// protocol (what is in them) is this module's. A transport may carry tails apart from heads
/// (the process backend puts large ones in shared memory).
pub trait Transport {
    /// Sends one message: `head` (an encoded message) and its `tail` (may be empty).
    fn send(&mut self, head: &[u8], tail: &[u8]) -> std::io::Result<()>;
    /// The next message; `None` when the driver closed the connection. It borrows buffers
    /// the transport reuses for every message, so a worker does not fault in fresh pages for
    /// every batch.
    fn recv(&mut self) -> std::io::Result<Option<Incoming<'_>>>;
}

/// A message as a [`Transport`] received it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The head, followed by the tail when the tail travelled with it.
    pub payload: &'a [u8],
    /// The tail, when it travelled apart from the head.
    pub bulk: Option<&'a [u8]>,
}

impl<'a> Incoming<'a> {
    /// Decodes the head and finds the tail.
    pub fn split<H: Deserialize<'a>>(self) -> Result<(H, &'a [u8])> {
        let (head, rest) = split_frame::<H>(self.payload)?;
        Ok((head, self.bulk.unwrap_or(rest)))
    }
}

fn send_msg(t: &mut dyn Transport, msg: &FromWorker) -> std::result::Result<(), String> {
    let head = encode_msg(msg).map_err(|e| e.to_string())?;
    t.send(&head, &[]).map_err(io_err)
}

/// The next message and its tail; `None` when the driver is gone.
fn recv_msg(t: &mut dyn Transport) -> std::result::Result<Option<(ToWorker, &[u8])>, String> {
    let Some(incoming) = t.recv().map_err(io_err)? else { return Ok(None) };
    let (msg, tail) = incoming.split::<ToWorker>().map_err(|e| format!("bad message from the driver: {e}"))?;
    Ok(Some((msg, tail)))
}

/// Runs one job of a registered task on a worker (stored in the registry for each task).
pub type ServeJob =
    fn(&mut dyn Transport, usize, JobSpec, Option<Arc<dyn SharedStore>>) -> std::result::Result<(), String>;

/// Opens, on a worker, the share store a job names (`JobSpec::share_dir`).
pub type OpenStore<'a> = &'a dyn Fn(&str) -> Result<Arc<dyn SharedStore>>;

/// Makes, on a worker, a store of its own for the values sent to it (`ToWorker::Blob`),
/// removed when the worker ends (e.g. a private directory on its local disk).
pub type LocalStore<'a> = &'a dyn Fn() -> Result<Arc<dyn SharedStore>>;

pub use crate::fingerprint::fingerprint;

fn io_err(e: std::io::Error) -> String {
    format!("connection to the driver failed: {e}")
}

/// Serves a connection: the handshake, then jobs until the driver closes it. `open_store`
/// opens the share store a job names; `local_store` makes the worker's own store for values
/// the driver sends over the connection.
pub fn serve_connection(
    t: &mut dyn Transport,
    open_store: OpenStore<'_>,
    local_store: LocalStore<'_>,
) -> std::result::Result<(), String> {
    let worker = match recv_msg(t)?.map(|(m, _)| m) {
        Some(ToWorker::Hello { fingerprint: theirs, worker }) => {
            let ours = fingerprint();
            if theirs != ours {
                let reason = format!(
                    "worker runs another build of the program (worker {ours}, driver {theirs}): \
                     rebuild and deploy the same binary"
                );
                send_msg(t, &FromWorker::Refused { reason: reason.clone() })?;
                return Err(reason);
            }
            send_msg(t, &FromWorker::Hello { fingerprint: ours.to_string(), pid: std::process::id() })?;
            worker
        }
        Some(other) => return Err(format!("protocol error: expected Hello, got {other:?}")),
        None => return Ok(()),
    };
    // Values sent over the connection, and why the last one could not be kept (reported to
    // the next job, which may need it).
    let mut local: Option<Arc<dyn SharedStore>> = None;
    let mut blob_trouble: Option<String> = None;
    loop {
        let spec = match recv_msg(t)? {
            Some((ToWorker::Blob { key }, bytes)) => {
                let kept = match local.clone() {
                    Some(s) => Ok(s),
                    None => local_store().inspect(|s| local = Some(Arc::clone(s))),
                }
                .and_then(|s| s.put(bytes));
                match kept {
                    Ok(k) if k == key => {}
                    Ok(k) => blob_trouble = Some(format!("shared value {key} arrived damaged (its hash is {k})")),
                    Err(e) => blob_trouble = Some(format!("cannot keep shared value {key}: {e}")),
                }
                continue;
            }
            Some((ToWorker::Job(spec), _)) => spec,
            Some((ToWorker::EndJob, _)) => {
                send_msg(t, &FromWorker::JobEnded)?;
                continue;
            }
            Some((other, _)) => return Err(format!("protocol error: expected Job, got {other:?}")),
            None => return Ok(()),
        };
        let entry = match registry::lookup(&spec.task) {
            Ok(entry) => entry,
            Err(e) => {
                send_msg(t, &FromWorker::Refused { reason: e.to_string() })?;
                skip_job(t)?;
                continue;
            }
        };
        let store = match (spec.shipped, spec.share_dir.as_deref()) {
            (true, _) => match (&blob_trouble, &local) {
                (Some(trouble), _) => Err(trouble.clone()),
                (None, Some(s)) => Ok(Some(Arc::clone(s))),
                (None, None) => local_store().map(Some).map_err(|e| e.to_string()),
            },
            (false, Some(dir)) => open_store(dir).map(Some).map_err(|e| format!("cannot open the share store: {e}")),
            (false, None) => Ok(None),
        };
        match store {
            Ok(store) => (entry.serve)(t, worker, spec, store)?,
            Err(message) => {
                send_msg(t, &FromWorker::InitFailed { message })?;
                skip_job(t)?;
            }
        }
    }
}

/// Reads and drops the rest of a job this worker cannot run.
fn skip_job(t: &mut dyn Transport) -> std::result::Result<(), String> {
    loop {
        match recv_msg(t)?.map(|(m, _)| m) {
            Some(ToWorker::EndJob) => return send_msg(t, &FromWorker::JobEnded),
            Some(_) => {}
            None => return Ok(()),
        }
    }
}

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
    let opts = WorkerOptions { fail_fast: spec.fail_fast, item_stats: spec.item_stats, cancel: None };
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
    // The worker loop is the one every backend runs (`worker::serve`); here its messages are
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
                Err(e) => Err((seq, start, count, e)),
            },
            Ok(Some((ToWorker::EndJob, _))) => {
                ended.set(true);
                return None;
            }
            Ok(Some((other, _))) => Ok(format!("protocol error: expected Batch or EndJob, got {other:?}")),
            Ok(None) => Ok("the driver closed the connection in the middle of a job".to_string()),
            Err(e) => Ok(e),
        };
        drop(guard);
        match msg {
            // A batch that cannot be decoded fails its first item; the job goes on.
            Err((seq, start, count, e)) => {
                let failure = ItemError {
                    index: start,
                    kind: crate::error::FailureKind::Error,
                    message: format!("cannot decode the batch's items: {e}"),
                };
                let done = crate::batch::BatchDone::<T::Output> {
                    seq,
                    start,
                    len: count,
                    outputs: Vec::new(),
                    failures: vec![failure],
                    worker,
                    busy: Duration::ZERO,
                    item_stats: None,
                    placed: false,
                };
                if !send_done(done, &send_parts) {
                    return None;
                }
            }
            Ok(problem) => {
                trouble.borrow_mut().get_or_insert(problem);
                return None;
            }
        }
    };
    let send = |ev: crate::batch::Event<T::Output>| {
        use crate::batch::Event;
        let msg = match ev {
            Event::Ready { .. } => FromWorker::Ready,
            Event::InitFailed { message, .. } => {
                init_failed.set(true);
                FromWorker::InitFailed { message }
            }
            Event::Done(b) => return send_done(b, &send_parts),
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
    crate::worker::serve::<T, _>(worker, &init, Arc::new(args), opts, recv, send);
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

/// Sends the `Done` message of a batch: its head, and its outputs as the tail (plain
/// numbers straight from the outputs' memory). Outputs that cannot be encoded fail the
/// batch's first item instead. `false` when sending failed.
fn send_done<O: Serialize + 'static>(b: crate::batch::BatchDone<O>, send: &dyn Fn(&[u8], &[u8]) -> bool) -> bool {
    let header = |count, failures| FromWorker::Done {
        seq: b.seq,
        start: b.start,
        len: b.len,
        count,
        failures,
        busy: b.busy,
        item_stats: b.item_stats.clone(),
    };
    let encoded =
        encode_items(&b.outputs).and_then(|tail| Ok((encode_msg(&header(b.outputs.len(), b.failures.clone()))?, tail)));
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

/// What a driver makes of a message from a worker.
#[derive(Debug)]
pub enum Heard<O> {
    /// An event for the dispatch loop.
    Event(crate::batch::Event<O>),
    /// The worker ended its job in good order (`JobEnded`): it may serve another.
    JobEnded,
    /// Nothing to act on (the handshake's answer).
    Nothing,
}

/// Turns a message from worker `worker` into what the driver acts on: every backend's
/// reader calls this, so the protocol is read in one place. Outputs of plain numbers go
/// straight to `placement` when there is one (whole batches only: the single-item parts of a
/// split batch are never placed, see [`crate::batch::BatchDone::placed`]).
pub fn hear<O: serde::de::DeserializeOwned + 'static>(
    worker: usize,
    incoming: Incoming<'_>,
    placement: Option<&crate::Placement<O>>,
) -> Heard<O> {
    use crate::batch::{BatchDone, Event};
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    crate::task!(Twice = |x: u64| -> u64 { 2 * x });

    /// A connection that plays a script of driver messages and records the worker's.
    struct Scripted {
        incoming: VecDeque<Vec<u8>>,
        current: Vec<u8>,
        sent: Vec<FromWorker>,
    }

    impl Transport for Scripted {
        fn send(&mut self, head: &[u8], _tail: &[u8]) -> std::io::Result<()> {
            self.sent.push(split_frame::<FromWorker>(head).map_err(std::io::Error::other)?.0);
            Ok(())
        }
        fn recv(&mut self) -> std::io::Result<Option<Incoming<'_>>> {
            match self.incoming.pop_front() {
                Some(m) => {
                    self.current = m;
                    Ok(Some(Incoming { payload: &self.current, bulk: None }))
                }
                None => Ok(None),
            }
        }
    }

    #[derive(Default)]
    struct Kept(Mutex<Vec<(ShareKey, Vec<u8>)>>);
    impl SharedStore for Kept {
        fn put(&self, bytes: &[u8]) -> Result<ShareKey> {
            let k = ShareKey::of(bytes);
            self.0.lock().unwrap().push((k.clone(), bytes.to_vec()));
            Ok(k)
        }
        fn get(&self, key: &ShareKey) -> Result<crate::store::SharedBytes> {
            let g = self.0.lock().unwrap();
            let v = g.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).ok_or(Error::Store("no".into()))?;
            Ok(Arc::new(v))
        }
        fn contains(&self, key: &ShareKey) -> bool {
            self.0.lock().unwrap().iter().any(|(k, _)| k == key)
        }
        fn len(&self) -> usize {
            self.0.lock().unwrap().len()
        }
        fn keys(&self) -> Vec<ShareKey> {
            self.0.lock().unwrap().iter().map(|(k, _)| k.clone()).collect()
        }
        fn clear(&self) -> Result<()> {
            self.0.lock().unwrap().clear();
            Ok(())
        }
    }

    fn script(blob_key: ShareKey, blob: &[u8]) -> Scripted {
        let mut m = vec![encode_msg(&ToWorker::Hello { fingerprint: fingerprint().to_string(), worker: 1 }).unwrap()];
        let mut b = encode_msg(&ToWorker::Blob { key: blob_key }).unwrap();
        b.extend_from_slice(blob);
        m.push(b);
        m.push(encode_msg(&ToWorker::Job(crate::testing::job_spec::<Twice>(true))).unwrap());
        m.push(encode_msg(&ToWorker::EndJob).unwrap());
        Scripted { incoming: m.into(), current: Vec::new(), sent: Vec::new() }
    }

    #[test]
    fn shipped_values_are_kept_checked_and_given_to_the_job() {
        let kept = Arc::new(Kept::default());
        let local = {
            let kept = Arc::clone(&kept);
            move || Ok(Arc::clone(&kept) as Arc<dyn SharedStore>)
        };
        let no_dir = |_: &str| -> Result<Arc<dyn SharedStore>> { Err(Error::Store("no directory here".into())) };
        // A value that arrives whole is kept, and the job runs.
        let mut t = script(ShareKey::of(b"table"), b"table");
        serve_connection(&mut t, &no_dir, &local).unwrap();
        assert!(kept.contains(&ShareKey::of(b"table")));
        assert!(
            matches!(t.sent[..], [FromWorker::Hello { .. }, FromWorker::Ready, FromWorker::JobEnded]),
            "{:?}",
            t.sent
        );
        // A value whose bytes do not hash to its key fails the next job's init, saying so.
        let mut t = script(ShareKey::of(b"table"), b"tablE");
        serve_connection(&mut t, &no_dir, &local).unwrap();
        match &t.sent[..] {
            [FromWorker::Hello { .. }, FromWorker::InitFailed { message }, FromWorker::JobEnded] => {
                assert!(message.contains("arrived damaged"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
