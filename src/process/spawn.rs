//! Spawning Node children with an IPC channel on fd 3, and reaping them without touching libuv.
//!
//! `std::process::Command` forks and execs for us (safe in a multi-threaded process: only
//! async-signal-safe calls run between the two, in `pre_exec`). Reaping uses a pidfd per child:
//! libuv owns SIGCHLD inside Node and reaps only its own pids, so we must neither install a
//! SIGCHLD handler nor call `waitpid(-1)`; `waitpid(pid)` on our own pids is safe.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use tokio::io::unix::AsyncFd;

/// Environment variables Node reads to set up its IPC channel and cluster role. Inherited copies
/// (a master that is itself a forked child) must not reach our children.
const CHANNEL_VARS: [&str; 3] = [
    "NODE_CHANNEL_FD",
    "NODE_CHANNEL_SERIALIZATION_MODE",
    "NODE_UNIQUE_ID",
];

pub struct SpawnSpec<'a> {
    pub exec_path: &'a str,
    pub exec_argv: &'a [String],
    pub script: &'a str,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    /// `NODE_UNIQUE_ID`: makes the child a cluster worker with this id.
    pub cluster_id: Option<u32>,
}

pub struct NodeChild {
    pub child: Child,
    /// Our end of the IPC socketpair (CLOEXEC, so no later child inherits it).
    pub channel: OwnedFd,
}

pub fn spawn_node(spec: &SpawnSpec) -> io::Result<NodeChild> {
    // Both ends CLOEXEC: ours must never leak into any child (a leaked copy hides EOF from both
    // sides), the child's end is moved onto fd 3 by dup2, which clears the flag on the copy.
    let (parent_end, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)?;

    let mut cmd = Command::new(spec.exec_path);
    cmd.args(spec.exec_argv)
        .arg(spec.script)
        .args(spec.args)
        .env_clear()
        .envs(
            spec.env
                .iter()
                .filter(|(k, _)| !CHANNEL_VARS.contains(&k.as_str()))
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )
        .env("NODE_CHANNEL_FD", "3")
        .env("NODE_CHANNEL_SERIALIZATION_MODE", "json")
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    if let Some(id) = spec.cluster_id {
        cmd.env("NODE_UNIQUE_ID", id.to_string());
    }

    let child_fd = child_end.as_raw_fd();
    let master_pid = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // calls (dup2, fcntl, prctl, getppid, kill).
    unsafe {
        cmd.pre_exec(move || {
            // Node marks its own fds 0-2 CLOEXEC at startup (uv_disable_stdio_inheritance) and
            // relies on libuv's spawn dup2'ing them; `Stdio::inherit` does not, so without this
            // the child would start with 0-2 closed (and Node would reopen them on /dev/null).
            for fd in 0..3 {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 && flags & libc::FD_CLOEXEC != 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                }
            }
            if child_fd == 3 {
                // dup2(3, 3) is a no-op that would leave CLOEXEC set.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(child_fd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            // If the master dies without closing us (SIGKILL), take the graceful path too. The
            // signal fires when the *spawning thread* exits; ours lives as long as the master.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The master may have died between fork and prctl.
            if libc::getppid() != master_pid {
                libc::kill(libc::getpid(), libc::SIGTERM);
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // Our copy of the child's end must go, or we would never see EOF when the child dies.
    drop(child_end);
    Ok(NodeChild {
        child,
        channel: parent_end,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitInfo {
    pub fn signal_name(&self) -> Option<&'static str> {
        self.signal.map(signal_name)
    }
}

pub fn signal_name(sig: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str())
        .unwrap_or("UNKNOWN")
}

/// Waits for `child` to exit and reaps it.
pub async fn wait_exit(mut child: Child) -> ExitInfo {
    let pid = child.id() as libc::pid_t;
    // SAFETY: pidfd_open has no memory arguments; a negative result is an error.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw >= 0 {
        // SAFETY: the syscall returned a fresh fd that we now own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        // SAFETY: the pidfd is owned by the AsyncFd and stays open until it is dropped.
        if let Ok(afd) = unsafe { AsyncFd::register(pidfd) } {
            // A pidfd becomes readable when the process exits.
            if let Ok(guard) = afd.readable().await {
                drop(guard);
                if let Ok(Some(status)) = child.try_wait() {
                    return exit_info(status);
                }
            }
        }
    }
    // Kernels before 5.3 have no pidfd: block a thread in waitpid(pid) instead.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.await {
        Ok(Ok(status)) => exit_info(status),
        _ => ExitInfo {
            code: None,
            signal: None,
        },
    }
}

fn exit_info(status: std::process::ExitStatus) -> ExitInfo {
    ExitInfo {
        code: status.code(),
        signal: status.signal(),
    }
}
