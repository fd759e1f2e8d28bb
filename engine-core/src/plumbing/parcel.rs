//! [`Parcel`]: what a worker link carries for one batch.

use super::batch::Batch;

/// What a link carries for one batch: the batch itself (threads) or its encoding (processes).
pub trait Parcel: Send + Sized {
    /// The batch's sequence number.
    fn seq(&self) -> u64;
    /// Index of its first item.
    fn start(&self) -> usize;
    /// Number of items.
    fn len(&self) -> usize;
    /// Whether it holds no item.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A copy kept while it is in flight, to resend it if its worker dies. `None` (the    /// default): workers of this kind cannot die alone, and nothing is kept.
    fn keep(&self) -> Option<Self> {
        None
    }
    /// About how many bytes its items take in the driver while it is in flight (their
    /// encoding, or their shallow in-memory size), for
    /// [`Batcher::observe_bytes`](crate::Batcher::observe_bytes). `0` (the default):
    /// unknown, and only the outputs' size counts.
    fn bytes(&self) -> usize {
        0
    }
    /// Splits into one parcel per item, to find the item that kills its worker.
    fn split(self) -> Vec<Self> {
        vec![self]
    }
}

impl<I: Send> Parcel for Batch<I> {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn start(&self) -> usize {
        self.start
    }
    fn len(&self) -> usize {
        self.items.len()
    }
    fn bytes(&self) -> usize {
        self.items.len() * std::mem::size_of::<I>()
    }
}
