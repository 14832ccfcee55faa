//! systemd integration without libsystemd: `sd_notify` datagrams (`NOTIFY_SOCKET`, `Type=notify`)
//! and socket activation (`LISTEN_FDS`/`LISTEN_PID`, `Sockets=`).

use std::collections::HashMap;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use crate::core::{Notice, OpsPhase};

/// The first inherited fd (`SD_LISTEN_FDS_START`).
pub(crate) const LISTEN_FDS_START: i32 = 3;

/// What the master reads from systemd's variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemdEnv {
    /// `NOTIFY_SOCKET`: a path, or `@name` for an abstract socket.
    pub notify_socket: Option<String>,
    /// `WATCHDOG_USEC`, when it is meant for this process (`WATCHDOG_PID` unset or ours).
    pub watchdog_usec: Option<u64>,
    /// `LISTEN_FDS`, when `LISTEN_PID` is this process: fds 3.. are listening sockets.
    pub listen_fds: usize,
    /// `LISTEN_FDNAMES`, split on `:`.
    pub listen_fdnames: Vec<String>,
}

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

impl SystemdEnv {
    /// `Err((variable, expected))` for a value meant for this process that cannot be used.
    pub(crate) fn from_env(
        env: &HashMap<String, String>,
        pid: u32,
    ) -> Result<Self, (&'static str, &'static str)> {
        let mine = |var: &str| {
            env.get(var)
                .is_none_or(|p| p.parse::<u32>().ok() == Some(pid))
        };
        let notify_socket = env
            .get("NOTIFY_SOCKET")
            .filter(|s| s.starts_with('/') || s.starts_with('@'))
            .cloned();
        let watchdog_usec = match env.get("WATCHDOG_USEC") {
            Some(v) if mine("WATCHDOG_PID") => Some(
                v.parse::<u64>()
                    .ok()
                    .filter(|&u| u > 0)
                    .ok_or(("WATCHDOG_USEC", "a positive integer (µs)"))?,
            ),
            _ => None,
        };
        let for_us = env
            .get("LISTEN_PID")
            .is_some_and(|p| p.parse::<u32>().ok() == Some(pid));
        let (listen_fds, listen_fdnames) = match env.get("LISTEN_FDS") {
            Some(n) if for_us => {
                let n = n
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| (1..=1024).contains(&n))
                    .ok_or(("LISTEN_FDS", "a number of fds between 1 and 1024"))?;
                let names = env
                    .get("LISTEN_FDNAMES")
                    .map(|s| s.split(':').map(str::to_string).collect())
                    .unwrap_or_default();
                (n, names)
            }
            _ => (0, Vec::new()),
        };
        Ok(SystemdEnv {
            notify_socket,
            watchdog_usec,
            listen_fds,
            listen_fdnames,
        })
    }
}

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

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn variables() {
        assert_eq!(
            SystemdEnv::from_env(&env(&[]), 7).unwrap(),
            SystemdEnv::default()
        );
        let e = SystemdEnv::from_env(
            &env(&[
                ("NOTIFY_SOCKET", "@sd"),
                ("WATCHDOG_USEC", "3000000"),
                ("LISTEN_PID", "7"),
                ("LISTEN_FDS", "2"),
                ("LISTEN_FDNAMES", "http:metrics"),
            ]),
            7,
        )
        .unwrap();
        assert_eq!(e.notify_socket.as_deref(), Some("@sd"));
        assert_eq!(e.watchdog_usec, Some(3_000_000));
        assert_eq!(e.listen_fds, 2);
        assert_eq!(e.listen_fdnames, ["http", "metrics"]);
        // Meant for another process: ignored, even when garbage.
        let other = SystemdEnv::from_env(
            &env(&[
                ("LISTEN_PID", "8"),
                ("LISTEN_FDS", "x"),
                ("WATCHDOG_PID", "8"),
                ("WATCHDOG_USEC", "x"),
                ("NOTIFY_SOCKET", "relative"),
            ]),
            7,
        )
        .unwrap();
        assert_eq!(other, SystemdEnv::default());
        assert_eq!(
            SystemdEnv::from_env(&env(&[("LISTEN_PID", "7"), ("LISTEN_FDS", "0")]), 7),
            Err(("LISTEN_FDS", "a number of fds between 1 and 1024"))
        );
        assert_eq!(
            SystemdEnv::from_env(&env(&[("WATCHDOG_USEC", "")]), 7)
                .unwrap_err()
                .0,
            "WATCHDOG_USEC"
        );
    }

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
