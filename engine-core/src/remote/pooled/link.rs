//! The driver's end of one pooled worker in a job: sends its batches, ends or cancels its job.

use super::ConnHandle;
use crate::plumbing::{Parcel, WorkerLink};
use crate::remote::outbox::Outbox;
use crate::remote::wire::{encode_frame, frame_prefix, EncodedBatch};
use crate::remote::{SentBatches, ToWorker};
use crate::{Error, Result};

/// The start of a batch's frame: its header ([`EncodedBatch::header`]); the encoded items
/// follow.
pub(crate) fn batch_prefix(p: &EncodedBatch) -> Result<Vec<u8>> {
    frame_prefix(&p.header(), p.item_bytes().len())
}

/// A job's link to one pooled worker.
pub struct ConnLink<H: ConnHandle> {
    pub(crate) backend: &'static str,
    pub(crate) outbox: Option<Outbox>,
    pub(crate) handle: H,
    /// What was sent, for the reader to check each answer against.
    pub(crate) sent: SentBatches,
}

impl<H: ConnHandle> ConnLink<H> {
    fn gone(&self, e: impl std::fmt::Display) -> Error {
        Error::Backend { backend: self.backend, message: format!("{} is gone: {e}", self.handle.name()) }
    }
}

impl<H: ConnHandle> WorkerLink<EncodedBatch> for ConnLink<H> {
    fn send(&mut self, parcel: EncodedBatch) -> Result<()> {
        let Some(out) = self.outbox.as_ref() else { return Err(self.gone("batch sent to a closed worker")) };
        // Before it leaves: the answer may come back before `send` returns.
        self.sent.record(parcel.seq(), parcel.start(), parcel.len());
        if let Some(frame) = self.handle.apart(&parcel)? {
            return out.send(frame, None).map_err(|e| self.gone(e));
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
        sent.map_err(|e| self.gone(e))
    }

    /// The worker's side channel lends room only while the worker is there to be sent to:
    /// a batch cut into it must be the next frame on the connection.
    fn room(&mut self, bytes: usize) -> Option<crate::plumbing::Room> {
        self.outbox.as_ref()?;
        self.handle.room(bytes)
    }

    /// Ends the job on this worker; the connection stays open, for the worker's next job.
    fn close(&mut self) {
        if let Some(out) = self.outbox.take() {
            if let Ok(frame) = encode_frame(&ToWorker::EndJob) {
                let _ = out.send(frame, None);
            }
        }
    }

    fn cancel(&mut self) {
        match self.handle.cancel() {
            true => self.close(),
            false => self.outbox = None,
        }
    }

    /// An item overran its time: the worker is stopped, whatever a cancel would do.
    fn kill(&mut self) {
        self.outbox = None;
        self.handle.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plumbing::batch::Batch;

    #[test]
    fn batch_frames_are_to_worker_batch_messages_with_their_items() {
        let b = EncodedBatch::encode(Batch { seq: 3, start: 40, items: vec![1u64, 2, 300] }).unwrap();
        let mut frame = batch_prefix(&b).unwrap();
        frame.extend_from_slice(b.item_bytes());
        let mut r = &frame[..];
        let payload = crate::remote::wire::read_frame(&mut r, 1 << 20).unwrap().unwrap();
        let (msg, tail) = crate::remote::wire::split_frame::<ToWorker>(&payload).unwrap();
        match msg {
            ToWorker::Batch { seq, start, count } => {
                assert_eq!((seq, start, count), (3, 40, 3));
                assert_eq!(crate::remote::wire::decode_items::<u64>(tail, 3).unwrap(), vec![1, 2, 300]);
            }
            other => panic!("{other:?}"),
        }
    }
}
