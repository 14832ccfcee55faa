//! systemd integration without libsystemd: `sd_notify` datagrams (`NOTIFY_SOCKET`, `Type=notify`)
//! and socket activation (`LISTEN_FDS`/`LISTEN_PID`, `Sockets=`).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use crate::core::{Notice, OpsPhase};

/// The first inherited fd (`SD_LISTEN_FDS_START`).
pub(crate) const LISTEN_FDS_START: i32 = 3;

/// Variables a new master (an upgrade) must not inherit: the sockets it gets are described by
/// its own variables, and `WATCHDOG_PID` names this master, which would keep the new one from
/// taking over the watchdog pings (`NotifyAccess=all` lets systemd hear them from it).
pub(crate) const NOT_FOR_A_NEW_MASTER: &[&str] =
    &["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_PID"];

/// Variables children must not inherit: the sockets and the notify channel are the master's.
pub(crate) const CHILD_ENV_REMOVED: &[&str] = &[
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// The `sd_notify` message for a lifecycle notice. `monotonic_usec` is `CLOCK_MONOTONIC` now
/// (`Type=notify-reload` wants it with `RELOADING=1`).
pub(crate) fn message(notice: &Notice, main_pid: u32, monotonic_usec: u64) -> String {
    let status = match notice.phase.unwrap_or(OpsPhase::Ready) {
        OpsPhase::Closing if notice.phase.is_some() => "closing".to_string(),
        _ => format!("{}/{} app workers serving", notice.serving, notice.workers),
    };
    let head = match notice.phase {
        Some(OpsPhase::Ready) => format!("READY=1\nMAINPID={main_pid}\n"),
        Some(OpsPhase::Reloading) => format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\n"),
        Some(OpsPhase::Closing) => "STOPPING=1\n".to_string(),
        Some(OpsPhase::Starting) | None => String::new(),
    };
    format!("{head}STATUS={status}")
}

/// Where `NOTIFY_SOCKET` points.
pub(crate) fn address(notify_socket: &str) -> std::io::Result<SocketAddr> {
    match notify_socket.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(notify_socket),
    }
}

/// A connectionless sender to the service manager. Sends never block: a manager that does
/// not read loses notices rather than stalling the master.
pub(crate) struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    pub(crate) fn new(notify_socket: &str) -> std::io::Result<Self> {
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        Ok(Notifier {
            sock,
            addr: address(notify_socket)?,
        })
    }

    pub(crate) fn send(&self, msg: &str) -> std::io::Result<()> {
        self.sock
            .send_to_addr(msg.as_bytes(), &self.addr)
            .map(|_| ())
    }
}

pub(crate) fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_messages() {
        let n = |phase, serving| Notice {
            phase,
            serving,
            workers: 2,
        };
        assert_eq!(
            message(&n(Some(OpsPhase::Ready), 2), 42, 5),
            "READY=1\nMAINPID=42\nSTATUS=2/2 app workers serving"
        );
        assert_eq!(
            message(&n(Some(OpsPhase::Reloading), 2), 42, 5),
            "RELOADING=1\nMONOTONIC_USEC=5\nSTATUS=2/2 app workers serving"
        );
        assert_eq!(
            message(&n(Some(OpsPhase::Closing), 2), 42, 5),
            "STOPPING=1\nSTATUS=closing"
        );
        assert_eq!(
            message(&n(None, 1), 42, 5),
            "STATUS=1/2 app workers serving"
        );
    }

    #[test]
    fn notify_reaches_an_abstract_socket() {
        let name = format!("egg-cluster-rs-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        Notifier::new(&format!("@{name}"))
            .unwrap()
            .send("READY=1")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
