//! The master's decisions, as egg-cluster 2.x makes them, without side effects.
//!
//! One door: [`Core::handle`] takes an [`Event`] (something happened: a child spawned, listened,
//! exited, sent the master a message; a timer fired; a signal came) and returns the
//! [`Action`]s to perform (log this, spawn that, send this message, exit). The runtime
//! ([`crate::runtime`]) performs them and turns what it observes into the next events; it never
//! asks the core anything in between. Every product log line is written here.
//!
//! Where each decision lives:
//! - [`start`]: the start sequence — agent first, app workers at `agent-start`, counting
//!   workers that listen on the real port, ready.
//! - [`exits`]: a child's channel closing or its exit — cfork's refork rules and their console
//!   lines, the agent's refork, the health check, malformed input.
//! - [`close`]: a signal — app workers, then the agent, then exit.
//! - [`to_master`]: a child's message to the master — its own protocol, or `promise.master`'s.
//! - [`children`]: the one record per child, [`refork`]: the refork limit and backoff.

mod children;
mod close;
mod exits;
mod hung;
mod memory;
pub(crate) mod ops;
#[cfg(test)]
mod ops_tests;
mod orphans;
pub(crate) mod refork;
mod reload;
mod scale;
mod start;
#[cfg(test)]
mod tests;
mod threads;
mod to_master;
mod upgrade;

use std::time::Duration;

use serde_json::Value;

use crate::log::Level;
use crate::messenger::{master_message, Role};
use crate::protocol::MasterAction;
use children::Children;
pub(crate) use exits::OomKill;
pub(crate) use hung::{report_wait, HungReport, NoReport};
pub(crate) use ops::{CoreStatus, MasterStatus, Notice, OpsPhase, StatusTo};
pub(crate) use orphans::Orphan;
pub(crate) use refork::SpawnError;
pub(crate) use reload::{ReloadReason, Scale};
pub(crate) use upgrade::UpgradeRequest;

/// What the core needs to know about the configuration, fixed at start.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) framework_name: String,
    pub(crate) framework_version: String,
    pub(crate) node_version: String,
    pub(crate) is_production: bool,
    /// egg-cluster's `this.log`: DEBUG in the local env, INFO otherwise.
    pub(crate) verbose: Level,
    /// The egg env (`EGG_SERVER_ENV` or the `env` option) and `NODE_ENV`, for the start lines.
    pub(crate) env: Option<String>,
    pub(crate) node_env: Option<String>,
    /// The options as the user gave them, normalised (the start line shows them).
    pub(crate) options_shown: Value,
    /// The final options as JSON: the workers' `argv[2]` and the `data` of their `egg-ready`.
    pub(crate) options_json: String,
    pub(crate) cluster_port: u16,
    pub(crate) sticky: bool,
    pub(crate) sticky_worker_port: Option<u16>,
    pub(crate) port: Option<u16>,
    pub(crate) debug_port: Option<u16>,
    pub(crate) https: bool,
    /// The `HOST` env var, which shapes the printed address.
    pub(crate) host_env: Option<String>,
    /// cfork's refork limit: at most `refork_limit` reforks per `refork_duration_ms`.
    pub(crate) refork_limit: usize,
    pub(crate) refork_duration_ms: u64,
    pub(crate) health_interval: Duration,
    pub(crate) app_close: CloseTimeout,
    pub(crate) agent_close: CloseTimeout,
    /// Test-only: `egg-cluster-rs:inject-panic` makes [`Core::handle`] panic.
    pub(crate) fault_injection: bool,
    /// How long a replacement may take to listen before a reload gives up.
    pub(crate) reload_timeout: Duration,
    /// The surge: how many replacements a reload boots at once (at least 1).
    pub(crate) reload_concurrency: usize,
    /// `maxMemoryRestart` (bytes of RSS) and how often it is checked.
    pub(crate) max_memory: Option<u64>,
    pub(crate) memory_check_interval: Option<Duration>,
    /// The master runs under `--inspect`/`--debug` (`isDebug`): an app worker's SIGKILL is a
    /// debugger session ending, and closes the master.
    pub(crate) is_debug: bool,
    /// egg 3 (egg-cluster 2.x's protocol and lines) or egg 4 (@eggjs/cluster 3's).
    pub(crate) dialect: Dialect,
    /// The egg the app runs on, as found (the start lines say which and where); `None`: none
    /// found.
    pub(crate) egg: Option<Egg>,
    /// `startMode: 'worker_threads'`: children are threads of the master, named by thread id.
    pub(crate) threads: bool,
    /// worker_threads mode with `ports`: the port app thread slot `i` serves.
    pub(crate) slot_ports: Vec<u16>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`options.metrics`), as bound.
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// `shutdownDelay`: after SIGTERM, how long the workers go on serving (not ready) before
    /// the close begins.
    pub(crate) shutdown_delay: Duration,
    /// `workerTimeout`: a serving child whose event loop is blocked this long is hung (`None`: never).
    pub(crate) worker_timeout: Option<Duration>,
    /// How often children tick (`lib/heartbeat.js`), and the hung check runs.
    pub(crate) heartbeat_interval: Duration,
    /// `EGG_CLUSTER_RS_START_TIMEOUT`: an app worker must serve this long after its spawn.
    pub(crate) start_timeout: Option<Duration>,
    /// How long a new master of an upgrade may take to be ready (`EGG_CLUSTER_RS_UPGRADE_TIMEOUT`).
    pub(crate) upgrade_timeout: Duration,
    /// This master is PID 1: nothing outlives it, so it cannot hand over to a new master.
    pub(crate) is_pid1: bool,
    /// The most app workers scaling may ask for (`EGG_CLUSTER_RS_MAX_WORKERS`).
    pub(crate) max_workers: usize,
    /// This master is an upgrade's new master, and the old one ran this many app workers
    /// (scaled since its start): the count it starts with instead of `workers`.
    pub(crate) inherited_workers: Option<usize>,
}

pub(crate) use crate::options::{Dialect, Egg};

pub(crate) use crate::options::CloseTimeout;

/// How a worker said it listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenVia {
    /// The cluster protocol's `listening`.
    Cluster,
    /// The worker's own `reuse-port-listening` message (a worker that binds by itself with
    /// `reusePort` sends no cluster `listening`).
    ReusePortMessage,
    /// egg 4: the worker's `app-start` message (@eggjs/cluster counts only this).
    AppStart,
}

/// Timers the core asks for with [`Action::After`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    HealthCheck,
    ReforkApp,
    ReforkAgent,
    /// worker_threads mode: restart the app thread of this id in this slot.
    ReforkThread {
        id: u32,
        slot: usize,
    },
    /// A reload step's replacement must serve by now (the step's number).
    ReloadTimeout(u64),
    MemoryCheck,
    /// The shutdown delay is over: the close begins.
    ShutdownDelay,
    /// Look for hung children (every heartbeat interval).
    HungCheck,
    /// App worker `pid` must serve by now.
    StartTimeout {
        pid: u32,
    },
    /// The new master of upgrade `seq` must be ready by now.
    UpgradeTimeout(u64),
    /// An app worker added by scaling (boot number `seq`) must serve by now.
    ScaleTimeout(u64),
    /// Try again to spawn the app worker of scaling's boot `seq` (the master was short of a
    /// resource).
    ScaleRetry(u64),
    /// The close must be over by now (both close timeouts and a margin after it began).
    CloseTimeout,
}

/// The steps of the close sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    Apps,
    Agent,
    /// What dead children left behind (see `orphans.rs`).
    Orphans,
}

/// Why app workers are spawned; echoed back in [`Event::AppsSpawned`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Batch {
    /// With the agent, waiting for the go-ahead.
    Early,
    /// At `agent-start`: the workers that were not started early.
    Start,
    /// A replacement for a dead worker.
    Refork,
    /// A reload's replacement for a serving worker (same slot).
    Replace,
    /// More workers (scaling up).
    Scale,
}

/// One app worker of a [`Batch`]: the id and slot the core gave it, and the spawn's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spawned {
    pub(crate) id: u32,
    pub(crate) slot: usize,
    pub(crate) pid: Result<u32, SpawnError>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// Ports are known: begin.
    Start,
    AgentSpawned {
        id: u32,
        pid: Result<u32, SpawnError>,
    },
    AppsSpawned {
        batch: Batch,
        apps: Vec<Spawned>,
    },
    /// cluster `online`.
    Online {
        pid: u32,
    },
    /// A worker listens (`address` is `{addressType, address, port[, fd]}`).
    Listening {
        pid: u32,
        address: Value,
        via: ListenVia,
    },
    /// cluster `exitedAfterDisconnect`.
    ExitedAfterDisconnect {
        pid: u32,
    },
    /// A message addressed to the master (`pid` 0: from the parent). `line` is the message as
    /// routed; `data` its raw `data` member.
    ToMaster {
        from: Role,
        pid: u32,
        action: MasterAction,
        data: Option<Vec<u8>>,
        line: Vec<u8>,
    },
    /// A line from a child that is not a valid message.
    Malformed {
        pid: u32,
        reason: String,
    },
    /// A child stopped reading its channel; messages to it are being dropped.
    NotReading {
        pid: u32,
        queued: usize,
    },
    /// A child's IPC channel closed (`reason` when the master closed it over bad input).
    ChannelClosed {
        pid: u32,
        reason: Option<String>,
    },
    Exited {
        pid: u32,
        code: Option<i32>,
        signal: Option<&'static str>,
        /// A SIGKILL the kernel's OOM killer sent, as its counters say.
        oom: Option<OomKill>,
    },
    Timer(Timer),
    /// Sticky mode: the master's listener on the real port is up, or could not be.
    StickyListening(Result<(), String>),
    /// SIGINT/SIGQUIT/SIGTERM, with the figures egg-cluster logs then.
    Signal {
        name: String,
        heap_limit: f64,
        heap_used: f64,
        mem_total: u64,
        mem_free: u64,
    },
    /// A step of the close sequence finished: every child of the group is gone.
    Terminated(Group),
    /// Replace the app workers one at a time.
    Reload(ReloadReason),
    /// Change the number of app workers.
    Scale(Scale),
    /// RSS in bytes of app workers, answering [`Action::SampleMemory`].
    MemorySample(Vec<(u32, u64)>),
    /// Someone wants a status snapshot: answered with [`Action::Status`].
    StatusRequest(StatusTo),
    /// worker_threads mode: an uncaught exception ended thread `pid` (its `error` event); the
    /// exit follows.
    ThreadError {
        pid: u32,
        message: String,
    },
    /// A tick from `pid`'s event loop, `lag_ms` late.
    Heartbeat {
        pid: u32,
        lag_ms: u64,
    },
    /// What was found of hung `pid`'s report, answering [`Action::CollectReport`].
    HungReport {
        pid: u32,
        report: HungReport,
    },
    /// SIGHUP, `promise.upgrade()` or the control socket: start a new master.
    Upgrade(UpgradeRequest),
    /// The answer to [`Action::SpawnMaster`]: the new master's pid, or why it did not start.
    UpgradeSpawned {
        seq: u64,
        result: Result<u32, String>,
    },
    /// The new master of upgrade `seq` said it is ready.
    UpgradeReady {
        seq: u64,
    },
    /// The new master of upgrade `seq` will not be ready (it exited, or closed its channel).
    UpgradeFailed {
        seq: u64,
        reason: String,
    },
    /// The processes dead children left behind, answering [`Action::FindOrphans`].
    Orphans {
        found: Vec<Orphan>,
        at_close: bool,
    },
    /// The control socket (`egg-cluster-rs reload|scale`) asks, and `waiter` waits for the
    /// outcome ([`Action::Progress`], then [`Action::Outcome`]).
    Control {
        waiter: u64,
        request: ControlRequest,
    },
}

/// What a waiting client may ask for besides an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlRequest {
    /// A rolling reload of every app worker.
    Reload,
    Scale(Scale),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Parent,
    Child(u32),
    Children(Vec<u32>),
}

/// Who gets relayed messages: the routing view of the children, republished on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Routes {
    pub(crate) agent: Option<u32>,
    /// The app workers messages reach, in spawn order.
    pub(crate) apps: Vec<u32>,
    /// The serving app worker of each slot (sticky hand-over).
    pub(crate) slots: Vec<Option<u32>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// A product log line at `Level`.
    Log(Level, String),
    /// `logger.error(err)` of an error named `name`.
    LogError(&'static str, String),
    /// One of cfork's console lines (`console.error` when `true`, else `console.info`).
    Cfork(bool, String),
    /// Answer with [`Event::AgentSpawned`].
    SpawnAgent { id: u32 },
    /// Answer with [`Event::AppsSpawned`] listing every one of `apps` (id, slot).
    SpawnApps {
        batch: Batch,
        apps: Vec<(u32, usize)>,
    },
    /// The go-ahead for waiting app workers to construct their Application.
    Release(Vec<u32>),
    /// The master's own message (never dropped, unlike relayed ones).
    Send(Target, Vec<u8>),
    /// The routing view changed. Numbered: a decision that spawns a child has the spawn's own
    /// decision performed before its remaining actions, so an older view may arrive last.
    Routes(u64, Routes),
    /// Started: the payload of `egg-ready` for the JS side.
    Ready(Value),
    /// Sticky mode, every worker up: listen on the real port, answer with
    /// [`Event::StickyListening`].
    ListenSticky { port: u16 },
    /// Answer with [`Event::Timer`] after this long.
    After(Duration, Timer),
    /// `pid`'s TCP listens get a `SO_REUSEPORT` socket of their slot's (its app config asked
    /// for `reusePort`).
    ReusePort { pid: u32 },
    /// SIGTERM `pid` and its descendants, SIGKILL after `limit` (a child that lost its channel).
    Terminate { pid: u32, limit: Duration },
    /// The same for every child in `pids`, answered with [`Event::Terminated`].
    TerminateGroup {
        group: Group,
        pids: Vec<u32>,
        limit: Duration,
    },
    /// Answer with [`Event::MemorySample`] for these pids.
    SampleMemory(Vec<u32>),
    /// A message to the master that the master does not handle: emitted on `promise.master`.
    EmitMaster(Vec<u8>),
    /// The master exits with this code (`process.exit` on the JS side).
    Exit(i32),
    /// The core's half of a status snapshot, for whoever asked.
    Status(StatusTo, Box<CoreStatus>),
    /// The phase or the number of serving workers changed (for `sd_notify`).
    Notify(Notice),
    /// `pid` is hung: ask its watchdog thread for a report (whose message is `message`), wait
    /// up to `wait` for it, answer with [`Event::HungReport`].
    CollectReport {
        pid: u32,
        wait: Duration,
        message: String,
    },
    /// Start the new master of upgrade `seq` on this one's sockets, telling it to run `workers`
    /// app workers (this one's count now, scaled or not); answer with
    /// [`Event::UpgradeSpawned`], then [`Event::UpgradeReady`] or [`Event::UpgradeFailed`].
    SpawnMaster { seq: u64, workers: usize },
    /// SIGTERM new master `pid` (it closes its own tree), SIGKILL its process group after
    /// `limit`.
    StopMaster { pid: u32, limit: Duration },
    /// An upgrade's new master serves: stop accepting on the sticky and metrics listeners (it
    /// accepts there now).
    StopAccepting,
    /// Tell these waiters how the upgrade ended: the new master's pid, or why it failed.
    UpgradeOutcome {
        waiters: Vec<u64>,
        result: Result<u32, String>,
    },
    /// Look for the processes dead children left behind; answer with [`Event::Orphans`].
    FindOrphans { at_close: bool },
    /// SIGTERM these (each if still the process found), SIGKILL after `limit`; at the close,
    /// answered with [`Event::Terminated`] of [`Group::Orphans`].
    TerminateOrphans {
        orphans: Vec<Orphan>,
        limit: Duration,
        at_close: bool,
    },
    /// A step of a reload or scaling these waiters asked for (a worker replaced, added,
    /// retired): one line for them.
    Progress { waiters: Vec<u64>, line: String },
    /// How the reload or scaling these waiters asked for ended: a summary, or why it failed.
    Outcome {
        waiters: Vec<u64>,
        result: Result<String, String>,
    },
}

/// Where the master as a whole is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MasterPhase {
    /// Until every app worker has started once.
    Starting,
    /// Sticky mode: every worker started, the master's own listener is being opened.
    BindingSticky,
    /// Ready was reported.
    Up,
    /// A signal came with a `shutdownDelay`: not ready, the workers serve on until it ends.
    ShutdownDelay,
    /// A signal came: children are being terminated.
    Closing,
    /// [`Action::Exit`] was given: nothing more happens.
    Exited,
}

pub(crate) struct Core {
    cfg: Config,
    phase: MasterPhase,
    children: Children,
    /// The port the app is served on (options, or the workers' `realport`).
    real_port: Option<u16>,
    protocol: &'static str,
    /// `agent-start` came once: the app workers were started.
    apps_released: bool,
    apps_fork_time: u64,
    /// The early batch was asked for and not answered yet (worker_threads: the JS thread
    /// creates the threads, so the answer may come after `agent-start`).
    early_unanswered: bool,
    /// Workers counted as started (each once) — egg-cluster's `startSuccessCount`.
    start_success: usize,
    /// Every worker has started once (in sticky mode, before the master's listener is up).
    all_started: bool,
    start_time: u64,
    app_address: String,
    refork: refork::ReforkPolicy,
    /// Spawns that failed for want of a resource: retried outside the refork limit.
    spawn_retry: refork::SpawnRetry,
    disconnect_count: u64,
    unexpected_count: u64,
    /// Consecutive failed health checks.
    health_failures: u32,
    /// The number of app workers wanted (`workers`, changed by scaling).
    workers: usize,
    /// The rolling reload in progress.
    reload: Option<reload::Reload>,
    /// The scaling in progress (workers booting through the surge, or draining).
    scaling: Option<scale::Scaling>,
    /// Numbers reload steps, so a stale timeout is recognised.
    step_seq: u64,
    /// Why the last reload failed, until one succeeds (which then says it recovered).
    reload_failed: Option<String>,
    /// The last routes published, and how many times they changed.
    routes: Routes,
    routes_seq: u64,
    /// Restarts, last exits and notices, for operators.
    ops: ops::OpsState,
    /// The master upgrade in progress.
    upgrade: Option<upgrade::Upgrade>,
    upgrade_seq: u64,
    /// An upgrade's new master took over: it speaks to systemd from now on.
    handed_over: bool,
    /// When the next hung check is due (a late one shows this master's own absences).
    hung_check_due: Option<u64>,
}

impl Core {
    pub(crate) fn new(cfg: Config, now: u64) -> Self {
        Core {
            real_port: cfg.port,
            protocol: if cfg.https { "https" } else { "http" },
            phase: MasterPhase::Starting,
            children: Children::default(),
            apps_released: false,
            apps_fork_time: 0,
            early_unanswered: false,
            start_success: 0,
            all_started: false,
            start_time: now,
            app_address: String::new(),
            refork: refork::ReforkPolicy::new(
                cfg.is_production,
                cfg.refork_limit,
                cfg.refork_duration_ms,
            ),
            spawn_retry: refork::SpawnRetry::default(),
            disconnect_count: 0,
            unexpected_count: 0,
            health_failures: 0,
            routes: Routes::default(),
            routes_seq: 0,
            workers: cfg
                .inherited_workers
                .map_or(cfg.workers, |n| n.clamp(1, cfg.max_workers.max(1))),
            reload: None,
            scaling: None,
            step_seq: 0,
            reload_failed: None,
            ops: ops::OpsState::default(),
            upgrade: None,
            upgrade_seq: 0,
            handed_over: false,
            hung_check_due: None,
            cfg,
        }
    }

    /// The one door: what to do about `event` at `now` (ms since the epoch).
    pub(crate) fn handle(&mut self, event: Event, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == MasterPhase::Exited {
            return out;
        }
        match event {
            Event::Start => self.on_start(&mut out),
            Event::AgentSpawned { id, pid } => self.on_agent_spawned(id, pid, now, &mut out),
            Event::AppsSpawned { batch, apps } => self.on_apps_spawned(batch, apps, now, &mut out),
            Event::Online { pid } => self.on_online(pid),
            Event::Listening { pid, address, via } => {
                self.on_listening(pid, &address, via, now, &mut out)
            }
            Event::ExitedAfterDisconnect { pid } => {
                if let Some(c) = self.children.get_mut(pid) {
                    c.exited_after_disconnect = true;
                }
            }
            Event::ToMaster {
                from,
                pid,
                action,
                data,
                line,
            } => self.on_to_master(from, pid, action, data.as_deref(), line, now, &mut out),
            Event::Malformed { pid, reason } => {
                self.ops.malformed += 1;
                self.on_malformed(pid, &reason, &mut out)
            }
            Event::NotReading { pid, queued } => out.push(Action::Log(
                Level::Warn,
                format!(
                    "[master] {} is not reading its channel: dropping messages to it ({queued} bytes queued)",
                    self.describe(pid)
                ),
            )),
            Event::ChannelClosed { pid, reason } => {
                self.on_channel_closed(pid, reason, now, &mut out)
            }
            Event::Exited {
                pid,
                code,
                signal,
                oom,
            } => {
                let orphans = self.exit_leaves_orphans(pid);
                if let Some(oom) = oom {
                    self.on_oom_kill(pid, &oom, &mut out);
                }
                self.ops_record_exit(pid, code, signal, now);
                self.on_exited(pid, code, signal, now, &mut out);
                if orphans && !out.iter().any(|a| matches!(a, Action::Exit(_))) {
                    out.push(Action::FindOrphans { at_close: false });
                }
            }
            Event::Timer(Timer::HealthCheck) => self.on_health_check(&mut out),
            Event::Timer(Timer::ReforkApp) => self.refork_app(&mut out),
            Event::Timer(Timer::ReforkAgent) => self.refork_agent(&mut out),
            Event::Timer(Timer::ReforkThread { id, slot }) => {
                self.refork_thread(id, slot, &mut out)
            }
            Event::ThreadError { pid, message } => self.on_thread_error(pid, &message, &mut out),
            Event::StickyListening(result) => self.on_sticky_listening(result, now, &mut out),
            Event::Signal {
                name,
                heap_limit,
                heap_used,
                mem_total,
                mem_free,
            } => self.on_signal(&name, heap_limit, heap_used, mem_total, mem_free, &mut out),
            Event::Terminated(group) => self.on_terminated(group, &mut out),
            Event::Timer(Timer::ReloadTimeout(seq)) => self.on_reload_timeout(seq, now, &mut out),
            Event::Timer(Timer::MemoryCheck) => self.on_memory_check(&mut out),
            Event::Timer(Timer::ShutdownDelay) => self.on_shutdown_delay_over(&mut out),
            Event::Reload(reason) => self.on_reload(reason, now, &mut out),
            Event::Scale(scale) => self.on_scale(scale, None, now, &mut out),
            Event::Control { waiter, request } => match request {
                ControlRequest::Reload => {
                    self.start_reload(ReloadReason::Control, vec![waiter], now, &mut out)
                }
                ControlRequest::Scale(scale) => self.on_scale(scale, Some(waiter), now, &mut out),
            },
            Event::Timer(Timer::ScaleTimeout(seq)) => self.on_scale_timeout(seq, now, &mut out),
            Event::Timer(Timer::ScaleRetry(seq)) => self.on_scale_retry(seq, &mut out),
            Event::MemorySample(samples) => self.on_memory(samples, now, &mut out),
            Event::StatusRequest(to) => self.on_status_request(to, &mut out),
            Event::Heartbeat { pid, lag_ms } => self.on_heartbeat(pid, lag_ms, now, &mut out),
            Event::Timer(Timer::HungCheck) => self.on_hung_check(now, &mut out),
            Event::Timer(Timer::StartTimeout { pid }) => self.on_start_timeout(pid, &mut out),
            Event::HungReport { pid, report } => self.on_hung_report(pid, report, now, &mut out),
            Event::Upgrade(req) => self.on_upgrade(req, now, &mut out),
            Event::UpgradeSpawned { seq, result } => {
                self.on_upgrade_spawned(seq, result, &mut out)
            }
            Event::UpgradeReady { seq } => self.on_upgrade_ready(seq, now, &mut out),
            Event::UpgradeFailed { seq, reason } => self.on_upgrade_failed(seq, reason, &mut out),
            Event::Timer(Timer::UpgradeTimeout(seq)) => self.on_upgrade_timeout(seq, &mut out),
            Event::Orphans { found, at_close } => self.on_orphans(found, at_close, &mut out),
            Event::Timer(Timer::CloseTimeout) => self.on_close_timeout(&mut out),
        }
        self.ops_after(&mut out);
        if out.iter().any(|a| matches!(a, Action::Exit(_))) {
            self.phase = MasterPhase::Exited;
        } else {
            self.publish_routes(&mut out);
        }
        out
    }

    fn verbose(&self, out: &mut Vec<Action>, msg: String) {
        out.push(Action::Log(self.cfg.verbose, msg));
    }

    /// A message of the master's own to `target` (`to` is `to`'s role).
    fn send(out: &mut Vec<Action>, target: Target, to: Role, action: &str, data: Option<&[u8]>) {
        out.push(Action::Send(target, master_message(action, to, data)));
    }

    /// To every app worker messages reach now.
    fn send_apps(&self, out: &mut Vec<Action>, action: &str, data: Option<&[u8]>) {
        let pids = self.children.reachable_apps();
        Self::send(out, Target::Children(pids), Role::App, action, data);
    }

    /// A step for the control-socket clients waiting on a reload or a scaling.
    fn progress(out: &mut Vec<Action>, waiters: &[u64], line: String) {
        if !waiters.is_empty() {
            out.push(Action::Progress {
                waiters: waiters.to_vec(),
                line,
            });
        }
    }

    /// How it ended, for the control-socket clients waiting on it.
    fn outcome(out: &mut Vec<Action>, waiters: Vec<u64>, result: Result<String, String>) {
        if !waiters.is_empty() {
            out.push(Action::Outcome { waiters, result });
        }
    }

    fn send_agent(&self, out: &mut Vec<Action>, action: &str, data: Option<&[u8]>) {
        if let Some(agent) = self.children.agent() {
            Self::send(out, Target::Child(agent.pid), Role::Agent, action, data);
        }
    }

    fn describe(&self, pid: u32) -> String {
        if pid == 0 {
            return "parent".into();
        }
        self.children
            .get(pid)
            .map_or_else(|| format!("child {pid}"), children::Child::name)
    }

    fn closing(&self) -> bool {
        matches!(
            self.phase,
            MasterPhase::ShutdownDelay | MasterPhase::Closing | MasterPhase::Exited
        )
    }

    fn started(&self) -> bool {
        self.phase == MasterPhase::Up
    }

    fn publish_routes(&mut self, out: &mut Vec<Action>) {
        let routes = Routes {
            agent: self.children.agent().map(|a| a.pid),
            apps: self.children.reachable_apps(),
            slots: if self.cfg.sticky {
                self.children.serving_by_slot(self.workers)
            } else {
                Vec::new()
            },
        };
        if routes != self.routes {
            self.routes = routes.clone();
            self.routes_seq += 1;
            out.push(Action::Routes(self.routes_seq, routes));
        }
    }
}

/// egg-cluster's `getAddress`; @eggjs/cluster's also prints `::` (any IPv6) as the default host.
pub(crate) fn get_address_in(
    dialect: Dialect,
    address: Option<&str>,
    port: Option<i64>,
    protocol: &str,
    host_env: Option<&str>,
) -> String {
    let address = address.filter(|a| !(dialect == Dialect::Egg4 && *a == "::"));
    get_address(address, port, protocol, host_env)
}

/// egg-cluster's `getAddress`.
pub(crate) fn get_address(
    address: Option<&str>,
    port: Option<i64>,
    protocol: &str,
    host_env: Option<&str>,
) -> String {
    let hostname = address
        .filter(|a| !a.is_empty())
        .or(host_env.filter(|h| !h.is_empty() && *h != "0.0.0.0"))
        .unwrap_or("127.0.0.1");
    let port = port.map_or("undefined".to_string(), |p| p.to_string());
    format!("{protocol}://{hostname}:{port}")
}

/// A JS number or `null`, as egg-cluster's log lines print an optional exit code.
fn js_opt(v: Option<i32>) -> String {
    v.map_or("null".to_string(), |v| v.to_string())
}
