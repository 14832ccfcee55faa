//! The start sequence: the agent first; the app workers start loading with it and construct
//! their Application at `agent-start`; each worker counts once it listens on the real port;
//! ready when all have.

use serde_json::Value;

use super::children::{Child, Phase};
use super::{
    get_address, get_address_in, Action, Batch, Core, Dialect, ListenVia, MasterPhase, SpawnError,
    Spawned, Target, Timer,
};
use crate::log::Level;
use crate::messenger::Role;

impl Core {
    /// egg-cluster's start lines; then the agent, and the app workers early (they load the
    /// framework while the agent boots, and wait for the go-ahead).
    pub(super) fn on_start(&mut self, out: &mut Vec<Action>) {
        let cfg = &self.cfg;
        let fw = &cfg.framework_name;
        let verbose = cfg.verbose;
        let eggs = match cfg.dialect {
            Dialect::Egg3 => "",
            Dialect::Egg4 => " 🥚🥚🥚🥚",
        };
        out.push(Action::Log(
            verbose,
            format!("[master] =================== {fw} start{eggs} ====================="),
        ));
        out.push(Action::Log(
            Level::Info,
            format!("[master] node version {}", cfg.node_version),
        ));
        // egg-cluster's line names the framework; which egg runs under it, where it was found
        // and which protocol its workers speak follow (in the same line when the framework is
        // egg itself, which keeps the line's start).
        if fw != "egg" || cfg.egg.is_none() {
            out.push(Action::Log(
                Level::Info,
                format!("[master] {fw} version {}", cfg.framework_version),
            ));
        }
        out.push(Action::Log(
            Level::Info,
            egg_line(cfg.egg.as_ref(), cfg.dialect),
        ));
        if cfg.is_production {
            out.push(Action::Log(
                Level::Info,
                format!(
                    "[master] start with options:\n{}",
                    serde_json::to_string_pretty(&cfg.options_shown).unwrap_or_default()
                ),
            ));
        } else {
            out.push(Action::Log(
                verbose,
                format!("[master] start with options: {}", cfg.options_shown),
            ));
        }
        out.push(Action::Log(
            verbose,
            format!(
                "[master] start with env: isProduction: {}, EGG_SERVER_ENV: {}, NODE_ENV: {}",
                cfg.is_production,
                cfg.env.as_deref().unwrap_or("null"),
                cfg.node_env.as_deref().unwrap_or("undefined")
            ),
        ));
        if let Some(addr) = cfg.metrics_addr {
            out.push(Action::Log(
                Level::Info,
                format!("[master] serving /metrics, /healthz and /readyz on http://{addr}"),
            ));
        }
        if self.workers != cfg.workers {
            // An upgrade's new master: the old tree was scaled since its start.
            out.push(Action::Log(
                Level::Info,
                format!(
                    "[master] upgrade: starting {} app workers as the previous master ran them (workers: {} at its start)",
                    self.workers, cfg.workers
                ),
            ));
        }
        let id = self.children.next_id(Role::Agent);
        out.push(Action::SpawnAgent { id });
        let apps = self.new_app_ids(self.workers);
        self.early_unanswered = true;
        out.push(Action::SpawnApps {
            batch: Batch::Early,
            apps,
        });
    }

    /// Ids and free slots for `n` new app workers.
    pub(super) fn new_app_ids(&mut self, n: usize) -> Vec<(u32, usize)> {
        let mut slots = Vec::with_capacity(n);
        let mut apps = Vec::with_capacity(n);
        for _ in 0..n {
            let slot = self.children.free_slot(&slots);
            slots.push(slot);
            apps.push((self.children.next_id(Role::App), slot));
        }
        apps
    }

    pub(super) fn on_agent_spawned(
        &mut self,
        id: u32,
        pid: Result<u32, SpawnError>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let pid = match pid {
            Ok(pid) => pid,
            Err(e) if self.started() => {
                // Backed off as an app worker's spawn is (egg-cluster retries every second).
                let delay = self.spawn_failed(&format!("agent_worker#{id}"), &e, now, out);
                out.push(Action::After(delay, Timer::ReforkAgent));
                return;
            }
            Err(e) => {
                out.push(Action::Log(
                    Level::Error,
                    format!("[master] failed to spawn agent_worker#{id}: {e}"),
                ));
                out.push(Action::Exit(1));
                return;
            }
        };
        self.spawn_worked(now, out);
        self.children
            .add(Child::new(Role::Agent, id, pid, None, now));
        let how = if self.cfg.threads {
            "worker_threads".to_string()
        } else {
            format!("clusterPort:{}", self.cfg.cluster_port)
        };
        self.verbose(
            out,
            format!("[master] agent_worker#{id}:{pid} start with {how}"),
        );
    }

    pub(super) fn on_apps_spawned(
        &mut self,
        batch: Batch,
        apps: Vec<Spawned>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let mut new_pids = Vec::new();
        if batch == Batch::Early {
            self.early_unanswered = false;
        }
        for app in apps {
            match batch {
                Batch::Replace => self.on_replacement_spawned(&app, now, out),
                Batch::Scale => self.on_scale_spawned(&app, now, out),
                _ => {}
            }
            match app.pid {
                Ok(pid) => {
                    self.spawn_worked(now, out);
                    let mut child = Child::new(Role::App, app.id, pid, Some(app.slot), now);
                    // A replacement is not reforked until it serves: if it fails, the reload
                    // stops and the old worker goes on; a worker scaling adds, the scaling.
                    child.disable_refork =
                        !self.all_started || batch == Batch::Replace || batch == Batch::Scale;
                    if batch == Batch::Early {
                        child.phase = Phase::Waiting;
                    }
                    self.children.add(child);
                    new_pids.push(pid);
                    self.start_timer(pid, out);
                }
                Err(_) if batch == Batch::Replace || batch == Batch::Scale => {}
                Err(e @ SpawnError::Resource(_)) if self.all_started => {
                    self.retry_spawn(app.id, &e, now, out);
                }
                Err(e) => {
                    out.push(Action::Log(
                        Level::Error,
                        format!("[master] failed to spawn app_worker#{}: {e}", app.id),
                    ));
                    if !self.all_started {
                        out.push(Action::Exit(1));
                        return;
                    }
                    self.refork_decision(0, now, out);
                }
            }
        }
        if batch == Batch::Early && self.apps_released && !self.closing() {
            // `agent-start` came first (a thread's spawn is answered by the JS thread): the
            // go-ahead is due now.
            self.release_early(out);
            return;
        }
        if self.cfg.threads {
            if batch != Batch::Early {
                self.log_thread_starts(&new_pids, out);
            }
            return;
        }
        match batch {
            // Logged when they are released, as egg-cluster forks them only then.
            Batch::Early => {}
            Batch::Start | Batch::Replace | Batch::Scale => self.log_app_starts(&new_pids, out),
            Batch::Refork => {
                let count = self.cfork_refork_count();
                for pid in &new_pids {
                    out.push(Action::Cfork(
                        true,
                        format!("new worker:{pid} fork (state: none{count})"),
                    ));
                }
                self.log_app_starts(&new_pids, out);
            }
        }
    }

    /// egg-cluster's `fork` event lines, once every worker of a batch is forked.
    fn log_app_starts(&self, pids: &[u32], out: &mut Vec<Action>) {
        let ids: Vec<String> = self.children.apps().map(|a| a.id.to_string()).collect();
        let ids = serde_json::to_string(&ids).unwrap_or_default();
        for app in self.children.apps().filter(|a| pids.contains(&a.pid)) {
            self.verbose(
                out,
                format!(
                    "[master] {} start, state: {}, current workers: {ids}",
                    app.name(),
                    app.phase.cluster_state(),
                ),
            );
        }
    }

    /// `agent-start` reached the master.
    pub(super) fn on_agent_start(&mut self, now: u64, out: &mut Vec<Action>) {
        let Some(agent) = self.children.agent().map(|a| a.pid) else {
            return;
        };
        let agent = {
            let a = self
                .children
                .get_mut(agent)
                .expect("the agent was just found");
            a.phase = Phase::Serving;
            a.clone()
        };
        self.note_health();
        if self.all_started {
            self.send_agent(out, "egg-ready", Some(self.cfg.options_json.as_bytes()));
        }
        let agent_pids = format!("[{}]", agent.pid);
        self.send_apps(out, "egg-pids", Some(agent_pids.as_bytes()));
        if self.started() {
            let pids = self.children.listening_pids_json();
            self.send_agent(out, "egg-pids", Some(&pids));
        }
        self.send_apps(out, "agent-start", None);
        out.push(Action::Log(
            Level::Info,
            format!(
                "[master] {} started ({}ms)",
                agent.name(),
                now.saturating_sub(agent.spawned_at)
            ),
        ));
        if self.apps_released || self.closing() {
            return;
        }
        self.apps_released = true;
        self.apps_fork_time = now;
        if self.early_unanswered {
            return;
        }
        self.release_early(out);
    }

    /// egg-cluster forks the app workers at `agent-start`: the early ones get the go-ahead, the
    /// ones that could not be spawned early are spawned now.
    fn release_early(&mut self, out: &mut Vec<Action>) {
        if !self.cfg.threads {
            let args = serde_json::to_string(&[&self.cfg.options_json]).unwrap_or_default();
            self.verbose(
                out,
                format!("[master] start appWorker with args {args} (process)"),
            );
        }
        let waiting: Vec<u32> = self
            .children
            .apps()
            .filter(|a| a.phase == Phase::Waiting)
            .map(|a| a.pid)
            .collect();
        for pid in &waiting {
            if let Some(a) = self.children.get_mut(*pid) {
                a.phase = Phase::Forked;
            }
        }
        let missing = self.workers.saturating_sub(waiting.len());
        if !waiting.is_empty() {
            out.push(Action::Release(waiting.clone()));
        }
        if missing > 0 {
            // An early worker that could not be spawned: its slot is still free.
            let apps = self.new_app_ids(missing);
            out.push(Action::SpawnApps {
                batch: Batch::Start,
                apps,
            });
        }
        if self.cfg.threads {
            self.log_thread_starts(&waiting, out);
        } else {
            self.log_app_starts(&waiting, out);
        }
    }

    /// `realport` from a worker: the port and protocol its config resolved to, and whether
    /// its config asks for `reusePort`.
    pub(super) fn on_realport(
        &mut self,
        from: Role,
        pid: u32,
        data: &Value,
        out: &mut Vec<Action>,
    ) {
        let port = data
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok());
        if let Some(p) = port.filter(|p| *p != 0) {
            self.real_port = Some(p);
        }
        match data.get("protocol").and_then(Value::as_str) {
            Some("https") => self.protocol = "https",
            Some("http") => self.protocol = "http",
            _ => {}
        }
        if from == Role::App && data.get("reusePort").and_then(Value::as_bool) == Some(true) {
            out.push(Action::ReusePort { pid });
        }
    }

    pub(super) fn on_online(&mut self, pid: u32) {
        if let Some(app) = self.children.get_mut(pid) {
            if app.phase == Phase::Forked {
                app.phase = Phase::Online;
            }
        }
    }

    /// A worker listens. Only the listen on the real port counts (an app may listen on other
    /// ports too), and a worker counts once however it reports it (on Node 20 a `reusePort`
    /// worker reports both ways; egg-cluster counts it twice).
    pub(super) fn on_listening(
        &mut self,
        pid: u32,
        address: &Value,
        via: ListenVia,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let expected = if self.cfg.sticky {
            self.cfg.sticky_worker_port
        } else {
            self.thread_port(pid).or(self.real_port)
        };
        // @eggjs/cluster counts a worker by its `app-start` message only; egg-cluster by the
        // cluster protocol's `listening` (egg 3's workers send no `app-start`).
        let counted_via = match self.cfg.dialect {
            Dialect::Egg3 => via != ListenVia::AppStart,
            Dialect::Egg4 => via != ListenVia::Cluster,
        };
        if !counted_via {
            return;
        }
        let Some(app) = self.children.get_mut(pid) else {
            return;
        };
        if app.phase < Phase::Listening {
            app.phase = Phase::Listening;
        }
        let how = match via {
            ListenVia::Cluster | ListenVia::AppStart => "listening",
            ListenVia::ReusePortMessage => "reuse-port listening",
        };
        let app = app.clone();
        self.note_health();
        out.push(Action::Log(
            Level::Info,
            format!("[master] {} {how} on {address}", app.name()),
        ));
        let port = address.get("port").and_then(Value::as_i64);
        let is_unix = address.get("addressType").and_then(Value::as_i64) == Some(-1);
        let on_real_port = is_unix || port.map(i128::from) == expected.map(i128::from);
        if app.phase != Phase::Listening || !on_real_port || self.closing() {
            return;
        }
        if let Some(a) = self.children.get_mut(pid) {
            a.phase = Phase::Serving;
            a.serving_since = Some(now);
        }
        let pids = self.children.listening_pids_json();
        self.send_agent(out, "egg-pids", Some(&pids));
        // egg-cluster sends this only at agent-start, before any app worker exists; every
        // worker needs the agent's pid (e.g. for `messenger.sendRandom`).
        if let Some(agent) = self.children.agent() {
            let agent_pids = format!("[{}]", agent.pid);
            let receiver = (self.cfg.dialect == Dialect::Egg4).then_some(pid);
            out.push(Action::Send(
                Target::Child(pid),
                crate::messenger::master_message_for(
                    "egg-pids",
                    Role::App,
                    Some(agent_pids.as_bytes()),
                    receiver,
                ),
            ));
        }
        self.start_success += 1;
        let remain = if self.all_started {
            0
        } else {
            self.workers.saturating_sub(self.start_success)
        };
        self.verbose(
            out,
            format!(
                "[master] {} started at {}, remain {remain} ({}ms)",
                app.name(),
                port.map_or("undefined".to_string(), |p| p.to_string()),
                // The worker's own start: since egg-cluster forked its batch (an early
                // worker waited for the go-ahead), or since its own spawn (a replacement).
                now.saturating_sub(app.spawned_at.max(self.apps_fork_time))
            ),
        );
        if self.all_started {
            if let Some(a) = self.children.get_mut(pid) {
                a.disable_refork = false;
            }
            // A replacement worker joins an app that is already up.
            Self::send(
                out,
                Target::Child(pid),
                Role::App,
                "egg-ready",
                Some(self.cfg.options_json.as_bytes()),
            );
            self.on_serving(pid, now, out);
            self.scaling_on_serving(pid, now, out);
            return;
        }
        if self.start_success < self.workers {
            return;
        }
        self.all_started = true;
        for app in self.children.apps_mut() {
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
            get_address_in(
                self.cfg.dialect,
                address.get("address").and_then(Value::as_str),
                shown_port,
                self.protocol,
                self.cfg.host_env.as_deref(),
            )
        };
        if self.cfg.sticky {
            // egg-cluster reports ready from the sticky server's listen callback: the public
            // port must accept before anyone is told it is up.
            self.phase = MasterPhase::BindingSticky;
            out.push(Action::ListenSticky {
                port: self.real_port.unwrap_or(0),
            });
        } else {
            self.on_ready(now, out);
        }
    }

    pub(super) fn on_sticky_listening(
        &mut self,
        result: Result<(), String>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        if self.phase != MasterPhase::BindingSticky {
            return;
        }
        match result {
            Ok(()) => self.on_ready(now, out),
            Err(e) => {
                out.push(Action::Log(
                    Level::Error,
                    format!("[master] sticky server failed to listen on the app port: {e}"),
                ));
                out.push(Action::Exit(1));
            }
        }
    }

    fn on_ready(&mut self, now: u64, out: &mut Vec<Action>) {
        self.phase = MasterPhase::Up;
        let fw = &self.cfg.framework_name;
        let sticky = if self.cfg.sticky {
            " with STICKY MODE!"
        } else {
            ""
        };
        out.push(Action::Log(
            Level::Info,
            format!(
                "[master] {fw} started on {} ({}ms){sticky}",
                self.app_address,
                now.saturating_sub(self.start_time),
            ),
        ));
        if let Some(debug_port) = self.cfg.debug_port {
            let url = get_address(
                None,
                Some(debug_port.into()),
                "http",
                self.cfg.host_env.as_deref(),
            );
            let what = match self.cfg.dialect {
                Dialect::Egg3 => "started on",
                Dialect::Egg4 => "started debug port on",
            };
            out.push(Action::Log(
                Level::Info,
                format!("[master] {fw} {what} {url}"),
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
        Self::send(out, Target::Parent, Role::Parent, "egg-ready", Some(&bytes));
        let options = self.cfg.options_json.as_bytes();
        self.send_apps(out, "egg-ready", Some(options));
        self.send_agent(out, "egg-ready", Some(options));
        out.push(Action::Ready(data));
        if self.cfg.is_production {
            out.push(Action::After(self.cfg.health_interval, Timer::HealthCheck));
        }
        if let (Some(_), Some(interval)) = (self.cfg.max_memory, self.cfg.memory_check_interval) {
            out.push(Action::After(interval, Timer::MemoryCheck));
        }
        if self.cfg.worker_timeout.is_some() {
            self.arm_hung_check(now, out);
        }
    }
}

/// `[master] egg version 4.1.2 from /app/node_modules/egg: egg 4 dialect (@eggjs/cluster's
/// protocol)`, with the egg a wrapper wraps and how the dialect was decided when not by a
/// dependency.
fn egg_line(egg: Option<&super::Egg>, dialect: Dialect) -> String {
    let protocol = match dialect {
        Dialect::Egg3 => "egg 3 dialect (egg-cluster's protocol)",
        Dialect::Egg4 => "egg 4 dialect (@eggjs/cluster's protocol)",
    };
    let Some(egg) = egg else {
        return format!("[master] egg not found from the framework or the app: {protocol}");
    };
    let wraps = egg.wraps.as_ref().map_or(String::new(), |(dir, version)| {
        format!(", a wrapper of egg {version} from {}", dir.display())
    });
    let by_version = if egg.cluster.is_none() {
        ", by its version: it depends on neither egg-cluster nor @eggjs/cluster"
    } else {
        ""
    };
    format!(
        "[master] egg version {} from {}{wraps}: {protocol}{by_version}",
        egg.version,
        egg.dir.display()
    )
}
