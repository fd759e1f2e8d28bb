//! The driver's door for workers that dial in: a TCP listener whose connections must knock
//! with the run's secret ([`check_knock`]) within a deadline.
//!
//! One thread, the door, accepts connections and reads their knocks, every socket
//! non-blocking under one `poll(2)`; a stranger costs the driver a file descriptor and a
//! kilobyte for a few seconds, never a thread:
//!
//! - a connection has [`KNOCK_DEADLINE`] from its accept to finish its knock, one deadline for
//!   the whole knock however slowly it trickles in;
//! - at most [`MAX_PENDING`] connections wait to knock at once. A connection arriving at a full
//!   door closes the one that has waited longest (a worker knocks as soon as it connects, so
//!   the oldest is the likeliest stranger): a flood can neither hold the door nor grow the
//!   driver, and a worker is kept out only while strangers arrive faster than it knocks.
//!
//! A refused connection (wrong or no knock, its deadline passed, displaced at a full door) is
//! closed at once, counted ([`Door::refused`]), and logged with its peer address and the
//! reason (one by one up to [`LOGGED_PER_WINDOW`] per 10 s, then as a count). Accepted workers
//! arrive on a channel, with the name they gave.

use crate::error::{Error, Result};
use crate::remote::net::knock::{check_knock, Secret};
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a new connection has to knock, from its accept to the knock's last byte.
pub const KNOCK_DEADLINE: Duration = Duration::from_secs(5);

/// The most connections waiting to knock at once; one more closes the oldest of them.
///
/// A run has at most a few hundred pods, each knocking within a millisecond or so of
/// connecting, so 64 is room for every pod of a large Job starting together, and a bound on
/// what strangers can cost: 64 file descriptors and 64 KiB of knocks, on one thread.
pub const MAX_PENDING: usize = 64;

/// Refusals logged one by one in each 10-second window; the rest are logged as a count.
pub const LOGGED_PER_WINDOW: usize = 20;

/// The window of [`LOGGED_PER_WINDOW`].
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// The longest the door sleeps in `poll(2)`: it looks at its stop flag this often.
const MAX_SLEEP: Duration = Duration::from_millis(250);

/// How long the door stops accepting after `accept(2)` fails (out of file descriptors).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Connections accepted in one pass of the door, before it reads the knocks again.
const ACCEPT_BATCH: usize = 4 * MAX_PENDING;

/// A worker that knocked with the right secret.
#[derive(Debug)]
pub struct Arrival {
    /// The name it gave (its pod's name).
    pub name: String,
    /// Its address.
    pub peer: SocketAddr,
    /// The connection, ready for the worker protocol.
    pub stream: TcpStream,
}

/// The listening side; dropping it stops accepting.
pub struct Door {
    addr: SocketAddr,
    arrivals: Receiver<Arrival>,
    refused: Arc<AtomicUsize>,
    waiting: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Door {
    /// Listens on `bind` (e.g. `0.0.0.0:0` in a pod, `127.0.0.1:0` for local workers) for
    /// workers knocking with `secret`.
    pub fn bind(backend: &'static str, bind: &str, secret: Secret) -> Result<Door> {
        let err = |e: std::io::Error| Error::Backend { backend, message: format!("cannot listen on {bind}: {e}") };
        let listener = TcpListener::bind(bind).map_err(err)?;
        let addr = listener.local_addr().map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        let (tx, arrivals) = unbounded();
        let refused = Arc::new(AtomicUsize::new(0));
        let waiting = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut door = DoorThread {
            listener,
            secret,
            arrivals: tx,
            pending: VecDeque::with_capacity(MAX_PENDING),
            refused: Arc::clone(&refused),
            waiting: Arc::clone(&waiting),
            stop: Arc::clone(&stop),
            log: RefusalLog::new(),
            accept_paused_until: None,
        };
        std::thread::Builder::new()
            .name("adparallelengine-door".into())
            .spawn(move || door.run())
            .map_err(|e| Error::Backend { backend, message: format!("cannot start the listener thread: {e}") })?;
        Ok(Door { addr, arrivals, refused, waiting, stop })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Admitted workers, as they arrive.
    pub fn arrivals(&self) -> &Receiver<Arrival> {
        &self.arrivals
    }

    /// Connections refused so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Acquire)
    }

    /// The count of refused connections, shared (it outlives a borrow of the listener).
    pub fn refused_counter(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.refused)
    }

    /// Connections accepted and waiting to knock now (at most [`MAX_PENDING`]).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

impl Drop for Door {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the door so it sees the flag now (it would within `MAX_SLEEP` anyway).
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// A connection waiting to knock.
struct Pending {
    stream: TcpStream,
    peer: SocketAddr,
    /// The knock's bytes so far.
    got: Vec<u8>,
    /// When its time to knock is up.
    deadline: Instant,
}

/// What became of a connection waiting to knock, after a read.
enum Outcome {
    /// Not a whole knock yet.
    Waiting,
    /// It knocked with the secret.
    Admitted(String),
    /// It is refused, for this reason.
    Refused(String),
}

/// The door's thread: the listener and the connections waiting to knock.
struct DoorThread {
    listener: TcpListener,
    secret: Secret,
    arrivals: Sender<Arrival>,
    /// In the order they were accepted: the front has waited longest.
    pending: VecDeque<Pending>,
    refused: Arc<AtomicUsize>,
    waiting: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    log: RefusalLog,
    accept_paused_until: Option<Instant>,
}

impl DoorThread {
    fn run(&mut self) {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(MAX_PENDING + 1);
        while !self.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            let accepting = self.accept_paused_until.is_none_or(|t| now >= t);
            if accepting {
                self.accept_paused_until = None;
            }
            fds.clear();
            let listen_events = if accepting { libc::POLLIN } else { 0 };
            fds.push(libc::pollfd { fd: self.listener.as_raw_fd(), events: listen_events, revents: 0 });
            fds.extend(self.pending.iter().map(|p| libc::pollfd {
                fd: p.stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }));
            let wake = self.pending.iter().map(|p| p.deadline).chain(self.accept_paused_until).min();
            let sleep = wake.map_or(MAX_SLEEP, |t| t.saturating_duration_since(now).min(MAX_SLEEP));
            // Rounded up, so that a deadline a fraction of a millisecond away is not a spin.
            let timeout_ms = sleep.as_micros().div_ceil(1000) as libc::c_int;
            // SAFETY: `fds` is an initialized array of `fds.len()` pollfd structures that
            // lives across the call; poll(2) writes only their `revents` fields.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if ready < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != ErrorKind::Interrupted {
                    tracing::error!(error = %e, "the driver's door cannot poll; it stops accepting workers");
                    return;
                }
                continue;
            }
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            // Knocks first: a worker whose knock is in is let in before newcomers can
            // displace it.
            self.read_knocks(&fds[1..]);
            self.expire(Instant::now());
            if fds[0].revents != 0 && !self.accept_some() {
                break;
            }
            self.waiting.store(self.pending.len(), Ordering::Release);
            self.log.tick(Instant::now());
        }
        self.waiting.store(0, Ordering::Release);
    }

    /// Reads the connections `poll(2)` found ready (`ready[i]` is `pending[i]`).
    fn read_knocks(&mut self, ready: &[libc::pollfd]) {
        let mut kept = VecDeque::with_capacity(MAX_PENDING);
        for (i, mut p) in std::mem::take(&mut self.pending).into_iter().enumerate() {
            if ready.get(i).is_none_or(|fd| fd.revents == 0) {
                kept.push_back(p);
                continue;
            }
            match read_knock(&mut p, &self.secret) {
                Outcome::Waiting => kept.push_back(p),
                Outcome::Admitted(name) => self.admit(name, p.peer, p.stream),
                Outcome::Refused(why) => self.refuse(p.peer, &why),
            }
        }
        self.pending = kept;
    }

    /// Refuses the connections whose time to knock is up (the oldest first: all have the
    /// same time from their accept).
    fn expire(&mut self, now: Instant) {
        while self.pending.front().is_some_and(|p| p.deadline <= now) {
            if let Some(p) = self.pending.pop_front() {
                let why = format!("no whole knock within {KNOCK_DEADLINE:?} ({} bytes of it)", p.got.len());
                self.refuse(p.peer, &why);
            }
        }
    }

    /// Accepts what the listener has (up to [`ACCEPT_BATCH`]); `false` if the door should
    /// close (stopped, or no one receives arrivals any more).
    fn accept_some(&mut self) -> bool {
        for _ in 0..ACCEPT_BATCH {
            let (stream, peer) = match self.listener.accept() {
                Ok(conn) => conn,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: let the pending ones finish.
                    tracing::warn!(error = %e, "the driver's door cannot accept a connection; pausing");
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    break;
                }
            };
            if self.stop.load(Ordering::Acquire) {
                return false;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                self.refuse(peer, &format!("cannot read it without blocking: {e}"));
                continue;
            }
            let mut p = Pending { stream, peer, got: Vec::new(), deadline: Instant::now() + KNOCK_DEADLINE };
            // Its knock may be in already.
            match read_knock(&mut p, &self.secret) {
                Outcome::Admitted(name) => self.admit(name, p.peer, p.stream),
                Outcome::Refused(why) => self.refuse(p.peer, &why),
                Outcome::Waiting => {
                    if self.pending.len() >= MAX_PENDING {
                        if let Some(old) = self.pending.pop_front() {
                            let why = format!(
                                "displaced at a full door ({MAX_PENDING} connections waiting to knock) after {} \
                                 bytes of a knock",
                                old.got.len()
                            );
                            self.refuse(old.peer, &why);
                        }
                    }
                    self.pending.push_back(p);
                }
            }
        }
        !self.stop.load(Ordering::Acquire)
    }

    /// Lets a worker in: its connection blocks again, without a deadline, probed by keepalive.
    fn admit(&mut self, name: String, peer: SocketAddr, stream: TcpStream) {
        let ready = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_nodelay(true))
            // A pod whose node vanishes sends nothing: the kernel's probes notice it.
            .and_then(|()| crate::remote::net::keepalive::keep_alive(&stream));
        if let Err(e) = ready {
            self.refuse(peer, &format!("cannot set up its connection: {e}"));
            return;
        }
        tracing::debug!(%peer, name, "worker admitted");
        if self.arrivals.send(Arrival { name, peer, stream }).is_err() {
            self.stop.store(true, Ordering::Release);
        }
    }

    /// Counts and logs a refusal; the connection is closed by its drop, already done or next.
    fn refuse(&mut self, peer: SocketAddr, why: &str) {
        self.refused.fetch_add(1, Ordering::AcqRel);
        self.log.refused(peer, why, Instant::now());
    }
}

/// Reads what a waiting connection has sent of its knock.
fn read_knock(p: &mut Pending, secret: &Secret) -> Outcome {
    match check_knock(&mut p.stream, secret, &mut p.got) {
        Ok(None) => Outcome::Waiting,
        Ok(Some(name)) => Outcome::Admitted(name),
        Err(e) => Outcome::Refused(e.to_string()),
    }
}

/// Logs refusals one by one up to [`LOGGED_PER_WINDOW`] per [`LOG_WINDOW`], the rest as a
/// count: a flood of strangers must not become a flood of log lines.
struct RefusalLog {
    window: Instant,
    logged: usize,
    unlogged: usize,
}

impl RefusalLog {
    fn new() -> Self {
        RefusalLog { window: Instant::now(), logged: 0, unlogged: 0 }
    }

    fn refused(&mut self, peer: SocketAddr, why: &str, now: Instant) {
        self.tick(now);
        if self.logged < LOGGED_PER_WINDOW {
            self.logged += 1;
            tracing::warn!(%peer, reason = why, "connection refused");
        } else {
            self.unlogged += 1;
        }
    }

    /// Ends the window once it is over, logging the refusals it did not log one by one.
    fn tick(&mut self, now: Instant) {
        if now.duration_since(self.window) < LOG_WINDOW {
            return;
        }
        if self.unlogged > 0 {
            tracing::warn!(
                refused = self.unlogged,
                window = ?LOG_WINDOW,
                "more connections refused than logged one by one (a flood of strangers?)"
            );
        }
        *self = RefusalLog { window: now, logged: 0, unlogged: 0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::knock;
    use std::io::{Read, Write};

    fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let t0 = Instant::now();
        while !cond() {
            if t0.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Whether the driver closed `s` (a read gives the end of the stream, or a reset).
    fn closed(s: &mut TcpStream) -> bool {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        !matches!(s.read(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock)
    }

    #[test]
    fn only_workers_with_the_secret_get_in_and_strangers_hold_up_no_one() {
        let secret = Secret::random().unwrap();
        let listener = Door::bind("test", "127.0.0.1:0", secret.clone()).unwrap();
        let addr = listener.addr();
        // A silent stranger first: it must not delay the others.
        let _silent = TcpStream::connect(addr).unwrap();
        // A stranger with the wrong secret, one speaking HTTP, then a real worker.
        let mut wrong = TcpStream::connect(addr).unwrap();
        knock(&mut wrong, &Secret::random().unwrap(), "intruder").unwrap();
        let mut http = TcpStream::connect(addr).unwrap();
        http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut good = TcpStream::connect(addr).unwrap();
        knock(&mut good, &secret, "pod-0").unwrap();
        let a = listener.arrivals().recv_timeout(Duration::from_secs(2)).expect("the worker got in at once");
        assert_eq!(a.name, "pod-0");
        assert!(crate::remote::is_kept_alive(&a.stream).unwrap(), "an admitted worker's connection is probed");
        assert!(within(Duration::from_secs(3), || listener.refused() >= 2));
        assert_eq!(listener.refused(), 2, "wrong secret and HTTP refused");
        assert!(listener.arrivals().try_recv().is_err(), "no stranger got in");
        // The refused connections were closed.
        let mut buf = [0u8; 1];
        wrong.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(wrong.read(&mut buf).unwrap_or(0), 0);
        // The admitted connection blocks again, with no deadline.
        assert_eq!(a.stream.read_timeout().unwrap(), None);
    }

    #[test]
    fn a_full_door_closes_its_oldest_stranger_for_a_newcomer_and_a_worker_gets_in() {
        let secret = Secret::random().unwrap();
        let listener = Door::bind("test", "127.0.0.1:0", secret.clone()).unwrap();
        let addr = listener.addr();
        let mut strangers: Vec<TcpStream> = (0..MAX_PENDING).map(|_| TcpStream::connect(addr).unwrap()).collect();
        assert!(within(Duration::from_secs(5), || listener.waiting() == MAX_PENDING), "all wait to knock");
        assert_eq!(listener.refused(), 0);
        // One more stranger: the oldest goes at once, long before its deadline.
        let mut late = TcpStream::connect(addr).unwrap();
        assert!(within(KNOCK_DEADLINE / 2, || closed(&mut strangers[0])), "the oldest was displaced");
        assert_eq!(listener.refused(), 1);
        assert_eq!(listener.waiting(), MAX_PENDING);
        // A worker that connects to the full door displaces the next oldest, then knocks and
        // gets in.
        let mut good = TcpStream::connect(addr).unwrap();
        assert!(within(KNOCK_DEADLINE / 2, || closed(&mut strangers[1])), "the next oldest was displaced");
        knock(&mut good, &secret, "pod-1").unwrap();
        let a = listener.arrivals().recv_timeout(KNOCK_DEADLINE / 2).expect("the worker got in");
        assert_eq!(a.name, "pod-1");
        assert!(strangers[2..].iter_mut().all(|s| !closed(s)), "the others still wait, within their deadline");
        assert!(!closed(&mut late));
        assert_eq!(listener.refused(), 2);
    }
}
