//! Per-item peak memory (the Python original's `peak_mem_allocations`) with the counting allocator.

use adparallelengine::{task, CountingAllocator, Engine, Kind, Progress};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

task!(
    /// Allocates `x` MiB, touches it, and returns its sum.
    Alloc = |x: u64| -> u64 {
        let v = vec![1u8; (x as usize) << 20];
        v.iter().map(|b| u64::from(*b)).sum::<u64>() >> 20
    }
);

#[test]
fn peak_allocation_of_each_item_is_measured() {
    for kind in [Kind::Serial, Kind::Threads] {
        let e = Engine::builder(kind).max_workers(2).progress(Progress::quiet()).build().unwrap();
        let out = e.map(Alloc, [1u64, 8, 2, 16]).batched(false).item_stats(true).run().unwrap();
        assert_eq!(out, vec![1, 8, 2, 16]);
        let peaks = e.last_stats().unwrap().peak_mem_allocations().expect("counting allocator installed");
        for (mib, peak) in [1u64, 8, 2, 16].iter().zip(&peaks) {
            let want = mib << 20;
            assert!(*peak >= want && *peak < want + (1 << 20), "{kind}: item of {mib} MiB peaked at {peak} bytes");
        }
    }
}
