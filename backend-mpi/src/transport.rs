//! A worker rank's end of the link to the driver: engine-core's messages as MPI messages
//! exchanged with rank 0.
//!
//! One MPI message is one frame payload (head, then tail); an empty message closes the
//! connection. A worker waits for its next message by probing with a backoff (spin, yield,
//! then sleeps of up to 1 ms) rather than in a blocking receive, which MPI libraries implement
//! by polling a core at 100 %: on a machine with as many ranks as cores that would take the
//! CPU the other ranks compute with.

use adparallelengine_core::plumbing::Backoff;
use adparallelengine_core::remote::{Incoming, Transport};
use mpi::point_to_point::{Destination, Source};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Tag;
use std::io;

/// The tag of every message of the protocol.
pub(crate) const TAG: Tag = 17;

/// The driver's rank.
pub(crate) const DRIVER: i32 = 0;

/// A worker rank's connection to the driver.
pub(crate) struct RankTransport {
    world: SimpleCommunicator,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl RankTransport {
    pub(crate) fn new() -> Self {
        RankTransport { world: SimpleCommunicator::world(), buf: Vec::new(), out: Vec::new() }
    }
}

impl Transport for RankTransport {
    fn send(&mut self, head: &[u8], tail: &[u8]) -> io::Result<()> {
        // A blocking send: the driver never blocks on its sends and always drains what
        // arrives, so this cannot deadlock.
        let driver = self.world.process_at_rank(DRIVER);
        if tail.is_empty() {
            driver.send_with_tag(head, TAG);
        } else {
            self.out.clear();
            self.out.extend_from_slice(head);
            self.out.extend_from_slice(tail);
            driver.send_with_tag(&self.out[..], TAG);
        }
        Ok(())
    }

    fn recv(&mut self) -> io::Result<Option<Incoming<'_>>> {
        let driver = self.world.process_at_rank(DRIVER);
        let mut backoff = Backoff::new();
        let (msg, status) = loop {
            if let Some(found) = driver.immediate_matched_probe_with_tag(TAG) {
                break found;
            }
            backoff.wait();
        };
        let len = status.count(<u8 as mpi::datatype::Equivalence>::equivalent_datatype()).max(0) as usize;
        self.buf.resize(len, 0);
        msg.matched_receive_into(&mut self.buf[..]);
        if len == 0 {
            return Ok(None);
        }
        Ok(Some(Incoming { payload: &self.buf, bulk: None }))
    }
}
