use adparallelengine::task;
use engine_core::batch::Batch;
use engine_core::worker::{Worker, WorkerOptions};
use std::sync::Arc;
use std::time::Instant;
task!(Double = |x: u64| -> u64 { x * 2 });
fn main() {
    let mut w = Worker::<Double, Arc<()>>::start(
        0,
        &(),
        Arc::new(()),
        WorkerOptions {
            fail_fast: true,
            ..Default::default()
        },
    )
    .unwrap();
    for _ in 0..5 {
        let items: Vec<u64> = (0..1_000_000).collect();
        let p = items.as_ptr();
        let t = Instant::now();
        let d = w.run_batch(Batch {
            seq: 0,
            start: 0,
            items,
        });
        println!("{:?} inplace={}", t.elapsed(), d.outputs.as_ptr() == p);
    }
}
