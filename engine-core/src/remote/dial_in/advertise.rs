//! The driver's address as its dial-in workers reach it.

use crate::error::{Error, Result};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};

/// Where the driver listens and what its workers are told: `(bind address, advertised host)`.
/// The port is the one bound, unless `advertise` names one (then that port is bound).
///
/// Without `advertise`: this machine's address on its route to `toward`, a `host:port` the
/// workers' side is known to be at (the Kubernetes API server, the Dask scheduler). A UDP
/// "connect" sends nothing; it only asks the kernel for the route. In a pod that is the pod's
/// IP; next to a local service it is loopback; for kind or minikube it is the address of the
/// host on the cluster's network.
///
/// ```
/// use adparallelengine_core::remote::dial_in::advertised;
/// assert_eq!(advertised("x", Some("10.1.2.3:7000"), "0.0.0.0", ("127.0.0.1", 6443))?, ("0.0.0.0:7000".into(), "10.1.2.3".into()));
/// assert_eq!(advertised("x", None, "0.0.0.0", ("127.0.0.1", 8786))?, ("0.0.0.0:0".into(), "127.0.0.1".into()));
/// # Ok::<(), adparallelengine_core::Error>(())
/// ```
pub fn advertised(
    backend: &'static str,
    advertise: Option<&str>,
    listen: &str,
    toward: (&str, u16),
) -> Result<(String, String)> {
    if let Some(a) = advertise {
        if let Some((host, port)) = a.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()) {
            return Ok((format!("{listen}:{port}"), host.to_string()));
        }
        return Ok((format!("{listen}:0"), a.to_string()));
    }
    let (host, port) = toward;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let err = |message: String| Error::Backend { backend, message };
    let target: SocketAddr = (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| err(format!("cannot resolve {host}: give the driver's address with `.advertise(..)`")))?;
    let local = route_to(target)
        .ok_or_else(|| err(format!("no route to {target}: give the driver's address with `.advertise(..)`")))?;
    Ok((format!("{listen}:0"), local.to_string()))
}

fn route_to(target: SocketAddr) -> Option<IpAddr> {
    if target.ip().is_loopback() {
        return Some(target.ip());
    }
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(any).ok()?;
    s.connect(target).ok()?;
    Some(s.local_addr().ok()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_addresses_win_and_a_local_service_means_loopback() {
        let api = ("127.0.0.1", 6443);
        assert_eq!(
            advertised("t", Some("10.1.2.3:7000"), "0.0.0.0", api).unwrap(),
            ("0.0.0.0:7000".into(), "10.1.2.3".into())
        );
        assert_eq!(
            advertised("t", Some("driver.ns.svc"), "0.0.0.0", api).unwrap(),
            ("0.0.0.0:0".into(), "driver.ns.svc".into())
        );
        assert_eq!(advertised("t", None, "0.0.0.0", api).unwrap(), ("0.0.0.0:0".into(), "127.0.0.1".into()));
        assert!(advertised("t", None, "0.0.0.0", ("no-such-host.invalid", 1)).is_err());
    }
}
