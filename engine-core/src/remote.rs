//! The worker protocol of every out-of-process backend (processes, MPI ranks, pods): the
//! messages, the handshake with a build fingerprint, and the worker's side of a connection.
//! A backend supplies only a [`Transport`].

use crate::batch::Batch;
use crate::error::{Error, ItemError, Result};
use crate::registry;
use crate::stats::ItemStats;
use crate::store::SharedStore;
use crate::task::Task;
use crate::wire::{decode_seq, encode_seq, ByteBuf};
use crate::worker::{Worker, WorkerOptions};
use serde::{Deserialize, Serialize};
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
    /// A batch of the current job: `count` items encoded one after the other.
    Batch {
        /// Sequence number.
        seq: u64,
        /// Index of the first item.
        start: usize,
        /// Number of items.
        count: usize,
        /// The items.
        items: ByteBuf,
    },
    /// The current job is over.
    EndJob,
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
    /// A batch is done.
    Done {
        /// Sequence number.
        seq: u64,
        /// Index of its first item.
        start: usize,
        /// Number of items.
        len: usize,
        /// Number of outputs in `outputs`.
        count: usize,
        /// The outputs of the items that succeeded, encoded one after the other.
        outputs: ByteBuf,
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

/// A worker's connection to its driver.
pub trait Transport {
    /// Sends a message.
    fn send(&mut self, msg: &FromWorker) -> std::io::Result<()>;
    /// The next message; `None` when the driver closed the connection.
    fn recv(&mut self) -> std::io::Result<Option<ToWorker>>;
}

/// Runs one job of a registered task on a worker (stored in the registry for each task).
pub type ServeJob =
    fn(&mut dyn Transport, usize, JobSpec, Option<Arc<dyn SharedStore>>) -> std::result::Result<(), String>;

/// Opens, on a worker, the share store a job names (`JobSpec::share_dir`).
pub type OpenStore<'a> = &'a dyn Fn(&str) -> Result<Arc<dyn SharedStore>>;

pub use crate::fingerprint::fingerprint;

fn io_err(e: std::io::Error) -> String {
    format!("connection to the driver failed: {e}")
}

/// Serves a connection: the handshake, then jobs until the driver closes it. `open_store`
/// opens the share store a job names.
pub fn serve_connection(t: &mut dyn Transport, open_store: OpenStore<'_>) -> std::result::Result<(), String> {
    let worker = match t.recv().map_err(io_err)? {
        Some(ToWorker::Hello { fingerprint: theirs, worker }) => {
            let ours = fingerprint();
            if theirs != ours {
                let reason = format!(
                    "worker runs another build of the program (worker {ours}, driver {theirs}): \
                     rebuild and deploy the same binary"
                );
                t.send(&FromWorker::Refused { reason: reason.clone() }).map_err(io_err)?;
                return Err(reason);
            }
            t.send(&FromWorker::Hello { fingerprint: ours.to_string(), pid: std::process::id() }).map_err(io_err)?;
            worker
        }
        Some(other) => return Err(format!("protocol error: expected Hello, got {other:?}")),
        None => return Ok(()),
    };
    loop {
        match t.recv().map_err(io_err)? {
            Some(ToWorker::Job(spec)) => match registry::lookup(&spec.task) {
                Ok(entry) => {
                    let store = match spec.share_dir.as_deref().map(open_store).transpose() {
                        Ok(s) => s,
                        Err(e) => {
                            t.send(&FromWorker::InitFailed { message: format!("cannot open the share store: {e}") })
                                .map_err(io_err)?;
                            skip_job(t)?;
                            continue;
                        }
                    };
                    (entry.serve)(t, worker, spec, store)?
                }
                Err(e) => {
                    t.send(&FromWorker::Refused { reason: e.to_string() }).map_err(io_err)?;
                    skip_job(t)?;
                }
            },
            Some(ToWorker::EndJob) => t.send(&FromWorker::JobEnded).map_err(io_err)?,
            Some(other) => return Err(format!("protocol error: expected Job, got {other:?}")),
            None => return Ok(()),
        }
    }
}

/// Reads and drops the rest of a job this worker cannot run.
fn skip_job(t: &mut dyn Transport) -> std::result::Result<(), String> {
    loop {
        match t.recv().map_err(io_err)? {
            Some(ToWorker::EndJob) => return t.send(&FromWorker::JobEnded).map_err(io_err),
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
    let started =
        decoded.and_then(|(args, init)| Worker::<T, Arc<T::Args>>::start(worker, &init, Arc::new(args), opts));
    let mut w = match started {
        Ok(w) => w,
        Err(e) => {
            let message = match e {
                Error::Init { message, .. } => message,
                other => other.to_string(),
            };
            t.send(&FromWorker::InitFailed { message }).map_err(io_err)?;
            return skip_job(t);
        }
    };
    t.send(&FromWorker::Ready).map_err(io_err)?;
    loop {
        match t.recv().map_err(io_err)? {
            Some(ToWorker::Batch { seq, start, count, items }) => {
                let msg = match decode_seq::<T::Item>(&items.0, count) {
                    Ok(items) => done_message(w.run_batch(Batch { seq, start, items })),
                    Err(e) => FromWorker::Done {
                        seq,
                        start,
                        len: count,
                        count: 0,
                        outputs: ByteBuf::default(),
                        failures: vec![ItemError {
                            index: start,
                            kind: crate::error::FailureKind::Error,
                            message: format!("cannot decode the batch's items: {e}"),
                        }],
                        busy: Duration::ZERO,
                        item_stats: None,
                    },
                };
                t.send(&msg).map_err(io_err)?;
            }
            Some(ToWorker::EndJob) => return t.send(&FromWorker::JobEnded).map_err(io_err),
            Some(other) => return Err(format!("protocol error: expected Batch or EndJob, got {other:?}")),
            None => return Err("the driver closed the connection in the middle of a job".into()),
        }
    }
}

fn done_message<O: Serialize>(b: crate::batch::BatchDone<O>) -> FromWorker {
    let mut failures = b.failures;
    let count = b.outputs.len();
    let (outputs, count) = match encode_seq(&b.outputs) {
        Ok(bytes) => (bytes, count),
        Err(e) => {
            failures.push(ItemError {
                index: b.start,
                kind: crate::error::FailureKind::Error,
                message: format!("cannot encode the batch's outputs: {e}"),
            });
            (encode_seq::<O>(&[]).unwrap_or_default(), 0)
        }
    };
    FromWorker::Done {
        seq: b.seq,
        start: b.start,
        len: b.len,
        count,
        outputs: ByteBuf(outputs),
        failures,
        busy: b.busy,
        item_stats: b.item_stats,
    }
}
