//! A worker pod's side: started with the driver's address and the run's secret in its
//! environment, the program dials the driver before `main` (engine-core's pre-main
//! [`entry`](adparallelengine_core::remote)), knocks, serves jobs over the connection, and exits when the
//! driver closes it. It never runs the user's `main`.
//!
//! Shared values reach a pod over its connection (`ToWorker::Blob`) into a private directory
//! on its local disk, removed when it exits: pods do not see the driver's file system, unless
//! a volume is mounted at the driver's `path_shared` (`shared_volume`).

use adparallelengine_core::remote::StreamTransport;
use adparallelengine_core::remote::DEFAULT_MAX_FRAME;
use adparallelengine_core::remote::{knock, Secret};
use adparallelengine_core::remote::{serve_connection, Incoming, Transport};
use adparallelengine_core::{Error, SharedStore};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The driver's `host:port`, set in a worker's environment.
pub const ENV_DRIVER: &str = "ADPARALLELENGINE_DRIVER";
/// The run's secret (64 hex digits), set in a worker's environment (from a Secret).
pub const ENV_SECRET: &str = "ADPARALLELENGINE_SECRET";
/// The worker's name for the driver's logs (default: `HOSTNAME`, the pod's name).
pub const ENV_NAME: &str = "ADPARALLELENGINE_WORKER_NAME";

/// How long a worker keeps trying to reach its driver (a pod may start before the driver's
/// listener is reachable through the network).
pub const DIAL_PATIENCE: Duration = Duration::from_secs(60);

adparallelengine_core::worker_entry!(dial_in_if_asked);

/// If this process is a worker pod (its environment names a driver), serves it and exits;
/// otherwise returns at once.
pub fn dial_in_if_asked() {
    let Ok(driver) = std::env::var(ENV_DRIVER) else { return };
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
        Some(secret) => match serve(&driver, &secret, &name) {
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

fn serve(driver: &str, secret: &Secret, name: &str) -> Result<(), String> {
    let mut stream = connect(driver)?;
    let _ = stream.set_nodelay(true);
    // A driver whose machine vanishes sends nothing: the kernel's probes notice it, or the
    // messages it no longer acknowledges do, and the pod exits instead of waiting for ever.
    adparallelengine_core::remote::keep_alive_worker(&stream)
        .map_err(|e| format!("cannot turn on TCP keepalive: {e}"))?;
    knock(&mut stream, secret, name).map_err(|e| e.to_string())?;
    let reader = stream.try_clone().map_err(|e| format!("cannot clone the connection: {e}"))?;
    let mut t = Counted { inner: StreamTransport::new(reader, stream, DEFAULT_MAX_FRAME), received: 0, failure: None };
    // Shared values come over the connection, or from a volume mounted at the driver's
    // `path_shared` (`shared_volume`).
    let open_volume = |dir: &str| -> adparallelengine_core::Result<Arc<dyn SharedStore>> {
        adparallelengine_store::open_dir_view(dir)
            .map_err(|e| Error::Store(format!("pod {name}: the shared volume {dir} is not mounted here: {e}")))
    };
    let served = serve_connection(&mut t, &open_volume, &adparallelengine_store::local_dir_store);
    // A pod that exits 0 counts as done for its Job, and is not replaced. A connection the
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
