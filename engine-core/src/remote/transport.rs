//! A worker's connection to its driver, as the worker protocol sees it.

use super::protocol::{FromWorker, ToWorker};
use crate::error::Result;
use crate::remote::wire::{encode_msg, split_frame};
use serde::Deserialize;

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

    /// [`recv`](Self::recv), and with the message room for the tail of the next message sent,
    /// in the transport's own memory (memory shared with the peer, which reads the tail where
    /// it lies): `room_for` gets the message's payload and says how many bytes (`0`: none).
    /// A worker writes a batch's plain outputs straight into the room while it reads the
    /// batch's items where they arrived, then sends them with
    /// [`send_in_place`](Self::send_in_place). The room is `None` (the default) when the
    /// transport has no such memory, or not that much free now: send the tail with `send`.
    #[allow(clippy::type_complexity)]
    fn recv_with_room(
        &mut self,
        room_for: &dyn Fn(&[u8]) -> usize,
    ) -> std::io::Result<Option<(Incoming<'_>, Option<&mut [u8]>)>> {
        let _ = room_for;
        Ok(self.recv()?.map(|m| (m, None)))
    }

    /// Sends `head` with the first `len` bytes of the room lent with the last message
    /// received ([`recv_with_room`](Self::recv_with_room)) as its tail. An error when no room
    /// was lent (the default) or `len` is more than it.
    fn send_in_place(&mut self, head: &[u8], len: usize) -> std::io::Result<()> {
        let _ = (head, len);
        Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "this transport lends no room for tails"))
    }
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

pub(super) fn send_msg(t: &mut dyn Transport, msg: &FromWorker) -> std::result::Result<(), String> {
    let head = encode_msg(msg).map_err(|e| e.to_string())?;
    t.send(&head, &[]).map_err(io_err)
}

/// The next message and its tail; `None` when the driver is gone.
pub(super) fn recv_msg(t: &mut dyn Transport) -> std::result::Result<Option<(ToWorker, &[u8])>, String> {
    let Some(incoming) = t.recv().map_err(io_err)? else { return Ok(None) };
    let (msg, tail) = incoming.split::<ToWorker>().map_err(|e| format!("bad message from the driver: {e}"))?;
    Ok(Some((msg, tail)))
}

pub(super) fn io_err(e: std::io::Error) -> String {
    format!("connection to the driver failed: {e}")
}

/// Reads and drops the rest of a job this worker cannot run.
pub(super) fn skip_job(t: &mut dyn Transport) -> std::result::Result<(), String> {
    loop {
        match recv_msg(t)?.map(|(m, _)| m) {
            Some(ToWorker::EndJob) => return send_msg(t, &FromWorker::JobEnded),
            Some(_) => {}
            None => return Ok(()),
        }
    }
}
