//! The whole contract, checked by adparallelengine's conformance kit, as any backend crate
//! runs it from its own tests.

use adparallelengine::Engine;
use std_pool_backend::StdPool;

#[test]
fn the_std_pool_passes_the_conformance_kit() {
    adparallelengine::conformance::run_all(|workers| Ok(Engine::<StdPool>::from_backend(StdPool::new(workers)?)));
}

#[test]
fn its_pool_is_kept_between_jobs_and_capped() {
    adparallelengine::task!(
        ThreadName = |_x: u64| -> String { std::thread::current().name().unwrap_or("").to_string() }
    );
    let engine = Engine::<StdPool>::from_backend(StdPool::new(2).unwrap());
    let mut names: Vec<String> =
        (0..3).flat_map(|_| engine.map(ThreadName, 0..64u64).batched(8).run().unwrap()).collect();
    names.sort();
    names.dedup();
    assert!(!names.is_empty() && names.len() <= 2, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("std-pool-")), "{names:?}");
}
