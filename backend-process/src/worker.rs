//! One worker process as the driver sees it: spawning it, its link (the socket's write half)
//! and the reader thread that turns its frames into engine events.

use crate::cleanup;
use crate::outbox::Outbox;
use crate::pool::{Pool, Proc};
use crossbeam_channel::Sender;
use engine_core::batch::{BatchDone, Event};
use engine_core::dispatch::{Parcel, WorkerLink};
use engine_core::remote::{fingerprint, FromWorker, ToWorker};
use engine_core::wire::{
    decode_seq, encode_frame, frame_prefix, read_frame_into, split_frame, EncodedBatch, LOCAL_MAX_FRAME,
};
use engine_core::{Error, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::de::DeserializeOwned;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

fn backend_err(message: String) -> Error {
    Error::Backend { backend: "process", message }
}

/// How a process ended, in words.
fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("worker process exited with code {c}"),
            (None, Some(sig)) => {
                let name = Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("unknown");
                format!("worker process killed by signal {sig} ({name})")
            }
            _ => format!("worker process ended: {s}"),
        },
        Err(e) => format!("worker process vanished: {e}"),
    }
}

/// The start of a batch's frame: its `ToWorker::Batch` header; the encoded items follow.
fn batch_prefix(p: &EncodedBatch) -> Result<Vec<u8>> {
    frame_prefix(&ToWorker::Batch { seq: p.seq(), start: p.start(), count: p.len() }, p.item_bytes().len())
}

/// What every worker of a job is told when it starts: who it is, and the job.
pub(crate) struct JobFrames {
    pub(crate) job: Vec<u8>,
}

/// Finds the workers of one job (and their replacements): idle ones from the pool, or new.
pub(crate) struct Spawner<O> {
    pub(crate) pool: Arc<Pool>,
    pub(crate) frames: Arc<JobFrames>,
    pub(crate) events: Sender<Event<O>>,
    pub(crate) readers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl<O: DeserializeOwned + Send + 'static> Spawner<O> {
    /// Starts worker `w`: a process (its handshake if new), the job, and its reader thread.
    pub(crate) fn spawn(&self, w: usize) -> Result<ProcLink> {
        let (Proc { child, stream }, warm) = self.pool.take()?;
        let pid = child.id() as i32;
        let reader = stream.try_clone().map_err(|e| backend_err(format!("cannot clone a socket: {e}")))?;
        let (outbox, writer_thread) = Outbox::new(stream, format!("adparallelengine-writer-{w}"))
            .map_err(|e| backend_err(format!("cannot start a writer thread: {e}")))?;
        let mut start = match warm {
            true => Vec::new(),
            false => encode_frame(&ToWorker::Hello { fingerprint: fingerprint().to_string(), worker: w })?,
        };
        start.extend_from_slice(&self.frames.job);
        let sent = outbox.send(start, None);
        let events = self.events.clone();
        let pool = Arc::clone(&self.pool);
        let handle = std::thread::Builder::new()
            .name(format!("adparallelengine-reader-{w}"))
            .spawn(move || read_worker(w, child, reader, events, &pool))
            .map_err(|e| backend_err(format!("cannot start a reader thread: {e}")))?;
        if let Ok(mut g) = self.readers.lock() {
            g.push(handle);
            g.push(writer_thread);
        }
        if let Err(e) = sent {
            // The reader reports the process's end; this link is dead.
            tracing::warn!(worker = w, error = %e, "cannot send the job to a new worker");
        }
        tracing::debug!(worker = w, pid, warm, "worker process joined the job");
        Ok(ProcLink { outbox: Some(outbox), pid })
    }
}

/// The reader thread of one worker in a job: frames to events until the worker says the job
/// ended (then it goes back to the pool) or its process ends (reported as `Lost`).
fn read_worker<O: DeserializeOwned + 'static>(
    w: usize,
    mut child: Child,
    stream: UnixStream,
    events: Sender<Event<O>>,
    pool: &Pool,
) {
    let mut r = BufReader::with_capacity(1 << 16, stream);
    let mut ended = false;
    let mut trouble: Option<String> = None;
    // One buffer for every frame of this worker: no fresh pages per batch.
    let mut payload = Vec::new();
    loop {
        match read_frame_into(&mut r, LOCAL_MAX_FRAME, &mut payload) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                trouble = Some(format!("connection failed: {e}"));
                break;
            }
        };
        let event = match split_frame::<FromWorker>(&payload) {
            Ok((FromWorker::Hello { .. }, _)) => continue,
            Ok((FromWorker::JobEnded, _)) => {
                // In good order, and nothing unread: the worker can serve another job.
                if r.buffer().is_empty() {
                    pool.give_back(Proc { child, stream: r.into_inner() });
                    return;
                }
                tracing::warn!(worker = w, "worker sent data after the end of its job; stopping it");
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                ended = true;
                break;
            }
            Ok((FromWorker::Refused { reason }, _)) => Event::Fatal { worker: w, message: reason },
            Ok((FromWorker::Ready, _)) => Event::Ready { worker: w },
            Ok((FromWorker::InitFailed { message }, _)) => Event::InitFailed { worker: w, message },
            Ok((FromWorker::Done { seq, start, len, count, failures, busy, item_stats }, outputs)) => {
                match decode_seq::<O>(outputs, count) {
                    Ok(outputs) => {
                        Event::Done(BatchDone { seq, start, len, outputs, failures, worker: w, busy, item_stats })
                    }
                    Err(e) => Event::Fatal { worker: w, message: format!("cannot decode outputs: {e}") },
                }
            }
            Err(e) => Event::Fatal { worker: w, message: format!("bad message from worker: {e}") },
        };
        if events.send(event).is_err() {
            // The job is gone: stop this worker.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            break;
        }
    }
    drop(r);
    let status = child.wait();
    cleanup::untrack(child.id() as i32);
    if !ended {
        let mut reason = describe(status);
        if let Some(t) = trouble {
            reason = format!("{reason} ({t})");
        }
        let _ = events.send(Event::Lost { worker: w, reason });
    }
}

/// The driver's end of one worker process.
pub(crate) struct ProcLink {
    outbox: Option<Outbox>,
    pid: i32,
}

impl WorkerLink<EncodedBatch> for ProcLink {
    fn send(&mut self, parcel: EncodedBatch) -> Result<()> {
        let out = self.outbox.as_ref().ok_or_else(|| backend_err("batch sent to a closed worker".into()))?;
        let mut head = batch_prefix(&parcel)?;
        // Small batches travel as one buffer (a syscall costs more than the copy); large ones
        // as the header then the encoded items, which are never copied.
        let sent = if parcel.item_bytes().len() <= 64 << 10 {
            head.extend_from_slice(parcel.item_bytes());
            out.send(head, None)
        } else {
            out.send(head, Some(parcel))
        };
        sent.map_err(|e| backend_err(format!("worker process {} is gone: {e}", self.pid)))
    }

    /// Ends the job on this worker; the socket stays open, for the worker's next job.
    fn close(&mut self) {
        if let Some(out) = self.outbox.take() {
            if let Ok(frame) = encode_frame(&ToWorker::EndJob) {
                let _ = out.send(frame, None);
            }
        }
    }

    fn cancel(&mut self) {
        self.outbox = None;
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine_core::batch::Batch;

    #[test]
    fn batch_frames_are_to_worker_batch_messages_with_their_items() {
        let b = EncodedBatch::encode(&Batch { seq: 3, start: 40, items: vec![1u64, 2, 300] }).unwrap();
        let mut frame = batch_prefix(&b).unwrap();
        frame.extend_from_slice(b.item_bytes());
        let mut r = &frame[..];
        let payload = engine_core::wire::read_frame(&mut r, 1 << 20).unwrap().unwrap();
        let (msg, tail) = split_frame::<ToWorker>(&payload).unwrap();
        match msg {
            ToWorker::Batch { seq, start, count } => {
                assert_eq!((seq, start, count), (3, 40, 3));
                assert_eq!(decode_seq::<u64>(tail, 3).unwrap(), vec![1, 2, 300]);
            }
            other => panic!("{other:?}"),
        }
    }
}
