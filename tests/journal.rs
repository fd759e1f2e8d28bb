//! A driver SIGKILLed half way through a 10,000-item job, rerun with the same journal: every
//! result right and in order, and no item the journal held run again. The driver is this
//! test binary run again as a child (`child_driver`), killed by the test.

use adparallelengine::{register_task, BoxError, Engine, Kind, Progress, Task};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const N: u64 = 10_000;
const CHILD: &str = "ADPE_JOURNAL_TEST_CHILD";

/// `3x + 1` after 200 µs, with a line `x` appended to the log its args name per run.
struct Slow;

impl Task for Slow {
    type Item = u64;
    type Output = u64;
    type Args = String;
    type Init = ();
    type State = ();
    fn init(_: &(), _: &String) -> Result<(), BoxError> {
        Ok(())
    }
    fn run(x: u64, log: &String, _: &mut ()) -> Result<u64, BoxError> {
        std::thread::sleep(Duration::from_micros(200));
        let mut f = std::fs::OpenOptions::new().append(true).create(true).open(log)?;
        f.write_all(format!("{x}\n").as_bytes())?;
        Ok(3 * x + 1)
    }
}
register_task!(Slow);

fn kind_of(name: &str) -> Kind {
    match name {
        "serial" => Kind::Serial,
        "threads" => Kind::Threads,
        _ => Kind::Process,
    }
}

/// The driver, when this binary runs as the child of a test: runs the job with its
/// journal, printing its progress, then checks every result and prints what it read back.
#[test]
fn child_driver() {
    let Ok(spec) = std::env::var(CHILD) else { return };
    let (kind, dir) = spec.split_once(':').expect("kind:dir");
    let dir = PathBuf::from(dir);
    let engine = Engine::builder(kind_of(kind)).max_workers(2).progress(Progress::quiet()).build().unwrap();
    let out = engine
        .map(Slow, 0..N)
        .args(dir.join("executions").to_string_lossy().into_owned())
        .batched(adparallelengine::Batching::ChunkSize(20))
        .journal(dir.join("journal"))
        .on_progress(Duration::ZERO, |p| {
            println!("done {}", p.done);
            let _ = std::io::stdout().flush();
        })
        .run()
        .unwrap();
    let want: Vec<u64> = (0..N).map(|x| 3 * x + 1).collect();
    assert!(out == want, "wrong results after the resume");
    let stats = engine.last_stats().unwrap();
    println!("resumed {} ran {}", stats.resumed, stats.items_done);
}

fn child(kind: &str, dir: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["child_driver", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{kind}:{}", dir.display()))
        .stdout(Stdio::piped());
    c
}

fn executions(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("executions")).unwrap_or_default().lines().filter_map(|l| l.parse().ok()).collect()
}

fn kill_and_resume(kind: &str) {
    let dir = std::env::temp_dir().join(format!("adpe-journal-kill-{kind}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // 1. The first driver, killed once half of the items are back.
    let mut first = child(kind, &dir).spawn().unwrap();
    let mut seen = 0u64;
    for line in BufReader::new(first.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("done ") {
            seen = n.parse().unwrap();
            if seen >= N / 2 {
                first.kill().unwrap(); // SIGKILL
                break;
            }
        }
    }
    let status = first.wait().unwrap();
    assert!(!status.success(), "the first driver must have been killed (it saw {seen} items)");
    assert!((N / 2..N).contains(&seen), "killed at {seen} items");
    // Its workers may finish the batch they held: wait until the log is still.
    let mut last = (executions(&dir).len(), Instant::now());
    while last.1.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(50));
        let now = executions(&dir).len();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let before = last.0;

    // 2. The second driver, with the same journal, runs to the end.
    let second = child(kind, &dir).output().unwrap();
    let text = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "the resumed driver failed: {text}");
    let line = text.lines().find_map(|l| l.strip_prefix("resumed ")).expect("the resumed driver's stats");
    let (resumed, ran) = line.split_once(" ran ").unwrap();
    let (resumed, ran): (usize, usize) = (resumed.parse().unwrap(), ran.parse().unwrap());
    assert!((N as usize / 2 - 40..N as usize).contains(&resumed), "{resumed} items read back from the journal");
    assert_eq!(resumed + ran, N as usize);
    let again = &executions(&dir)[before..];
    let distinct: HashSet<u64> = again.iter().copied().collect();
    assert_eq!(again.len(), N as usize - resumed, "the rerun ran exactly the items the journal lacked");
    assert_eq!(distinct.len(), again.len(), "no item ran twice in the rerun");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serial_driver_killed_and_resumed() {
    kill_and_resume("serial");
}

#[cfg(feature = "threads")]
#[test]
fn threads_driver_killed_and_resumed() {
    kill_and_resume("threads");
}

#[cfg(feature = "process")]
#[test]
fn process_driver_killed_and_resumed() {
    kill_and_resume("process");
}
