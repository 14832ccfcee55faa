//! The master's side effects: one thread running a single-threaded tokio runtime that owns the
//! children, their channels and the listening sockets, and performs the core's actions.
//!
//! Everything that happens arrives as an [`Input`] on one queue (child messages and exits,
//! commands from JS, timers) and is turned into [`Event`]s for the [`Core`], in order, so there
//! is no shared mutable state and no lock on the hot path. Relayed messages between children
//! are routed here ([`relay`]) from the routing view the core publishes, without a round trip
//! through the core and never through the JS thread; JS is told only what it must act on
//! (ready, messages for the parent and for `promise.master`, exit).
//!
//! - [`start`]: the start on the JS thread (pid file, ports, listeners, the children's env).
//! - [`input`]: what arrives on the queue.
//! - [`children`]: spawning (argv, env, debug ports), one record per live child process.
//! - [`relay`]: routing and delivering messages, batched per read.
//! - [`handles`]: answering the cluster protocol's `queryServer` with shared and per-slot
//!   `SO_REUSEPORT` sockets.
//! - [`sticky`]: the sticky-mode listener and the hand-over of connections.
//! - [`shutdown`]: terminating children (a channel lost, the close sequence).

mod backpressure;
mod capped;
mod children;
mod control;
mod handles;
mod hung;
mod input;
mod metrics;
mod ops;
mod orphans;
mod pid_file;
mod relay;
mod scrape;
mod shutdown;
mod start;
pub(crate) mod sticky;
mod threads;
mod upgrade;
mod waiters;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::core::{self, Action, Core, Event, Routes};
use crate::ipc::channel::Incoming;
use crate::log::Logger;
use crate::messenger::Role;
use crate::process::spawn::ExitInfo;

pub(crate) use input::Command;
use input::{ChildEvent, Input};
use start::OpsStart;
pub(crate) use start::{start, Launch, MasterHandle};

/// Receives what the JS side must act on. `kind` is one of `ready`, `parent`, `master`, `exit`.
pub(crate) trait Emit: Send + Sync + 'static {
    fn emit(&self, kind: &'static str, payload: String);
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Runtime {
    core: Core,
    children: children::Children,
    handles: handles::Handles,
    /// Sticky mode behind proxies: where the client key is read from, and whom to believe.
    sticky_key: Option<Arc<sticky::StickyKey>>,
    /// The accept loops of the listeners the master serves itself (sticky, metrics), stopped
    /// at an upgrade's hand-over.
    accepting: Vec<tokio::task::AbortHandle>,
    /// Who gets relayed messages, as the core last published it.
    routes: Routes,
    routes_seq: u64,
    logger: Arc<Logger>,
    emit: Arc<dyn Emit>,
    tx: mpsc::UnboundedSender<Input>,
    parent_connected: bool,
    /// egg 4's messenger (`receiverWorkerId`).
    egg4: bool,
    master_pid: u32,
    ops: ops::OpsRuntime,
    /// worker_threads mode: the spawns the JS thread has not answered yet.
    threads: Option<threads::ThreadHost>,
    /// Listeners and timers started on the runtime thread, once.
    ops_start: Option<OpsStart>,
    backpressure: backpressure::Backpressure,
    reports: hung::Reports,
    upgrade: upgrade::UpgradeHost,
    /// Scrapes of /metrics waiting for the children's answers.
    scrapes: scrape::Scrapes,
    /// Control-socket clients waiting on a reload or a scaling.
    waiters: waiters::Waiters,
    /// The value of `process::orphans::VAR` the children carry (process mode).
    tree_marker: Option<String>,
    /// The OOM killer's counters over the children (process mode).
    oom: Option<crate::process::oom::OomWatch>,
}

impl Runtime {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                self.logger
                    .error(&format!("[master] cannot start the runtime: {e}"));
                self.emit.emit("exit", "1".into());
                return;
            }
        };
        rt.block_on(async move {
            let mut warnings = Vec::new();
            if let Some(start) = self.ops_start.take() {
                if let Some(listener) = start.metrics {
                    self.upgrade
                        .keep(listener.try_clone().map(std::os::fd::OwnedFd::from));
                    self.accepting
                        .extend(metrics::serve(listener, self.tx.clone()));
                }
                if let Some(c) = start.control {
                    control::serve(c.listener, c.uid, self.tx.clone(), start.upgrade_timeout);
                }
                ops::start_watchdog(start.notify_socket.as_deref(), start.watchdog_usec);
                warnings = start.warnings;
            }
            self.guarded(|rt| rt.dispatch(Event::Start));
            for line in &warnings {
                self.logger.warn(line);
            }
            while let Some(input) = rx.recv().await {
                self.guarded(|rt| rt.on_input(input));
            }
        });
        // The queue only ends when the process does; the watchdog's pipe (held by `children`)
        // must not close before that, or the watchdog would take the master for dead.
    }

    /// A bug in handling one event must not take the master (and the app) down: it is
    /// reported (Rust's default panic hook has printed where) and the next event is handled.
    fn guarded(&mut self, f: impl FnOnce(&mut Self)) {
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        if let Err(panic) = handled {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            self.logger.error(&format!(
                "[master] internal error (a bug in egg-cluster-rs), the event was dropped: {what}"
            ));
        }
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Command(Command::Signal {
                name,
                heap_limit,
                heap_used,
            }) => {
                let (mem_total, mem_free) = meminfo();
                self.dispatch(Event::Signal {
                    name,
                    heap_limit,
                    heap_used,
                    mem_total,
                    mem_free,
                });
            }
            Input::Command(Command::FromParent(line)) => {
                self.relay(Role::Parent, 0, [line.as_slice()]);
            }
            Input::Command(Command::ParentDisconnected) => self.parent_connected = false,
            Input::Command(Command::Reload(reason)) => self.dispatch(Event::Reload(reason)),
            Input::Command(Command::Scale(scale)) => self.dispatch(Event::Scale(scale)),
            Input::Child { pid, event } => self.on_child(pid, event),
            Input::Timer(timer) => self.dispatch(Event::Timer(timer)),
            Input::Terminated(group) => self.dispatch(Event::Terminated(group)),
            Input::StickyConnections(accepted) => self.hand_over(accepted),
            Input::Command(Command::Status) => self.on_status_request(ops::Waiter::Js),
            Input::Command(Command::ThreadSpawned { role, id, result }) => {
                self.on_thread_spawned(role, id, result)
            }
            Input::Command(Command::ThreadExited { tid, code }) => {
                let info = ExitInfo {
                    code: Some(code),
                    signal: None,
                };
                self.children.thread_exited(tid, info);
                self.on_child(tid, ChildEvent::Exited(info));
            }
            Input::Command(Command::ThreadError { tid, message }) => {
                self.dispatch(Event::ThreadError { pid: tid, message })
            }
            Input::Status(waiter) => self.on_status_request(waiter),
            Input::ScrapeBegin { answers, reply } => self.on_scrape_begin(answers, reply),
            Input::ScrapeEnd {
                seq,
                timed_out,
                waiter,
            } => self.on_scrape_end(seq, timed_out, waiter),
            Input::HungReport { pid, report } => self.dispatch(Event::HungReport { pid, report }),
            Input::Command(Command::Upgrade(n)) => self.on_upgrade_request(match n {
                Some(n) => upgrade::Waiter::Js(n),
                None => upgrade::Waiter::Signal,
            }),
            Input::Upgrade(waiter) => self.on_upgrade_request(waiter),
            Input::UpgradeReadiness { seq, outcome } => self.dispatch(match outcome {
                Ok(()) => Event::UpgradeReady { seq },
                Err(reason) => Event::UpgradeFailed { seq, reason },
            }),
            Input::Control { request, answers } => self.on_control_request(request, answers),
            Input::Orphans { found, at_close } => self.dispatch(Event::Orphans { found, at_close }),
        }
    }

    fn on_child(&mut self, pid: u32, event: ChildEvent) {
        let Some(role) = self.children.role(pid) else {
            return;
        };
        match event {
            ChildEvent::Incoming(Incoming::Messages(lines)) => self.relay(role, pid, lines.iter()),
            ChildEvent::Incoming(Incoming::Cluster(line)) => {
                if role == Role::App {
                    if let Some(event) = self.on_cluster(pid, &line) {
                        self.dispatch(event);
                    }
                }
            }
            ChildEvent::Incoming(Incoming::Heartbeat { lag_ms, stats }) => {
                if let Some(raw) = stats {
                    self.ops.child_stats(pid, &raw);
                }
                self.dispatch(Event::Heartbeat { pid, lag_ms })
            }
            ChildEvent::Incoming(Incoming::Metrics { seq, metrics }) => {
                self.on_metrics_answer(pid, seq, metrics)
            }
            ChildEvent::Incoming(Incoming::Malformed { reason }) => {
                self.dispatch(Event::Malformed { pid, reason })
            }
            ChildEvent::Incoming(Incoming::Drained) => self.release_held(pid, false),
            ChildEvent::Incoming(Incoming::Stalled { queued }) => self.on_stalled(pid, queued),
            ChildEvent::Incoming(Incoming::Closed { reason }) => {
                tracing::debug!(pid, role = role.as_str(), ?reason, "channel closed");
                self.release_held(pid, true);
                self.handles.forget(pid);
                self.dispatch(Event::ChannelClosed { pid, reason });
            }
            ChildEvent::Exited(info) => {
                tracing::debug!(pid, role = role.as_str(), code = ?info.code, signal = ?info.signal_name(), "exited");
                self.release_held(pid, true);
                self.children.remove(pid);
                self.handles.forget(pid);
                self.ops.forget(pid);
                // the kernel counted its kill before it sent the signal
                let oom = match (&mut self.oom, info.signal) {
                    (Some(watch), Some(libc::SIGKILL)) => watch.check().map(|k| core::OomKill {
                        cgroup: k.cgroup.map(|c| c.display().to_string()),
                        limit: k.limit,
                    }),
                    _ => None,
                };
                self.dispatch(Event::Exited {
                    pid,
                    code: info.code,
                    signal: info.signal_name(),
                    oom,
                });
            }
        }
    }

    /// Hands `event` to the core and performs what it decides, depth first: an action that
    /// produces an event (a spawn, the sticky listen) has that event's actions performed before
    /// the next action of the same decision, as a synchronous call would.
    fn dispatch(&mut self, event: Event) {
        tracing::trace!(?event, "event");
        let mut queue: VecDeque<Action> = self.core.handle(event, now_ms()).into();
        while let Some(action) = queue.pop_front() {
            if let Some(next) = self.perform(action) {
                tracing::trace!(event = ?next, "event");
                for a in self.core.handle(next, now_ms()).into_iter().rev() {
                    queue.push_front(a);
                }
            }
        }
        // After every action of the ready (systemd's READY=1 + MAINPID= among them): the old
        // master closes on this word.
        self.upgrade_tell_old_master();
    }

    fn perform(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Log(level, msg) => self.logger.log_at(level, &msg),
            Action::LogError(name, msg) => self.logger.error_named(name, &msg),
            Action::Cfork(error, msg) => self.logger.cfork(error, &msg),
            Action::SpawnAgent { id } if self.threads.is_some() => {
                return self.request_agent_thread(id);
            }
            Action::SpawnApps { batch, apps } if self.threads.is_some() => {
                return self.request_app_threads(batch, apps);
            }
            Action::SpawnAgent { id } => {
                let pid = self.spawn(Role::Agent, id, None, false);
                return Some(Event::AgentSpawned { id, pid });
            }
            Action::SpawnApps { batch, apps } => {
                let early = batch == core::Batch::Early;
                let apps = apps
                    .into_iter()
                    .map(|(id, slot)| core::Spawned {
                        id,
                        slot,
                        pid: self.spawn(Role::App, id, Some(slot), early),
                    })
                    .collect();
                return Some(Event::AppsSpawned { batch, apps });
            }
            Action::Release(pids) => {
                for pid in pids {
                    self.children.release(pid);
                }
            }
            Action::Send(target, line) => {
                if let Some(event) = self.send(target, line) {
                    return Some(event);
                }
            }
            Action::Routes(seq, routes) => {
                if seq > self.routes_seq {
                    tracing::debug!(?routes, "routes");
                    self.routes = routes;
                    self.routes_seq = seq;
                }
            }
            Action::Ready(data) => {
                self.upgrade_on_ready();
                self.emit.emit("ready", data.to_string());
            }
            Action::ListenSticky { port } => {
                let result = self.start_sticky_server(port).map_err(|e| e.to_string());
                return Some(Event::StickyListening(result));
            }
            Action::After(delay, timer) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(Input::Timer(timer));
                });
            }
            Action::ReusePort { pid } => self.children.set_reuse_port(pid),
            Action::Terminate { pid, limit } => {
                if let Some(target) = self.children.terminate_target(pid) {
                    tracing::debug!(pid, ?limit, "terminate a child");
                    self.sigterm_thread_of(&target);
                    tokio::spawn(shutdown::stop(target, limit, self.emit.clone()));
                }
            }
            Action::TerminateGroup { group, pids, limit } => {
                self.handles.closing();
                let targets: Vec<_> = pids
                    .into_iter()
                    .filter_map(|pid| self.children.terminate_target(pid))
                    .collect();
                for t in &targets {
                    self.sigterm_thread_of(t);
                }
                tracing::debug!(?group, "close: terminating");
                tokio::spawn(shutdown::terminate_group(
                    group,
                    targets,
                    limit,
                    self.tx.clone(),
                    self.emit.clone(),
                ));
            }
            Action::SampleMemory(pids) => {
                let samples = pids
                    .into_iter()
                    // A thread id is no pid: /proc has nothing of its own for it.
                    .filter(|pid| !self.children.is_thread(*pid))
                    .filter_map(|pid| crate::process::tree::rss_bytes(pid).map(|rss| (pid, rss)))
                    .collect();
                return Some(Event::MemorySample(samples));
            }
            Action::EmitMaster(line) => self
                .emit
                .emit("master", String::from_utf8_lossy(&line).into_owned()),
            Action::Status(to, status) => return self.deliver_status(to, *status),
            Action::Notify(notice) => self.notify(notice),
            Action::CollectReport { pid, wait, message } => {
                let thread = self.children.is_thread(pid);
                self.reports
                    .collect(pid, wait, &message, thread, self.tx.clone());
            }
            Action::SpawnMaster { seq, workers } => {
                return Some(self.spawn_master(seq, workers));
            }
            Action::StopMaster { pid, limit } => self.stop_master(pid, limit),
            Action::UpgradeOutcome { waiters, result } => self.upgrade_outcome(waiters, result),
            Action::StopAccepting => self.stop_accepting(),
            Action::Progress { waiters, line } => self.control_progress(&waiters, line),
            Action::Outcome { waiters, result } => self.control_outcome(waiters, result),
            Action::FindOrphans { at_close } => self.find_orphans(at_close),
            Action::TerminateOrphans {
                orphans,
                limit,
                at_close,
            } => self.terminate_orphans(orphans, limit, at_close),
            Action::Exit(code) => {
                tracing::debug!(code, "exit");
                self.handles.closing();
                self.emit.emit("exit", code.to_string());
            }
        }
        None
    }

    fn sigterm_thread_of(&self, target: &children::Stop) {
        if let children::Stop::Thread(t) = target {
            self.sigterm_thread(t.tid);
        }
    }

    /// Spawns a child and wires its channel and exit into the input queue.
    fn spawn(
        &mut self,
        role: Role,
        id: u32,
        slot: Option<usize>,
        wait_start: bool,
    ) -> std::result::Result<u32, core::SpawnError> {
        let spawned = self.children.spawn(role, id, slot, wait_start, &self.tx)?;
        if let Some(message) = spawned.debug_message {
            self.deliver_to_parent(message);
        }
        Ok(spawned.pid)
    }
}

/// `os.totalmem()` / `os.freemem()` as libuv computes them (MemTotal, MemAvailable).
fn meminfo() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}
