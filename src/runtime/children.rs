//! The live child processes: spawning them (exec argv, env, debug ports), their channel and
//! exit watch, the worker slot each owns. One record per child; an exit is one removal.

use std::collections::HashMap;

use tokio::sync::{mpsc, watch};

use super::{ChildEvent, Input, Launch};
use crate::core::SpawnError;
use crate::ipc::channel::{self, Frame};
use crate::ipc::json;
use crate::messenger::{self, Role};
use crate::process::spawn::{self, ExitInfo, SpawnSpec};
use crate::process::terminate as shutdown;
use crate::process::watchdog::Watchdog;
use crate::protocol::START_GO_AHEAD;

/// What one child's channel may make the master hold: its longest message (longer ones are
/// dropped and reported) and the backpressure on what is queued for it (see `relay.rs`).
const CHANNEL_LIMITS: channel::Limits = channel::Limits {
    max_line: 16 * 1024 * 1024,
    max_queued: super::backpressure::MAX_QUEUED,
    high_water: super::backpressure::HIGH_WATER,
    low_water: super::backpressure::LOW_WATER,
    stall_after: super::backpressure::STALL_AFTER,
};

pub(super) struct SpawnConfig {
    pub(super) launch: Launch,
    /// The workers' `argv[2]`.
    pub(super) options_json: String,
    /// The master runs under `--inspect`/`--debug`: children get `--inspect-port`s.
    pub(super) is_debug: bool,
    /// `EGG_AGENT_DEBUG_PORT`.
    pub(super) agent_debug_port: u16,
    /// How long children that outlive the master get before the watchdog SIGKILLs them.
    /// How long a child that outlives the master gets to leave by itself, by role (see
    /// [`crate::process::watchdog`]).
    pub(super) app_grace: std::time::Duration,
    pub(super) agent_grace: std::time::Duration,
    /// For what degrades the master (no watchdog).
    pub(super) logger: std::sync::Arc<crate::log::Logger>,
    /// egg 4: the `debug` message also names the child by `workerId`.
    pub(super) egg4: bool,
}

pub(super) struct Proc {
    pub(super) role: Role,
    pub(super) sender: channel::Sender,
    pub(super) exited: watch::Receiver<Option<ExitInfo>>,
    /// The app worker slot it owns.
    pub(super) slot: Option<usize>,
    /// Its app config asked for `reusePort` (from its `realport`).
    pub(super) reuse_port: bool,
    /// A worker thread: its exit is reported by the JS thread through this. Its pid is a
    /// thread id, which no syscall may ever take for a process id.
    pub(super) thread_exit: Option<watch::Sender<Option<ExitInfo>>>,
}

impl Proc {
    fn new(
        role: Role,
        sender: channel::Sender,
        exited: watch::Receiver<Option<ExitInfo>>,
        slot: Option<usize>,
        thread_exit: Option<watch::Sender<Option<ExitInfo>>>,
    ) -> Self {
        Proc {
            role,
            sender,
            exited,
            slot,
            reuse_port: false,
            thread_exit,
        }
    }
}

/// How to stop a child: a process by signals, a thread by its handlers then `terminate()`.
pub(super) enum Stop {
    Process(shutdown::Target),
    Thread(super::threads::ThreadStop),
}

pub(super) struct Spawned {
    pub(super) pid: u32,
    /// For the parent, when the child got an `--inspect-port`: where to attach a debugger.
    pub(super) debug_message: Option<Vec<u8>>,
}

pub(super) struct Children {
    cfg: SpawnConfig,
    procs: HashMap<u32, Proc>,
    /// App workers get `process.debugPort` + 1, + 2, ... as Node's cluster assigns them.
    app_debug_offset: u32,
    /// Started with the first child; `None` if it could not be (logged, the master goes on).
    watchdog: Option<Watchdog>,
    watchdog_tried: bool,
}

impl Children {
    pub(super) fn new(cfg: SpawnConfig) -> Self {
        Children {
            cfg,
            procs: HashMap::new(),
            app_debug_offset: 0,
            watchdog: None,
            watchdog_tried: false,
        }
    }

    /// Tells the watchdog about a new child, starting the watchdog first if need be.
    fn watch(&mut self, pid: u32, role: Role) {
        if !self.watchdog_tried {
            self.watchdog_tried = true;
            match Watchdog::spawn() {
                Ok(w) => {
                    tracing::debug!(pid = w.pid(), "watchdog started");
                    self.watchdog = Some(w);
                }
                Err(e) => self.cfg.logger.warn(&format!(
                    "[master] cannot start the watchdog (/bin/sh: {e}): if this master is killed, workers whose event loop is blocked may outlive it and keep the port"
                )),
            }
        }
        if let Some(w) = &mut self.watchdog {
            let grace = match role {
                Role::Agent => self.cfg.agent_grace,
                _ => self.cfg.app_grace,
            };
            if let Err(e) = w.watch(pid, grace) {
                // A child that exits at once has no /proc entry left: nothing to watch.
                tracing::debug!(pid, error = %e, "not watched");
            }
        }
    }

    pub(super) fn get(&self, pid: u32) -> Option<&Proc> {
        self.procs.get(&pid)
    }

    pub(super) fn role(&self, pid: u32) -> Option<Role> {
        self.procs.get(&pid).map(|p| p.role)
    }

    pub(super) fn remove(&mut self, pid: u32) {
        self.procs.remove(&pid);
    }

    pub(super) fn set_reuse_port(&mut self, pid: u32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.reuse_port = true;
        }
    }

    /// Lets a waiting app worker construct its Application.
    pub(super) fn release(&self, pid: u32) {
        if let Some(p) = self.procs.get(&pid) {
            tracing::debug!(pid, "go-ahead");
            // A closed channel is reported as such by the channel task.
            let _ = p.sender.send_control(Frame::new(START_GO_AHEAD.to_vec()));
        }
    }

    /// Queues `frame()` for every child still running (a process or a thread); returns those.
    pub(super) fn send_to_all(&self, frame: impl Fn() -> Frame) -> Vec<u32> {
        self.procs
            .iter()
            .filter(|(_, p)| p.exited.borrow().is_none())
            .filter(|(_, p)| p.sender.send_control(frame()).is_ok())
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// `pid`, if it is still running, for the shutdown helpers.
    pub(super) fn terminate_target(&self, pid: u32) -> Option<Stop> {
        let p = self.procs.get(&pid)?;
        if p.exited.borrow().is_some() {
            return None;
        }
        let exited = p.exited.clone();
        Some(if p.thread_exit.is_some() {
            Stop::Thread(super::threads::ThreadStop { tid: pid, exited })
        } else {
            Stop::Process(shutdown::Target { pid, exited })
        })
    }

    /// The child processes not yet reaped (threads are not processes).
    pub(super) fn running_pids(&self) -> Vec<u32> {
        self.procs
            .iter()
            .filter(|(_, p)| p.thread_exit.is_none() && p.exited.borrow().is_none())
            .map(|(&pid, _)| pid)
            .collect()
    }

    pub(super) fn is_thread(&self, pid: u32) -> bool {
        self.procs
            .get(&pid)
            .is_some_and(|p| p.thread_exit.is_some())
    }

    pub(super) fn launch(&self) -> &Launch {
        &self.cfg.launch
    }

    pub(super) fn options_json(&self) -> &str {
        &self.cfg.options_json
    }

    /// A worker thread the JS thread created: drives the master's end of its channel, keyed
    /// by its thread id.
    pub(super) fn adopt_thread(
        &mut self,
        role: Role,
        tid: u32,
        slot: Option<usize>,
        master_end: std::os::fd::OwnedFd,
        tx: &mpsc::UnboundedSender<Input>,
    ) -> Result<(), String> {
        if self.procs.contains_key(&tid) {
            return Err(format!("thread id {tid} is already a child"));
        }
        let sender = open_channel(master_end, tid, tx)
            .map_err(|e| format!("cannot open the channel of thread {tid}: {e}"))?;
        tracing::debug!(tid, role = role.as_str(), ?slot, "thread adopted");
        let (exit_tx, exit_rx) = watch::channel(None);
        self.procs
            .insert(tid, Proc::new(role, sender, exit_rx, slot, Some(exit_tx)));
        Ok(())
    }

    /// The JS thread saw a worker thread end.
    pub(super) fn thread_exited(&self, tid: u32, info: ExitInfo) {
        if let Some(tx) = self.procs.get(&tid).and_then(|p| p.thread_exit.as_ref()) {
            let _ = tx.send(Some(info));
        }
    }

    /// Spawns `node <execArgv> <script> <options>` with a channel on fd 3; its messages and
    /// its exit arrive on `tx`.
    pub(super) fn spawn(
        &mut self,
        role: Role,
        cluster_id: u32,
        slot: Option<usize>,
        wait_start: bool,
        tx: &mpsc::UnboundedSender<Input>,
    ) -> Result<Spawned, SpawnError> {
        let inspect_port = self.inspect_port(role);
        let launch = &self.cfg.launch;
        let script = match role {
            Role::Agent => &launch.agent_worker_file,
            _ => &launch.app_worker_file,
        };
        let mut exec_argv = launch.exec_argv.clone();
        if let Some(port) = inspect_port {
            exec_argv.push(format!("--inspect-port={port}"));
        }
        let mut env = std::borrow::Cow::Borrowed(&launch.env);
        if wait_start {
            env.to_mut()
                .push(("EGG_CLUSTER_RS_WAIT_START".into(), "1".into()));
            // An early worker preloads modules only while the agent's main thread is not
            // runnable (lib/warm_start.js), so that it never takes a CPU the agent's boot needs.
            let agent = self
                .procs
                .iter()
                .find(|(_, p)| p.role == Role::Agent && p.thread_exit.is_none());
            if let Some((pid, _)) = agent {
                let env = env.to_mut();
                env.retain(|(k, _)| k != "EGG_CLUSTER_RS_AGENT_PID");
                env.push(("EGG_CLUSTER_RS_AGENT_PID".into(), pid.to_string()));
            }
        }
        let args = [self.cfg.options_json.clone()];
        let spec = SpawnSpec {
            exec_path: &launch.exec_path,
            exec_argv: &exec_argv,
            script,
            args: &args,
            env: &env,
            // The agent is a plain child process; app workers are cluster workers.
            cluster_id: (role == Role::App).then_some(cluster_id),
        };
        let child = spawn::spawn_node(&spec).map_err(|e| spawn_error(&e, e.to_string()))?;
        let pid = child.child.id();
        self.watch(pid, role);
        tracing::debug!(
            pid,
            role = role.as_str(),
            id = cluster_id,
            ?slot,
            wait_start,
            ?inspect_port,
            "spawned"
        );
        let sender = match open_channel(child.channel, pid, tx) {
            Ok(s) => s,
            Err(e) => {
                // Without a channel the child cannot work; it would exit on its own when it
                // sees no parent, but make sure.
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                return Err(spawn_error(
                    &e,
                    format!("cannot open the channel of {pid}: {e}"),
                ));
            }
        };
        let (exit_tx, exit_rx) = watch::channel(None);
        let events = tx.clone();
        let process = child.child;
        tokio::spawn(async move {
            let info = spawn::wait_exit(process).await;
            let _ = exit_tx.send(Some(info));
            let _ = events.send(Input::Child {
                pid,
                event: ChildEvent::Exited(info),
            });
        });
        self.procs
            .insert(pid, Proc::new(role, sender, exit_rx, slot, None));
        Ok(Spawned {
            pid,
            debug_message: inspect_port.map(|port| debug_message(role, port, pid, self.cfg.egg4)),
        })
    }

    /// When the master is debugged: the agent's port from `EGG_AGENT_DEBUG_PORT` (default
    /// 5800), each app worker the next port after `process.debugPort`, as Node's cluster
    /// assigns them.
    fn inspect_port(&mut self, role: Role) -> Option<u32> {
        if !self.cfg.is_debug {
            return None;
        }
        Some(match role {
            Role::Agent => u32::from(self.cfg.agent_debug_port),
            _ => {
                self.app_debug_offset += 1;
                let p = u32::from(self.cfg.launch.debug_port) + self.app_debug_offset;
                // Node wraps past 65535 back to 1024.
                if p > 65535 {
                    p - 65535 + 1024 - 1
                } else {
                    p
                }
            }
        })
    }
}

/// A failed spawn, told apart by whether the master was short of a resource.
fn spawn_error(e: &std::io::Error, message: String) -> SpawnError {
    if spawn::short_of_resource(e) {
        SpawnError::Resource(message)
    } else {
        SpawnError::Failed(message)
    }
}

/// Drives our end of a child's channel; what arrives on it becomes input for the child `key`.
fn open_channel(
    fd: std::os::fd::OwnedFd,
    key: u32,
    tx: &mpsc::UnboundedSender<Input>,
) -> std::io::Result<channel::Sender> {
    let events = tx.clone();
    channel::start(fd, CHANNEL_LIMITS, move |incoming| {
        let _ = events.send(Input::Child {
            pid: key,
            event: ChildEvent::Incoming(incoming),
        });
    })
}

/// egg-cluster tells the parent where to attach a debugger; `from` names the debugged child.
fn debug_message(role: Role, port: u32, pid: u32, egg4: bool) -> Vec<u8> {
    // @eggjs/cluster adds `workerId` (the pid in process mode), keeping `pid` for compatibility.
    let data = if egg4 {
        format!("{{\"debugPort\":{port},\"pid\":{pid},\"workerId\":{pid}}}")
    } else {
        format!("{{\"debugPort\":{port},\"pid\":{pid}}}")
    };
    let msg = messenger::master_message("debug", Role::Parent, Some(data.as_bytes()));
    let from: &[u8] = if role == Role::Agent {
        b"\"agent\""
    } else {
        b"\"app\""
    };
    match json::scan(&msg) {
        Ok(scanned) => scanned.with_members(&[("from", from)]),
        Err(_) => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_message_names_the_child() {
        assert_eq!(
            String::from_utf8(debug_message(Role::Agent, 5800, 42, false)).unwrap(),
            r#"{"action":"debug","to":"parent","data":{"debugPort":5800,"pid":42},"from":"agent"}"#
        );
        assert_eq!(
            String::from_utf8(debug_message(Role::App, 9230, 43, true)).unwrap(),
            r#"{"action":"debug","to":"parent","data":{"debugPort":9230,"pid":43,"workerId":43},"from":"app"}"#
        );
    }
}
