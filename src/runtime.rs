//! The master's side effects: one thread running a single-threaded tokio runtime that owns the
//! children, their channels, the listening sockets and the lifecycle.
//!
//! Everything that happens arrives as an [`Input`] on one queue (child messages, exits, commands
//! from JS, timers) and is handled in order by [`Runtime::handle`], so there is no shared mutable
//! state and no lock on the hot path. Worker-to-worker messages never touch the JS thread; JS is
//! told only about what it must act on (ready, messages for the parent, exit).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::cluster_protocol::{self, ClusterMessage};
use crate::error::{Error, Result};
use crate::ipc::channel::{self, Frame, Incoming};
use crate::ipc::json;
use crate::log::{Level, Logger};
use crate::master::{self, Action, Lifecycle, Target};
use crate::messenger::{self, AppPeer, Destination, Peers, Role};
use crate::options::Options;
use crate::process::spawn::{self, ExitInfo, SpawnSpec};
use crate::process::terminate as shutdown;

/// What one child's channel may make the master hold: its longest message (longer ones are
/// dropped and reported) and the bytes queued for it while it does not read (then messages to
/// it are dropped and reported).
const CHANNEL_LIMITS: channel::Limits = channel::Limits {
    max_line: 16 * 1024 * 1024,
    max_queued: 32 * 1024 * 1024,
};

/// Receives what the JS side must act on. `kind` is one of `ready`, `parent`, `master`, `exit`.
pub trait Emit: Send + Sync + 'static {
    fn emit(&self, kind: &'static str, payload: String);
}

/// How to start Node children, captured from the JS side at start.
pub struct RuntimeConfig {
    pub exec_path: String,
    pub exec_argv: Vec<String>,
    /// `process.env` at start; children get it (plus the channel variables).
    pub env: Vec<(String, String)>,
    pub agent_worker_file: String,
    pub app_worker_file: String,
    /// `process.debugPort`: app workers of a debugged master get consecutive ports after it.
    pub debug_port: u16,
}

/// Commands from the JS thread.
pub enum Command {
    Signal {
        name: String,
        heap_limit: f64,
        heap_used: f64,
    },
    FromParent(Vec<u8>),
    ParentDisconnected,
}

enum Input {
    Command(Command),
    Child {
        role: Role,
        pid: u32,
        event: ChildEvent,
    },
    ReforkAgent,
    ReforkApp,
    HealthCheck,
    Closed,
    /// Connections accepted on the real port in sticky mode, with the client address to pick
    /// a worker by.
    StickyConnections(Vec<(OwnedFd, std::net::IpAddr)>),
}

enum ChildEvent {
    Incoming(Incoming),
    Exited(ExitInfo),
}

/// A close timeout as egg-cluster logs it (the env value as given) and as it is applied.
#[derive(Clone)]
struct CloseTimeout {
    shown: String,
    limit: Duration,
}

impl CloseTimeout {
    fn new(shown: String) -> Self {
        let limit = shutdown::parse_timeout(&shown, 5000);
        CloseTimeout { shown, limit }
    }
}

#[derive(Clone)]
struct CloseTimeouts {
    app: CloseTimeout,
    agent: CloseTimeout,
}

struct Proc {
    pid: u32,
    sender: channel::Sender,
    exited: watch::Receiver<Option<ExitInfo>>,
}

struct SharedHandle {
    /// The key the workers know this handle by (Node's `address:port:addressType:fd:index`).
    node_key: String,
    /// The worker slot owning this socket, for per-slot `SO_REUSEPORT` sockets.
    slot: Option<usize>,
    fd: OwnedFd,
    /// The first querying worker's `data` (TLS ticket keys), echoed to every worker.
    data: Value,
    workers: Vec<u32>,
}

/// The JS thread's handle on the running master.
pub struct MasterHandle {
    tx: mpsc::UnboundedSender<Input>,
    logger: Arc<Logger>,
    pid_file: Option<PathBuf>,
}

impl MasterHandle {
    pub fn command(&self, cmd: Command) -> Result<()> {
        self.tx
            .send(Input::Command(cmd))
            .map_err(|_| Error::Stopped)
    }

    /// The master process is exiting (`process.on('exit')`): runs synchronously on the JS
    /// thread, since nothing asynchronous happens after that event.
    pub fn on_exit(&self, code: i32) {
        if let Some(pid_file) = &self.pid_file {
            if pid_file.exists() {
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

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts the master: logs egg-cluster's start lines, writes the pid file, detects ports, then
/// runs the cluster on its own thread.
pub fn start(
    mut opts: Options,
    rt: RuntimeConfig,
    node_version: &str,
    logger: Arc<Logger>,
    emit: Arc<dyn Emit>,
) -> Result<MasterHandle> {
    let start_time = now_ms();
    let verbose = if opts.verbose_debug {
        Level::Debug
    } else {
        Level::Info
    };
    let env_var = |k: &str| rt.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let log = |msg: &str| logger.log(msg);
    log(&format!(
        "[master] =================== {} start =====================",
        opts.framework_name
    ));
    logger.info(&format!("[master] node version {node_version}"));
    logger.info(&format!(
        "[master] {} version {}",
        opts.framework_name, opts.framework_version
    ));
    let raw = Value::Object(opts.raw.clone());
    if opts.is_production {
        logger.info(&format!(
            "[master] start with options:\n{}",
            serde_json::to_string_pretty(&raw).unwrap_or_default()
        ));
    } else {
        log(&format!("[master] start with options: {raw}"));
    }
    log(&format!(
        "[master] start with env: isProduction: {}, EGG_SERVER_ENV: {}, NODE_ENV: {}",
        opts.is_production,
        opts.env.as_deref().unwrap_or("null"),
        env_var("NODE_ENV").as_deref().unwrap_or("undefined")
    ));

    if let Some(pid_file) = &opts.pid_file {
        if let Some(dir) = pid_file.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create pidFile dir {}", dir.display()), e))?;
        }
        std::fs::write(pid_file, std::process::id().to_string())
            .map_err(|e| Error::io(format!("write pidFile {}", pid_file.display()), e))?;
    }

    let loopback = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    // A port that is free now may be the app's own port, which the workers have not bound yet.
    let taken = [opts.port, opts.debug_port];
    let free_port = || -> std::io::Result<u16> {
        for _ in 0..16 {
            let p = crate::ports::free_port(loopback)?;
            if !taken.contains(&Some(p)) {
                return Ok(p);
            }
        }
        crate::ports::free_port(loopback)
    };
    let cluster_port = free_port().map_err(|e| Error::io("detect a free clusterPort", e))?;
    opts.raw.insert("clusterPort".into(), cluster_port.into());
    let sticky_worker_port = if opts.sticky {
        let p = std::iter::repeat_with(free_port)
            .take(8)
            .find(|p| !matches!(p, Ok(p) if *p == cluster_port))
            .unwrap_or_else(free_port)
            .map_err(|e| Error::io("detect a free stickyWorkerPort", e))?;
        opts.raw.insert("stickyWorkerPort".into(), p.into());
        Some(p)
    } else {
        None
    };
    let options_json = Value::Object(opts.raw.clone()).to_string();

    let cfg = master::Config {
        workers: opts.workers,
        framework_name: opts.framework_name.clone(),
        is_production: opts.is_production,
        sticky: opts.sticky,
        sticky_worker_port,
        port: opts.port,
        debug_port: opts.debug_port,
        https: opts.https,
        host_env: env_var("HOST"),
        options_json: options_json.clone(),
        refork_limit: env_var("EGG_CLUSTER_RS_REFORK_LIMIT")
            .and_then(|v| v.parse().ok())
            .unwrap_or(60),
        refork_duration_ms: env_var("EGG_CLUSTER_RS_REFORK_DURATION")
            .and_then(|v| v.parse().ok())
            .unwrap_or(60_000),
    };
    let health_interval = Duration::from_millis(
        env_var("EGG_CLUSTER_RS_HEALTH_INTERVAL")
            .and_then(|v| v.parse().ok())
            .filter(|ms| *ms > 0)
            .unwrap_or(10_000),
    );
    let life = Lifecycle::new(cfg, verbose, start_time);

    let mut env = rt.env.clone();
    if env_var("NODE_ENV").as_deref() == Some("production") {
        // egg-cluster sets this on its own process.env, so its children inherit it.
        env.retain(|(k, _)| k != "NO_DEPRECATION");
        env.push(("NO_DEPRECATION".into(), "*".into()));
    }
    let timeouts = {
        let legacy = env_var("EGG_MASTER_CLOSE_TIMEOUT").unwrap_or_else(|| "5000".into());
        let app = env_var("EGG_APP_CLOSE_TIMEOUT").unwrap_or_else(|| legacy.clone());
        let agent = env_var("EGG_AGENT_CLOSE_TIMEOUT").unwrap_or_else(|| legacy.clone());
        CloseTimeouts {
            app: CloseTimeout::new(app),
            agent: CloseTimeout::new(agent),
        }
    };

    let (tx, rx) = mpsc::unbounded_channel();
    let pid_file = opts.pid_file.clone();
    let runtime = Runtime {
        life,
        options_json,
        cluster_port,
        rt: RuntimeConfig { env, ..rt },
        logger: logger.clone(),
        emit,
        tx: tx.clone(),
        agent: None,
        apps: HashMap::new(),
        peers: Vec::new(),
        handles: HashMap::new(),
        cluster_seq: 0,
        parent_connected: true,
        exiting: false,
        close_timeouts: timeouts,
        health_interval,
        fault_injection: env_var("EGG_CLUSTER_RS_FAULT_INJECTION").as_deref() == Some("1"),
        master_pid: std::process::id(),
        malformed: HashMap::new(),
        is_debug: opts.is_debug,
        app_debug_offset: 0,
        workers: opts.workers,
        prespawned: Vec::new(),
        is_production: opts.is_production,
        sticky_key: opts.sticky_key.clone().map(|source| {
            Arc::new(crate::sticky::StickyKey {
                source,
                trusted: opts.sticky_trusted.clone(),
            })
        }),
        reuse_port: opts
            .raw
            .get("reusePort")
            .is_some_and(|v| v.as_bool() == Some(true)),
        reuse_port_pids: Default::default(),
        slots: vec![None; opts.workers],
        last_inspect_port: None,
    };
    std::thread::Builder::new()
        .name("egg-cluster-rs".into())
        .spawn(move || runtime.run(rx))
        .map_err(|e| Error::io("start the master thread", e))?;
    Ok(MasterHandle {
        tx,
        logger,
        pid_file,
    })
}

struct Runtime {
    life: Lifecycle,
    options_json: String,
    cluster_port: u16,
    rt: RuntimeConfig,
    logger: Arc<Logger>,
    emit: Arc<dyn Emit>,
    tx: mpsc::UnboundedSender<Input>,
    agent: Option<Proc>,
    apps: HashMap<u32, Proc>,
    /// Routing view of the app workers, in spawn order.
    peers: Vec<AppPeer>,
    handles: HashMap<String, SharedHandle>,
    cluster_seq: u64,
    parent_connected: bool,
    /// An exit was requested from JS; spawn nothing more.
    exiting: bool,
    close_timeouts: CloseTimeouts,
    health_interval: Duration,
    fault_injection: bool,
    master_pid: u32,
    /// Malformed messages per child, so a flood is reported at 1, 2, 4, 8, ... not each time.
    malformed: HashMap<u32, u64>,
    is_debug: bool,
    app_debug_offset: u32,
    /// `options.workers`.
    workers: usize,
    /// App workers started with the agent, waiting for `agent-start`.
    prespawned: Vec<u32>,
    is_production: bool,
    /// Sticky mode behind proxies: where the client key is read from, and whom to believe.
    sticky_key: Option<Arc<crate::sticky::StickyKey>>,
    /// `reusePort` in the options: every worker gets per-slot `SO_REUSEPORT` sockets.
    reuse_port: bool,
    /// Workers whose app config asked for `reusePort` (from their `realport`).
    reuse_port_pids: std::collections::HashSet<u32>,
    /// Sticky slots: which app worker owns each of the `workers` slots.
    slots: Vec<Option<u32>>,
    /// The `--inspect-port` given to the child being spawned.
    last_inspect_port: Option<u32>,
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
            let actions = self.life.on_ports_ready();
            self.perform(actions);
            self.prespawn_apps();
            while let Some(input) = rx.recv().await {
                // A bug in handling one event must not take the master (and the app) down: it
                // is reported (the panic hook has printed where) and the next event is handled.
                let handled =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(input)));
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
        });
        // The thread must outlive every child: PR_SET_PDEATHSIG fires when the spawning thread
        // exits, and the queue only ends when the process does.
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Command(cmd) => self.on_command(cmd),
            Input::Child { role, pid, event } => match event {
                ChildEvent::Incoming(incoming) => self.on_incoming(role, pid, incoming),
                ChildEvent::Exited(info) => self.on_exited(role, pid, info),
            },
            Input::ReforkApp => {
                if !self.life.is_closed() && !self.exiting {
                    self.refork_app();
                }
            }
            Input::HealthCheck => {
                let actions = self.life.on_health_check();
                self.perform(actions);
            }
            Input::ReforkAgent => {
                if !self.life.is_closed() && !self.exiting {
                    self.logger.info("[master] new agent_worker starting...");
                    self.spawn_agent();
                }
            }
            Input::StickyConnections(accepted) => self.hand_over(accepted),
            Input::Closed => {
                self.exiting = true;
                self.emit.emit("exit", "0".into());
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Signal {
                name,
                heap_limit,
                heap_used,
            } => {
                let Some(actions) = self.life.on_signal(&name) else {
                    return;
                };
                self.perform(actions);
                let (total, free) = meminfo();
                self.logger.info(&format!(
                    "[master] system memory: total {total}, free {free}"
                ));
                self.logger.info(&format!(
                    "[master] process info: heap_limit {heap_limit}, heap_used {heap_used}"
                ));
                self.close();
            }
            Command::FromParent(line) => self.route_batch(Role::Parent, 0, &[line]),
            Command::ParentDisconnected => self.parent_connected = false,
        }
    }

    fn on_incoming(&mut self, role: Role, pid: u32, incoming: Incoming) {
        match incoming {
            Incoming::Messages(lines) => self.route_batch(role, pid, &lines),
            Incoming::Cluster(line) if role == Role::App => self.on_cluster(pid, &line),
            Incoming::Cluster(_) => {}
            Incoming::Malformed { reason } => self.report_malformed(role, pid, &reason),
            Incoming::Closed { reason } => {
                if let Some(reason) = reason {
                    self.logger.warn(&format!(
                        "[master] closed the channel of {}: {reason}",
                        self.describe(role, pid)
                    ));
                }
                if role == Role::App {
                    self.forget_handles(pid);
                    if let Some(peer) = self.peers.iter_mut().find(|p| p.pid == pid) {
                        peer.connected = false;
                    }
                    let actions = self.life.on_app_disconnected(pid, now_ms());
                    self.perform(actions);
                }
                self.reap_disconnected(role, pid);
            }
        }
    }

    fn on_exited(&mut self, role: Role, pid: u32, info: ExitInfo) {
        let signal = info.signal_name();
        let actions = match role {
            Role::Agent => {
                if self.agent.as_ref().is_some_and(|a| a.pid == pid) {
                    self.agent = None;
                }
                self.life.on_agent_exit(info.code, signal)
            }
            _ => {
                self.apps.remove(&pid);
                self.peers.retain(|p| p.pid != pid);
                for slot in self.slots.iter_mut().filter(|s| **s == Some(pid)) {
                    *slot = None;
                }
                self.reuse_port_pids.remove(&pid);
                self.forget_handles(pid);
                self.malformed.remove(&pid);
                self.life.on_app_exit(pid, info.code, signal, now_ms())
            }
        };
        self.perform(actions);
    }

    fn describe(&self, role: Role, pid: u32) -> String {
        match role {
            Role::Agent => {
                let id = self.life.agent().map_or(0, |a| a.id);
                format!("agent_worker#{id}:{pid}")
            }
            Role::App => {
                let id = self.life.app(pid).map_or(0, |a| a.id);
                format!("app_worker#{id}:{pid}")
            }
            other => other.as_str().to_string(),
        }
    }

    /// Routes the messages `from` sent in one read. Messages for the agent and the app workers
    /// are gathered per receiver and written as one frame each, so a burst costs one queue
    /// operation per receiver instead of one per message; anything addressed to the master or
    /// the parent first flushes what was gathered, so every receiver sees the sender's order.
    fn route_batch(&mut self, from: Role, pid: u32, lines: &[Vec<u8>]) {
        let mut outbox: Vec<(Role, u32, Vec<u8>)> = Vec::new();
        for line in lines {
            let peers = Peers {
                master_pid: self.master_pid,
                agent_pid: self.agent.as_ref().map(|a| a.pid),
                apps: &self.peers,
            };
            let routed = match messenger::route(from, line, &peers) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    self.report_malformed(from, pid, &e.to_string());
                    continue;
                }
            };
            match routed.dest {
                Destination::Agent => {
                    if let Some(agent_pid) = peers.agent_pid {
                        gather(&mut outbox, Role::Agent, agent_pid, routed.line);
                    }
                }
                Destination::Apps(pids) => match pids.as_slice() {
                    [one] => gather(&mut outbox, Role::App, *one, routed.line),
                    many => {
                        for p in many {
                            gather(&mut outbox, Role::App, *p, routed.line.clone());
                        }
                    }
                },
                Destination::Master => {
                    self.flush_outbox(&mut outbox);
                    self.deliver_to_master(from, pid, routed.action.as_deref(), routed.line)
                }
                Destination::Parent => {
                    self.flush_outbox(&mut outbox);
                    self.deliver_to_parent(routed.line)
                }
            }
        }
        self.flush_outbox(&mut outbox);
    }

    fn flush_outbox(&self, outbox: &mut Vec<(Role, u32, Vec<u8>)>) {
        for (role, pid, bytes) in outbox.drain(..) {
            let frame = Frame {
                line: channel::Bytes::Owned(bytes),
                fd: None,
            };
            self.push(role, pid, frame, false);
        }
    }

    fn deliver_to_parent(&self, line: Vec<u8>) {
        if self.parent_connected {
            self.emit
                .emit("parent", String::from_utf8_lossy(&line).into_owned());
        }
    }

    /// `control`: the master's own protocol messages, which are never dropped; relayed user
    /// messages are, when the child does not read them.
    fn deliver_to_apps(&self, pids: &[u32], mut line: Vec<u8>, control: bool) {
        line.push(b'\n');
        let shared: Arc<[u8]> = line.into();
        for pid in pids {
            let frame = Frame {
                line: channel::Bytes::Shared(shared.clone()),
                fd: None,
            };
            self.push(Role::App, *pid, frame, control);
        }
    }

    fn deliver_to_agent(&self, line: Vec<u8>, control: bool) {
        if let Some(pid) = self.agent.as_ref().map(|a| a.pid) {
            self.push(Role::Agent, pid, Frame::new(line), control);
        }
    }

    fn push(&self, role: Role, pid: u32, frame: Frame, control: bool) {
        let Some(proc) = self.proc(role, pid) else {
            return;
        };
        let sent = if control {
            proc.sender.send_control(frame)
        } else {
            proc.sender.send(frame)
        };
        if let Err(channel::SendError::Full {
            first: true,
            queued,
        }) = sent
        {
            self.logger.warn(&format!(
                "[master] {} is not reading its channel: dropping messages to it ({queued} bytes queued)",
                self.describe(role, pid)
            ));
        }
    }

    /// The live child `pid` in `role`.
    fn proc(&self, role: Role, pid: u32) -> Option<&Proc> {
        match role {
            Role::Agent => self.agent.as_ref().filter(|a| a.pid == pid),
            _ => self.apps.get(&pid),
        }
    }

    /// Every bad message is logged with the child's pid up to the 16th; after that at the
    /// 32nd, 64th, ... so a flood of garbage cannot flood the log.
    fn report_malformed(&mut self, role: Role, pid: u32, reason: &str) {
        let count = self.malformed.entry(pid).or_insert(0);
        *count += 1;
        if *count <= 16 || count.is_power_of_two() {
            let n = *count;
            self.logger.warn(&format!(
                "[master] dropped a malformed message from {} ({n} so far): {reason}",
                self.describe(role, pid)
            ));
        }
    }

    /// A child whose channel closed while it lives on cannot be reached any more: take it down
    /// (SIGTERM, SIGKILL after the close timeout); its exit then follows the normal path.
    fn reap_disconnected(&self, role: Role, pid: u32) {
        if self.life.is_closed() {
            return;
        }
        let Some(proc) = self.proc(role, pid) else {
            return;
        };
        if proc.exited.borrow().is_some() {
            return;
        }
        let target = shutdown::Target {
            pid,
            exited: proc.exited.clone(),
        };
        let timeout = if role == Role::Agent {
            &self.close_timeouts.agent
        } else {
            &self.close_timeouts.app
        };
        tokio::spawn(shutdown::terminate(target, timeout.limit));
    }

    /// Messages addressed to the master: the lifecycle's own actions are handled here, the rest
    /// are emitted on the JS master object as egg-cluster's `master.emit(action, data)` does.
    fn deliver_to_master(&mut self, from: Role, pid: u32, action: Option<&str>, line: Vec<u8>) {
        match action {
            Some("agent-start") => {
                let actions = self.life.on_agent_start(now_ms());
                self.perform(actions);
            }
            Some("realport") => {
                let data = json::scan(&line)
                    .ok()
                    .and_then(|s| s.raw("data").map(<[u8]>::to_vec))
                    .and_then(|raw| serde_json::from_slice::<Value>(&raw).ok())
                    .unwrap_or(Value::Null);
                let port = data
                    .get("port")
                    .and_then(Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok());
                let protocol = data.get("protocol").and_then(Value::as_str);
                self.life.on_realport(port, protocol);
                if from == Role::App && data.get("reusePort").and_then(Value::as_bool) == Some(true)
                {
                    self.reuse_port_pids.insert(pid);
                }
            }
            // Fault injection for the test suite only (EGG_CLUSTER_RS_FAULT_INJECTION=1): proves
            // that a bug while handling one event is reported and survived.
            Some("egg-cluster-rs:inject-panic") if self.fault_injection => {
                panic!("injected fault (EGG_CLUSTER_RS_FAULT_INJECTION)")
            }
            Some("reuse-port-listening") if from == Role::App => {
                let address = json::scan(&line)
                    .ok()
                    .and_then(|s| s.raw("data").map(<[u8]>::to_vec))
                    .and_then(|raw| serde_json::from_slice::<Value>(&raw).ok())
                    .unwrap_or(Value::Null);
                let actions = self.life.on_app_listening(pid, &address, now_ms(), true);
                self.perform(actions);
            }
            _ => self
                .emit
                .emit("master", String::from_utf8_lossy(&line).into_owned()),
        }
    }

    fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Log(level, msg) => self.logger.log_at(level, &msg),
                Action::LogError(name, msg) => self.logger.error_named(name, &msg),
                Action::SpawnAgent => {
                    if !self.life.is_closed() && !self.exiting {
                        self.spawn_agent();
                    }
                }
                Action::SpawnApps(n) => {
                    let actions = self.life.on_apps_forking(&self.options_json);
                    self.perform(actions);
                    let mut pids = self.start_prespawned();
                    let missing = n.saturating_sub(pids.len());
                    pids.extend((0..missing).filter_map(|_| self.spawn_app(false)));
                    let actions = self.life.on_apps_spawned(&pids);
                    self.perform(actions);
                }
                Action::ReforkApp => {
                    if !self.exiting {
                        self.refork_app();
                    }
                }
                Action::ReforkAppAfter(ms) => {
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        let _ = tx.send(Input::ReforkApp);
                    });
                }
                Action::Cfork(error, msg) => self.logger.cfork(error, &msg),
                Action::Send(target, line) => self.send(target, line),
                Action::Ready(data) => {
                    if self.is_production {
                        self.start_health_check();
                    }
                    self.emit.emit("ready", data.to_string())
                }
                Action::ListenSticky => match self.start_sticky_server() {
                    Ok(()) => {
                        let actions = self.life.on_sticky_listening(now_ms());
                        self.perform(actions);
                    }
                    Err(e) => {
                        self.logger.error(&format!(
                            "[master] sticky server failed to listen on the app port: {e}"
                        ));
                        self.exiting = true;
                        self.emit.emit("exit", "1".into());
                    }
                },
                Action::Exit(code) => {
                    self.exiting = true;
                    self.emit.emit("exit", code.to_string());
                }
                Action::ReforkAgentLater => {
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let _ = tx.send(Input::ReforkAgent);
                    });
                }
            }
        }
    }

    fn send(&self, target: Target, line: Vec<u8>) {
        match target {
            Target::Parent => self.deliver_to_parent(line),
            Target::Agent => self.deliver_to_agent(line, true),
            Target::AllApps => {
                let pids: Vec<u32> = self
                    .peers
                    .iter()
                    .filter(|p| p.connected)
                    .map(|p| p.pid)
                    .collect();
                self.deliver_to_apps(&pids, line, true);
            }
            Target::App(pid) => self.deliver_to_apps(&[pid], line, true),
        }
    }

    fn spawn_child(
        &mut self,
        role: Role,
        script: &str,
        cluster_id: Option<u32>,
        wait_start: bool,
    ) -> Option<Proc> {
        let args = [self.options_json.clone()];
        let exec_argv = self.exec_argv_for(role);
        let mut env = std::borrow::Cow::Borrowed(&self.rt.env);
        if wait_start {
            env.to_mut()
                .push(("EGG_CLUSTER_RS_WAIT_START".into(), "1".into()));
        }
        let spec = SpawnSpec {
            exec_path: &self.rt.exec_path,
            exec_argv: &exec_argv,
            script,
            args: &args,
            env: &env,
            cluster_id,
        };
        let child = match spawn::spawn_node(&spec) {
            Ok(c) => c,
            Err(e) => {
                self.logger
                    .error(&format!("[master] failed to spawn {}: {e}", role.as_str()));
                return None;
            }
        };
        let pid = child.child.id();
        let inspect_port = self.last_inspect_port.take();
        let tx = self.tx.clone();
        let sender = match channel::start(child.channel, CHANNEL_LIMITS, move |incoming| {
            let _ = tx.send(Input::Child {
                role,
                pid,
                event: ChildEvent::Incoming(incoming),
            });
        }) {
            Ok(s) => s,
            Err(e) => {
                self.logger.error(&format!(
                    "[master] failed to open the channel of {pid}: {e}"
                ));
                // Without a channel the child cannot work; it exits on its own when it sees no
                // parent, but make sure.
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                return None;
            }
        };
        let (exit_tx, exit_rx) = watch::channel(None);
        let tx = self.tx.clone();
        let process = child.child;
        tokio::spawn(async move {
            let info = spawn::wait_exit(process).await;
            let _ = exit_tx.send(Some(info));
            let _ = tx.send(Input::Child {
                role,
                pid,
                event: ChildEvent::Exited(info),
            });
        });
        if let Some(port) = inspect_port {
            // egg-cluster tells the parent where to attach a debugger.
            let data = format!("{{\"debugPort\":{port},\"pid\":{pid}}}");
            let mut msg = messenger::master_message("debug", Role::Parent, Some(data.as_bytes()));
            // `from` names the debugged child, as egg-cluster does.
            let from: &[u8] = if role == Role::Agent {
                b"\"agent\""
            } else {
                b"\"app\""
            };
            if let Ok(scanned) = json::scan(&msg) {
                msg = scanned.with_members(&[("from", from)]);
            }
            self.deliver_to_parent(msg);
        }
        Some(Proc {
            pid,
            sender,
            exited: exit_rx,
        })
    }

    /// The master's execArgv, plus `--inspect-port` when debugging: the agent's from
    /// `EGG_AGENT_DEBUG_PORT` (default 5800), each app worker the next port after
    /// `process.debugPort`, as Node's cluster assigns them.
    fn exec_argv_for(&mut self, role: Role) -> Vec<String> {
        let mut argv = self.rt.exec_argv.clone();
        self.last_inspect_port = None;
        if !self.is_debug {
            return argv;
        }
        let port = match role {
            Role::Agent => self
                .rt
                .env
                .iter()
                .find(|(k, _)| k == "EGG_AGENT_DEBUG_PORT")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(5800),
            _ => {
                self.app_debug_offset += 1;
                let p = u32::from(self.rt.debug_port) + self.app_debug_offset;
                // Node wraps past 65535 back to 1024.
                if p > 65535 {
                    p - 65535 + 1024 - 1
                } else {
                    p
                }
            }
        };
        argv.push(format!("--inspect-port={port}"));
        self.last_inspect_port = Some(port);
        argv
    }

    fn refork_app(&mut self) {
        if let Some(pid) = self.spawn_app(false) {
            self.logger
                .cfork(true, &format!("new worker:{pid} fork (state: none)"));
            let actions = self.life.on_apps_spawned(&[pid]);
            self.perform(actions);
        }
    }

    fn start_health_check(&self) {
        let tx = self.tx.clone();
        let every = self.health_interval;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                ticks.tick().await;
                if tx.send(Input::HealthCheck).is_err() {
                    return;
                }
            }
        });
    }

    fn spawn_agent(&mut self) {
        let script = self.rt.agent_worker_file.clone();
        if let Some(proc) = self.spawn_child(Role::Agent, &script, None, false) {
            let actions = self
                .life
                .on_agent_spawned(proc.pid, self.cluster_port, now_ms());
            self.agent = Some(proc);
            self.perform(actions);
        } else {
            let actions = self.life.on_agent_exit(Some(1), None);
            self.perform(actions);
        }
    }

    /// Starts the app workers together with the agent, so they load the framework while the
    /// agent boots; each waits (`EGG_CLUSTER_RS_WAIT_START`) for [`Self::start_prespawned`]
    /// before constructing its Application, which egg-cluster does only after `agent-start`.
    fn prespawn_apps(&mut self) {
        if self.life.is_closed() || self.exiting || self.agent.is_none() {
            return;
        }
        for _ in 0..self.workers {
            if let Some(pid) = self.spawn_app(true) {
                self.prespawned.push(pid);
            }
        }
    }

    /// `agent-start`: lets the waiting workers go on; returns those still alive.
    fn start_prespawned(&mut self) -> Vec<u32> {
        let mut started = Vec::new();
        for pid in std::mem::take(&mut self.prespawned) {
            let Some(app) = self.apps.get(&pid) else {
                continue;
            };
            let go = Frame::new(b"{\"cmd\":\"NODE_EGG_CLUSTER_RS_START\"}".to_vec());
            if app.sender.send_control(go).is_ok() {
                if let Some(peer) = self.peers.iter_mut().find(|p| p.pid == pid) {
                    peer.connected = true;
                }
                started.push(pid);
            }
        }
        started
    }

    fn spawn_app(&mut self, wait_start: bool) -> Option<u32> {
        let id = self.life.next_app_id();
        let script = self.rt.app_worker_file.clone();
        let proc = self.spawn_child(Role::App, &script, Some(id), wait_start)?;
        let pid = proc.pid;
        self.life.on_app_spawned(id, pid);
        // A replacement takes the slot its predecessor left, so sticky clients come back to it.
        if let Some(slot) = self.slots.iter_mut().find(|s| s.is_none()) {
            *slot = Some(pid);
        }
        // A waiting worker has no Application yet: it gets no messages until it starts, as in
        // egg-cluster, where it would not exist yet.
        self.peers.push(AppPeer {
            pid,
            connected: !wait_start,
        });
        self.apps.insert(pid, proc);
        Some(pid)
    }

    /// Sticky mode: listen on the real port and feed accepted connections to the main loop.
    fn start_sticky_server(&mut self) -> std::io::Result<()> {
        let port = self.life.real_port().unwrap_or(0);
        let fd = crate::listen::bind_request(&cluster_protocol::BindRequest::Tcp {
            address: None,
            port,
            ipv6_only: false,
        })?;
        let backlog = nix::sys::socket::Backlog::new(511).map_err(std::io::Error::from)?;
        nix::sys::socket::listen(&fd, backlog)?;
        let tx = self.tx.clone();
        let key = self.sticky_key.clone();
        tokio::spawn(crate::sticky::accept_loop(fd, move |accepted| {
            match &key {
                None => tx.send(Input::StickyConnections(accepted)).is_ok(),
                // Reading the key may wait on the client: one task per connection, so a silent
                // client delays only itself.
                Some(key) => {
                    for (fd, peer) in accepted {
                        let (key, tx) = (key.clone(), tx.clone());
                        tokio::spawn(async move {
                            let (fd, ip) = crate::sticky::peek_key(fd, peer, &key).await;
                            let _ = tx.send(Input::StickyConnections(vec![(fd, ip)]));
                        });
                    }
                    !tx.is_closed()
                }
            }
        })?);
        Ok(())
    }

    /// Hands each accepted connection to the worker its client maps to.
    fn hand_over(&mut self, accepted: Vec<(OwnedFd, std::net::IpAddr)>) {
        let slots: Vec<Option<(u32, bool)>> = self
            .slots
            .iter()
            .map(|s| {
                s.map(|pid| {
                    let serving = self
                        .life
                        .app(pid)
                        .is_some_and(|a| a.state == master::AppState::Listening)
                        && self.apps.contains_key(&pid);
                    (pid, serving)
                })
            })
            .collect();
        for (fd, ip) in accepted {
            // No worker can take it: dropping (closing) it is all that is left.
            let Some(pid) = crate::sticky::pick(ip, &slots) else {
                continue;
            };
            if let Some(app) = self.apps.get(&pid) {
                let _ = app.sender.send_control(Frame::handle(
                    "net.Socket",
                    b"\"sticky-session:connection\"",
                    fd,
                ));
            }
        }
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.cluster_seq;
        self.cluster_seq += 1;
        s
    }

    fn on_cluster(&mut self, pid: u32, line: &[u8]) {
        let msg = match cluster_protocol::parse(line) {
            Ok(m) => m,
            Err(e) => {
                self.logger.warn(&format!(
                    "[master] dropped a malformed cluster message from {}: {e}",
                    self.describe(Role::App, pid)
                ));
                return;
            }
        };
        match msg.act.as_deref() {
            Some("online") => self.life.on_app_online(pid),
            Some("queryServer") => self.query_server(pid, &msg),
            Some("listening") => {
                let address = msg.listening_address();
                let actions = self.life.on_app_listening(pid, &address, now_ms(), false);
                self.perform(actions);
            }
            Some("close") => {
                if let Some(key) = &msg.key {
                    self.release_handle(key, pid);
                }
            }
            Some("exitedAfterDisconnect") => {
                self.life.on_app_exited_after_disconnect(pid);
                let seq = self.next_seq();
                if let (Some(ack), Some(app)) = (msg.seq, self.apps.get(&pid)) {
                    let _ = app
                        .sender
                        .send_control(Frame::new(cluster_protocol::ack_reply(ack, seq)));
                }
            }
            _ => {}
        }
    }

    /// Whether `pid`'s TCP listens get a socket of their own (`SO_REUSEPORT`, one per worker
    /// slot) instead of the one shared socket: with `reusePort` in the options or in the app's
    /// `config.cluster.listen` (reported in `realport`).
    fn per_slot(&self, pid: u32) -> bool {
        self.reuse_port || self.reuse_port_pids.contains(&pid)
    }

    fn query_server(&mut self, pid: u32, msg: &ClusterMessage) {
        let key = msg.handle_key();
        let ack = msg.seq.unwrap_or(0);
        let request = msg.bind_request();
        let slot = match &request {
            Ok(cluster_protocol::BindRequest::Tcp { .. }) if self.per_slot(pid) => {
                self.slots.iter().position(|s| *s == Some(pid))
            }
            _ => None,
        };
        let map_key = match slot {
            Some(n) => format!("{key}@slot{n}"),
            None => key.clone(),
        };
        let bound = match self.handles.get(&map_key) {
            Some(_) => Ok(()),
            None => request
                .and_then(|req| {
                    let fd = match slot {
                        // The master listens on its per-slot socket itself and keeps it, so
                        // connections queue there while the slot's worker is being replaced.
                        Some(_) => crate::listen::bind_reuse_port(&req, msg.backlog),
                        None => crate::listen::bind_request(&req),
                    };
                    fd.map_err(|e| crate::listen::uv_errno(&e))
                })
                .map(|fd| {
                    self.handles.insert(
                        map_key.clone(),
                        SharedHandle {
                            node_key: key.clone(),
                            slot,
                            fd,
                            data: msg.data.clone(),
                            workers: Vec::new(),
                        },
                    );
                }),
        };
        let seq = self.next_seq();
        let Some(app) = self.apps.get(&pid) else {
            return;
        };
        let reply =
            |errno: i32, data: &Value| cluster_protocol::query_reply(errno, &key, ack, data, seq);
        let frame = match bound {
            Ok(()) => {
                let Some(handle) = self.handles.get_mut(&map_key) else {
                    return;
                };
                match handle.fd.try_clone() {
                    Ok(dup) => {
                        if !handle.workers.contains(&pid) {
                            handle.workers.push(pid);
                        }
                        Frame::handle("net.Native", &reply(0, &handle.data), dup)
                    }
                    Err(e) => Frame::new(reply(crate::listen::uv_errno(&e), &msg.data)),
                }
            }
            Err(errno) => Frame::new(reply(errno, &msg.data)),
        };
        let _ = app.sender.send_control(frame);
    }

    /// `pid` stopped using the handle it knows as `node_key`. The shared socket closes with its
    /// last worker; a per-slot socket stays while a replacement worker is expected to take the
    /// slot over, so its queued connections are served rather than reset.
    fn release_handle(&mut self, node_key: &str, pid: u32) {
        let keeps_slots = self.expects_refork();
        self.handles.retain(|_, h| {
            if h.node_key != node_key || !h.workers.contains(&pid) {
                return true;
            }
            h.workers.retain(|p| *p != pid);
            !h.workers.is_empty() || (h.slot.is_some() && keeps_slots)
        });
    }

    /// A dead app worker will be replaced (production, not closing).
    fn expects_refork(&self) -> bool {
        self.is_production && !self.life.is_closed() && !self.exiting
    }

    fn forget_handles(&mut self, pid: u32) {
        let keys: Vec<String> = self
            .handles
            .values()
            .filter(|h| h.workers.contains(&pid))
            .map(|h| h.node_key.clone())
            .collect();
        for key in keys {
            self.release_handle(&key, pid);
        }
    }

    /// egg-cluster's `_doClose`: app workers first, then the agent, each SIGTERM then SIGKILL
    /// after its timeout, then exit 0.
    fn close(&mut self) {
        let logger = self.logger.clone();
        let verbose = self.life.verbose();
        let CloseTimeouts {
            app: app_timeout,
            agent: agent_timeout,
        } = self.close_timeouts.clone();
        let apps: Vec<shutdown::Target> = self
            .apps
            .values()
            .map(|p| shutdown::Target {
                pid: p.pid,
                exited: p.exited.clone(),
            })
            .collect();
        let agent = self.agent.as_ref().map(|p| shutdown::Target {
            pid: p.pid,
            exited: p.exited.clone(),
        });
        let tx = self.tx.clone();
        tokio::spawn(async move {
            logger.info(&format!(
                "[master] send kill SIGTERM to app workers, will exit with code:0 after {}ms",
                app_timeout.shown
            ));
            logger.info(&format!("[master] wait {}ms", app_timeout.shown));
            let limit = app_timeout.limit;
            let all = apps.into_iter().map(|t| shutdown::terminate(t, limit));
            futures_join_all(all).await;
            logger.info(&format!(
                "[master] send kill SIGTERM to agent worker, will exit with code:0 after {}ms",
                agent_timeout.shown
            ));
            logger.info(&format!("[master] wait {}ms", agent_timeout.shown));
            if let Some(agent) = agent {
                logger.log_at(verbose, "[master] kill agent worker with signal SIGTERM");
                shutdown::terminate(agent, agent_timeout.limit).await;
            }
            logger.log_at(verbose, "[master] close done, exiting with code:0");
            let _ = tx.send(Input::Closed);
        });
    }
}

/// Awaits every future concurrently (a tiny `join_all` for a handful of workers).
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    for h in handles {
        let _ = h.await;
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

/// Adds `line` and its newline to `pid`'s part of the outbox; the first line for a receiver is
/// moved in, not copied.
fn gather(outbox: &mut Vec<(Role, u32, Vec<u8>)>, role: Role, pid: u32, mut line: Vec<u8>) {
    match outbox.iter_mut().find(|(r, p, _)| *r == role && *p == pid) {
        Some((_, _, bytes)) => {
            bytes.extend_from_slice(&line);
            bytes.push(b'\n');
        }
        None => {
            line.push(b'\n');
            outbox.push((role, pid, line));
        }
    }
}
