//! Sticky sessions: the master accepts on the real port and hands each connection to the worker
//! its client address maps to, with the message `'sticky-session:connection'`.
//!
//! Mapping: every app worker owns a *slot* (a replacement takes its predecessor's slot), and a
//! client address hashes to a slot. While a slot's worker is not serving (dead, disconnecting, or
//! not yet listening), its clients are spread over the live slots by the same hash, so the same
//! address keeps reaching the same live worker and a dead worker is never picked.
//!
//! Behind a load balancer every client has the proxy's address; with `stickyKey` the key is read
//! from the connection's first bytes instead (see [`peek_key`] and [`crate::client_key`]).

use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use crate::client_key::{client_key, proxy_header_len, KeySource, Peek, TrustedNet};

/// At most this many bytes are peeked for the client key ...
pub const KEY_MAX_BYTES: usize = 8 * 1024;
/// ... within this long; then the connection goes by its peer address.
pub const KEY_TIMEOUT: Duration = Duration::from_millis(500);

/// `stickyKey` and `stickyTrustedProxies`.
#[derive(Debug)]
pub struct StickyKey {
    pub source: KeySource,
    pub trusted: Vec<TrustedNet>,
}

/// The client address to pick a worker by: read from the connection's first bytes with
/// `MSG_PEEK` (the worker still receives every byte), bounded in bytes and time; the peer address
/// when the peer is not a trusted proxy, sends nothing or garbage.
pub async fn peek_key(fd: OwnedFd, peer: IpAddr, key: &StickyKey) -> (OwnedFd, IpAddr) {
    if client_key(&key.source, &[], peer, &key.trusted, KEY_MAX_BYTES) == Peek::Fallback {
        return (fd, peer);
    }
    // SAFETY: `fd` is an open socket owned by the AsyncFd until `into_inner`.
    let afd = match unsafe { AsyncFd::register(fd) } {
        Ok(afd) => afd,
        Err(e) => return (e.into_parts().0, peer),
    };
    let mut buf = vec![0u8; KEY_MAX_BYTES];
    let found = tokio::time::timeout(KEY_TIMEOUT, async {
        loop {
            let mut guard = match afd.readable().await {
                Ok(g) => g,
                Err(_) => return peer,
            };
            // SAFETY: recv into our own buffer, with its length.
            let n = unsafe {
                libc::recv(
                    afd.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_PEEK,
                )
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    continue;
                }
                return peer;
            }
            if n == 0 {
                // The client closed before sending a key; the worker sees the EOF.
                return peer;
            }
            let seen = &buf[..n as usize];
            match client_key(&key.source, seen, peer, &key.trusted, KEY_MAX_BYTES) {
                Peek::Key(ip) => {
                    consume_proxy_header(&afd, seen, &key.source);
                    return ip;
                }
                Peek::NoAddress => {
                    consume_proxy_header(&afd, seen, &key.source);
                    return peer;
                }
                Peek::Fallback => return peer,
                // Peeking does not consume, so readiness stays set: wait for the next arrival.
                Peek::NeedMore => guard.clear_ready(),
            }
        }
    })
    .await
    .unwrap_or(peer);
    (afd.into_inner(), found)
}

/// The PROXY header is for this hop only: the worker gets the stream as the client sent it.
/// The header is complete in `seen`, so this read takes exactly those bytes and cannot block.
fn consume_proxy_header(afd: &AsyncFd<OwnedFd>, seen: &[u8], source: &KeySource) {
    if *source != KeySource::ProxyProtocol {
        return;
    }
    let Some(len) = proxy_header_len(seen) else {
        return;
    };
    let mut sink = [0u8; 256];
    let mut left = len;
    while left > 0 {
        // SAFETY: recv into our own buffer, at most its length.
        let n = unsafe {
            libc::recv(
                afd.get_ref().as_raw_fd(),
                sink.as_mut_ptr().cast(),
                left.min(sink.len()),
                0,
            )
        };
        if n <= 0 {
            return;
        }
        left -= n as usize;
    }
}

/// FNV-1a over the address bytes plus a finalizer: stable across runs and processes, cheap, well
/// spread even in the low bits.
pub fn hash_ip(ip: IpAddr) -> u64 {
    // An IPv4-mapped IPv6 address is the same client as its IPv4 form (dual-stack listeners
    // report v4 clients as ::ffff:a.b.c.d).
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let bytes: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits are weak (the lowest is just the parity of the bytes' low bits), and the
    // slot is `h % workers`: a murmur3 finalizer spreads every input bit over every output bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Most connections taken per wake-up before they are handed over (and other work runs).
const ACCEPT_BURST: usize = 64;

/// Accepts on the (listening, non-blocking) `listener` until `deliver` returns false. Each
/// wake-up drains the accept queue in one burst with raw `accept4` (the accepted sockets are
/// never registered with our reactor: they only pass through), so a connection costs two
/// syscalls here. `on_error` hears of the failures that make it back off (EMFILE and the
/// like).
pub fn accept_loop<F, E>(
    listener: OwnedFd,
    mut deliver: F,
    mut on_error: E,
) -> std::io::Result<impl std::future::Future<Output = ()>>
where
    F: FnMut(Vec<(OwnedFd, IpAddr)>) -> bool,
    E: FnMut(&std::io::Error),
{
    // SAFETY: the listener is an open socket owned by the AsyncFd for its whole life.
    let afd = unsafe { AsyncFd::register(listener) }.map_err(|e| e.into_parts().1)?;
    Ok(async move {
        loop {
            let mut guard = match afd.readable().await {
                Ok(g) => g,
                Err(_) => return,
            };
            let mut burst = Vec::new();
            let mut backoff = false;
            while burst.len() < ACCEPT_BURST {
                match accept_one(afd.get_ref().as_raw_fd()) {
                    Ok(conn) => burst.push(conn),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        break;
                    }
                    // The client reset before we took it: just go on.
                    Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                    // EMFILE and friends: back off briefly instead of spinning.
                    Err(e) => {
                        on_error(&e);
                        backoff = true;
                        break;
                    }
                }
            }
            drop(guard);
            if !burst.is_empty() && !deliver(burst) {
                return;
            }
            if backoff {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
}

fn accept_one(listener: std::os::fd::RawFd) -> std::io::Result<(OwnedFd, IpAddr)> {
    use std::os::fd::FromRawFd;
    // SAFETY: zeroed sockaddr_storage is a valid value; accept4 writes at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // Non-blocking (a worker must never get a blocking socket) and CLOEXEC (only SCM_RIGHTS
    // passes it on), set atomically.
    let fd = unsafe {
        libc::accept4(
            listener,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: accept4 returned a new fd that we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let ip = match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel filled a sockaddr_in for AF_INET.
            let sin = unsafe {
                &*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel filled a sockaddr_in6 for AF_INET6.
            let sin6 = unsafe {
                &*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            IpAddr::from(sin6.sin6_addr.s6_addr)
        }
        _ => IpAddr::from([0u8, 0, 0, 0]),
    };
    Ok((fd, ip))
}

/// The worker pid for a client: `slots[i]` is the pid serving slot `i`, if any.
pub(crate) fn pick(ip: IpAddr, slots: &[Option<u32>]) -> Option<u32> {
    if slots.is_empty() {
        return None;
    }
    let h = hash_ip(ip);
    if let Some(pid) = slots[(h % slots.len() as u64) as usize] {
        return Some(pid);
    }
    let live: Vec<u32> = slots.iter().flatten().copied().collect();
    if live.is_empty() {
        return None;
    }
    // Re-hash so the orphaned clients spread instead of all landing on one neighbour.
    let h2 = h.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
    Some(live[(h2 % live.len() as u64) as usize])
}

impl super::Runtime {
    /// Sticky mode: listen on the real port and feed accepted connections to the main loop.
    pub(super) fn start_sticky_server(&mut self, port: u16) -> std::io::Result<()> {
        let fd = match self.handles.inherited(port) {
            Some(fd) => fd?,
            None => crate::listen::bind_request(&crate::protocol::cluster::BindRequest::Tcp {
                address: None,
                port,
                ipv6_only: false,
            })?,
        };
        let backlog = nix::sys::socket::Backlog::new(511).map_err(std::io::Error::from)?;
        nix::sys::socket::listen(&fd, backlog)?;
        self.upgrade.keep(fd.try_clone());
        tracing::debug!(port, "sticky listener up");
        let tx = self.tx.clone();
        let key = self.sticky_key.clone();
        let logger = self.logger.clone();
        let mut last_warned: Option<(std::time::Instant, u64)> = None;
        // The loop retries every 50 ms: one line per 10 s, with how many failures it stands for.
        let on_error = move |e: &std::io::Error| {
            let now = std::time::Instant::now();
            match &mut last_warned {
                Some((at, n)) if now.duration_since(*at) < Duration::from_secs(10) => *n += 1,
                _ => {
                    let more = last_warned.map_or(0, |(_, n)| n);
                    logger.warn(&format!(
                        "[master] sticky: cannot accept connections on port {port}: {e}; retrying every 50ms{}",
                        if more > 0 { format!(" ({more} more failures since the last line)") } else { String::new() }
                    ));
                    last_warned = Some((now, 0));
                }
            }
        };
        let task = tokio::spawn(accept_loop(
            fd,
            move |accepted| {
                match &key {
                    None => tx.send(super::Input::StickyConnections(accepted)).is_ok(),
                    // Reading the key may wait on the client: one task per connection, so a silent
                    // client delays only itself.
                    Some(key) => {
                        for (fd, peer) in accepted {
                            let (key, tx) = (key.clone(), tx.clone());
                            tokio::spawn(async move {
                                let (fd, ip) = peek_key(fd, peer, &key).await;
                                let _ = tx.send(super::Input::StickyConnections(vec![(fd, ip)]));
                            });
                        }
                        !tx.is_closed()
                    }
                }
            },
            on_error,
        )?);
        self.accepting.push(task.abort_handle());
        Ok(())
    }

    /// Performs `Action::StopAccepting`: an upgrade's new master accepts on the sticky and
    /// metrics listeners from now on; this one, closing, would accept connections it has no
    /// worker left for, and answer probes with its own 503.
    pub(super) fn stop_accepting(&mut self) {
        for task in self.accepting.drain(..) {
            tracing::debug!("a listener of the master: no longer accepting (hand-over)");
            task.abort();
        }
    }

    /// Hands each accepted connection to the worker its client maps to.
    pub(super) fn hand_over(&mut self, accepted: Vec<(OwnedFd, IpAddr)>) {
        for (fd, ip) in accepted {
            // No worker can take it: dropping (closing) it is all that is left.
            let Some(pid) = pick(ip, &self.routes.slots) else {
                tracing::debug!(%ip, "sticky: no serving worker, connection closed");
                continue;
            };
            if let Some(app) = self.children.get(pid) {
                tracing::trace!(%ip, pid, "sticky hand-over");
                self.ops.handed_over(pid);
                let _ = app.sender.send_control(crate::ipc::channel::Frame::handle(
                    "net.Socket",
                    b"\"sticky-session:connection\"",
                    fd,
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn same_address_same_worker() {
        let slots = [Some(1), Some(2), Some(3)];
        for a in ["127.0.0.1", "10.0.0.7", "::1"] {
            let first = pick(ip(a), &slots);
            for _ in 0..5 {
                assert_eq!(pick(ip(a), &slots), first);
            }
        }
        assert_eq!(
            pick(ip("::ffff:10.0.0.7"), &slots),
            pick(ip("10.0.0.7"), &slots)
        );
    }

    #[test]
    fn addresses_spread_over_workers() {
        let slots = [Some(1), Some(2)];
        let mut counts = [0; 2];
        for i in 0..=255u8 {
            let p = pick(IpAddr::from([127, 0, 0, i]), &slots).unwrap();
            counts[(p - 1) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 80), "{counts:?}");
    }

    #[test]
    fn structured_addresses_spread_too() {
        // Addresses whose bytes' low bits always have the same parity (plain FNV-1a would send
        // them all to one of two workers).
        let slots = [Some(1), Some(2)];
        let mut counts = [0; 2];
        for i in 0..64u8 {
            let p = pick(IpAddr::from([10, 1, i, 100 + i]), &slots).unwrap();
            counts[(p - 1) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 16), "{counts:?}");
    }

    #[test]
    fn a_dead_worker_is_never_picked_and_others_keep_their_clients() {
        let all = [Some(1), Some(2), Some(3)];
        let down = [Some(1), None, None];
        for i in 0..=255u8 {
            let a = IpAddr::from([10, 1, 2, i]);
            let before = pick(a, &all).unwrap();
            let after = pick(a, &down).unwrap();
            assert_eq!(after, 1, "only worker 1 serves");
            if before == 1 {
                assert_eq!(after, before);
            }
        }
        assert_eq!(pick(ip("1.2.3.4"), &[None, None]), None);
        assert_eq!(pick(ip("1.2.3.4"), &[]), None);
    }
}
