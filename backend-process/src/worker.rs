//! One worker process as the driver sees it: spawning it, its link (the socket's write half)
//! and the reader thread that turns its frames into engine events.

use crate::cleanup;
use crate::hook::{ENV_PARENT_PID, ENV_WORKER_FD, WORKER_FD};
use crate::outbox::Outbox;
use crossbeam_channel::Sender;
use engine_core::batch::{BatchDone, Event};
use engine_core::dispatch::{Parcel, WorkerLink};
use engine_core::remote::{fingerprint, FromWorker, ToWorker};
use engine_core::wire::{
    decode_seq, encode_frame, frame_prefix, read_frame, split_frame, EncodedBatch, LOCAL_MAX_FRAME,
};
use engine_core::{Error, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::de::DeserializeOwned;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

fn backend_err(message: String) -> Error {
    Error::Backend { backend: "process", message }
}

/// Starts this executable as a worker, connected to us by a socketpair given as its stdin.
///
/// No `pre_exec` hook: without one the standard library spawns with `posix_spawn` (vfork and
/// exec), whose cost does not grow with the driver's memory, where `fork` copies its page
/// tables (measured: 130 ms per worker for a driver holding 3 GiB). The worker arms
/// `PR_SET_PDEATHSIG` itself, first thing in its pre-main hook.
fn spawn_process(exe: &Path) -> Result<(Child, UnixStream)> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| backend_err(format!("cannot create a socketpair: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.env(ENV_WORKER_FD, WORKER_FD.to_string())
        .env(ENV_PARENT_PID, std::process::id().to_string())
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)));
    let child = cmd.spawn().map_err(|e| backend_err(format!("cannot start worker process {}: {e}", exe.display())))?;
    cleanup::track(child.id() as i32);
    Ok((child, ours))
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

/// Spawns the workers of one job (and their replacements).
pub(crate) struct Spawner<O> {
    pub(crate) exe: std::path::PathBuf,
    pub(crate) frames: Arc<JobFrames>,
    pub(crate) events: Sender<Event<O>>,
    pub(crate) readers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl<O: DeserializeOwned + Send + 'static> Spawner<O> {
    /// Starts worker `w`: the process, its handshake and job, and its reader thread.
    pub(crate) fn spawn(&self, w: usize) -> Result<ProcLink> {
        let (child, stream) = spawn_process(&self.exe)?;
        let pid = child.id() as i32;
        let reader = stream.try_clone().map_err(|e| backend_err(format!("cannot clone a socket: {e}")))?;
        let (outbox, writer_thread) = Outbox::new(stream, format!("adparallelengine-writer-{w}"))
            .map_err(|e| backend_err(format!("cannot start a writer thread: {e}")))?;
        let hello = encode_frame(&ToWorker::Hello { fingerprint: fingerprint().to_string(), worker: w })?;
        let mut start = hello;
        start.extend_from_slice(&self.frames.job);
        let sent = outbox.send(start, None);
        let events = self.events.clone();
        let handle = std::thread::Builder::new()
            .name(format!("adparallelengine-reader-{w}"))
            .spawn(move || read_worker(w, child, reader, events))
            .map_err(|e| backend_err(format!("cannot start a reader thread: {e}")))?;
        if let Ok(mut g) = self.readers.lock() {
            g.push(handle);
            g.push(writer_thread);
        }
        if let Err(e) = sent {
            // The reader reports the process's end; this link is dead.
            tracing::warn!(worker = w, error = %e, "cannot send the job to a new worker");
        }
        tracing::debug!(worker = w, pid, "worker process started");
        Ok(ProcLink { outbox: Some(outbox), pid })
    }
}

/// The reader thread of one worker: frames to events, then the process's end.
fn read_worker<O: DeserializeOwned>(w: usize, mut child: Child, stream: UnixStream, events: Sender<Event<O>>) {
    let mut r = BufReader::with_capacity(1 << 16, stream);
    let mut ended = false;
    let mut trouble: Option<String> = None;
    loop {
        let payload = match read_frame(&mut r, LOCAL_MAX_FRAME) {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                trouble = Some(format!("connection failed: {e}"));
                break;
            }
        };
        let event = match split_frame::<FromWorker>(&payload) {
            Ok((FromWorker::Hello { .. }, _)) => continue,
            Ok((FromWorker::JobEnded, _)) => {
                ended = true;
                continue;
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

    fn close(&mut self) {
        if let Some(out) = self.outbox.take() {
            if let Ok(frame) = encode_frame(&ToWorker::EndJob) {
                let _ = out.send(frame, None);
            }
            out.shutdown();
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
        let payload = read_frame(&mut r, 1 << 20).unwrap().unwrap();
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
