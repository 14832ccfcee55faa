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
pub const CHANNEL_VARS: [&str; 3] = [
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
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // calls (dup2, fcntl).
    unsafe {
        cmd.pre_exec(move || {
            inherit_stdio();
            if child_fd == 3 {
                // dup2(3, 3) is a no-op that would leave CLOEXEC set.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(child_fd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            // Only 0-3 are the worker's: whatever the master itself inherited without CLOEXEC
            // (a job runner's fd, a socket its supervisor passed) would otherwise live on in
            // every worker. Marked CLOEXEC rather than closed, so that the pipe std uses to
            // report a failed exec still works. A kernel before 5.11 (EINVAL/ENOSYS) leaves
            // them as they are, as Node's own spawn does.
            libc::syscall(
                libc::SYS_close_range,
                4u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            // No PR_SET_PDEATHSIG: when the master dies the child must see its channel close
            // first and take graceful-process's disconnect path, as under egg-cluster; the
            // watchdog (`process::watchdog`) kills whatever is left after the close timeout.
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

/// Node marks its own fds 0-2 CLOEXEC at startup (uv_disable_stdio_inheritance) and relies on
/// libuv's spawn dup2'ing them; `Stdio::inherit` does not, so without this a child would start
/// with 0-2 closed (and Node would reopen them on /dev/null). For `pre_exec`: fcntl only.
unsafe fn inherit_stdio() {
    for fd in 0..3 {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 && flags & libc::FD_CLOEXEC != 0 {
            libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
        }
    }
}

/// Variables that tell a master it is the new master of an upgrade: how many listening sockets
/// it inherited on fds 3.., and the fd on which it says `ready`.
pub const UPGRADE_FDS: &str = "EGG_CLUSTER_RS_UPGRADE_FDS";
pub const UPGRADE_READY_FD: &str = "EGG_CLUSTER_RS_UPGRADE_READY_FD";
/// How many app workers the old master ran (scaled since its start, perhaps): the new one's.
pub const UPGRADE_WORKERS: &str = "EGG_CLUSTER_RS_UPGRADE_WORKERS";

/// Every variable of an upgrade's hand-over: a new master's own, never its children's.
pub const UPGRADE_VARS: [&str; 3] = [UPGRADE_FDS, UPGRADE_READY_FD, UPGRADE_WORKERS];

/// How a new master is started: this one's command line, directory and environment.
pub struct MasterSpec<'a> {
    pub exec_path: &'a str,
    /// `process.execArgv` then `process.argv.slice(1)`.
    pub args: &'a [String],
    pub cwd: &'a std::path::Path,
    pub env: &'a [(String, String)],
    /// Listening sockets, placed on fds 3.. in this order.
    pub fds: &'a [std::os::fd::BorrowedFd<'a>],
    /// How many app workers the new master runs.
    pub workers: usize,
}

pub struct NewMaster {
    pub child: Child,
    /// The read end of the readiness pipe: `ready\n`, or EOF when the new master exits first.
    pub ready: OwnedFd,
}

/// Starts a new master (an upgrade) that inherits `spec.fds` and the write end of a readiness
/// pipe, and nothing else.
pub fn spawn_master(spec: &MasterSpec) -> io::Result<NewMaster> {
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut sources: Vec<i32> = spec.fds.iter().map(AsRawFd::as_raw_fd).collect();
    sources.push(ready_write.as_raw_fd());
    let count = spec.fds.len();
    let mut cmd = Command::new(spec.exec_path);
    cmd.args(spec.args)
        .current_dir(spec.cwd)
        .env_clear()
        .envs(
            spec.env
                .iter()
                .filter(|(k, _)| {
                    !CHANNEL_VARS.contains(&k.as_str())
                        && !crate::ops::systemd::NOT_FOR_A_NEW_MASTER.contains(&k.as_str())
                        && !UPGRADE_VARS.contains(&k.as_str())
                })
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )
        .env(UPGRADE_FDS, count.to_string())
        .env(UPGRADE_READY_FD, (3 + count).to_string())
        .env(UPGRADE_WORKERS, spec.workers.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    // Copies above every target fd, so that placing one never overwrites a source not yet
    // placed (a source may well be fd 4 and another's target); filled in the child.
    let mut high = vec![-1; sources.len()];
    let floor = 3 + sources.len() as i32;
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // calls (setsid, fcntl, dup2, close_range) and writes into memory allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // A session and process group of its own: it must outlive this master, whose
            // group a Ctrl-C or a supervisor's group kill may reach, and be stoppable as a
            // whole (kill(-pid)) if it fails.
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            inherit_stdio();
            for (i, &fd) in sources.iter().enumerate() {
                high[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor);
                if high[i] < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (i, &fd) in high.iter().enumerate() {
                // dup2 clears CLOEXEC on the copy: these are the ones the new master gets.
                if libc::dup2(fd, 3 + i as i32) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Nothing else: whatever this master holds without CLOEXEC stays here (as in
            // `spawn_node`; a kernel before 5.11 leaves them as they are).
            libc::syscall(
                libc::SYS_close_range,
                floor as u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            // No PR_SET_PDEATHSIG: the point is to outlive this master.
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(ready_write);
    Ok(NewMaster {
        child,
        ready: ready_read,
    })
}

/// Whether a failed spawn (or channel set-up) failed for want of a resource of this process's
/// or the system's — file descriptors, memory, processes —, which says nothing of the program
/// spawned and may pass.
pub fn short_of_resource(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN)
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    use serde_json::json;

    use crate::process::testutil::{spawn_plain, which, within, ChildChannel, KillOnDrop, Script};

    /// Reports what the child sees, then exits. `/proc/self/environ` is the environment as it
    /// was at exec: node deletes `NODE_CHANNEL_*` (and a worker `NODE_UNIQUE_ID`) from
    /// `process.env` before user code runs.
    const REPORT: &str = r#"
const fs = require('fs');
const cluster = require('cluster');
const environ = fs.readFileSync('/proc/self/environ', 'utf8').split('\0').filter(Boolean);
const sockets = fs.readdirSync('/proc/self/fd').filter((fd) => {
  try { return fs.readlinkSync('/proc/self/fd/' + fd).startsWith('socket:'); } catch { return false; }
}).map(Number);
process.send({
  environ,
  sockets,
  channelFd: process.channel.fd,
  workerId: cluster.isWorker ? cluster.worker.id : null,
  execArgv: process.execArgv,
  argv: process.argv.slice(2),
}, () => process.exit(0));
"#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The environment given to the child: stale channel variables (as a master that is itself
    /// a forked child would have) and one of our own.
    fn stale_env() -> Vec<(String, String)> {
        env(&[
            ("NODE_CHANNEL_FD", "9"),
            ("NODE_CHANNEL_SERIALIZATION_MODE", "advanced"),
            ("NODE_UNIQUE_ID", "42"),
            ("EGG_CLUSTER_RS_TEST", "kept"),
        ])
    }

    fn environ_values(report: &serde_json::Value, name: &str) -> Vec<String> {
        let prefix = format!("{name}=");
        report["environ"]
            .as_array()
            .expect("environ")
            .iter()
            .filter_map(|e| e.as_str()?.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    async fn wait(child: Child) -> ExitInfo {
        within("the child to exit", wait_exit(child)).await
    }

    fn pid_of(child: &NodeChild) -> i32 {
        i32::try_from(child.child.id()).expect("pid fits")
    }

    #[tokio::test]
    async fn the_child_gets_the_channel_on_fd_3_and_a_clean_environment() {
        let node = which("node");
        let script = Script::new("report.js", REPORT);
        let env = stale_env();
        let exec_argv = ["--no-warnings".to_string()];
        let args = ["one".to_string(), "two words".to_string()];
        let child = spawn_node(&SpawnSpec {
            exec_path: &node,
            exec_argv: &exec_argv,
            script: script.path_str(),
            args: &args,
            env: &env,
            cluster_id: None,
        })
        .expect("spawn node");
        let _guard = KillOnDrop(vec![pid_of(&child)]);
        let mut channel = ChildChannel::open(child.channel);

        // process.send() in the child reaches us through the channel.
        let report = channel.message().await;
        assert_eq!(environ_values(&report, "NODE_CHANNEL_FD"), ["3"]);
        assert_eq!(
            environ_values(&report, "NODE_CHANNEL_SERIALIZATION_MODE"),
            ["json"]
        );
        assert!(environ_values(&report, "NODE_UNIQUE_ID").is_empty());
        assert_eq!(environ_values(&report, "EGG_CLUSTER_RS_TEST"), ["kept"]);
        assert_eq!(report["environ"].as_array().unwrap().len(), 3, "{report}");
        assert_eq!(report["channelFd"], 3);
        // The only socket the child holds is its channel: no other child's channel, nor our
        // end of its own, crossed the exec.
        assert_eq!(report["sockets"], json!([3]));
        assert_eq!(report["workerId"], json!(null));
        assert_eq!(report["execArgv"], json!(["--no-warnings"]));
        assert_eq!(report["argv"], json!(["one", "two words"]));
        assert!(channel.cluster.is_empty());

        assert_eq!(
            wait(child.child).await,
            ExitInfo {
                code: Some(0),
                signal: None
            }
        );
        // We hold no copy of the child's end: its exit is an EOF here.
        assert_eq!(channel.closed().await, None);
    }

    #[tokio::test]
    async fn a_cluster_id_makes_the_child_a_cluster_worker() {
        let node = which("node");
        let script = Script::new("report.js", REPORT);
        let env = stale_env();
        let child = spawn_node(&SpawnSpec {
            exec_path: &node,
            exec_argv: &[],
            script: script.path_str(),
            args: &[],
            env: &env,
            cluster_id: Some(7),
        })
        .expect("spawn node");
        let _guard = KillOnDrop(vec![pid_of(&child)]);
        let mut channel = ChildChannel::open(child.channel);

        let report = channel.message().await;
        assert_eq!(environ_values(&report, "NODE_UNIQUE_ID"), ["7"]);
        assert_eq!(environ_values(&report, "NODE_CHANNEL_FD"), ["3"]);
        assert_eq!(report["workerId"], 7);
        assert_eq!(report["sockets"], json!([3]));
        // The worker announced itself with the cluster protocol.
        let online: serde_json::Value =
            serde_json::from_str(&channel.cluster_lines(1).await[0]).unwrap();
        assert_eq!(online["cmd"], "NODE_CLUSTER");
        assert_eq!(online["act"], "online");

        assert_eq!(wait(child.child).await.code, Some(0));
        assert_eq!(channel.closed().await, None);
    }

    /// Fds of this process that an exec would keep (no `FD_CLOEXEC`), 3 and up: what this
    /// process inherited from whoever started the tests, not anything the crate opened.
    fn inheritable_fds() -> BTreeSet<i32> {
        let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        fds.into_iter()
            .filter(|&fd| fd > 2)
            .filter(|&fd| {
                // SAFETY: F_GETFD on a number that may or may not be open; no memory involved.
                let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
                flags >= 0 && flags & libc::FD_CLOEXEC == 0
            })
            .collect()
    }

    fn fds_of(pid: i32) -> BTreeSet<i32> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("the child's /proc/<pid>/fd")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }

    #[tokio::test]
    async fn nothing_but_0_to_3_crosses_the_exec() {
        // Node opens a dozen fds of its own at startup, so the fd table is checked right after
        // exec, from outside, on a program that opens nothing (`sleep`): spawn_node returns
        // only once the exec has happened.
        let sleep = which("sleep");
        let spec = SpawnSpec {
            exec_path: &sleep,
            exec_argv: &[],
            script: "30",
            args: &[],
            env: &[],
            cluster_id: None,
        };
        // An fd this process holds without CLOEXEC, as a master may have inherited one: it must
        // not reach the child either.
        let mut leaky = [0i32; 2];
        // SAFETY: pipe(2) writes two fds into the array; they are closed at the end.
        assert_eq!(unsafe { libc::pipe(leaky.as_mut_ptr()) }, 0, "pipe");
        let inherited = inheritable_fds();
        assert!(inherited.contains(&leaky[0]), "{inherited:?}");
        // A first child is alive, with our end of its channel open, when the second is spawned.
        let first = spawn_node(&spec).expect("spawn sleep");
        let second = spawn_node(&spec).expect("spawn sleep");
        let _guard = KillOnDrop(vec![pid_of(&first), pid_of(&second)]);

        let allowed: BTreeSet<i32> = (0..=3).collect();
        for child in [&first, &second] {
            let pid = pid_of(child);
            // spawn returns when the exec-error pipe closes, and exec closes CLOEXEC fds one at
            // a time: a higher one may still be there for an instant. After that the table only
            // shrinks, so wait for it; a leaked fd stays.
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut fds = fds_of(pid);
            while !fds.is_subset(&allowed) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
                fds = fds_of(pid);
            }
            assert!(
                fds.is_subset(&allowed),
                "child {pid} has fds {fds:?}; allowed: 0-3 (this process has {inherited:?} \
                 without FD_CLOEXEC)"
            );
            let link = std::fs::read_link(format!("/proc/{pid}/fd/3")).expect("fd 3");
            assert!(
                link.to_string_lossy().starts_with("socket:"),
                "fd 3 is {link:?}"
            );
        }

        for child in [first, second] {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid_of(&child), libc::SIGKILL) };
            assert_eq!(wait(child.child).await.signal, Some(libc::SIGKILL));
        }
        // SAFETY: the pipe's two fds, opened above and used by nothing else.
        unsafe {
            libc::close(leaky[0]);
            libc::close(leaky[1]);
        }
    }

    #[tokio::test]
    async fn wait_exit_reports_the_exit_code() {
        let script = Script::new("exit.js", "process.exitCode = 3;");
        let child = spawn_plain(&script);
        let _guard = KillOnDrop(vec![pid_of(&child)]);
        let info = wait(child.child).await;
        assert_eq!(
            info,
            ExitInfo {
                code: Some(3),
                signal: None
            }
        );
        assert_eq!(info.signal_name(), None);
    }

    #[tokio::test]
    async fn wait_exit_reports_the_signal_that_killed_the_child() {
        let script = Script::new(
            "stay.js",
            "setInterval(() => {}, 1000); process.send('up');",
        );
        let child = spawn_plain(&script);
        let pid = pid_of(&child);
        let _guard = KillOnDrop(vec![pid]);
        let mut channel = ChildChannel::open(child.channel);
        assert_eq!(channel.message().await, "up");

        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let info = wait(child.child).await;
        assert_eq!(
            info,
            ExitInfo {
                code: None,
                signal: Some(libc::SIGKILL)
            }
        );
        assert_eq!(info.signal_name(), Some("SIGKILL"));
        assert_eq!(channel.closed().await, None);
    }
}
