//! A dial-in worker's side: started with the driver's address and the run's secret in its
//! environment, the program dials the driver before `main` (a backend registers
//! [`dial_in_if_asked`] as a [`worker_entry!`](crate::worker_entry)), knocks, serves jobs over
//! the connection, and exits when the driver closes it. It never runs the user's `main`.
//!
//! Shared values reach a worker over its connection (`ToWorker::Blob`) into a store of its
//! own (a private directory on its local disk, removed when it exits), unless the job names a
//! store the worker can open (a volume mounted at the driver's `path_shared`).
//!
//! A dial-in worker dies with the process that started it (`PR_SET_PDEATHSIG`, set by the
//! worker itself, on Linux): a Dask worker killed mid-task, say, leaves no orphan behind.

use crate::remote::net::knock::{knock, Secret};
use crate::remote::net::stream_transport::StreamTransport;
use crate::remote::serve::{serve_connection, LocalStore, OpenStore};
use crate::remote::transport::{Incoming, Transport};
use crate::remote::wire::DEFAULT_MAX_FRAME;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The driver's `host:port`, set in a worker's environment.
pub const ENV_DRIVER: &str = "ADPARALLELENGINE_DRIVER";
/// The run's secret (64 hex digits), set in a worker's environment (from a Secret).
pub const ENV_SECRET: &str = "ADPARALLELENGINE_SECRET";
/// The worker's name for the driver's logs (default: `HOSTNAME`, a pod's name).
pub const ENV_NAME: &str = "ADPARALLELENGINE_WORKER_NAME";

/// How long a worker keeps trying to reach its driver (a pod may start before the driver's
/// listener is reachable through the network).
pub const DIAL_PATIENCE: Duration = Duration::from_secs(60);

/// If this process is a dial-in worker (its environment names a driver), serves the driver
/// and exits; otherwise returns at once. `open_store` opens a store a job names (a mounted
/// volume); `local_store` makes the worker's own store for values sent over the connection.
///
/// Exit codes: 0 when the driver closed the connection (its part done), 2 for a missing or
/// malformed secret, 3 when the driver could not be reached, refused it, or went silent.
///
/// ```
/// fn entry() {
///     // A backend's pre-`main` entry, with the stores of its choice.
///     let open = |dir: &str| Err(adparallelengine_core::Error::Store(format!("no volume {dir}")));
///     let local = || Err(adparallelengine_core::Error::Store("no local store".into()));
///     adparallelengine_core::remote::dial_in::dial_in_if_asked(&open, &local);
/// }
/// adparallelengine_core::worker_entry!(entry);
/// entry(); // returns: this process is no worker
/// ```
pub fn dial_in_if_asked(open_store: OpenStore<'_>, local_store: LocalStore<'_>) {
    let Ok(driver) = std::env::var(ENV_DRIVER) else { return };
    die_with_parent();
    let secret = std::env::var(ENV_SECRET).ok().and_then(|s| Secret::from_hex(&s));
    let name = std::env::var(ENV_NAME).or_else(|_| std::env::var("HOSTNAME")).unwrap_or_else(|_| "worker".into());
    // Processes this worker starts are not workers.
    std::env::remove_var(ENV_DRIVER);
    std::env::remove_var(ENV_SECRET);
    let code = match secret {
        None => {
            eprintln!("adparallelengine worker {name}: {ENV_SECRET} is missing or not 64 hex digits");
            2
        }
        Some(secret) => match serve(&driver, &secret, &name, open_store, local_store) {
            Ok(()) => 0,
            Err(message) => {
                eprintln!("adparallelengine worker {name}: {message}");
                3
            }
        },
    };
    std::process::exit(code);
}

fn connect(driver: &str) -> Result<TcpStream, String> {
    let began = Instant::now();
    loop {
        match TcpStream::connect(driver) {
            Ok(s) => return Ok(s),
            Err(e) if began.elapsed() > DIAL_PATIENCE => {
                return Err(format!("cannot reach the driver at {driver} for {DIAL_PATIENCE:?}: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Asks the kernel to kill this process when the thread that started it ends (its parent's
/// death, or the end of the Dask task thread that runs it), so that a worker whose launcher is
/// gone does not live on as an orphan; a parent already gone means exiting now.
fn die_with_parent() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() };
        // SAFETY: PR_SET_PDEATHSIG takes a signal number as its one argument and changes only
        // this process's own death signal.
        let set = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
        if set != 0 {
            eprintln!(
                "adparallelengine worker: cannot ask to die with the parent: {}",
                std::io::Error::last_os_error()
            );
        }
        // The parent may have died before the request: then the signal never comes. (A pod's
        // program has no parent in its namespace: 0, which stays 0.)
        // SAFETY: as above.
        if parent != 0 && unsafe { libc::getppid() } != parent {
            std::process::exit(3);
        }
    }
}

fn serve(
    driver: &str,
    secret: &Secret,
    name: &str,
    open_store: OpenStore<'_>,
    local_store: LocalStore<'_>,
) -> Result<(), String> {
    let mut stream = connect(driver)?;
    let _ = stream.set_nodelay(true);
    // A driver whose machine vanishes sends nothing: the kernel's probes notice it, or the
    // messages it no longer acknowledges do, and the pod exits instead of waiting for ever.
    crate::remote::net::keepalive::keep_alive_worker(&stream)
        .map_err(|e| format!("cannot turn on TCP keepalive: {e}"))?;
    knock(&mut stream, secret, name).map_err(|e| e.to_string())?;
    let reader = stream.try_clone().map_err(|e| format!("cannot clone the connection: {e}"))?;
    let mut t = Counted { inner: StreamTransport::new(reader, stream, DEFAULT_MAX_FRAME), received: 0, failure: None };
    let served = serve_connection(&mut t, open_store, local_store);
    // A worker that exits 0 has done its part (a pod counts as done for its Job, and is not
    // replaced). A connection the
    // driver closed without a word (a refused knock) is a failure. Once admitted, a pod whose
    // driver's end closed (a FIN or a reset: the driver ended, or stopped this pod) has done
    // its part: a replacement would only dial a driver that is gone. A driver that went
    // *silent* (keepalive or unacknowledged data timed out: its machine or the network is
    // down) may still be there: the pod fails, so that the Job controller replaces it and the
    // replacement dials in again (up to the Job's backoffLimit, should the driver be gone).
    match (t.received, served, t.failure) {
        (0, _, _) => Err("the driver closed the connection without a word: the secret was refused?".into()),
        (_, Err(e), Some(kind)) if went_silent(kind) => {
            Err(format!("the driver at {driver} went silent (its machine or the network is down): {e}"))
        }
        (_, Err(e), _) => {
            eprintln!("adparallelengine worker {name}: the connection to the driver ended: {e}");
            Ok(())
        }
        (_, Ok(()), _) => Ok(()),
    }
}

/// Whether a connection failed because its peer stopped answering, rather than closing it.
fn went_silent(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::{HostUnreachable, NetworkDown, NetworkUnreachable, TimedOut};
    matches!(kind, TimedOut | HostUnreachable | NetworkUnreachable | NetworkDown)
}

/// A transport that counts the messages it received, and keeps how it failed.
struct Counted<T> {
    inner: T,
    received: usize,
    failure: Option<std::io::ErrorKind>,
}

impl<T: Transport> Transport for Counted<T> {
    fn send(&mut self, head: &[u8], tail: &[u8]) -> std::io::Result<()> {
        self.inner.send(head, tail).inspect_err(|e| self.failure = Some(e.kind()))
    }
    fn recv(&mut self) -> std::io::Result<Option<Incoming<'_>>> {
        let got = self.inner.recv().inspect_err(|e| self.failure = Some(e.kind()))?;
        self.received += usize::from(got.is_some());
        Ok(got)
    }
}
