//! Free-port detection, as detect-port's `detectPort()` does for the
//! sticky-session worker port: let the kernel pick an ephemeral port, then
//! release it for a worker to bind.

use std::net::{IpAddr, SocketAddr, TcpListener};

/// Binds `host:0`, reads the port the kernel chose and closes the socket.
///
/// As with detect-port there is an unavoidable window in which another
/// process could take the port before the worker binds it. std sets
/// `SO_REUSEADDR` on Unix listeners, as libuv does for Node servers, and a
/// listener that never accepted leaves no TIME_WAIT behind, so the port is
/// immediately bindable again.
pub fn free_port(host: IpAddr) -> std::io::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::new(host, 0))?;
    let port = listener.local_addr()?.port();
    drop(listener);
    Ok(port)
}

/// egg-cluster's `clusterPort` and, in sticky mode, `stickyWorkerPort`: free ports on
/// 127.0.0.1, never one of `taken` (a port that is free now may be the app's own, which the
/// workers have not bound yet) and never each other.
pub(crate) fn internal_ports(
    taken: &[Option<u16>],
    sticky: bool,
) -> crate::error::Result<(u16, Option<u16>)> {
    use crate::error::Error;
    let loopback = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    let free = |also: Option<u16>| -> std::io::Result<u16> {
        for _ in 0..16 {
            let p = free_port(loopback)?;
            if !taken.contains(&Some(p)) && also != Some(p) {
                return Ok(p);
            }
        }
        free_port(loopback)
    };
    let cluster = free(None).map_err(|e| Error::io("detect a free clusterPort", e))?;
    let sticky = if sticky {
        Some(free(Some(cluster)).map_err(|e| Error::io("detect a free stickyWorkerPort", e))?)
    } else {
        None
    };
    Ok((cluster, sticky))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn internal_ports_avoid_the_taken_ones_and_each_other() {
        let taken = [
            Some(free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap()),
            None,
        ];
        for _ in 0..20 {
            let (cluster, sticky) = internal_ports(&taken, true).unwrap();
            let sticky = sticky.unwrap();
            assert_ne!(cluster, sticky);
            assert!(!taken.contains(&Some(cluster)) && !taken.contains(&Some(sticky)));
        }
        assert_eq!(internal_ports(&taken, false).unwrap().1, None);
    }

    #[test]
    fn returns_a_bindable_port() {
        let host = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let port = free_port(host).expect("free port");
        assert_ne!(port, 0);
        let listener = TcpListener::bind((host, port)).expect("port is bindable");
        assert_eq!(listener.local_addr().expect("addr").port(), port);
    }

    #[test]
    fn works_on_the_unspecified_address() {
        let port = free_port(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).expect("free port");
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).expect("port is bindable");
    }

    #[test]
    fn ipv6_when_available() {
        let host = IpAddr::V6(Ipv6Addr::LOCALHOST);
        // Hosts and containers without IPv6 can't bind ::1 at all.
        if TcpListener::bind((host, 0)).is_err() {
            eprintln!("no IPv6 loopback; skipped");
            return;
        }
        let port = free_port(host).expect("free port");
        TcpListener::bind((host, port)).expect("port is bindable");
    }

    #[test]
    fn unavailable_address_is_an_error() {
        // TEST-NET-1 is never assigned to a local interface.
        let err = free_port(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))).expect_err("not local");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrNotAvailable);
    }
}
