//! The results journal's check: a job interrupted half way and rerun with its journal runs
//! only what the journal lacks and returns every result in order; a finished journal runs
//! nothing; a torn tail is ignored; another job's journal is refused with the reason.

use super::checks::describe;
use super::failure::{Failure, Problem, Scope};
use super::tasks::Logged;
use crate::plumbing::Backend;
use crate::{Batching, Engine, Error};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A directory removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(engine: &str) -> Dir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let name: String = engine.chars().filter(|c| c.is_ascii_alphanumeric()).take(24).collect();
        let p = std::env::temp_dir().join(format!(
            "adpe-kit-journal-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        let _ = std::fs::create_dir_all(&p);
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The items logged as run so far.
fn executions(log: &Path) -> Vec<u64> {
    std::fs::read_to_string(log).unwrap_or_default().lines().filter_map(|l| l.parse().ok()).collect()
}

/// The number of executions logged, once the log has not grown for a second (at most 30 s).
fn still(log: &Path) -> usize {
    use std::time::{Duration, Instant};
    let begun = Instant::now();
    let mut last = (executions(log).len(), Instant::now());
    while last.1.elapsed() < Duration::from_secs(1) && begun.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
        let now = executions(log).len();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    last.0
}

/// `.journal(path)` resumes, caches and refuses as documented (see the module's doc).
pub fn journal_resume<B: Backend>(engine: &Engine<B>) -> Result<(), Failure> {
    let scope = Scope::new("journal_resume", describe(engine));
    let dir = Dir::new(&scope.engine);
    let (log, path) = (dir.0.join("executions"), dir.0.join("journal"));
    let log_arg = log.to_string_lossy().into_owned();
    let n = 400u64;
    let want: Vec<u64> = (0..n).map(|x| 3 * x + 1).collect();
    let job = |b: Batching| engine.map(Logged, 0..n).args(log_arg.clone()).batched(b).journal(&*path);

    // 1. A stream dropped after half of its results: its journal keeps what came back.
    let what = "stream() with a journal, dropped after 200 results";
    let stream = scope.ok(what, job(Batching::ChunkSize(10)).stream())?;
    let first: Vec<u64> = scope.ok(what, stream.take(200).collect::<crate::Result<Vec<u64>>>())?;
    scope.same(what, &want[..200], &first)?;
    // Out-of-process workers may still finish the batches they held when the stream was
    // dropped (an MPI rank cannot be stopped mid-batch): count from when the log is still.
    let ran_before = still(&log);

    // 2. The rerun (other batching: batches straddle the journal's records) runs the rest.
    let what = "run() of the same job with its journal, after the stream was dropped";
    let got = scope.ok(what, job(Batching::ChunkSize(7)).run())?;
    scope.same(what, &want, &got)?;
    let resumed = engine.last_stats().map_or(0, |s| s.resumed);
    if !(200..n as usize).contains(&resumed) {
        return Err(
            scope.contract(what, format!("{resumed} items were read back from the journal, expected 200 to {}", n - 1))
        );
    }
    let again = &executions(&log)[ran_before..];
    let distinct: HashSet<u64> = again.iter().copied().collect();
    if again.len() != n as usize - resumed || distinct.len() != again.len() {
        return Err(scope.contract(
            what,
            format!(
                "{} executions ({} distinct items) in the rerun, expected exactly the {} items the journal lacked",
                again.len(),
                distinct.len(),
                n as usize - resumed
            ),
        ));
    }

    // 3. A finished journal is a cache: nothing runs, for every terminal.
    let ran = executions(&log).len();
    let what = "run() over a finished journal";
    let got = scope.ok(what, job(Batching::Auto).run())?;
    scope.same(what, &want, &got)?;
    let what = "stream() over a finished journal";
    let got = scope.ok(what, job(Batching::Auto).stream().and_then(|s| s.collect::<crate::Result<Vec<u64>>>()))?;
    scope.same(what, &want, &got)?;
    let what = "stream_unordered() over a finished journal";
    let mut pairs =
        scope.ok(what, job(Batching::Auto).stream_unordered().and_then(|s| s.collect::<crate::Result<Vec<_>>>()))?;
    pairs.sort_unstable();
    let got: Vec<u64> = pairs.iter().map(|p| p.1).collect();
    scope.same(what, &want, &got)?;
    if executions(&log).len() != ran {
        return Err(scope.contract(what, format!("{} items ran again", executions(&log).len() - ran)));
    }

    // 4. A torn last record (a crash mid-write) is ignored.
    let what = "run() after a torn record was appended to the journal";
    {
        use std::io::Write;
        let torn = std::fs::OpenOptions::new().append(true).open(&path).and_then(|mut f| f.write_all(&[9, 0, 0, 0, 1]));
        scope.ok(what, torn.map_err(|e| Error::Config(e.to_string())))?;
    }
    let got = scope.ok(what, job(Batching::Auto).run())?;
    scope.same(what, &want, &got)?;

    // 5. Another job's journal is refused, naming what differs.
    for (what, other, needle) in [
        (
            "run() with other args over the journal",
            engine.map(Logged, 0..n).args(format!("{log_arg}.other")).journal(&*path).run(),
            "args differ",
        ),
        (
            "run() with another length over the journal",
            engine.map(Logged, 0..n + 1).args(log_arg.clone()).journal(&*path).run(),
            "length",
        ),
    ] {
        match other {
            Err(Error::JournalMismatch { differences, .. }) if differences.iter().any(|d| d.contains(needle)) => {}
            other => {
                return Err(scope.fail(
                    what,
                    Problem::WrongError {
                        expected: format!("Error::JournalMismatch naming \"{needle}\""),
                        got: format!("{:?}", other.map(|v| v.len())),
                    },
                ))
            }
        }
    }
    Ok(())
}
