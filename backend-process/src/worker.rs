//! One worker process as the driver sees it: spawning it, its link (the socket's write half)
//! and the reader thread that turns its frames into engine events.

use crate::cleanup;
use crate::pool::{Pool, Proc, Rings};
use crate::shm::{apart_frame, split_apart, RingWriter, APART_MIN};
use crossbeam_channel::Sender;
use engine_core::batch::Event;
use engine_core::dispatch::{Parcel, WorkerLink};
use engine_core::outbox::Outbox;
use engine_core::remote::{fingerprint, hear, Heard, Incoming, ToWorker};
use engine_core::wire::{encode_frame, encode_msg, frame_prefix, read_frame_into, EncodedBatch, LOCAL_MAX_FRAME};
use engine_core::{Error, Placement, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::de::DeserializeOwned;
use std::io::BufReader;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
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
    /// Where plain-number outputs go straight to (`run` jobs).
    pub(crate) placement: Option<Placement<O>>,
    pub(crate) frames: Arc<JobFrames>,
    pub(crate) events: Sender<Event<O>>,
    pub(crate) readers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl<O: DeserializeOwned + Send + 'static> Spawner<O> {
    /// Starts worker `w`: a process (its handshake if new), the job, and its reader thread.
    pub(crate) fn spawn(&self, w: usize) -> Result<ProcLink> {
        let (Proc { child, stream, rings }, warm) = self.pool.take()?;
        let ring = rings.as_ref().map(|r| Arc::clone(&r.to_worker));
        let pid = child.id() as i32;
        let reader = stream.try_clone().map_err(|e| backend_err(format!("cannot clone a socket: {e}")))?;
        let outbox = Outbox::new(
            std::os::fd::OwnedFd::from(stream),
            format!("adparallelengine-writer-{w}"),
            Arc::clone(&self.readers),
        );
        let mut start = match warm {
            true => Vec::new(),
            false => encode_frame(&ToWorker::Hello { fingerprint: fingerprint().to_string(), worker: w })?,
        };
        start.extend_from_slice(&self.frames.job);
        let sent = outbox.send(start, None);
        let events = self.events.clone();
        let pool = Arc::clone(&self.pool);
        let placement = self.placement.clone();
        let handle = std::thread::Builder::new()
            .name(format!("adparallelengine-reader-{w}"))
            .spawn(move || read_worker(w, Proc { child, stream: reader, rings }, events, placement, &pool))
            .map_err(|e| backend_err(format!("cannot start a reader thread: {e}")))?;
        if let Ok(mut g) = self.readers.lock() {
            g.push(handle);
        }
        if let Err(e) = sent {
            // The reader reports the process's end; this link is dead.
            tracing::warn!(worker = w, error = %e, "cannot send the job to a new worker");
        }
        tracing::debug!(worker = w, pid, warm, "worker process joined the job");
        Ok(ProcLink { outbox: Some(outbox), pid, ring })
    }
}

/// The reader thread of one worker in a job: frames to events until the worker says the job
/// ended (then it goes back to the pool) or its process ends (reported as `Lost`).
fn read_worker<O: DeserializeOwned + 'static>(
    w: usize,
    proc: Proc,
    events: Sender<Event<O>>,
    placement: Option<Placement<O>>,
    pool: &Pool,
) {
    let Proc { mut child, stream, mut rings } = proc;
    let mut r = BufReader::with_capacity(1 << 16, stream);
    let mut ended = false;
    let mut trouble: Option<String> = None;
    // One buffer for every frame of this worker: no fresh pages per batch.
    let mut payload = Vec::new();
    loop {
        let apart = match read_frame_into(&mut r, LOCAL_MAX_FRAME, &mut payload) {
            Ok(Some(apart)) => apart,
            Ok(None) => break,
            Err(e) => {
                trouble = Some(format!("connection failed: {e}"));
                break;
            }
        };
        let incoming = match incoming(&payload, apart, rings.as_ref()) {
            Ok(i) => i,
            Err(e) => {
                trouble = Some(format!("bad frame: {e}"));
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                break;
            }
        };
        let event = match hear::<O>(w, incoming, placement.as_ref()) {
            Heard::Nothing => continue,
            Heard::JobEnded => {
                // In good order, and nothing unread: the worker can serve another job.
                if r.buffer().is_empty() {
                    pool.give_back(Proc { child, stream: r.into_inner(), rings });
                    return;
                }
                tracing::warn!(worker = w, "worker sent data after the end of its job; stopping it");
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                ended = true;
                break;
            }
            Heard::Event(ev) => ev,
        };
        // The tail has been decoded: its space in the ring can be reused.
        if let (true, Some(rings)) = (apart, rings.as_mut()) {
            rings.to_driver.release();
        }
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

/// A frame from a worker as a message: its tail in the frame, or in the shared ring.
fn incoming<'a>(payload: &'a [u8], apart: bool, rings: Option<&'a Rings>) -> std::io::Result<Incoming<'a>> {
    if !apart {
        return Ok(Incoming { payload, bulk: None });
    }
    let Some(rings) = rings else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a tail in shared memory, but none is mapped",
        ));
    };
    let (head, at, len) = split_apart(payload)?;
    Ok(Incoming { payload: head, bulk: Some(rings.to_driver.get(at, len)?) })
}

/// The driver's end of one worker process.
pub(crate) struct ProcLink {
    outbox: Option<Outbox>,
    pid: i32,
    /// The worker's shared ring for large batches.
    ring: Option<Arc<Mutex<RingWriter>>>,
}

impl ProcLink {
    /// Puts a large batch's items in the worker's shared ring; the frame to send, if it fit.
    fn apart(&self, parcel: &EncodedBatch) -> Result<Option<Vec<u8>>> {
        let items = parcel.item_bytes();
        let Some(ring) = self.ring.as_ref().filter(|_| items.len() >= APART_MIN) else { return Ok(None) };
        let Some(at) = ring.lock().ok().and_then(|mut r| r.put(items)) else { return Ok(None) };
        let head = encode_msg(&ToWorker::Batch { seq: parcel.seq(), start: parcel.start(), count: parcel.len() })?;
        Ok(Some(apart_frame(&head, at, items.len())))
    }
}

impl WorkerLink<EncodedBatch> for ProcLink {
    fn send(&mut self, parcel: EncodedBatch) -> Result<()> {
        let out = self.outbox.as_ref().ok_or_else(|| backend_err("batch sent to a closed worker".into()))?;
        if let Some(frame) = self.apart(&parcel)? {
            return out.send(frame, None).map_err(|e| backend_err(format!("worker process {} is gone: {e}", self.pid)));
        }
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
        let b = EncodedBatch::encode(Batch { seq: 3, start: 40, items: vec![1u64, 2, 300] }).unwrap();
        let mut frame = batch_prefix(&b).unwrap();
        frame.extend_from_slice(b.item_bytes());
        let mut r = &frame[..];
        let payload = engine_core::wire::read_frame(&mut r, 1 << 20).unwrap().unwrap();
        let (msg, tail) = engine_core::wire::split_frame::<ToWorker>(&payload).unwrap();
        match msg {
            ToWorker::Batch { seq, start, count } => {
                assert_eq!((seq, start, count), (3, 40, 3));
                assert_eq!(engine_core::wire::decode_items::<u64>(tail, 3).unwrap(), vec![1, 2, 300]);
            }
            other => panic!("{other:?}"),
        }
    }
}
