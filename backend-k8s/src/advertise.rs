//! The driver's address as worker pods reach it.

use crate::k8s_err;
use adparallelengine_core::Result;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};

/// What to listen on and what to tell pods: `(bind address, advertised host)`; the port is
/// the one bound, unless `advertise` names one (then that port is bound).
///
/// Without `advertise`: this machine's address on its route to the API server (a UDP
/// "connect" sends nothing; it only asks the kernel for the route). In a pod that is the
/// pod's IP; next to a local API it is loopback; for kind or minikube it is the address of
/// the host on the cluster's network.
pub(crate) fn plan(advertise: Option<&str>, listen: &str, api: &http::Uri) -> Result<(String, String)> {
    if let Some(a) = advertise {
        if let Some((host, port)) = a.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()) {
            return Ok((format!("{listen}:{port}"), host.to_string()));
        }
        return Ok((format!("{listen}:0"), a.to_string()));
    }
    let host = api.host().unwrap_or("localhost").trim_start_matches('[').trim_end_matches(']');
    let port = api.port_u16().unwrap_or(443);
    let target: SocketAddr = (host, port).to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or_else(|| {
        k8s_err(format!("cannot resolve the API server {host}: give the driver's address with `.advertise(..)`"))
    })?;
    let local = route_to(target).ok_or_else(|| {
        k8s_err(format!("no route to the API server {target}: give the driver's address with `.advertise(..)`"))
    })?;
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
    fn explicit_addresses_win_and_a_local_api_means_loopback() {
        let api: http::Uri = "http://127.0.0.1:6443".parse().unwrap();
        assert_eq!(plan(Some("10.1.2.3:7000"), "0.0.0.0", &api).unwrap(), ("0.0.0.0:7000".into(), "10.1.2.3".into()));
        assert_eq!(plan(Some("driver.ns.svc"), "0.0.0.0", &api).unwrap(), ("0.0.0.0:0".into(), "driver.ns.svc".into()));
        assert_eq!(plan(None, "0.0.0.0", &api).unwrap(), ("0.0.0.0:0".into(), "127.0.0.1".into()));
    }
}
