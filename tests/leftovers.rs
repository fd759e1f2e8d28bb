//! What a driver killed outright leaves behind is removed by the next engine that shares a
//! value in the same place.
//!
//! The driver is this test binary, re-executed to run only the ignored test
//! [`driver_killed_by_the_next_test`] with `ADPE_LEFTOVERS_PARENT` set: it shares a value with
//! its worker processes under that directory, says where its share directory is, and waits to
//! be SIGKILLed, which gives it no chance to remove anything.

use adparallelengine::{task, AnyBackend, Engine, Kind, Progress, Shared};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The parent directory the re-executed driver shares values under.
const ENV_PARENT: &str = "ADPE_LEFTOVERS_PARENT";
/// What the driver prints before its share directory's path.
const READY: &str = "leftovers-driver-share-dir ";

task!(
    /// `x` plus the shared block's first byte (read by a worker process, from the share store).
    AddFirst = |x: u64, block: &Shared<Vec<u8>>| -> u64 { x + u64::from(block[0]) }
);

fn engine(parent: &Path) -> Engine {
    Engine::builder(Kind::Process)
        .max_workers(2)
        .path_shared(parent)
        .progress(Progress::quiet())
        .build()
        .expect("a process engine")
}

fn share_dir(e: &Engine) -> Option<PathBuf> {
    match e.backend() {
        AnyBackend::Process(p) => p.share_dir(),
        _ => None,
    }
}

/// Runs a job that shares a block starting with `first` and checks its results.
fn share(e: &Engine, first: u8) -> PathBuf {
    let mut block = vec![0u8; 1 << 16];
    block[0] = first;
    let out = e.map(AddFirst, 0..6u64).args(Shared::new(block)).batched(false).run().expect("the job");
    assert_eq!(out, (0..6).map(|x| x + u64::from(first)).collect::<Vec<_>>());
    share_dir(e).expect("a share directory, once a value was shared")
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
#[ignore = "the driver of sigkilled_drivers_share_dir_is_removed_by_the_next_engine, run by it"]
fn driver_killed_by_the_next_test() {
    let parent = PathBuf::from(std::env::var_os(ENV_PARENT).expect("run by the SIGKILL test, which sets the parent"));
    let e = engine(&parent);
    let dir = share(&e, 7);
    println!("{READY}{}", dir.display());
    std::io::stdout().flush().expect("stdout");
    std::thread::sleep(Duration::from_secs(120));
    panic!("the driver was not killed");
}

/// Log lines written by the tracing subscriber of this test binary.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

#[test]
fn sigkilled_drivers_share_dir_is_removed_by_the_next_engine() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .init();

    let parent = std::env::temp_dir().join(format!("adpe-leftovers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&parent);
    std::fs::create_dir_all(&parent).expect("the parent");
    let _remove_parent = RemoveOnDrop(parent.clone());

    // The driver shares a value under `parent`, then is killed outright.
    let mut driver = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--ignored", "--exact", "driver_killed_by_the_next_test", "--nocapture", "--test-threads=1"])
        .env(ENV_PARENT, &parent)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the driver");
    let stdout = driver.stdout.take().expect("the driver's stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest's `test driver_killed_by_the_next_test ... ` comes first on the line.
            if let Some((_, dir)) = line.split_once(READY) {
                let _ = tx.send(PathBuf::from(dir));
            }
        }
    });
    let dead = rx.recv_timeout(Duration::from_secs(60));
    driver.kill().expect("SIGKILL the driver");
    let status = driver.wait().expect("the driver's status");
    let dead = dead.expect("the driver never said where its share directory is");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{status}");
    assert_eq!(dead.parent(), Some(parent.as_path()));
    let name = dead.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    assert!(name.starts_with(&format!("adparallelengine-{}-", driver.id())), "{name}: named for its owner");
    // SIGKILL gave it no chance to clean up.
    assert!(entries(&dead).iter().any(|f| f.ends_with(".bin")), "the shared value is left in {}", dead.display());
    assert_eq!(entries(&parent), vec![name.clone()]);

    // The next engine that shares a value there removes it, and says so.
    let next = engine(&parent);
    assert!(dead.exists(), "an engine that shared nothing made no store and swept nothing");
    let next_dir = share(&next, 1);
    assert!(!dead.exists(), "{} outlived its killed owner's successor", dead.display());
    let log = logs.text();
    assert!(
        log.lines().any(|l| l.contains(" INFO ") && l.contains(&name) && l.contains("its process is gone")),
        "the removal is logged at info: {log}"
    );

    // A live engine's directory is left alone by the next sweep.
    let other = engine(&parent);
    let other_dir = share(&other, 2);
    assert_ne!(other_dir, next_dir);
    assert!(next_dir.exists(), "a live engine's share directory was swept");
    assert_eq!(share(&next, 3), next_dir, "and still serves its engine");
    let mut both = vec![name_of(&next_dir), name_of(&other_dir)];
    both.sort();
    assert_eq!(entries(&parent), both);

    drop(next);
    drop(other);
    assert_eq!(entries(&parent), Vec::<String>::new(), "dropped engines remove their directories");
}

/// Removes the test's parent directory however the test ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn name_of(dir: &Path) -> String {
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}
