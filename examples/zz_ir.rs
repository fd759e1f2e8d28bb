use adparallelengine::{task, Engine, Kind, Progress};
task!(Double = |x: u64| -> u64 { x * 2 });
fn main() {
    let engine = Engine::builder(Kind::Threads).max_workers(2).progress(Progress::quiet()).build().unwrap();
    let input: Vec<u64> = (0..100_000).collect();
    let which = std::env::args().nth(1).unwrap_or_default();
    for _ in 0..50 {
        if which == "vec" {
            std::hint::black_box(engine.map(Double, input.clone()).run().unwrap());
        } else {
            std::hint::black_box(engine.map(Double, 0..100_000u64).run().unwrap());
        }
    }
}
