//! systemd's variables (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `LISTEN_FDS`/`LISTEN_PID`/
//! `LISTEN_FDNAMES`), read once at start with the other settings. What the master does with
//! them (notify datagrams, the inherited sockets) is `ops::systemd`'s.

use std::collections::HashMap;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::testing::env;

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
}
