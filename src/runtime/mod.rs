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
//! - [`children`]: spawning (argv, env, debug ports), one record per live child process.
//! - [`relay`]: routing and delivering messages, batched per read.
//! - [`handles`]: answering the cluster protocol's `queryServer` with shared and per-slot
//!   `SO_REUSEPORT` sockets.
//! - [`sticky`]: the sticky-mode listener and the hand-over of connections.
//! - [`shutdown`]: terminating children (a channel lost, the close sequence).

mod backpressure;
mod children;
mod control;
mod handles;
mod hung;
mod metrics;
mod ops;
mod orphans;
mod pid_file;
mod relay;
mod shutdown;
pub(crate) mod sticky;
mod threads;
mod upgrade;

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::core::{self, Action, Core, Event, Group, Routes, Timer};
use crate::error::{Error, Result};
use crate::ipc::channel::Incoming;
use crate::log::{Level, Logger};
use crate::messenger::Role;
use crate::options::Options;
use crate::process::spawn::ExitInfo;

/// Receives what the JS side must act on. `kind` is one of `ready`, `parent`, `master`, `exit`.
pub(crate) trait Emit: Send + Sync + 'static {
    fn emit(&self, kind: &'static str, payload: String);
}

/// How to start Node children, captured from the JS side at start.
pub(crate) struct Launch {
    pub(crate) exec_path: String,
    pub(crate) exec_argv: Vec<String>,
    /// `process.env` at start; children get it (plus the channel variables).
    pub(crate) env: Vec<(String, String)>,
    pub(crate) agent_worker_file: String,
    pub(crate) app_worker_file: String,
    /// egg 4's worker scripts (agent, app), used when the app runs on egg 4.
    pub(crate) egg4_worker_files: Option<(String, String)>,
    /// `process.debugPort`: app workers of a debugged master get consecutive ports after it.
    pub(crate) debug_port: u16,
    /// `process.version`.
    pub(crate) node_version: String,
    /// `process.execArgv` then `process.argv.slice(1)`: a new master's (an upgrade's) arguments.
    pub(crate) master_args: Vec<String>,
    /// `process.cwd()` at start.
    pub(crate) cwd: PathBuf,
    /// `process.send` existed at start (an IPC parent).
    pub(crate) has_parent: bool,
}

/// Commands from the JS thread.
pub(crate) enum Command {
    /// SIGINT/SIGQUIT/SIGTERM reached the master, with V8's heap figures for the close lines.
    Signal {
        name: String,
        heap_limit: f64,
        heap_used: f64,
    },
    FromParent(Vec<u8>),
    ParentDisconnected,
    Reload(core::ReloadReason),
    Scale(core::Scale),
    /// `promise.status()`: the snapshot comes back as a `status` event.
    Status,
    /// SIGHUP (`None`) or `promise.upgrade()` number `n`: a master upgrade.
    Upgrade(Option<u32>),
    /// worker_threads mode: the JS thread created the Worker asked for (its `threadId`), or
    /// could not.
    ThreadSpawned {
        role: Role,
        id: u32,
        result: std::result::Result<u32, String>,
    },
    /// A worker thread's `exit` event.
    ThreadExited {
        tid: u32,
        code: i32,
    },
    /// A worker thread's `error` event (an uncaught exception), formatted.
    ThreadError {
        tid: u32,
        message: String,
    },
}

enum Input {
    Command(Command),
    Child {
        pid: u32,
        event: ChildEvent,
    },
    Timer(Timer),
    Terminated(Group),
    /// Connections accepted on the real port in sticky mode, with the client address to pick
    /// a worker by.
    StickyConnections(Vec<(OwnedFd, std::net::IpAddr)>),
    /// The metrics endpoint or the control socket wants a snapshot.
    Status(ops::Waiter),
    /// What was found of a hung child's report.
    HungReport {
        pid: u32,
        report: core::HungReport,
    },
    /// The control socket asks for a master upgrade.
    Upgrade(upgrade::Waiter),
    /// The new master of upgrade `seq` said `ready`, or will not.
    UpgradeReadiness {
        seq: u64,
        outcome: std::result::Result<(), String>,
    },
    /// What dead children left behind.
    Orphans {
        found: Vec<core::Orphan>,
        at_close: bool,
    },
}

enum ChildEvent {
    Incoming(Incoming),
    Exited(ExitInfo),
}

/// The JS thread's handle on the running master.
pub(crate) struct MasterHandle {
    tx: mpsc::UnboundedSender<Input>,
    logger: Arc<Logger>,
    pid_file: Option<PathBuf>,
    /// The CLI's control socket, removed at exit.
    control_path: Option<PathBuf>,
}

impl MasterHandle {
    pub(crate) fn command(&self, cmd: Command) -> Result<()> {
        self.tx
            .send(Input::Command(cmd))
            .map_err(|_| Error::Stopped)
    }

    /// The master process is exiting (`process.on('exit')`): runs synchronously on the JS
    /// thread, since nothing asynchronous happens after that event.
    pub(crate) fn on_exit(&self, code: i32) {
        if let Some(path) = &self.control_path {
            let _ = std::fs::remove_file(path);
        }
        if let Some(pid_file) = &self.pid_file {
            if pid_file.exists() && pid_file::is_ours(pid_file, std::process::id()) {
                if let Err(e) = std::fs::remove_file(pid_file) {
                    self.logger.error(&format!(
                        "[master] delete pidfile {} fail with {}",
                        pid_file.display(),
                        e
                    ));
                }
            }
        }
        let msg = format!("[master] exit with code:{code}");
        if code == 0 {
            self.logger.info(&msg);
        } else {
            self.logger.error(&msg);
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts the master: writes the pid file, finds the internal ports, then runs the cluster on
/// its own thread (which logs egg-cluster's start lines first).
pub(crate) fn start(
    opts: Options,
    launch: Launch,
    logger: Arc<Logger>,
    emit: Arc<dyn Emit>,
) -> Result<MasterHandle> {
    let start_time = now_ms();
    // What degrades the master at start, for the product log after the start lines.
    let mut warnings = Vec::new();
    let systemd = opts.settings.systemd.clone();
    // The new master of an upgrade takes the old one's sockets as it would systemd's.
    let inbound = upgrade::Inbound::take(&launch.env, &mut warnings);
    let listen_fds = if inbound.fds > 0 {
        inbound.fds
    } else {
        systemd.listen_fds
    };
    let inherited = ops::take_listen_fds(listen_fds, &mut warnings);
    if let Some(pid_file) = opts
        .pid_file
        .as_ref()
        .filter(|_| !upgrade::UpgradeHost::defers_pid_file(&inbound))
    {
        pid_file::write(pid_file, std::process::id())
            .map_err(|e| Error::io(format!("write pidFile {}", pid_file.display()), e))?;
    }
    let (cluster_port, sticky_worker_port) =
        crate::ports::internal_ports(&[opts.port, opts.debug_port], opts.sticky)?;
    let options_json = opts.worker_json(cluster_port, sticky_worker_port);
    tracing::debug!(
        base_dir = %opts.base_dir.display(),
        framework = %opts.framework.display(),
        workers = opts.workers,
        cluster_port,
        ?sticky_worker_port,
        "start"
    );
    let settings = &opts.settings;
    // Bound here, on the JS thread, so that a port in use fails `startCluster` at once.
    let metrics = opts
        .metrics
        .map(|addr| {
            match inherited
                .iter()
                .find(|s| s.port == addr.port() && addr.port() != 0)
            {
                Some(s) => s.fd.try_clone().map(std::net::TcpListener::from),
                None => std::net::TcpListener::bind(addr),
            }
            .map_err(|e| Error::io(format!("listen on options.metrics {addr}"), e))
        })
        .transpose()?;
    let cfg = core::Config {
        workers: opts.workers,
        framework_name: opts.framework_name.clone(),
        framework_version: opts.framework_version.clone(),
        node_version: launch.node_version.clone(),
        is_production: opts.is_production,
        verbose: if opts.verbose_debug {
            Level::Debug
        } else {
            Level::Info
        },
        env: opts.env.clone(),
        node_env: settings.node_env.clone(),
        options_shown: opts.to_json(),
        options_json: options_json.clone(),
        cluster_port,
        sticky: opts.sticky,
        sticky_worker_port,
        port: opts.port,
        debug_port: opts.debug_port,
        https: opts.https,
        host_env: settings.host.clone(),
        refork_limit: settings.refork_limit,
        refork_duration_ms: settings.refork_duration_ms,
        health_interval: settings.health_interval,
        app_close: settings.app_close_timeout.clone(),
        agent_close: settings.agent_close_timeout.clone(),
        fault_injection: settings.fault_injection,
        reload_timeout: settings.reload_timeout,
        // A boot is CPU-bound: one per CPU the master may use (std honours the cgroup quota)
        // overlaps them without slicing a CPU between boots (docs/reload.md).
        reload_concurrency: opts.reload_concurrency.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
        max_memory: opts.max_memory_restart,
        memory_check_interval: Some(opts.memory_check_interval),
        is_debug: opts.is_debug,
        dialect: opts.dialect,
        threads: opts.threads,
        slot_ports: if opts.threads {
            opts.ports.clone()
        } else {
            Vec::new()
        },
        metrics_addr: metrics.as_ref().and_then(|l| l.local_addr().ok()),
        shutdown_delay: opts.shutdown_delay,
        worker_timeout: opts.worker_timeout,
        heartbeat_interval: hung::heartbeat_interval(opts.worker_timeout),
        start_timeout: settings.start_timeout,
        upgrade_timeout: settings.upgrade_timeout,
        is_pid1: std::process::id() == 1,
    };
    let reports = hung::Reports::new(&opts.base_dir);

    let control = control::bind(&launch.env, std::process::id(), &mut warnings);
    let control_path = control.as_ref().map(|c| c.path.clone());
    let ops_runtime = ops::OpsRuntime::new(systemd.notify_socket.as_deref(), &mut warnings);
    let master_launch = upgrade::MasterLaunch {
        exec_path: launch.exec_path.clone(),
        args: launch.master_args.clone(),
        cwd: launch.cwd.clone(),
        env: launch.env.clone(),
        has_parent: launch.has_parent,
    };
    let mut env = launch.env.clone();
    env.retain(|(k, _)| {
        !crate::ops::systemd::CHILD_ENV_REMOVED.contains(&k.as_str())
            && k != crate::process::spawn::UPGRADE_FDS
            && k != crate::process::spawn::UPGRADE_READY_FD
    });
    if settings.node_env.as_deref() == Some("production") {
        // egg-cluster sets this on its own process.env, so its children inherit it.
        env.retain(|(k, _)| k != "NO_DEPRECATION");
        env.push(("NO_DEPRECATION".into(), "*".into()));
    }

    // The workers load egg through this package as their framework (index.js re-exports it):
    // the egg found here is the one they get.
    if let Some(egg) = &opts.egg {
        env.retain(|(k, _)| k != "EGG_CLUSTER_RS_EGG");
        env.push((
            "EGG_CLUSTER_RS_EGG".into(),
            egg.to_string_lossy().into_owned(),
        ));
    }
    let tree_marker = (!opts.threads)
        .then(crate::process::orphans::marker)
        .flatten();
    let marker_env = tree_marker
        .clone()
        .map(|m| (crate::process::orphans::VAR.to_string(), m));
    for (k, v) in reports
        .child_env(cfg.heartbeat_interval, cfg.worker_timeout)
        .into_iter()
        .chain(marker_env)
    {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    }
    let mut launch = launch;
    if opts.dialect == core::Dialect::Egg4 {
        if let Some((agent, app)) = launch.egg4_worker_files.take() {
            launch.agent_worker_file = agent;
            launch.app_worker_file = app;
        }
    }

    let (tx, rx) = mpsc::unbounded_channel();
    let runtime = Runtime {
        core: Core::new(cfg, start_time),
        children: children::Children::new(children::SpawnConfig {
            launch: Launch { env, ..launch },
            options_json,
            is_debug: opts.is_debug,
            agent_debug_port: settings.agent_debug_port,
            app_grace: settings
                .app_close_timeout
                .limit
                .min(crate::process::watchdog::APP_GRACE),
            agent_grace: settings.agent_close_timeout.limit,
            egg4: opts.dialect == core::Dialect::Egg4,
            logger: logger.clone(),
        }),
        handles: handles::Handles::new(opts.reuse_port, opts.is_production, inherited),
        sticky_key: opts.sticky_key.clone().map(|source| {
            Arc::new(sticky::StickyKey {
                source,
                trusted: opts.sticky_trusted.clone(),
            })
        }),
        accepting: Vec::new(),
        routes: Routes::default(),
        routes_seq: 0,
        logger: logger.clone(),
        emit,
        tx: tx.clone(),
        parent_connected: true,
        egg4: opts.dialect == core::Dialect::Egg4,
        master_pid: std::process::id(),
        ops: ops_runtime,
        threads: opts
            .threads
            .then(|| threads::ThreadHost::new(opts.ports.clone())),
        ops_start: Some(OpsStart {
            metrics,
            control,
            notify_socket: systemd.notify_socket,
            watchdog_usec: systemd.watchdog_usec,
            upgrade_timeout: settings.upgrade_timeout,
            warnings,
        }),
        backpressure: Default::default(),
        reports,
        worker_timeout: opts.worker_timeout,
        upgrade: upgrade::UpgradeHost::new(master_launch, inbound, opts.pid_file.clone()),
        tree_marker,
    };
    std::thread::Builder::new()
        .name("egg-cluster-rs".into())
        .spawn(move || runtime.run(rx))
        .map_err(|e| Error::io("start the master thread", e))?;
    Ok(MasterHandle {
        tx,
        logger,
        pid_file: opts.pid_file.clone(),
        control_path,
    })
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
    worker_timeout: Option<std::time::Duration>,
    upgrade: upgrade::UpgradeHost,
    /// The value of `process::orphans::VAR` the children carry (process mode).
    tree_marker: Option<String>,
}

struct OpsStart {
    metrics: Option<std::net::TcpListener>,
    control: Option<control::Bound>,
    notify_socket: Option<String>,
    watchdog_usec: Option<u64>,
    /// How long the control socket's `upgrade` may wait for the outcome.
    upgrade_timeout: std::time::Duration,
    /// Product log lines (WARN) of what did not come up, written after the start lines.
    warnings: Vec<String>,
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
            ChildEvent::Incoming(Incoming::Heartbeat { lag_ms }) => {
                self.dispatch(Event::Heartbeat { pid, lag_ms })
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
                self.dispatch(Event::Exited {
                    pid,
                    code: info.code,
                    signal: info.signal_name(),
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
            Action::CollectReport { pid, wait } => {
                let fresh = self.worker_timeout.unwrap_or_default() + wait;
                let thread = self.children.is_thread(pid);
                self.reports
                    .collect(pid, wait, fresh, thread, self.tx.clone());
            }
            Action::SpawnMaster { seq } => return Some(self.spawn_master(seq)),
            Action::StopMaster { pid, limit } => self.stop_master(pid, limit),
            Action::UpgradeOutcome { waiters, result } => self.upgrade_outcome(waiters, result),
            Action::StopAccepting => self.stop_accepting(),
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
    ) -> std::result::Result<u32, String> {
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
