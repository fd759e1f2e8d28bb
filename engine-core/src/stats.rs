//! Per-item and per-job statistics (the Python original's `times` and `peak_mem_allocations`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Time and memory of one item, when per-item stats are asked for (`Job::item_stats(true)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ItemStats {
    /// Wall time of the call.
    pub time: Duration,
    /// Peak bytes allocated by the call above what its thread held when it started (the    /// the Python original's tracemalloc peak). `None` unless [`CountingAllocator`] is the global allocator.
    pub peak_alloc: Option<u64>,
}

/// One batch as it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStat {
    /// Index of its first item.
    pub start: usize,
    /// Number of items.
    pub len: usize,
    /// Worker that ran it.
    pub worker: usize,
    /// Time the worker spent on it.
    pub busy: Duration,
}

/// Where a job leaves its stats for `Engine::last_stats`.
pub(crate) type StatsSink = std::sync::Arc<std::sync::Mutex<Option<JobStats>>>;

/// Statistics of one job, from `Engine::last_stats`.
///
/// Batch-level figures are always collected (two clock reads per batch). Per-item figures
/// cost two clock reads per item, which is more than a tiny item itself, so they are opt-in.
#[derive(Debug, Clone, Default)]
pub struct JobStats {
    /// Wall time from the start of the job to its last result.
    pub wall: Duration,
    /// Time from the start of the job to its first output back (`None`: no output came).
    pub first_result: Option<Duration>,
    /// Items whose result came back.
    pub items_done: usize,
    /// Items whose output was read back from the job's [`Journal`](crate::Journal) instead of
    /// being run (a resumed or cached job).
    pub resumed: usize,
    /// Every batch, in completion order.
    pub batches: Vec<BatchStat>,
    /// Number of workers started.
    pub workers: usize,
    per_item: Option<Vec<Option<ItemStats>>>,
}

impl JobStats {
    pub(crate) fn new(per_item: bool, len: Option<usize>) -> Self {
        JobStats { per_item: per_item.then(|| Vec::with_capacity(len.unwrap_or(0))), ..Default::default() }
    }

    pub(crate) fn record_items(&mut self, start: usize, stats: Option<Vec<ItemStats>>) {
        if let (Some(all), Some(stats)) = (self.per_item.as_mut(), stats) {
            let end = start + stats.len();
            if all.len() < end {
                all.resize(end, None);
            }
            for (slot, s) in all[start..end].iter_mut().zip(stats) {
                *slot = Some(s);
            }
        }
    }

    /// Per-item stats in input order (`None` for items that did not run), when asked for.
    pub fn items(&self) -> Option<&[Option<ItemStats>]> {
        self.per_item.as_deref()
    }

    /// The Python original's `times`: wall time of each item in input order, when per-item stats are on.
    pub fn times(&self) -> Option<Vec<Duration>> {
        self.per_item.as_ref().map(|v| v.iter().map(|s| s.map(|s| s.time).unwrap_or_default()).collect())
    }

    /// The Python original's `peak_mem_allocations`: peak bytes of each item in input order, when
    /// per-item stats are on and [`CountingAllocator`] is installed.
    pub fn peak_mem_allocations(&self) -> Option<Vec<u64>> {
        let v = self.per_item.as_ref()?;
        v.iter().map(|s| s.and_then(|s| s.peak_alloc)).collect()
    }

    /// Total time workers spent on batches.
    pub fn busy(&self) -> Duration {
        self.batches.iter().map(|b| b.busy).sum()
    }
}

static COUNTING_INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static CURRENT: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

/// A global allocator that counts bytes per thread, for per-item peak memory figures.
///
/// Opt-in, because the global allocator is the application's choice:
///
/// ```
/// #[global_allocator]
/// static ALLOC: adparallelengine_core::CountingAllocator = adparallelengine_core::CountingAllocator;
/// # fn main() {}
/// ```
///
/// It wraps the system allocator and adds two thread-local updates per allocation.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAllocator;

impl CountingAllocator {
    fn add(delta: i64) {
        let _ = CURRENT.try_with(|c| {
            let now = c.get() + delta;
            c.set(now);
            let _ = PEAK.try_with(|p| {
                if now > p.get() {
                    p.set(now)
                }
            });
        });
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the counters only touch
// `const`-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !COUNTING_INSTALLED.load(Ordering::Relaxed) {
            COUNTING_INSTALLED.store(true, Ordering::Relaxed);
        }
        Self::add(layout.size() as i64);
        // SAFETY: forwarded unchanged: the caller keeps `GlobalAlloc`'s contract for `System`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::add(-(layout.size() as i64));
        // SAFETY: forwarded unchanged: the caller keeps `GlobalAlloc`'s contract for `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::add(layout.size() as i64);
        // SAFETY: forwarded unchanged: the caller keeps `GlobalAlloc`'s contract for `System`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::add(new_size as i64 - layout.size() as i64);
        // SAFETY: forwarded unchanged: the caller keeps `GlobalAlloc`'s contract for `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Starts measuring the peak allocation of the current thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AllocMark(Option<i64>);

impl AllocMark {
    pub(crate) fn start() -> Self {
        if !COUNTING_INSTALLED.load(Ordering::Relaxed) {
            return AllocMark(None);
        }
        let now = CURRENT.with(|c| c.get());
        PEAK.with(|p| p.set(now));
        AllocMark(Some(now))
    }

    pub(crate) fn peak(self) -> Option<u64> {
        let base = self.0?;
        Some(PEAK.with(|p| p.get()).saturating_sub(base).max(0) as u64)
    }
}
