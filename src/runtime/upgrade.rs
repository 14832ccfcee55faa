//! The master upgrade's side effects (the decisions are in `core::upgrade`).
//!
//! The old master: starts the new one with its own command line, directory and environment
//! plus every listening socket it holds (the shared ports, the sticky listener, the metrics
//! listener, sockets from systemd) on fds 3.. and a readiness pipe; a thread waits on the pipe
//! for `ready` or EOF and reaps the new master if it exits; a failed new master is SIGTERMed
//! (it closes its own tree) and its process group SIGKILLed after a limit.
//!
//! The new master: takes the sockets over as systemd's are taken (matched by port to its
//! workers' listens, `ops::take_listen_fds`), writes its pid file only once it is ready (a
//! rollback leaves the old master's in place), and says `ready` on the pipe at its ready.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Input, Runtime};
use crate::core::{Event, UpgradeRequest};
use crate::process::spawn::{self, MasterSpec};

/// How this master was started: what a new master is started with.
pub(crate) struct MasterLaunch {
    pub(crate) exec_path: String,
    /// `process.execArgv` then `process.argv.slice(1)`.
    pub(crate) args: Vec<String>,
    pub(crate) cwd: PathBuf,
    /// `process.env` at start, as given.
    pub(crate) env: Vec<(String, String)>,
    /// `process.send` existed at start (an IPC parent).
    pub(crate) has_parent: bool,
}

/// Who waits for an upgrade's outcome.
pub(crate) enum Waiter {
    /// SIGHUP: nobody; the product log says it.
    Signal,
    /// `promise.upgrade()` number `n`: answered with an `upgrade` event to JS.
    Js(u32),
    /// The control socket.
    Reply(oneshot::Sender<Result<u32, String>>),
}

pub(super) struct UpgradeHost {
    launch: MasterLaunch,
    waiters: HashMap<u64, Waiter>,
    next_waiter: u64,
    /// Copies of listeners served by tasks (sticky, metrics), to hand over.
    listeners: Vec<OwnedFd>,
    /// This master is the new master of an upgrade: where it says `ready`.
    ready_pipe: Option<std::fs::File>,
    /// The pid file, written only at ready by a new master.
    deferred_pid_file: Option<PathBuf>,
    /// A new master is ready: the old one is to be told.
    ready: bool,
}

/// What a master learns from its environment about being the new master of an upgrade.
pub(super) struct Inbound {
    /// How many listening sockets are on fds 3.. (0: not an upgrade).
    pub(super) fds: usize,
    ready_pipe: Option<std::fs::File>,
    /// How many app workers the old master ran.
    pub(super) workers: Option<usize>,
}

impl Inbound {
    pub(super) fn take(env: &[(String, String)], warnings: &mut Vec<String>) -> Inbound {
        let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let fds = var(spawn::UPGRADE_FDS).and_then(|v| v.parse::<usize>().ok());
        let ready = var(spawn::UPGRADE_READY_FD).and_then(|v| v.parse::<i32>().ok());
        let (Some(fds), Some(ready)) = (fds, ready) else {
            return Inbound {
                fds: 0,
                ready_pipe: None,
                workers: None,
            };
        };
        // The readiness fd comes right after the sockets; anything else is not ours to take.
        if fds > 1024 || ready != 3 + fds as i32 {
            warnings.push(format!(
                "[master] ignoring {}={fds} / {}={ready}: not an upgrade's sockets",
                spawn::UPGRADE_FDS,
                spawn::UPGRADE_READY_FD
            ));
            return Inbound {
                fds: 0,
                ready_pipe: None,
                workers: None,
            };
        }
        let workers = var(spawn::UPGRADE_WORKERS).and_then(|v| {
            let n = v.parse::<usize>().ok().filter(|n| *n > 0);
            if n.is_none() {
                warnings.push(format!(
                    "[master] ignoring {}={v}: not a number of app workers; the workers option applies",
                    spawn::UPGRADE_WORKERS
                ));
            }
            n
        });
        // SAFETY: F_SETFD on a descriptor number; fails harmlessly if it is not open.
        let open = unsafe { libc::fcntl(ready, libc::F_SETFD, libc::FD_CLOEXEC) } >= 0;
        Inbound {
            fds,
            // SAFETY: the old master passed this descriptor to us and nothing else owns it.
            ready_pipe: open.then(|| unsafe { std::fs::File::from_raw_fd(ready) }),
            workers,
        }
    }
}

impl UpgradeHost {
    pub(super) fn new(
        launch: MasterLaunch,
        inbound: Inbound,
        pid_file: Option<PathBuf>,
    ) -> UpgradeHost {
        let upgraded = inbound.ready_pipe.is_some();
        UpgradeHost {
            launch,
            waiters: HashMap::new(),
            next_waiter: 0,
            listeners: Vec::new(),
            ready_pipe: inbound.ready_pipe,
            deferred_pid_file: pid_file.filter(|_| upgraded),
            ready: false,
        }
    }

    /// Whether this master is the new master of an upgrade (its pid file waits for ready).
    pub(super) fn defers_pid_file(inbound: &Inbound) -> bool {
        inbound.ready_pipe.is_some()
    }

    /// Keeps a copy of a listener a task serves, to hand it over.
    pub(super) fn keep(&mut self, fd: std::io::Result<OwnedFd>) {
        if let Ok(fd) = fd {
            self.listeners.push(fd);
        }
    }
}

impl Runtime {
    pub(super) fn on_upgrade_request(&mut self, waiter: Waiter) {
        let id = self.upgrade.next_waiter;
        self.upgrade.next_waiter += 1;
        self.upgrade.waiters.insert(id, waiter);
        let ipc_parent = self.upgrade.launch.has_parent && self.parent_connected;
        self.dispatch(Event::Upgrade(UpgradeRequest {
            waiter: id,
            ipc_parent,
        }));
    }

    /// Performs `Action::SpawnMaster`.
    pub(super) fn spawn_master(&mut self, seq: u64, workers: usize) -> Event {
        let mut fds = self.handles.listening_fds();
        fds.extend(self.upgrade.listeners.iter().map(AsFd::as_fd));
        // Each socket once (a worker's handle may be systemd's socket too), TCP only.
        let mut seen = Vec::new();
        fds.retain(|fd| {
            let id = nix::sys::stat::fstat(fd).map(|st| (st.st_dev, st.st_ino));
            match (crate::listen::local_port(fd), id) {
                (Some(_), Ok(id)) if !seen.contains(&id) => {
                    seen.push(id);
                    true
                }
                _ => false,
            }
        });
        let ports: Vec<u16> = fds.iter().filter_map(crate::listen::local_port).collect();
        let launch = &self.upgrade.launch;
        let spawned = spawn::spawn_master(&MasterSpec {
            exec_path: &launch.exec_path,
            args: &launch.args,
            cwd: &launch.cwd,
            env: &launch.env,
            fds: &fds,
            workers,
        });
        let result = match spawned {
            Ok(new) => {
                let pid = new.child.id();
                tracing::debug!(pid, sockets = ?ports, "upgrade: new master spawned");
                let tx = self.tx.clone();
                let waited = std::thread::Builder::new()
                    .name("egg-cluster-rs-upgrade".into())
                    .spawn(move || {
                        let outcome = wait_ready(new);
                        let _ = tx.send(Input::UpgradeReadiness { seq, outcome });
                    });
                match waited {
                    Ok(_) => Ok(pid),
                    Err(e) => {
                        // Without the thread nobody would hear it: it must not live on.
                        // SAFETY: signalling the process group of the child just spawned.
                        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                        Err(format!("cannot start a thread to wait for it: {e}"))
                    }
                }
            }
            Err(e) => Err(format!("{}: {e}", launch.exec_path)),
        };
        Event::UpgradeSpawned { seq, result }
    }

    /// Performs `Action::StopMaster`: the new master closes its own tree on SIGTERM; whatever
    /// of its process group is left after `limit` is SIGKILLed.
    pub(super) fn stop_master(&self, pid: u32, limit: Duration) {
        let pid = pid as i32;
        tracing::debug!(pid, ?limit, "upgrade: stopping the new master");
        // SAFETY: signalling the child this master spawned (not yet reaped: its waiting
        // thread reaps it only after its exit, so the pid is still its own).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            // The group outlives its leader: workers the new master left behind are in it.
            // SAFETY: a process group id; ESRCH when it is empty.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        });
    }

    /// Performs `Action::UpgradeOutcome`.
    pub(super) fn upgrade_outcome(&mut self, waiters: Vec<u64>, result: Result<u32, String>) {
        for id in waiters {
            match self.upgrade.waiters.remove(&id) {
                Some(Waiter::Js(n)) => {
                    let payload = match &result {
                        Ok(pid) => serde_json::json!({ "id": n, "ok": true, "pid": pid }),
                        Err(e) => serde_json::json!({ "id": n, "ok": false, "error": e }),
                    };
                    self.emit.emit("upgrade", payload.to_string());
                }
                Some(Waiter::Reply(tx)) => {
                    let _ = tx.send(result.clone());
                }
                Some(Waiter::Signal) | None => {}
            }
        }
    }

    /// At ready: a new master writes its pid file; the old one is told once the ready's actions
    /// are all performed ([`Runtime::upgrade_tell_old_master`]).
    pub(super) fn upgrade_on_ready(&mut self) {
        if self.upgrade.ready_pipe.is_some() {
            self.handles.drop_untaken_slot_sockets();
            self.upgrade.ready = true;
        }
        if let Some(path) = self.upgrade.deferred_pid_file.take() {
            if let Err(e) = super::pid_file::write(&path, self.master_pid) {
                self.logger.error(&format!(
                    "[master] write pidFile {} fail with {e}",
                    path.display()
                ));
            }
        }
    }

    pub(super) fn upgrade_tell_old_master(&mut self) {
        if !self.upgrade.ready {
            return;
        }
        if let Some(mut pipe) = self.upgrade.ready_pipe.take() {
            if let Err(e) = pipe.write_all(b"ready\n") {
                // The old master is gone (or never listened): nobody to hand over from.
                self.logger.warn(&format!(
                    "[master] upgrade: cannot tell the old master: {e}"
                ));
            }
        }
    }
}

/// Waits for the new master's `ready`, or for EOF (it exited, or failed before ready), and
/// reaps it in the second case. Runs on its own thread: a pipe read and a `waitpid` of our own
/// child block.
fn wait_ready(new: spawn::NewMaster) -> Result<(), String> {
    let spawn::NewMaster { mut child, ready } = new;
    let mut pipe = std::fs::File::from(ready);
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.starts_with(b"ready\n") {
                    // It serves; it is the old master's child only until the old one exits,
                    // then init's. Not reaped here: it outlives us.
                    return Ok(());
                }
                if got.len() > 64 {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    // EOF without `ready`: it is exiting. `waitpid` on our own pid (libuv reaps only its own).
    let exit = child.wait();
    Err(match exit {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => {
                    format!("the new master exited with code {code} before it was ready")
                }
                (None, Some(sig)) => format!(
                    "the new master was killed by {} before it was ready",
                    spawn::signal_name(sig)
                ),
                _ => "the new master exited before it was ready".into(),
            }
        }
        Err(e) => format!("the new master closed its readiness channel: {e}"),
    })
}
