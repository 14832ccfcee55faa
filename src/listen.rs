//! Binding the sockets that app workers listen on (shared-handle mode: we bind, they `listen()`
//! and `accept()` themselves, so the master is never in the request path).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6,
    UnixAddr,
};

use crate::protocol::cluster::BindRequest;

/// Binds what a `queryServer` asked for. The socket is `O_NONBLOCK` (a blocking fd handed to a
/// Node worker can stall its event loop) and `CLOEXEC` (only SCM_RIGHTS hands it on).
pub fn bind_request(req: &BindRequest) -> io::Result<OwnedFd> {
    match req {
        BindRequest::Tcp {
            address: None,
            port,
            ..
        } => {
            // Like Node's `_createServerHandle`: dual-stack `::` first, `0.0.0.0` if IPv6 is off.
            bind_tcp(
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), *port),
                false,
            )
            .or_else(|e| match e.raw_os_error() {
                Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) => bind_tcp(
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), *port),
                    false,
                ),
                _ => Err(e),
            })
        }
        BindRequest::Tcp {
            address: Some(ip),
            port,
            ipv6_only,
        } => bind_tcp(SocketAddr::new(*ip, *port), *ipv6_only),
        BindRequest::Unix { path, .. } => bind_unix(path),
    }
}

/// A TCP socket with `SO_REUSEPORT`, bound and listening: one per worker slot, so the kernel
/// spreads connections evenly over the workers and keeps a dead worker's queue for its
/// replacement (the master holds a reference). Unix paths cannot share a port; they go through
/// [`bind_request`].
pub fn bind_reuse_port(req: &BindRequest, backlog: Option<i64>) -> io::Result<OwnedFd> {
    let BindRequest::Tcp {
        address,
        port,
        ipv6_only,
    } = req
    else {
        return bind_request(req);
    };
    let open = |addr: SocketAddr, v6only: bool| -> io::Result<OwnedFd> {
        let fd = new_tcp_socket(&addr)?;
        setsockopt(&fd, sockopt::ReusePort, &true)?;
        bind_tcp_socket(&fd, addr, v6only)?;
        Ok(fd)
    };
    let fd = match address {
        Some(ip) => open(SocketAddr::new(*ip, *port), *ipv6_only)?,
        None => open(
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), *port),
            false,
        )
        .or_else(|e| match e.raw_os_error() {
            Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) => open(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), *port),
                false,
            ),
            _ => Err(e),
        })?,
    };
    // Node's default backlog (511) when the worker did not ask for one.
    let backlog = backlog
        .filter(|b| *b > 0)
        .unwrap_or(511)
        .min(i32::MAX as i64) as i32;
    nix::sys::socket::listen(
        &fd,
        nix::sys::socket::Backlog::new(backlog).map_err(io::Error::from)?,
    )?;
    Ok(fd)
}

fn new_tcp_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    // libuv sets SO_REUSEADDR on every TCP bind, so restarts do not wait out TIME_WAIT.
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    Ok(fd)
}

fn bind_tcp_socket(fd: &OwnedFd, addr: SocketAddr, ipv6_only: bool) -> io::Result<()> {
    match addr {
        SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a))?,
        SocketAddr::V6(a) => {
            setsockopt(fd, sockopt::Ipv6V6Only, &ipv6_only)?;
            bind(fd.as_raw_fd(), &SockaddrIn6::from(a))?
        }
    }
    Ok(())
}

fn bind_tcp(addr: SocketAddr, ipv6_only: bool) -> io::Result<OwnedFd> {
    let fd = new_tcp_socket(&addr)?;
    bind_tcp_socket(&fd, addr, ipv6_only)?;
    Ok(fd)
}

fn bind_unix(path: &str) -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(fd)
}

/// The TCP port a socket is bound to; `None` for any other kind of socket.
pub fn local_port(fd: &impl AsRawFd) -> Option<u16> {
    use nix::sys::socket::{getsockname, SockaddrStorage};
    let addr = getsockname::<SockaddrStorage>(fd.as_raw_fd()).ok()?;
    addr.as_sockaddr_in()
        .map(|a| a.port())
        .or_else(|| addr.as_sockaddr_in6().map(|a| a.port()))
}

/// The negative libuv errno a worker expects in a failed `queryServer` reply.
pub fn uv_errno(e: &io::Error) -> i32 {
    -e.raw_os_error().unwrap_or(libc::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_any_and_reports_eaddrinuse_as_negative_errno() {
        let a = bind_request(&BindRequest::Tcp {
            address: Some("127.0.0.1".parse().unwrap()),
            port: 0,
            ipv6_only: false,
        })
        .unwrap();
        nix::sys::socket::listen(&a, nix::sys::socket::Backlog::new(8).unwrap()).unwrap();
        let local: SockaddrIn = nix::sys::socket::getsockname(a.as_raw_fd()).unwrap();
        let err = bind_request(&BindRequest::Tcp {
            address: Some("127.0.0.1".parse().unwrap()),
            port: local.port(),
            ipv6_only: false,
        })
        .unwrap_err();
        assert_eq!(uv_errno(&err), -libc::EADDRINUSE);
    }
}
