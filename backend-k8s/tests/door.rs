//! The driver's door under a flood of strangers: 1,000 connections to a real backend's
//! listener on loopback, half of them silent and half trickling a plausible knock a byte at a
//! time, while a job runs on pods of the local Kubernetes API (`tools/k8s-sim`, pods as local
//! processes of this test binary). The driver's thread count stays bounded, every stranger is
//! refused within the knock deadline (one deadline for the whole knock, whatever it
//! trickles), each is counted, and the pods still get in and the job finishes.

use adparallelengine_core::remote::dial_in::{KNOCK_DEADLINE, MAX_PENDING};
use adparallelengine_core::Engine;
use adparallelengine_k8s::K8sBuilder;
use adparallelengine_test_support::k8s_sim::{self as sim, Simulator};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

adparallelengine_core::task!(
    SlowSquare = |x: u64| -> u64 {
        std::thread::sleep(Duration::from_millis(10));
        x * x
    }
);

/// Connections opened by the flood.
const FLOOD: usize = 1000;
/// Opened this many at a time, one batch per tick: the flood lasts about a second.
const PER_TICK: usize = 10;
const TICK: Duration = Duration::from_millis(10);
/// A trickling stranger sends one byte this often (well under the deadline: a deadline per
/// read would never refuse it).
const TRICKLE_EVERY: Duration = Duration::from_millis(500);
/// The most threads this test process may have at any moment: the test harness, the driver
/// (its API thread, its door, the pooled pods' threads, the job), with room to spare. A thread
/// per connection waiting to knock would pass it many times over.
const THREAD_BOUND: usize = 48;
/// Beyond the deadline, for a refusal to be seen (the door's wake-up, this loop's tick).
const SLACK: Duration = Duration::from_secs(3);
/// The whole test's patience: a bound on every loop, proving no hang.
const PATIENCE: Duration = Duration::from_secs(120);

/// The process's thread count (`Threads:` of `/proc/self/status`).
fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("Threads:")).expect("a Threads: line");
    line["Threads:".len()..].trim().parse().expect("a thread count")
}

/// One stranger's connection.
struct Stranger {
    stream: TcpStream,
    opened: Instant,
    trickles: bool,
    sent: usize,
    next_byte: Instant,
    /// How long after it connected the driver closed it.
    refused_after: Option<Duration>,
}

impl Stranger {
    /// Whether the driver has closed it (the end of the stream, a reset, a failed write).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 16];
        match self.stream.read(&mut b) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == ErrorKind::Interrupted => false,
            Ok(n) => {
                assert_eq!(n, 0, "the driver sent a stranger something");
                true
            }
            Err(_) => true,
        }
    }

    /// A plausible knock, a byte at a time: a frame header announcing 200 bytes, then them.
    fn trickle(&mut self, now: Instant) -> bool {
        if !self.trickles || now < self.next_byte {
            return true;
        }
        let header = 200u64.to_le_bytes();
        let byte = header.get(self.sent).copied().unwrap_or(0);
        self.next_byte = now + TRICKLE_EVERY;
        match self.stream.write(&[byte]) {
            Ok(n) => {
                self.sent += n;
                n == 1
            }
            Err(e) => e.kind() == ErrorKind::WouldBlock,
        }
    }
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v.get(((v.len() as f64 - 1.0) * p) as usize).copied().unwrap_or_default()
}

#[test]
fn a_flood_of_strangers_holds_no_thread_and_no_door_and_pods_still_get_in() {
    let sim = Simulator::start(&[]).unwrap();
    let b = K8sBuilder::new(2)
        .kubeconfig(&sim.kubeconfig)
        .image("local/this-test")
        .start_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (driver, selector, ns) = (b.driver_address().to_string(), b.selector(), b.namespace().to_string());
    let engine = Engine::from_backend(b);
    let idle_threads = threads();
    let began = Instant::now();
    let mut strangers: Vec<Stranger> = Vec::with_capacity(FLOOD);
    let mut max_threads = idle_threads;
    let out = std::thread::scope(|s| {
        // The first job creates the Job: its pods dial in while the flood goes on.
        let job = s.spawn(|| engine.map(SlowSquare, 0..60u64).run());
        while strangers.len() < FLOOD || strangers.iter().any(|c| c.refused_after.is_none()) {
            assert!(began.elapsed() < PATIENCE, "the flood did not end within {PATIENCE:?}");
            for _ in 0..PER_TICK {
                if strangers.len() == FLOOD {
                    break;
                }
                let stream = TcpStream::connect(&driver).expect("a stranger connects");
                stream.set_nonblocking(true).unwrap();
                let trickles = strangers.len() % 2 == 1;
                let now = Instant::now();
                strangers.push(Stranger {
                    stream,
                    opened: now,
                    trickles,
                    sent: 0,
                    next_byte: now,
                    refused_after: None,
                });
            }
            let now = Instant::now();
            for c in strangers.iter_mut().filter(|c| c.refused_after.is_none()) {
                if !c.trickle(now) || c.closed() {
                    c.refused_after = Some(c.opened.elapsed());
                }
            }
            max_threads = max_threads.max(threads());
            std::thread::sleep(TICK);
        }
        job.join().expect("the job's thread")
    });
    let flood_took = began.elapsed();
    assert_eq!(out.unwrap(), (0..60u64).map(|x| x * x).collect::<Vec<_>>(), "the pods got in and did the job");

    let times = |trickles: bool| -> Vec<Duration> {
        strangers.iter().filter(|c| c.trickles == trickles).filter_map(|c| c.refused_after).collect()
    };
    let (silent, trickled) = (times(false), times(true));
    let longest_trickler = strangers.iter().filter(|c| c.trickles).max_by_key(|c| c.refused_after).unwrap();
    eprintln!(
        "{FLOOD} strangers over {flood_took:?}: threads {idle_threads} idle, at most {max_threads}; refused after: \
         silent median {:?} max {:?}, trickling median {:?} max {:?} (it had sent {} bytes); {} refusals counted",
        percentile(silent.clone(), 0.5),
        percentile(silent.clone(), 1.0),
        percentile(trickled.clone(), 0.5),
        percentile(trickled.clone(), 1.0),
        longest_trickler.sent,
        engine.backend().refused_connections(),
    );
    assert!(max_threads <= THREAD_BOUND, "the driver grew to {max_threads} threads (idle: {idle_threads})");
    for (what, t) in [("silent", &silent), ("trickling", &trickled)] {
        assert_eq!(t.len(), FLOOD / 2, "every {what} stranger was refused");
        let worst = percentile(t.to_vec(), 1.0);
        assert!(worst <= KNOCK_DEADLINE + SLACK, "a {what} stranger was held open {worst:?}");
    }
    assert!(
        longest_trickler.sent >= 2,
        "the last strangers waited out their deadline while trickling (it sent {} bytes)",
        longest_trickler.sent
    );
    // Most strangers found the door full and were closed at once, not at their deadline.
    let at_once = strangers.iter().filter(|c| c.refused_after.is_some_and(|t| t < KNOCK_DEADLINE)).count();
    assert!(at_once >= FLOOD - 2 * MAX_PENDING, "only {at_once} strangers were closed before the deadline");
    // Each stranger is counted once (pods displaced while connecting would count too).
    assert!(engine.backend().refused_connections() >= FLOOD, "{} refused", engine.backend().refused_connections());
    drop(strangers);

    // The door is free again: the next job's pods are the same, connected and idle.
    assert_eq!(engine.backend().idle_workers(), 2);
    assert_eq!(engine.map(SlowSquare, 0..6u64).run().unwrap(), vec![0, 1, 4, 9, 16, 25]);
    drop(engine);
    assert!(sim::eventually(|| sim.count_objects(&ns, &selector) == 0), "the run's objects were deleted");
}
