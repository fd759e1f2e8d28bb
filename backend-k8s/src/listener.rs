//! The driver's door for workers that dial in: a TCP listener whose connections must knock
//! with the run's secret (engine-core's [`knock`](adparallelengine_core::remote)) within a deadline.
//!
//! Each connection is checked on its own short-lived thread, so a silent or slow stranger
//! holds up no one; a refused connection is closed and logged with its peer address and the
//! reason, and counted. Accepted workers arrive on a channel, with the name they gave.

use adparallelengine_core::remote::{check_knock, Secret};
use adparallelengine_core::{Error, Result};
use crossbeam_channel::{unbounded, Receiver};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a new connection has to knock.
pub const KNOCK_DEADLINE: Duration = Duration::from_secs(5);

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
pub struct Listener {
    addr: SocketAddr,
    arrivals: Receiver<Arrival>,
    refused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Listener {
    /// Listens on `bind` (e.g. `0.0.0.0:0` in a pod, `127.0.0.1:0` for local workers) for
    /// workers knocking with `secret`.
    pub fn bind(bind: &str, secret: Secret) -> Result<Listener> {
        let err =
            |e: std::io::Error| Error::Backend { backend: "k8s", message: format!("cannot listen on {bind}: {e}") };
        let listener = TcpListener::bind(bind).map_err(err)?;
        let addr = listener.local_addr().map_err(err)?;
        let (tx, arrivals) = unbounded();
        let refused = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (Arc::clone(&refused), Arc::clone(&stop));
        let secret = Arc::new(secret);
        std::thread::Builder::new()
            .name("adparallelengine-listener".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if halt.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(stream) = conn else { continue };
                    let (tx, count, secret) = (tx.clone(), Arc::clone(&count), Arc::clone(&secret));
                    let _ = std::thread::Builder::new().name("adparallelengine-knock".into()).spawn(move || {
                        let peer = stream.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                        match admit(stream, &secret) {
                            Ok((name, stream)) => {
                                tracing::debug!(%peer, name, "worker admitted");
                                let _ = tx.send(Arrival { name, peer, stream });
                            }
                            Err(e) => {
                                count.fetch_add(1, Ordering::AcqRel);
                                tracing::warn!(%peer, error = %e, "connection refused");
                            }
                        }
                    });
                }
            })
            .map_err(|e| Error::Backend {
                backend: "k8s",
                message: format!("cannot start the listener thread: {e}"),
            })?;
        Ok(Listener { addr, arrivals, refused, stop })
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
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Checks a new connection's knock under the deadline; the stream then reads without one.
fn admit(mut stream: TcpStream, secret: &Secret) -> Result<(String, TcpStream)> {
    let io = |e: std::io::Error| Error::Backend { backend: "k8s", message: e.to_string() };
    stream.set_read_timeout(Some(KNOCK_DEADLINE)).map_err(io)?;
    let name = check_knock(&mut stream, secret)?;
    stream.set_read_timeout(None).map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    // A pod whose node vanishes sends nothing: the kernel's probes notice it.
    adparallelengine_core::remote::keep_alive(&stream).map_err(io)?;
    Ok((name, stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use adparallelengine_core::remote::knock;
    use std::io::Write;

    #[test]
    fn only_workers_with_the_secret_get_in_and_strangers_hold_up_no_one() {
        let secret = Secret::random().unwrap();
        let listener = Listener::bind("127.0.0.1:0", secret.clone()).unwrap();
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
        assert!(
            adparallelengine_core::remote::is_kept_alive(&a.stream).unwrap(),
            "an admitted worker's connection is probed"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while listener.refused() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(listener.refused(), 2, "wrong secret and HTTP refused");
        assert!(listener.arrivals().try_recv().is_err(), "no stranger got in");
        // The refused connections were closed.
        let mut buf = [0u8; 1];
        wrong.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(std::io::Read::read(&mut wrong, &mut buf).unwrap_or(0), 0);
    }
}
