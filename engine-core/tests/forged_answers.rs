//! The driver believes no worker: a worker that holds the run's secret but forges its answers
//! (a shifted start, a count too high, a batch never sent to it, an answer repeated, a huge
//! count of `()` outputs) is stopped, its batches run on an honest worker, and every result
//! is right. Pooled workers are what the process and Kubernetes backends are made of; here
//! they are socket pairs, one end played by an honest worker (the real serve loop) or by
//! engine-core's forging worker (`remote::testing::serve_lying`, which the Kubernetes and MPI
//! backends' tests set on their drivers too).

use adparallelengine_core::plumbing::{Backend, Completions, Plan};
use adparallelengine_core::remote::testing::{serve_lying, Lie};
use adparallelengine_core::remote::{
    fingerprint, serve_connection, start_pooled, Conn, ConnHandle, ConnSource, Pool, StreamTransport,
};
use adparallelengine_core::{Batching, Engine, Error, Result, ShareKey, SharedBytes, SharedStore, Task};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

adparallelengine_core::task!(Double = |x: u64| -> u64 { 2 * x });
adparallelengine_core::task!(Nothing = |_x: u64| -> () {});

const MAX_FRAME: usize = 1 << 20;

/// One end of a socket pair, as the driver holds a worker.
struct TestConn {
    stream: Arc<UnixStream>,
    name: &'static str,
}

impl AsFd for TestConn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

struct TestHandle {
    stream: Arc<UnixStream>,
    name: &'static str,
}

impl ConnHandle for TestHandle {
    fn name(&self) -> String {
        self.name.to_string()
    }
    fn kill(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

impl Conn for TestConn {
    type Handle = TestHandle;
    fn max_frame(&self) -> usize {
        MAX_FRAME
    }
    fn handle(&self) -> TestHandle {
        TestHandle { stream: Arc::clone(&self.stream), name: self.name }
    }
    fn alive(&mut self) -> bool {
        true
    }
    fn kill(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
    fn ended(&mut self) -> String {
        let _ = self.stream.shutdown(Shutdown::Both);
        format!("{} closed", self.name)
    }
    fn retire(conns: Vec<Self>) {
        for c in conns {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }
}

/// No shared values in these jobs.
struct NoStore;

impl SharedStore for NoStore {
    fn put(&self, _: &[u8]) -> Result<ShareKey> {
        Err(Error::Store("no store here".into()))
    }
    fn get(&self, key: &ShareKey) -> Result<SharedBytes> {
        Err(Error::Store(format!("no value {key} here")))
    }
    fn contains(&self, _: &ShareKey) -> bool {
        false
    }
    fn len(&self) -> usize {
        0
    }
    fn keys(&self) -> Vec<ShareKey> {
        Vec::new()
    }
    fn clear(&self) -> Result<()> {
        Ok(())
    }
}

/// An honest worker: the real serve loop on its end of the pair.
fn honest(stream: UnixStream) {
    std::thread::spawn(move || {
        let Ok(reader) = stream.try_clone() else { return };
        let mut t = StreamTransport::new(reader, stream, MAX_FRAME);
        let no_store = |_: &str| -> Result<Arc<dyn SharedStore>> { Err(Error::Store("no store".into())) };
        let no_local = || -> Result<Arc<dyn SharedStore>> { Err(Error::Store("no store".into())) };
        let _ = serve_connection(&mut t, &no_store, &no_local);
    });
}

/// The liar: engine-core's forging worker on its end of the pair. `ended` is set once the
/// driver closed its connection.
fn liar(stream: UnixStream, lie: Lie, ended: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(reader) = stream.try_clone() else { return };
        let mut t = StreamTransport::new(reader, stream, MAX_FRAME);
        let lied = serve_lying(&mut t, lie);
        // Caught, the liar is cut off mid-job: it never hears its job end in good order.
        ended.store(lied.job_ends == 0, Ordering::SeqCst);
    });
}

/// Worker 0 of the first job is the liar; every other worker (and every replacement) is
/// honest, unless `all_other_build`: then every worker is of another build.
struct Source {
    liar: Mutex<Option<UnixStream>>,
    connects: AtomicUsize,
    all_other_build: bool,
}

impl ConnSource<TestConn> for Source {
    fn connect(&self, _worker: usize) -> Result<TestConn> {
        self.connects.fetch_add(1, Ordering::SeqCst);
        if let Some(s) = self.liar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Ok(TestConn { stream: Arc::new(s), name: "the liar" });
        }
        if self.all_other_build {
            let (ours, theirs) = UnixStream::pair().map_err(|e| Error::Store(e.to_string()))?;
            liar(theirs, Lie::OtherBuild, Arc::new(AtomicBool::new(false)));
            return Ok(TestConn { stream: Arc::new(ours), name: "a worker of another build" });
        }
        let (ours, theirs) = UnixStream::pair().map_err(|e| Error::Store(e.to_string()))?;
        honest(theirs);
        Ok(TestConn { stream: Arc::new(ours), name: "an honest worker" })
    }
}

struct PairBackend {
    pool: Arc<Pool<TestConn>>,
}

impl Backend for PairBackend {
    fn name(&self) -> &'static str {
        "pairs"
    }
    fn max_workers(&self) -> usize {
        2
    }
    fn places_outputs(&self) -> bool {
        true
    }
    fn start<'a, T: Task, I: Iterator<Item = T::Item> + 'a>(
        &'a self,
        plan: Plan<T, I>,
    ) -> Result<Box<dyn Completions<T::Output> + 'a>> {
        start_pooled("pairs", &self.pool, plan, Arc::new(NoStore), || None, false, MAX_FRAME)
    }
}

/// An engine whose first worker lies as `lie` says, and a flag set when the liar was cut off.
fn engine(lie: Lie) -> (Engine<PairBackend>, Arc<AtomicBool>) {
    engine_of(lie, false)
}

fn engine_of(lie: Lie, all_other_build: bool) -> (Engine<PairBackend>, Arc<AtomicBool>) {
    let (ours, theirs) = UnixStream::pair().expect("a socket pair");
    let ended = Arc::new(AtomicBool::new(false));
    liar(theirs, lie, Arc::clone(&ended));
    let source = Source { liar: Mutex::new(Some(ours)), connects: AtomicUsize::new(0), all_other_build };
    let pool = Arc::new(Pool::new(4, source));
    (Engine::from_backend(PairBackend { pool }), ended)
}

fn eventually(cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

#[test]
fn a_lying_worker_is_stopped_and_every_result_is_right() {
    for lie in Lie::FORGED.into_iter().filter(|l| *l != Lie::HugeUnitCount) {
        let (engine, ended) = engine(lie);
        for job in 0..2 {
            // `run` places plain-number outputs straight into the result, `collect_results`
            // decodes them: both must ignore the liar.
            let out = engine.map(Double, 0..600u64).batched(Batching::ChunkSize(10)).run();
            assert_eq!(out.ok(), Some((0..600).map(|x| 2 * x).collect::<Vec<_>>()), "{lie:?}, job {job}");
            let all = engine.map(Double, 0..100u64).batched(Batching::ChunkSize(7)).collect_results();
            let all: Vec<u64> = all.expect("collect_results").into_iter().map(|r| r.expect("an item")).collect();
            assert_eq!(all, (0..100).map(|x| 2 * x).collect::<Vec<_>>(), "{lie:?}, job {job}");
        }
        assert!(eventually(|| ended.load(Ordering::SeqCst)), "{lie:?}: the liar's connection is closed");
    }
}

#[test]
fn a_huge_count_of_unit_outputs_costs_nothing() {
    let (engine, ended) = engine(Lie::HugeUnitCount);
    let t0 = Instant::now();
    let out = engine.map(Nothing, 0..300u64).batched(Batching::ChunkSize(10)).run().expect("the job");
    assert_eq!(out.len(), 300);
    // Not a timing assert on the engine's speed: a driver that decoded 2^28 outputs per
    // forged answer would spin for many seconds here.
    assert!(t0.elapsed() < Duration::from_secs(30), "took {:?}", t0.elapsed());
    assert!(eventually(|| ended.load(Ordering::SeqCst)), "the liar's connection is closed");
}

#[test]
fn a_worker_of_another_build_is_reported_and_the_healthy_ones_finish_the_job() {
    let (engine, ended) = engine(Lie::OtherBuild);
    let out = engine.map(Double, 0..300u64).batched(Batching::ChunkSize(10)).run();
    assert_eq!(out.ok(), Some((0..300).map(|x| 2 * x).collect::<Vec<_>>()));
    assert!(eventually(|| ended.load(Ordering::SeqCst)));
}

#[test]
fn when_every_worker_is_of_another_build_the_first_job_says_so_at_once() {
    let (engine, _) = engine_of(Lie::OtherBuild, true);
    let t0 = Instant::now();
    let err = engine.map(Double, 0..300u64).batched(Batching::ChunkSize(10)).run().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no worker can run this job"), "{text}");
    assert!(text.contains("worker build-id-0ther") && text.contains(&format!("driver {}", fingerprint())), "{text}");
    // Not a timing assert on speed: no timeout is waited for (the job would hang for ever).
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
}
