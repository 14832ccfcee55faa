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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

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
