//! Batching modes and the [`Batcher`] trait that sizes batches as workers ask for them.

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How items are grouped into batches, each batch going to one worker in one message.
///
/// | mode | Python original | batches |
/// |---|---|---|
/// | [`Batching::None`] | `batched=False` | one item per batch |
/// | [`Batching::PerWorker`] | `batched=True` | workers × `batch_multiplier` |
/// | [`Batching::Batches`]`(n)` | `batched=16` | `n` batches of nearly equal size |
/// | [`Batching::ChunkSize`]`(c)` | – | batches of `c` items |
/// | [`Batching::Auto`] (default) | – | adaptive: sized to a target batch duration |
///
/// The Python original defaults to one item per message; we default to `Auto`, which starts at one item
/// and grows batches until each takes about the backend's target duration (as joblib does),
/// so tiny items are not drowned in per-message overhead and slow items still spread.
///
/// ```
/// use adparallelengine_core::Batching;
/// assert_eq!(Batching::from(true), Batching::PerWorker);
/// assert_eq!(Batching::from(16), Batching::Batches(16));
/// assert_eq!("False".parse::<Batching>().unwrap(), Batching::None);
/// assert_eq!("auto".parse::<Batching>().unwrap(), Batching::Auto);
/// assert_eq!("chunk:100".parse::<Batching>().unwrap(), Batching::ChunkSize(100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Batching {
    /// One item per batch.
    None,
    /// `workers × batch_multiplier` batches of nearly equal size (needs the length).
    PerWorker,
    /// This many batches of nearly equal size (needs the length).
    Batches(usize),
    /// Batches of this many items.
    ChunkSize(usize),
    /// Adaptive batch size aiming at the backend's target batch duration.
    #[default]
    Auto,
}

impl Batching {
    fn needs_length(&self) -> bool {
        matches!(self, Batching::PerWorker | Batching::Batches(_))
    }
}

impl From<bool> for Batching {
    fn from(b: bool) -> Self {
        if b {
            Batching::PerWorker
        } else {
            Batching::None
        }
    }
}

impl From<usize> for Batching {
    fn from(n: usize) -> Self {
        Batching::Batches(n)
    }
}

impl fmt::Display for Batching {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Batching::None => f.write_str("False"),
            Batching::PerWorker => f.write_str("True"),
            Batching::Batches(n) => write!(f, "{n}"),
            Batching::ChunkSize(c) => write!(f, "chunk:{c}"),
            Batching::Auto => f.write_str("auto"),
        }
    }
}

impl FromStr for Batching {
    type Err = Error;
    /// Parses the Python original's spellings: `True`/`False`, a number of batches, `auto`, `chunk:N`.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "true" => return Ok(Batching::PerWorker),
            "false" | "none" => return Ok(Batching::None),
            "auto" => return Ok(Batching::Auto),
            _ => {}
        }
        if let Some(c) = t.strip_prefix("chunk:") {
            return c
                .parse::<usize>()
                .ok()
                .filter(|c| *c > 0)
                .map(Batching::ChunkSize)
                .ok_or_else(|| Error::Config(format!("bad chunk size in batching {s:?}")));
        }
        t.parse::<usize>().ok().filter(|n| *n > 0).map(Batching::Batches).ok_or_else(|| {
            Error::Config(format!(
                "bad batching {s:?}: expected True, False, auto, a positive number of batches, or chunk:N"
            ))
        })
    }
}

/// Decides the size of each batch, as workers ask for them. Implement it for a custom policy
/// and pass it with `Job::batcher`.
pub trait Batcher: Send {
    /// Size of the next batch (at least 1). `remaining` is the number of items not yet cut,
    /// when the length is known.
    fn next_size(&mut self, remaining: Option<usize>) -> usize;
    /// Feedback: a batch of `items` items kept a worker busy for `busy`.
    fn observe(&mut self, _items: usize, _busy: Duration) {}
    /// Feedback: a batch of `items` items, as cut, takes about `bytes` bytes in the driver
    /// (its items as sent, encoded on out-of-process backends, plus the shallow size of its
    /// outputs). Called once per batch, when it is cut; `Batching::Auto` caps its batches with it.
    fn observe_bytes(&mut self, _items: usize, _bytes: usize) {}
}

/// Most items in one [`Adaptive`] batch, whatever their speed.
pub(crate) const AUTO_MAX_ITEMS: usize = 1 << 16;

/// Most bytes (as reported by [`Batcher::observe_bytes`]) in one [`Adaptive`] batch.
pub(crate) const AUTO_MAX_BYTES: usize = 1 << 20;

/// Always the same size.
#[derive(Debug, Clone)]
pub struct FixedSize(pub usize);

impl Batcher for FixedSize {
    fn next_size(&mut self, _remaining: Option<usize>) -> usize {
        self.0.max(1)
    }
}

/// Exactly `n` batches (fewer when there are fewer items), sizes differing by at most one.
#[derive(Debug, Clone)]
pub struct EvenSplit {
    batches_left: usize,
}

impl EvenSplit {
    /// Splits into `n` batches.
    pub fn new(n: usize) -> Self {
        EvenSplit { batches_left: n.max(1) }
    }
}

impl Batcher for EvenSplit {
    fn next_size(&mut self, remaining: Option<usize>) -> usize {
        let remaining = remaining.unwrap_or(1);
        let left = self.batches_left.max(1);
        self.batches_left = left.saturating_sub(1).max(1);
        remaining.div_ceil(left).max(1)
    }
}

/// Adaptive batching: each batch should keep a worker busy for about `target`, within a
/// ceiling in items and in bytes.
///
/// Starts at one item, measures the time per item from completed batches (moving average) and
/// sizes the next batch to the target. With a known length it never cuts more than a
/// `1 / (2 × workers)` share of what remains, so the last batches shrink and workers finish
/// together (guided scheduling), down to batches that take a twentieth of the target time:
/// items so fast that the ceiling caps their batches get no shrinking tail at all.
///
/// **The ceiling.** A batch never holds more than 65,536 items, nor more than about 1 MiB:
/// the bytes per item seen so far ([`Batcher::observe_bytes`]: the items as sent plus the
/// shallow size of the outputs, a moving average) times the batch's length. Time alone grew
/// batches of 1 ns items to millions of items (a 20 ms target), and the driver holds several
/// batches at once (the prefetch window, an ordered stream's reorder window, a copy of each
/// batch in flight for retries), so a ten-million-item stream on processes peaked at 170 MiB
/// in the driver and ran 2.5× slower than fixed batches of 10,000: batches that big leave
/// the caches and fault fresh pages in for every one. Past a few tens of thousands of tiny
/// items a batch's per-message cost (some microseconds) is already under a few percent of its
/// work, so the ceiling costs no speed; it bounds what a job holds at any moment to the
/// windows (in batches) times 1 MiB, whatever the stream's length. 1 MiB stays well inside
/// the process backend's 64 MiB shared-memory rings (tails from 32 KiB travel there) and is
/// a small frame for every transport. The ceiling never raises a batch: slow items still
/// shrink it to one.
#[derive(Debug, Clone)]
pub struct Adaptive {
    target: Duration,
    workers: usize,
    per_item_ns: Option<f64>,
    per_item_bytes: Option<f64>,
    max_items: usize,
    max_bytes: usize,
}

impl Adaptive {
    /// A batcher aiming at `target` per batch, for `workers` workers.
    pub fn new(target: Duration, workers: usize) -> Self {
        Adaptive {
            target,
            workers: workers.max(1),
            per_item_ns: None,
            per_item_bytes: None,
            max_items: AUTO_MAX_ITEMS,
            max_bytes: AUTO_MAX_BYTES,
        }
    }

    /// The most items the next batch may hold: the item ceiling, lowered by the byte ceiling
    /// once item sizes are known. At least 1.
    fn ceiling(&self) -> usize {
        let by_bytes = match self.per_item_bytes {
            Some(b) if b >= 1.0 => (self.max_bytes as f64 / b) as usize,
            _ => usize::MAX,
        };
        self.max_items.min(by_bytes).max(1)
    }
}

impl Batcher for Adaptive {
    fn next_size(&mut self, remaining: Option<usize>) -> usize {
        // Items per batch by time alone, then under the ceiling.
        let by_time = match self.per_item_ns {
            None => 1,
            Some(ns) => {
                let n = self.target.as_nanos() as f64 / ns.max(0.01);
                n.clamp(1.0, 1e9) as usize
            }
        };
        let ceiling = self.ceiling();
        let ideal = by_time.min(ceiling);
        // Guided tail, down to batches of a twentieth of the target *time*: smaller ones
        // would cost more in messages than they gain in balance (a million tiny items ended
        // in some twenty batches of a few items each, a round trip apiece). The floor is
        // taken from the time, not from the capped size: when the ceiling binds (1 ns items:
        // 65,536 of them take 65 µs, a twentieth of 20 ms is a million), a tail split below
        // the ceiling only adds messages (some 40 µs each on processes, for a worker's 65 µs
        // of work): half of such a job's batches were its tail.
        let floor = (by_time / 20).clamp(1, ceiling);
        match remaining {
            Some(r) => ideal.min(r.div_ceil(2 * self.workers)).max(floor).min(r.max(1)),
            None => ideal,
        }
    }

    fn observe(&mut self, items: usize, busy: Duration) {
        if items == 0 {
            return;
        }
        let ns = busy.as_nanos().max(1) as f64 / items as f64;
        self.per_item_ns = Some(match self.per_item_ns {
            None => ns,
            Some(old) => 0.5 * old + 0.5 * ns,
        });
    }

    fn observe_bytes(&mut self, items: usize, bytes: usize) {
        if items == 0 {
            return;
        }
        let b = bytes as f64 / items as f64;
        self.per_item_bytes = Some(match self.per_item_bytes {
            None => b,
            Some(old) => 0.5 * old + 0.5 * b,
        });
    }
}

/// Builds the batcher for a mode. Fails when the mode needs a length and none is known.
pub fn batcher_for(
    mode: Batching,
    length: Option<usize>,
    workers: usize,
    multiplier: usize,
    auto_target: Duration,
) -> Result<Box<dyn Batcher>> {
    if mode.needs_length() && length.is_none() {
        let mode = match mode {
            Batching::PerWorker => "`batched(true)` (one even batch per worker)".to_string(),
            Batching::Batches(n) => format!("`batched({n})` ({n} even batches)"),
            other => format!("{other:?}"),
        };
        return Err(Error::NeedsLength { mode });
    }
    Ok(match mode {
        Batching::None => Box::new(FixedSize(1)),
        Batching::PerWorker => Box::new(EvenSplit::new(workers.max(1) * multiplier.max(1))),
        Batching::Batches(n) => {
            if n == 0 {
                return Err(Error::Config("Batching::Batches(0): need at least one batch".into()));
            }
            Box::new(EvenSplit::new(n))
        }
        Batching::ChunkSize(c) => {
            if c == 0 {
                return Err(Error::Config("Batching::ChunkSize(0): chunks need at least one item".into()));
            }
            Box::new(FixedSize(c))
        }
        Batching::Auto => Box::new(Adaptive::new(auto_target, workers)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(mut b: Box<dyn Batcher>, total: usize) -> Vec<usize> {
        let mut left = total;
        let mut out = vec![];
        while left > 0 {
            let s = b.next_size(Some(left)).min(left);
            out.push(s);
            left -= s;
        }
        out
    }

    #[test]
    fn even_split_gives_exactly_n_batches() {
        let s = sizes(Box::new(EvenSplit::new(4)), 6);
        assert_eq!(s, vec![2, 2, 1, 1]);
        let s = sizes(Box::new(EvenSplit::new(16)), 6);
        assert_eq!(s, vec![1; 6]);
        let s = sizes(Box::new(EvenSplit::new(3)), 1000);
        assert_eq!(s, vec![334, 333, 333]);
    }

    #[test]
    fn needs_length() {
        let e = batcher_for(Batching::PerWorker, None, 2, 1, Duration::from_millis(1));
        match e {
            Err(e @ Error::NeedsLength { .. }) => assert!(e.to_string().contains("`batched(true)`"), "{e}"),
            other => panic!("{:?}", other.err()),
        }
        assert!(batcher_for(Batching::Auto, None, 2, 1, Duration::from_millis(1)).is_ok());
        assert!(batcher_for(Batching::Batches(0), Some(3), 2, 1, Duration::from_millis(1)).is_err());
    }

    #[test]
    fn adaptive_grows_to_target_and_shrinks_at_the_tail() {
        let mut a = Adaptive::new(Duration::from_millis(1), 2);
        assert_eq!(a.next_size(Some(1_000_000)), 1);
        a.observe(1, Duration::from_micros(1));
        // 1 µs per item -> about 1000 items per 1 ms batch.
        assert_eq!(a.next_size(Some(1_000_000)), 1000);
        // Never more than remaining / (2 × workers).
        assert_eq!(a.next_size(Some(400)), 100);
        assert_eq!(a.next_size(None), 1000);
    }

    #[test]
    fn adaptive_never_grows_past_its_item_ceiling() {
        let mut a = Adaptive::new(Duration::from_millis(20), 2);
        for _ in 0..50 {
            let n = a.next_size(None);
            assert!(n <= AUTO_MAX_ITEMS, "{n} items");
            // 1 ns per item would ask for 20 million items per 20 ms batch.
            a.observe(n, Duration::from_nanos(n as u64));
        }
        assert_eq!(a.next_size(None), AUTO_MAX_ITEMS);
        assert_eq!(a.next_size(Some(usize::MAX / 2)), AUTO_MAX_ITEMS);
    }

    #[test]
    fn adaptive_never_grows_past_its_byte_ceiling() {
        let mut a = Adaptive::new(Duration::from_millis(20), 2);
        for _ in 0..50 {
            let n = a.next_size(None);
            // 64-byte items (in plus out): 1 MiB is 16,384 of them.
            a.observe_bytes(n, 64 * n);
            a.observe(n, Duration::from_nanos(n as u64));
            assert!(n * 64 <= AUTO_MAX_BYTES, "{n} items of 64 bytes");
        }
        assert_eq!(a.next_size(None), AUTO_MAX_BYTES / 64);
        // Items bigger than the ceiling go one per batch.
        a.observe_bytes(1, 4 * AUTO_MAX_BYTES);
        a.observe_bytes(1, 4 * AUTO_MAX_BYTES);
        assert_eq!(a.next_size(None), 1);
    }

    #[test]
    fn adaptive_tail_is_not_split_below_the_ceiling_for_items_it_caps() {
        // 1 ns items on a 20 ms target: the ceiling (65,536) binds, and a twentieth of the
        // target is a million items, so the tail keeps full batches until what is left.
        let mut a = Adaptive::new(Duration::from_millis(20), 2);
        a.observe(1000, Duration::from_micros(1));
        a.observe_bytes(1000, 16_000);
        assert_eq!(a.next_size(Some(100_000)), AUTO_MAX_ITEMS);
        assert_eq!(a.next_size(Some(34_464)), 34_464, "the rest, never more");
        let s = sizes(Box::new(a), 1_000_000);
        assert_eq!(s.len(), 16, "{s:?}");
        assert_eq!(s.iter().sum::<usize>(), 1_000_000);
        // 10 µs items: 2,000 per batch by time, under the ceiling: the tail still shrinks,
        // down to 100 (a twentieth).
        let mut b = Adaptive::new(Duration::from_millis(20), 2);
        b.observe(1, Duration::from_micros(10));
        assert_eq!(b.next_size(Some(1_000_000)), 2000);
        assert_eq!(b.next_size(Some(2000)), 500);
        assert_eq!(b.next_size(Some(200)), 100);
    }

    #[test]
    fn adaptive_still_shrinks_to_one_for_slow_items() {
        let mut a = Adaptive::new(Duration::from_millis(20), 2);
        a.observe(1, Duration::from_nanos(1));
        a.observe_bytes(1, 8);
        assert_eq!(a.next_size(None), AUTO_MAX_ITEMS);
        // The items turn slow: 100 ms each.
        for _ in 0..10 {
            let n = a.next_size(None);
            a.observe(n, Duration::from_millis(100) * n as u32);
        }
        assert_eq!(a.next_size(None), 1);
        assert_eq!(a.next_size(Some(10)), 1);
    }

    #[test]
    fn parse_rejects_nonsense() {
        assert!("0".parse::<Batching>().is_err());
        assert!("maybe".parse::<Batching>().is_err());
        assert!("chunk:0".parse::<Batching>().is_err());
        assert_eq!("16".parse::<Batching>().unwrap(), Batching::Batches(16));
    }
}
