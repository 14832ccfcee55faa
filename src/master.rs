//! The master's lifecycle decisions, as egg-cluster 2.x makes them, without side effects.
//!
//! Events (a child spawned, listening, exited; a message to the master; a signal) go in; actions
//! (log this, spawn that, send this message, exit) come out. The runtime ([`crate::runtime`])
//! performs the actions; tests drive this directly.

use serde_json::Value;

use crate::log::Level;
use crate::messenger::{master_message, Role};

/// What the lifecycle needs to know about the configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub workers: usize,
    pub framework_name: String,
    pub is_production: bool,
    /// The app workers are reforked after ready only in production (cfork's `refork`).
    pub sticky: bool,
    pub sticky_worker_port: Option<u16>,
    pub port: Option<u16>,
    pub debug_port: Option<u16>,
    pub https: bool,
    /// The `HOST` env var, which shapes the printed address.
    pub host_env: Option<String>,
    /// The final options as JSON (the `data` of `egg-ready` to app and agent).
    pub options_json: String,
    /// cfork's refork limit: at most `refork_limit` reforks per `refork_duration_ms`.
    pub refork_limit: usize,
    pub refork_duration_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppState {
    None,
    Online,
    Listening,
    Disconnected,
    Dead,
}

impl AppState {
    pub fn as_str(self) -> &'static str {
        match self {
            AppState::None => "none",
            AppState::Online => "online",
            AppState::Listening => "listening",
            AppState::Disconnected => "disconnected",
            AppState::Dead => "dead",
        }
    }
}

#[derive(Debug, Clone)]
pub struct App {
    pub id: u32,
    pub pid: u32,
    pub state: AppState,
    pub exited_after_disconnect: bool,
    pub disconnected: bool,
    pub dead: bool,
    /// Already counted as started (a worker counts once, however it reports listening).
    pub counted: bool,
    /// cfork's `worker.disableRefork`: set until the app has started, and during close.
    pub disable_refork: bool,
    /// cfork already decided about this worker's refork (at its disconnect).
    pub refork_handled: bool,
    /// When it started serving on the real port.
    pub listening_since: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Agent {
    pub id: u32,
    pub pid: u32,
    pub started: bool,
    pub spawned_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Parent,
    Agent,
    AllApps,
    App(u32),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A product log line at `Level`.
    Log(Level, String),
    /// `logger.error(err)` of an error named `name`.
    LogError(&'static str, String),
    SpawnAgent,
    SpawnApps(usize),
    Send(Target, Vec<u8>),
    /// Started: the payload of `egg-ready` to the parent.
    Ready(Value),
    /// Sticky mode, every worker up: listen on the real port, then report
    /// [`Lifecycle::on_sticky_listening`].
    ListenSticky,
    Exit(i32),
    /// Spawn a new agent after 1 s.
    ReforkAgentLater,
    /// Replace a dead app worker now; the runtime logs cfork's `new worker:PID fork` line.
    ReforkApp,
    /// Replace a dead app worker after this many ms (crash-loop backoff).
    ReforkAppAfter(u64),
    /// One of cfork's console lines (`console.error` when `true`, else `console.info`).
    Cfork(bool, String),
}

pub struct Lifecycle {
    cfg: Config,
    /// egg-cluster's `this.log`: DEBUG in local env, INFO otherwise.
    verbose: Level,
    real_port: Option<u16>,
    protocol: &'static str,
    agent: Option<Agent>,
    agent_seq: u32,
    apps: Vec<App>,
    app_seq: u32,
    apps_forked: bool,
    apps_fork_time: u64,
    start_success: usize,
    all_started: bool,
    started: bool,
    closed: bool,
    start_time: u64,
    app_address: String,
    refork: crate::refork::ReforkPolicy,
    disconnect_count: u64,
    unexpected_count: u64,
    /// Consecutive failed health checks.
    health_failures: u32,
}

impl Lifecycle {
    pub fn new(cfg: Config, verbose: Level, now: u64) -> Self {
        Lifecycle {
            real_port: cfg.port,
            protocol: if cfg.https { "https" } else { "http" },
            verbose,
            agent: None,
            agent_seq: 0,
            apps: Vec::new(),
            app_seq: 0,
            apps_forked: false,
            apps_fork_time: 0,
            start_success: 0,
            all_started: false,
            started: false,
            closed: false,
            start_time: now,
            app_address: String::new(),
            refork: crate::refork::ReforkPolicy::new(
                cfg.is_production,
                cfg.refork_limit,
                cfg.refork_duration_ms,
            ),
            disconnect_count: 0,
            unexpected_count: 0,
            health_failures: 0,
            cfg,
        }
    }

    pub fn agent(&self) -> Option<&Agent> {
        self.agent.as_ref()
    }

    pub fn apps(&self) -> &[App] {
        &self.apps
    }

    pub fn app(&self, pid: u32) -> Option<&App> {
        self.apps.iter().find(|a| a.pid == pid)
    }

    /// The port the app is served on (options, or the workers' `realport`).
    pub fn real_port(&self) -> Option<u16> {
        self.real_port
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn is_started(&self) -> bool {
        self.started
    }

    fn log(&self, out: &mut Vec<Action>, msg: String) {
        out.push(Action::Log(self.verbose, msg));
    }

    fn send(out: &mut Vec<Action>, target: Target, action: &str, data: Option<&[u8]>) {
        let to = match target {
            Target::Parent => Role::Parent,
            Target::Agent => Role::Agent,
            Target::AllApps | Target::App(_) => Role::App,
        };
        out.push(Action::Send(target, master_message(action, to, data)));
    }

    fn listening_pids_json(&self) -> Vec<u8> {
        let pids: Vec<u32> = self
            .apps
            .iter()
            .filter(|a| a.state == AppState::Listening)
            .map(|a| a.pid)
            .collect();
        serde_json::to_vec(&pids).unwrap_or_else(|_| b"[]".to_vec())
    }

    fn current_worker_ids(&self) -> String {
        let ids: Vec<String> = self
            .apps
            .iter()
            .filter(|a| !(a.disconnected && a.dead))
            .map(|a| a.id.to_string())
            .collect();
        serde_json::to_string(&ids).unwrap_or_default()
    }

    /// Ports are known: the agent goes first.
    pub fn on_ports_ready(&mut self) -> Vec<Action> {
        vec![Action::SpawnAgent]
    }

    pub fn on_agent_spawned(&mut self, pid: u32, cluster_port: u16, now: u64) -> Vec<Action> {
        self.agent_seq += 1;
        let agent = Agent {
            id: self.agent_seq,
            pid,
            started: false,
            spawned_at: now,
        };
        let mut out = Vec::new();
        self.log(
            &mut out,
            format!(
                "[master] agent_worker#{}:{} start with clusterPort:{}",
                agent.id, agent.pid, cluster_port
            ),
        );
        self.agent = Some(agent);
        out
    }

    /// `agent-start` reached the master.
    pub fn on_agent_start(&mut self, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(agent) = self.agent.as_mut() else {
            return out;
        };
        agent.started = true;
        let agent = agent.clone();
        if self.all_started {
            Self::send(
                &mut out,
                Target::Agent,
                "egg-ready",
                Some(self.cfg.options_json.as_bytes()),
            );
        }
        let agent_pids = format!("[{}]", agent.pid);
        Self::send(
            &mut out,
            Target::AllApps,
            "egg-pids",
            Some(agent_pids.as_bytes()),
        );
        if self.started {
            let pids = self.listening_pids_json();
            Self::send(&mut out, Target::Agent, "egg-pids", Some(&pids));
        }
        Self::send(&mut out, Target::AllApps, "agent-start", None);
        out.push(Action::Log(
            Level::Info,
            format!(
                "[master] agent_worker#{}:{} started ({}ms)",
                agent.id,
                agent.pid,
                now.saturating_sub(agent.spawned_at)
            ),
        ));
        if !self.apps_forked && !self.closed {
            self.apps_forked = true;
            self.apps_fork_time = now;
            out.push(Action::SpawnApps(self.cfg.workers));
        }
        out
    }

    /// `realport` from an app worker: the port and protocol its config resolved to.
    pub fn on_realport(&mut self, port: Option<u16>, protocol: Option<&str>) {
        if let Some(p) = port.filter(|p| *p != 0) {
            self.real_port = Some(p);
        }
        match protocol {
            Some("https") => self.protocol = "https",
            Some("http") => self.protocol = "http",
            _ => {}
        }
    }

    pub fn next_app_id(&mut self) -> u32 {
        self.app_seq += 1;
        self.app_seq
    }

    pub fn on_apps_forking(&self, args_json: &str) -> Vec<Action> {
        let mut out = Vec::new();
        let args = serde_json::to_string(&[args_json]).unwrap_or_default();
        self.log(
            &mut out,
            format!("[master] start appWorker with args {args} (process)"),
        );
        out
    }

    pub fn on_app_spawned(&mut self, id: u32, pid: u32) -> Vec<Action> {
        self.apps.push(App {
            id,
            pid,
            state: AppState::None,
            exited_after_disconnect: false,
            disconnected: false,
            dead: false,
            counted: false,
            disable_refork: !self.all_started,
            refork_handled: false,
            listening_since: None,
        });
        Vec::new()
    }

    /// Logged once every worker of a batch is spawned, as cluster's `fork` events fire after
    /// cfork forked them all.
    pub fn on_apps_spawned(&self, pids: &[u32]) -> Vec<Action> {
        let mut out = Vec::new();
        let ids = self.current_worker_ids();
        for app in self.apps.iter().filter(|a| pids.contains(&a.pid)) {
            self.log(
                &mut out,
                format!(
                    "[master] app_worker#{}:{} start, state: {}, current workers: {}",
                    app.id,
                    app.pid,
                    app.state.as_str(),
                    ids
                ),
            );
        }
        out
    }

    pub fn on_app_online(&mut self, pid: u32) {
        if let Some(app) = self.apps.iter_mut().find(|a| a.pid == pid) {
            if app.state == AppState::None {
                app.state = AppState::Online;
            }
        }
    }

    pub fn on_app_exited_after_disconnect(&mut self, pid: u32) {
        if let Some(app) = self.apps.iter_mut().find(|a| a.pid == pid) {
            app.exited_after_disconnect = true;
        }
    }

    /// Cluster `listening` (`address` is `{addressType, address, port[, fd]}`), or, with
    /// `reuse_port`, the worker's own `reuse-port-listening` message: a worker that binds its
    /// port itself (Node 22 `reusePort`) never sends a cluster `listening`. On Node 20 a
    /// reusePort worker sends both; it is counted once (egg-cluster counts it twice).
    pub fn on_app_listening(
        &mut self,
        pid: u32,
        address: &Value,
        now: u64,
        reuse_port: bool,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(idx) = self.apps.iter().position(|a| a.pid == pid) else {
            return out;
        };
        self.apps[idx].state = AppState::Listening;
        let app = self.apps[idx].clone();
        let how = if reuse_port {
            "reuse-port listening"
        } else {
            "listening"
        };
        out.push(Action::Log(
            Level::Info,
            format!(
                "[master] app_worker#{}:{} {how} on {}",
                app.id, app.pid, address
            ),
        ));
        let port = address.get("port").and_then(Value::as_i64);
        let is_unix = address.get("addressType").and_then(Value::as_i64) == Some(-1);
        let expected = if self.cfg.sticky {
            self.cfg.sticky_worker_port
        } else {
            self.real_port
        };
        // Only the listen on the real port counts (an app may listen on other ports too).
        if app.counted || (!is_unix && port.map(|p| p as i128) != expected.map(|p| p as i128)) {
            return out;
        }
        self.apps[idx].counted = true;
        self.apps[idx].listening_since = Some(now);
        let pids = self.listening_pids_json();
        Self::send(&mut out, Target::Agent, "egg-pids", Some(&pids));
        // egg-cluster sends this only at agent-start, before any app worker exists; every
        // worker needs the agent's pid (e.g. for `messenger.sendRandom`).
        if let Some(agent) = &self.agent {
            let agent_pids = format!("[{}]", agent.pid);
            Self::send(
                &mut out,
                Target::App(pid),
                "egg-pids",
                Some(agent_pids.as_bytes()),
            );
        }
        self.start_success += 1;
        let remain = if self.all_started {
            0
        } else {
            self.cfg.workers.saturating_sub(self.start_success)
        };
        self.log(
            &mut out,
            format!(
                "[master] app_worker#{}:{} started at {}, remain {} ({}ms)",
                app.id,
                app.pid,
                port.map_or("undefined".to_string(), |p| p.to_string()),
                remain,
                now.saturating_sub(self.apps_fork_time)
            ),
        );
        if self.all_started {
            self.apps[idx].disable_refork = false;
            // A replacement worker joins an app that is already up.
            Self::send(
                &mut out,
                Target::App(pid),
                "egg-ready",
                Some(self.cfg.options_json.as_bytes()),
            );
            return out;
        }
        if self.start_success < self.cfg.workers {
            return out;
        }
        self.all_started = true;
        for app in &mut self.apps {
            app.disable_refork = false;
        }
        let shown_port = if self.cfg.sticky {
            self.real_port.map(i64::from)
        } else {
            port
        };
        self.app_address = if is_unix {
            address
                .get("address")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        } else {
            get_address(
                address.get("address").and_then(Value::as_str),
                shown_port,
                self.protocol,
                self.cfg.host_env.as_deref(),
            )
        };
        if self.cfg.sticky {
            // egg-cluster reports ready from the sticky server's listen callback: the public
            // port must accept before anyone is told it is up.
            out.push(Action::ListenSticky);
        } else {
            out.extend(self.on_ready(now));
        }
        out
    }

    /// Sticky mode: the master's own server listens on the real port; now the app is ready.
    pub fn on_sticky_listening(&mut self, now: u64) -> Vec<Action> {
        self.on_ready(now)
    }

    fn on_ready(&mut self, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        self.started = true;
        let sticky = if self.cfg.sticky {
            " with STICKY MODE!"
        } else {
            ""
        };
        out.push(Action::Log(
            Level::Info,
            format!(
                "[master] {} started on {} ({}ms){}",
                self.cfg.framework_name,
                self.app_address,
                now.saturating_sub(self.start_time),
                sticky
            ),
        ));
        if let Some(debug_port) = self.cfg.debug_port {
            let url = get_address(
                None,
                Some(debug_port.into()),
                "http",
                self.cfg.host_env.as_deref(),
            );
            out.push(Action::Log(
                Level::Info,
                format!("[master] {} started on {}", self.cfg.framework_name, url),
            ));
        }
        let mut data = serde_json::Map::new();
        if let Some(p) = self.real_port {
            data.insert("port".into(), p.into());
        }
        if let Some(p) = self.cfg.debug_port {
            data.insert("debugPort".into(), p.into());
        }
        data.insert("address".into(), self.app_address.clone().into());
        data.insert("protocol".into(), self.protocol.into());
        let data = Value::Object(data);
        let bytes = serde_json::to_vec(&data).unwrap_or_default();
        Self::send(&mut out, Target::Parent, "egg-ready", Some(&bytes));
        let options = self.cfg.options_json.as_bytes();
        Self::send(&mut out, Target::AllApps, "egg-ready", Some(options));
        Self::send(&mut out, Target::Agent, "egg-ready", Some(options));
        out.push(Action::Ready(data));
        out
    }

    /// The worker's IPC channel closed (egg-cluster's `disconnect` log, then cfork's refork
    /// decision, which cfork makes at the disconnect when the process is still alive).
    pub fn on_app_disconnected(&mut self, pid: u32, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(idx) = self.apps.iter().position(|a| a.pid == pid) else {
            return out;
        };
        let app = &mut self.apps[idx];
        app.disconnected = true;
        if app.state != AppState::Dead {
            app.state = AppState::Disconnected;
        }
        let app = app.clone();
        out.push(Action::Log(
            Level::Info,
            format!(
                "[master] app_worker#{}:{} disconnect, suicide: {}, state: {}, current workers: {}",
                app.id,
                app.pid,
                app.exited_after_disconnect,
                app.state.as_str(),
                self.current_worker_ids()
            ),
        ));
        self.disconnect_count += 1;
        let loud = !app.disable_refork;
        out.push(Action::Cfork(
            loud,
            format!(
                "worker:{} disconnect (exitedAfterDisconnect: {}, state: {}, isDead: {}, worker.disableRefork: {})",
                app.pid,
                app.exited_after_disconnect,
                app.state.as_str(),
                app.dead,
                app.disable_refork
            ),
        ));
        if app.dead {
            out.push(Action::Cfork(
                loud,
                format!(
                    "don't fork, because worker:{} exit event emit before disconnect",
                    app.pid
                ),
            ));
            return out;
        }
        if app.disable_refork {
            out.push(Action::Cfork(
                loud,
                format!("don't fork, because worker:{} will be kill soon", app.pid),
            ));
            return out;
        }
        self.apps[idx].refork_handled = true;
        self.refork_decision(&app, now, &mut out);
        out
    }

    fn refork_decision(&mut self, app: &App, now: u64, out: &mut Vec<Action>) {
        let uptime = app.listening_since.map_or(0, |t| now.saturating_sub(t));
        match self.refork.decide(now, uptime) {
            crate::refork::Decision::Now => out.push(Action::ReforkApp),
            crate::refork::Decision::Never => out.push(Action::Cfork(
                true,
                "don't fork new work (refork: false)".to_string(),
            )),
            crate::refork::Decision::After(ms) => {
                out.push(Action::Cfork(
                    true,
                    format!(
                        "worker died too fast (total {} disconnect, {} unexpected exit)",
                        self.disconnect_count, self.unexpected_count
                    ),
                ));
                out.push(Action::Log(
                    Level::Warn,
                    format!(
                        "[master] app workers died {} times within {}ms, refork the next one in {ms}ms",
                        self.cfg.refork_limit, self.cfg.refork_duration_ms
                    ),
                ));
                out.push(Action::ReforkAppAfter(ms));
            }
        }
    }

    pub fn on_app_exit(
        &mut self,
        pid: u32,
        code: Option<i32>,
        signal: Option<&str>,
        now: u64,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(idx) = self.apps.iter().position(|a| a.pid == pid) else {
            return out;
        };
        self.apps[idx].state = AppState::Dead;
        self.apps[idx].dead = true;
        let app = self.apps[idx].clone();
        let loud = !app.disable_refork;
        // cfork's exit handler runs before egg-cluster's (it registered first).
        out.push(Action::Cfork(
            loud,
            format!(
                "worker:{} exit (code: {}, exitedAfterDisconnect: {}, state: dead, isDead: true, isExpected: {}, worker.disableRefork: {})",
                app.pid,
                js_opt(code),
                app.exited_after_disconnect,
                app.refork_handled,
                app.disable_refork
            ),
        ));
        if !app.refork_handled && !app.disable_refork && !self.closed {
            self.unexpected_count += 1;
            self.refork_decision(&app, now, &mut out);
            out.push(Action::Cfork(
                true,
                format!(
                    "(total {} disconnect, {} unexpected exit) WorkerDiedUnexpectedError: worker:{} died unexpected (code: {}, signal: {}, exitedAfterDisconnect: {}, state: dead)",
                    self.disconnect_count,
                    self.unexpected_count,
                    app.pid,
                    js_opt(code),
                    signal.unwrap_or("null"),
                    app.exited_after_disconnect
                ),
            ));
        }
        if self.closed {
            self.apps.remove(idx);
            return out;
        }
        let current: Vec<u32> = self.apps.iter().map(|a| a.pid).collect();
        self.apps.remove(idx);
        out.push(Action::LogError(
            "AppWorkerDiedError",
            format!(
                "[master] app_worker#{}:{} died (code: {}, signal: {}, suicide: {}, state: {}), current workers: {}",
                app.id,
                app.pid,
                js_opt(code),
                signal.unwrap_or("null"),
                app.exited_after_disconnect,
                app.state.as_str(),
                serde_json::to_string(&current).unwrap_or_default(),
            ),
        ));
        let pids = self.listening_pids_json();
        Self::send(&mut out, Target::Agent, "egg-pids", Some(&pids));
        if self.all_started {
            Self::send(&mut out, Target::Parent, "app-worker-died", None);
        } else {
            out.push(Action::Log(
                Level::Error,
                format!(
                    "[master] app_worker#{}:{} start fail, exiting with code:1",
                    app.id, app.pid
                ),
            ));
            out.push(Action::Exit(1));
        }
        out
    }

    /// egg-cluster's health check (production, every 10 s after ready): three checks in a row
    /// without a started agent or without a live worker exit the master. Live means listening
    /// and connected (egg-cluster counts registered workers, dead ones included).
    pub fn on_health_check(&mut self) -> Vec<Action> {
        let agent = usize::from(self.agent.as_ref().is_some_and(|a| a.started));
        let workers = self
            .apps
            .iter()
            .filter(|a| a.state == AppState::Listening && !a.disconnected && !a.dead)
            .count();
        if self.closed || (agent > 0 && workers > 0) {
            self.health_failures = 0;
            return Vec::new();
        }
        self.health_failures += 1;
        if self.health_failures < 3 {
            return Vec::new();
        }
        vec![
            Action::LogError(
                "ClusterWorkerExceptionError",
                format!(
                    "[master] {agent} agent and {workers} worker(s) alive, exit to avoid unknown state"
                ),
            ),
            Action::Exit(1),
        ]
    }

    pub fn on_agent_exit(&mut self, code: Option<i32>, signal: Option<&str>) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(agent) = self.agent.take() else {
            return out;
        };
        if self.closed {
            return out;
        }
        Self::send(&mut out, Target::AllApps, "egg-pids", Some(b"[]"));
        out.push(Action::LogError(
            "AgentWorkerDiedError",
            format!(
                "[master] agent_worker#{}:{} died (code: {}, signal: {})",
                agent.id,
                agent.pid,
                js_opt(code),
                signal.unwrap_or("null")
            ),
        ));
        if self.started {
            self.log(
                &mut out,
                "[master] try to start a new agent_worker after 1s ...".into(),
            );
            out.push(Action::ReforkAgentLater);
            Self::send(&mut out, Target::Parent, "agent-worker-died", None);
        } else {
            out.push(Action::Log(
                Level::Error,
                format!(
                    "[master] agent_worker#{}:{} start fail, exiting with code:1",
                    agent.id, agent.pid
                ),
            ));
            out.push(Action::Exit(1));
        }
        out
    }

    /// SIGINT/SIGQUIT/SIGTERM: `None` when already closing (a second signal changes nothing).
    pub fn on_signal(&mut self, signal: &str) -> Option<Vec<Action>> {
        if self.closed {
            return None;
        }
        self.closed = true;
        for app in &mut self.apps {
            app.disable_refork = true;
        }
        Some(vec![Action::Log(
            Level::Info,
            format!("[master] master is killed by signal {signal}, closing"),
        )])
    }

    pub fn verbose(&self) -> Level {
        self.verbose
    }
}

/// egg-cluster's `getAddress`.
pub fn get_address(
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

fn js_opt(v: Option<i32>) -> String {
    v.map_or("null".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(workers: usize) -> Config {
        Config {
            workers,
            framework_name: "egg".into(),
            is_production: true,
            sticky: false,
            sticky_worker_port: None,
            port: Some(7001),
            debug_port: None,
            https: false,
            host_env: None,
            options_json: "{\"workers\":2}".into(),
            refork_limit: 60,
            refork_duration_ms: 60_000,
        }
    }

    fn addr(port: i64) -> Value {
        serde_json::json!({"addressType": 4, "address": null, "port": port})
    }

    fn sends(actions: &[Action]) -> Vec<(Target, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(t, m) => Some((t.clone(), String::from_utf8(m.clone()).unwrap())),
                _ => None,
            })
            .collect()
    }

    fn started(workers: usize) -> (Lifecycle, Vec<Action>) {
        let mut l = Lifecycle::new(cfg(workers), Level::Info, 0);
        assert_eq!(l.on_ports_ready(), vec![Action::SpawnAgent]);
        l.on_agent_spawned(10, 4000, 1);
        let a = l.on_agent_start(5);
        assert!(a.contains(&Action::SpawnApps(workers)));
        for i in 0..workers as u32 {
            let id = l.next_app_id();
            l.on_app_spawned(id, 20 + i);
        }
        let mut last = Vec::new();
        for i in 0..workers as u32 {
            l.on_app_online(20 + i);
            last = l.on_app_listening(20 + i, &addr(7001), 100, false);
        }
        (l, last)
    }

    #[test]
    fn ready_after_every_worker_listens_on_the_real_port() {
        let (l, last) = started(2);
        assert!(l.is_started());
        let ready = last.iter().find_map(|a| match a {
            Action::Ready(v) => Some(v.clone()),
            _ => None,
        });
        assert_eq!(
            ready.unwrap(),
            serde_json::json!({"port": 7001, "address": "http://127.0.0.1:7001", "protocol": "http"})
        );
        let s = sends(&last);
        assert!(s.contains(&(
            Target::Parent,
            r#"{"action":"egg-ready","to":"parent","data":{"port":7001,"address":"http://127.0.0.1:7001","protocol":"http"},"from":"master"}"#.into()
        )));
        assert!(s.contains(&(
            Target::Agent,
            r#"{"action":"egg-pids","to":"agent","data":[20,21],"from":"master"}"#.into()
        )));
        assert!(s.contains(&(
            Target::App(21),
            r#"{"action":"egg-pids","to":"app","data":[10],"from":"master"}"#.into()
        )));
    }

    #[test]
    fn other_ports_do_not_count() {
        let mut l = Lifecycle::new(cfg(1), Level::Info, 0);
        l.on_agent_spawned(10, 4000, 0);
        l.on_agent_start(1);
        l.on_app_spawned(1, 20);
        let a = l.on_app_listening(20, &addr(9999), 2, false);
        assert!(!l.is_started());
        assert!(sends(&a).is_empty());
        l.on_app_listening(20, &addr(7001), 3, false);
        assert!(l.is_started());
    }

    #[test]
    fn a_worker_counts_once_however_it_reports_listening() {
        let mut l = Lifecycle::new(cfg(2), Level::Info, 0);
        l.on_agent_spawned(10, 4000, 0);
        l.on_agent_start(1);
        l.on_app_spawned(1, 20);
        l.on_app_spawned(2, 21);
        l.on_app_listening(20, &addr(7001), 2, false);
        let a = l.on_app_listening(20, &addr(7001), 3, true);
        assert!(a
            .iter()
            .any(|x| matches!(x, Action::Log(_, m) if m.contains("reuse-port listening on"))));
        assert!(!l.is_started(), "the same worker must not count twice");
        l.on_app_listening(21, &addr(7001), 4, true);
        assert!(l.is_started());
    }

    #[test]
    fn sticky_reports_ready_only_after_its_server_listens() {
        let mut c = cfg(1);
        c.sticky = true;
        c.sticky_worker_port = Some(4500);
        let mut l = Lifecycle::new(c, Level::Info, 0);
        l.on_agent_spawned(10, 4000, 0);
        l.on_agent_start(1);
        l.on_app_spawned(1, 20);
        assert!(l
            .on_app_listening(20, &addr(7001), 2, false)
            .iter()
            .all(|a| *a != Action::ListenSticky));
        let a = l.on_app_listening(20, &addr(4500), 3, false);
        assert_eq!(a.last(), Some(&Action::ListenSticky));
        assert!(!a
            .iter()
            .any(|x| matches!(x, Action::Ready(_) | Action::Send(Target::Parent, _))));
        let a = l.on_sticky_listening(4);
        assert!(a.iter().any(|x| matches!(x, Action::Log(Level::Info, m) if m.starts_with("[master] egg started on http://127.0.0.1:7001 (") && m.ends_with(" with STICKY MODE!"))));
        assert!(matches!(a.last(), Some(Action::Ready(_))));
    }

    #[test]
    fn health_check_exits_after_three_bad_checks_in_a_row() {
        let (mut l, _) = started(2);
        assert!(l.on_health_check().is_empty());
        // No live worker (both disconnected): two strikes, a good check resets, three strikes exit.
        l.on_app_disconnected(20, 1);
        l.on_app_disconnected(21, 2);
        assert!(l.on_health_check().is_empty());
        assert!(l.on_health_check().is_empty());
        let a = l.on_health_check();
        assert_eq!(a.last(), Some(&Action::Exit(1)));
        assert!(
            matches!(&a[0], Action::LogError("ClusterWorkerExceptionError", m) if m == "[master] 1 agent and 0 worker(s) alive, exit to avoid unknown state")
        );

        // No started agent.
        let (mut l, _) = started(1);
        l.on_agent_exit(None, Some("SIGKILL"));
        l.on_health_check();
        l.on_health_check();
        assert!(
            matches!(&l.on_health_check()[0], Action::LogError(_, m) if m.starts_with("[master] 0 agent and 1 worker(s)"))
        );
    }

    #[test]
    fn realport_changes_the_expected_port_and_host_env_the_address() {
        let mut c = cfg(1);
        c.port = None;
        c.host_env = Some("example.test".into());
        let mut l = Lifecycle::new(c, Level::Info, 0);
        l.on_agent_spawned(10, 4000, 0);
        l.on_agent_start(1);
        l.on_app_spawned(1, 20);
        l.on_realport(Some(8080), Some("https"));
        let a = l.on_app_listening(20, &addr(8080), 2, false);
        assert!(a.iter().any(|x| matches!(x, Action::Log(Level::Info, m) if m.starts_with("[master] egg started on https://example.test:8080 ("))));
    }

    #[test]
    fn death_before_ready_exits_1_after_ready_reforks_in_production() {
        let mut l = Lifecycle::new(cfg(2), Level::Info, 0);
        l.on_agent_spawned(10, 4000, 0);
        l.on_agent_start(1);
        l.on_app_spawned(1, 20);
        let a = l.on_app_exit(20, Some(1), None, 10);
        assert_eq!(a.last(), Some(&Action::Exit(1)));

        let (mut l, _) = started(2);
        let a = l.on_app_exit(20, None, Some("SIGKILL"), 200);
        assert!(a.contains(&Action::ReforkApp));
        assert!(sends(&a)
            .iter()
            .any(|(t, m)| *t == Target::Parent && m.contains("app-worker-died")));
    }

    #[test]
    fn agent_death_before_ready_exits_after_ready_reforks() {
        let mut l = Lifecycle::new(cfg(1), Level::Info, 0);
        l.on_agent_spawned(10, 4000, 0);
        let a = l.on_agent_exit(Some(1), None);
        assert!(a.iter().any(|x| matches!(x, Action::Log(Level::Error, m) if m == "[master] agent_worker#1:10 start fail, exiting with code:1")));
        assert_eq!(a.last(), Some(&Action::Exit(1)));

        let (mut l, _) = started(1);
        let a = l.on_agent_exit(None, Some("SIGKILL"));
        assert!(a.contains(&Action::ReforkAgentLater));
    }

    #[test]
    fn nothing_reacts_to_deaths_while_closing_and_signals_are_once() {
        let (mut l, _) = started(1);
        assert!(l.on_signal("SIGTERM").is_some());
        assert!(l.on_signal("SIGINT").is_none());
        assert!(l
            .on_app_exit(20, Some(0), None, 300)
            .iter()
            .all(|a| matches!(a, Action::Cfork(false, _))));
        assert!(l.on_agent_exit(Some(0), None).is_empty());
    }

    #[test]
    fn address_rules() {
        assert_eq!(
            get_address(None, Some(1), "http", Some("0.0.0.0")),
            "http://127.0.0.1:1"
        );
        assert_eq!(
            get_address(Some("::1"), Some(1), "http", Some("h")),
            "http://::1:1"
        );
        assert_eq!(
            get_address(None, Some(1), "https", Some("h")),
            "https://h:1"
        );
    }
}
