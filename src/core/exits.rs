//! When a child goes away: its channel closes, it exits. cfork's refork rules (with their
//! console lines), the agent's refork, the health check, and bad input from a child.

use std::time::Duration;

use super::children::Phase;
use super::refork::{Decision, SpawnError, SPAWN_RETRY_CAP_MS};
use super::{js_opt, Action, Batch, Core, Target, Timer};
use crate::log::Level;
use crate::messenger::Role;

/// What says the kernel's OOM killer sent a child its SIGKILL (the runtime reads its counters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OomKill {
    /// The memory cgroup whose kill counter moved, `None`: only the host's did.
    pub(crate) cgroup: Option<String>,
    /// The nearest memory limit at or above that cgroup, in bytes.
    pub(crate) limit: Option<u64>,
}

impl Core {
    /// The child's IPC channel closed: for an app worker, egg-cluster's `disconnect` line, then
    /// cfork's refork decision (which cfork makes at the disconnect when the process is still
    /// alive). A child that lives on without its channel cannot be reached: it is terminated,
    /// and its exit then follows the normal path.
    pub(super) fn on_channel_closed(
        &mut self,
        pid: u32,
        reason: Option<String>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(child) = self.children.get_mut(pid) else {
            return;
        };
        // A retiring worker is already being terminated; it stays marked as retiring.
        let retiring = child.phase == Phase::Retiring;
        if !retiring {
            child.phase = Phase::Disconnected;
        }
        let child = child.clone();
        if let Some(reason) = reason {
            out.push(Action::Log(
                Level::Warn,
                format!("[master] closed the channel of {}: {reason}", child.name()),
            ));
        }
        // A thread has no cluster disconnect of its own: its channel closes as it ends.
        if child.role == Role::App && !self.cfg.threads {
            self.on_app_disconnected(pid, now, out);
        }
        if !self.closing() && !retiring {
            let limit = match child.role {
                Role::Agent => self.cfg.agent_close.limit,
                _ => self.cfg.app_close.limit,
            };
            out.push(Action::Terminate { pid, limit });
        }
    }

    fn on_app_disconnected(&mut self, pid: u32, now: u64, out: &mut Vec<Action>) {
        let Some(app) = self.children.get(pid).cloned() else {
            return;
        };
        let ids: Vec<String> = self.children.apps().map(|a| a.id.to_string()).collect();
        out.push(Action::Log(
            Level::Info,
            format!(
                "[master] {} disconnect, suicide: {}, state: {}, current workers: {}",
                app.name(),
                app.exited_after_disconnect,
                app.phase.cluster_state(),
                serde_json::to_string(&ids).unwrap_or_default()
            ),
        ));
        self.disconnect_count += 1;
        let loud = !app.disable_refork;
        // An exited worker is removed at once, so it is never dead here: cfork's `isDead`
        // branch ("exit event emit before disconnect") cannot happen.
        out.push(Action::Cfork(
            loud,
            format!(
                "worker:{pid} disconnect (exitedAfterDisconnect: {}, state: {}, isDead: false, worker.disableRefork: {}{})",
                app.exited_after_disconnect,
                app.phase.cluster_state(),
                app.disable_refork,
                self.cfork_slave(", isSlave: false, slaveIndex: ")
            ),
        ));
        if app.disable_refork {
            out.push(Action::Cfork(
                loud,
                format!("don't fork, because worker:{pid} will be kill soon"),
            ));
            return;
        }
        if let Some(a) = self.children.get_mut(pid) {
            a.refork_handled = true;
        }
        let uptime = app.serving_since.map_or(0, |t| now.saturating_sub(t));
        self.refork_decision(uptime, now, out);
    }

    /// cfork's refork of a dead worker: now, never (local env), or — past cfork's limit, where
    /// cfork gives up for good — after a growing delay.
    pub(super) fn refork_decision(&mut self, uptime: u64, now: u64, out: &mut Vec<Action>) {
        match self.refork.decide(now, uptime) {
            Decision::Now => self.refork_app(out),
            Decision::Never => {
                let count = self.cfork_refork_count();
                out.push(Action::Cfork(
                    true,
                    format!("don't fork new work (refork: false{count})"),
                ));
                let why = "refork is off outside production (egg env local or unittest)";
                self.refork_held(why.to_string(), out);
            }
            Decision::After(ms) => {
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
                out.push(Action::After(Duration::from_millis(ms), Timer::ReforkApp));
                let why = format!(
                    "crash loop: {} deaths within {}ms (the refork limit), backing off {ms}ms",
                    self.cfg.refork_limit, self.cfg.refork_duration_ms
                );
                self.refork_held(why, out);
            }
        }
    }

    /// App worker `id` could not be spawned for want of a resource of the master's (file
    /// descriptors, memory, processes): nothing of the app died, so it is not counted against
    /// the refork limit (a flood of such failures would otherwise look like a crash loop and
    /// back off for seconds); its slot is tried again after a short, growing delay.
    pub(super) fn retry_spawn(&mut self, id: u32, e: &SpawnError, now: u64, out: &mut Vec<Action>) {
        let delay = self.spawn_failed(&format!("app_worker#{id}"), e, now, out);
        out.push(Action::After(delay, Timer::ReforkApp));
        // For /healthz and the status until every slot serves again.
        self.ops.refork_held = Some(format!(
            "cannot spawn app workers: {e} (the master is short of a resource), trying again in {}ms",
            delay.as_millis()
        ));
    }

    /// A spawn after the start failed and is to be tried again after the shared backoff (100 ms
    /// doubling to 5 s; the caller arms the timer): the first failure of a streak is said, with
    /// what comes next, and the streak's end by [`Self::spawn_worked`] — one line each, not one
    /// per attempt. A failure that is not for want of a resource (only the agent's is retried
    /// so) is said every time: it is no passing shortage of the host's.
    pub(super) fn spawn_failed(
        &mut self,
        name: &str,
        e: &SpawnError,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Duration {
        let delay = self.spawn_retry.failed(now);
        match e {
            SpawnError::Resource(why) if self.spawn_retry.streak_began() => out.push(Action::Log(
                Level::Error,
                format!(
                    "[master] cannot spawn {name}: {why}: the master is short of a resource, not a crash of the app; trying again in {delay}ms, then less often (up to every {}s), said again once spawning works",
                    SPAWN_RETRY_CAP_MS / 1000
                ),
            )),
            SpawnError::Resource(_) => {}
            SpawnError::Failed(why) => out.push(Action::Log(
                Level::Error,
                format!("[master] failed to spawn {name}: {why}; trying again in {delay}ms"),
            )),
        }
        Duration::from_millis(delay)
    }

    /// A spawn succeeded: a streak of failed ones ends, said.
    pub(super) fn spawn_worked(&mut self, now: u64, out: &mut Vec<Action>) {
        if let Some((attempts, ms)) = self.spawn_retry.succeeded(now) {
            out.push(Action::Log(
                Level::Info,
                format!(
                    "[master] spawning works again after {attempts} failed attempt{} in {ms}ms",
                    if attempts == 1 { "" } else { "s" }
                ),
            ));
        }
    }

    /// What @eggjs/cluster 3's cfork 2 adds to a cfork 1 line: the slave worker fields (we fork
    /// no slaves).
    fn cfork_slave(&self, fields: &'static str) -> &'static str {
        match self.cfg.dialect {
            super::Dialect::Egg3 => "",
            super::Dialect::Egg4 => fields,
        }
    }

    /// cfork 2's `, reforkCount: N` (the refork attempts it remembers), egg 4 only.
    pub(super) fn cfork_refork_count(&self) -> String {
        match self.cfg.dialect {
            super::Dialect::Egg3 => String::new(),
            super::Dialect::Egg4 => format!(", reforkCount: {}", self.refork.count()),
        }
    }

    /// Dead app workers are not replaced at once, or not at all: one line saying so and why,
    /// the first time (until every slot serves again), and the health verdict says it.
    fn refork_held(&mut self, why: String, out: &mut Vec<Action>) {
        if self.ops.refork_held.is_none() {
            let serving = self
                .children
                .apps()
                .filter(|c| c.phase == Phase::Serving)
                .count();
            out.push(Action::Log(
                Level::Error,
                format!(
                    "[master] dead app workers are not replaced now: {why}; {serving} of {} app workers serving",
                    self.workers
                ),
            ));
        }
        self.ops.refork_held = Some(why);
    }

    pub(super) fn refork_app(&mut self, out: &mut Vec<Action>) {
        if self.closing() {
            return;
        }
        let apps = self.new_app_ids(1);
        self.ops.reforks += 1;
        out.push(Action::SpawnApps {
            batch: Batch::Refork,
            apps,
        });
    }

    pub(super) fn refork_agent(&mut self, out: &mut Vec<Action>) {
        if self.closing() {
            return;
        }
        // (once, not at every retry of a streak of failed spawns)
        if !self.spawn_retry.failing() {
            out.push(Action::Log(
                Level::Info,
                "[master] new agent_worker starting...".into(),
            ));
        }
        let id = self.children.next_id(Role::Agent);
        self.ops.reforks += 1;
        out.push(Action::SpawnAgent { id });
    }

    /// The OOM killer took `pid`: said before its death is handled as any other (egg-cluster
    /// says only `signal: SIGKILL`, which a `kill -9` says too).
    pub(super) fn on_oom_kill(&self, pid: u32, oom: &OomKill, out: &mut Vec<Action>) {
        if self.children.get(pid).is_none() {
            return;
        }
        let why = match (&oom.cgroup, oom.limit) {
            (Some(cgroup), Some(limit)) => format!(
                "cgroup memory limit {}; its OOM kills counted in {cgroup}",
                if limit % (1 << 20) == 0 {
                    format!("{} MiB", limit >> 20)
                } else {
                    format!("{limit} bytes")
                }
            ),
            (Some(cgroup), None) => {
                format!("its OOM kills counted in memory cgroup {cgroup}, which has no limit")
            }
            (None, _) => "the host out of memory: /proc/vmstat's oom_kill moved".into(),
        };
        out.push(Action::LogError(
            "WorkerOutOfMemoryError",
            format!(
                "[master] {} killed by the kernel's OOM killer ({why})",
                self.describe(pid)
            ),
        ));
    }

    pub(super) fn on_exited(
        &mut self,
        pid: u32,
        code: Option<i32>,
        signal: Option<&'static str>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        match self.children.get(pid).map(|c| c.role) {
            Some(Role::Agent) => self.on_agent_exit(pid, code, signal, out),
            Some(_) => self.on_app_exit(pid, code, signal, now, out),
            None => {}
        }
    }

    fn on_app_exit(
        &mut self,
        pid: u32,
        code: Option<i32>,
        signal: Option<&'static str>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let current: Vec<u32> = self.children.apps().map(|a| a.pid).collect();
        let Some(app) = self.children.remove(pid) else {
            return;
        };
        if self.cfg.threads {
            self.on_thread_exit(app, &current, code, now, out);
            return;
        }
        let loud = !app.disable_refork;
        // cfork's exit handler runs before egg-cluster's (it registered first).
        out.push(Action::Cfork(
            loud,
            format!(
                "worker:{pid} exit (code: {}, exitedAfterDisconnect: {}, state: dead, isDead: true, isExpected: {}, worker.disableRefork: {}{})",
                js_opt(code),
                app.exited_after_disconnect,
                app.refork_handled,
                app.disable_refork,
                self.cfork_slave(", isSlave: false, slaveIndex: ")
            ),
        ));
        if self.closing() {
            return;
        }
        if app.phase == Phase::Retiring {
            self.on_retired_exit(&app, code, signal, out);
            self.reload_on_exit(&app, code, signal, now, out);
            self.scaling_on_exit(&app, code, signal, now, out);
            return;
        }
        // egg-cluster: a debugged master whose app worker is SIGKILLed (a debugger session
        // ending kills its target) closes instead of carrying on without it.
        let debugger_kill = self.cfg.is_debug && signal == Some("SIGKILL");
        // A worker a reload is replacing anyway is not reforked, nor one scaling added that
        // never served (the scaling fails).
        let replaced = self.reload_on_exit(&app, code, signal, now, out)
            | self.scaling_on_exit(&app, code, signal, now, out);
        if !app.refork_handled && !app.disable_refork && !replaced {
            self.unexpected_count += 1;
            let uptime = app.serving_since.map_or(0, |t| now.saturating_sub(t));
            // The master is about to close: a replacement would only be terminated again.
            if !debugger_kill {
                self.refork_decision(uptime, now, out);
            }
            out.push(Action::Cfork(
                true,
                format!(
                    "(total {} disconnect, {} unexpected exit) WorkerDiedUnexpectedError: worker:{pid} died unexpected (code: {}, signal: {}, exitedAfterDisconnect: {}, state: dead{})",
                    self.disconnect_count,
                    self.unexpected_count,
                    js_opt(code),
                    signal.unwrap_or("null"),
                    app.exited_after_disconnect,
                    // sic: cfork 2's spelling
                    self.cfork_slave(", isSalve: false, salveIndex: ")
                ),
            ));
        }
        let died = format!(
            "[master] {} died (code: {}, signal: {}, suicide: {}, state: dead), current workers: {}",
            app.name(),
            js_opt(code),
            signal.unwrap_or("null"),
            app.exited_after_disconnect,
            serde_json::to_string(&current).unwrap_or_default(),
        );
        if debugger_kill {
            out.push(Action::Log(Level::Error, died));
            out.push(Action::Log(
                Level::Error,
                "[master] worker kill by debugger, exiting...".into(),
            ));
        } else {
            out.push(Action::LogError("AppWorkerDiedError", died));
        }
        let pids = self.children.listening_pids_json();
        self.send_agent(out, "egg-pids", Some(&pids));
        if self.all_started {
            Self::send(out, Target::Parent, Role::Parent, "app-worker-died", None);
            if debugger_kill {
                self.begin_close(out);
            }
        } else {
            Self::start_fail(&app.name(), out);
        }
    }

    /// A child died before the app was up: egg-cluster exits the master with 1, which is how
    /// `egg-scripts start --daemon` learns that the start failed.
    pub(super) fn start_fail(name: &str, out: &mut Vec<Action>) {
        out.push(Action::Log(
            Level::Error,
            format!("[master] {name} start fail, exiting with code:1"),
        ));
        out.push(Action::Exit(1));
    }

    fn on_agent_exit(
        &mut self,
        pid: u32,
        code: Option<i32>,
        signal: Option<&'static str>,
        out: &mut Vec<Action>,
    ) {
        let Some(agent) = self.children.remove(pid) else {
            return;
        };
        if self.closing() {
            return;
        }
        self.send_apps(out, "egg-pids", Some(b"[]"));
        out.push(Action::LogError(
            "AgentWorkerDiedError",
            format!(
                "[master] {} died (code: {}, signal: {})",
                agent.name(),
                js_opt(code),
                signal.unwrap_or("null")
            ),
        ));
        if self.started() {
            self.verbose(
                out,
                "[master] try to start a new agent_worker after 1s ...".into(),
            );
            out.push(Action::After(Duration::from_secs(1), Timer::ReforkAgent));
            Self::send(out, Target::Parent, Role::Parent, "agent-worker-died", None);
        } else {
            Self::start_fail(&agent.name(), out);
        }
    }

    /// egg-cluster's health check (production, every 10 s after ready): three checks in a row
    /// without a started agent or without a live worker exit the master. Live means listening
    /// and connected (egg-cluster counts registered workers, dead ones included). "In a row"
    /// means one outage: a moment of health between two checks (`note_health`) starts the
    /// count again, so three short outages that each happen to span a check (an agent killed
    /// and reforked every 10 s) are not taken for one of 20 s.
    pub(super) fn on_health_check(&mut self, out: &mut Vec<Action>) {
        if self.closing() {
            return;
        }
        out.push(Action::After(self.cfg.health_interval, Timer::HealthCheck));
        let (agent, workers) = self.health_counts();
        if agent > 0 && workers > 0 {
            self.health_failures = 0;
            return;
        }
        self.health_failures += 1;
        if self.health_failures < 3 {
            return;
        }
        out.push(Action::LogError(
            "ClusterWorkerExceptionError",
            format!(
                "[master] {agent} agent and {workers} worker(s) alive, exit to avoid unknown state"
            ),
        ));
        out.push(Action::Exit(1));
    }

    /// A child just started serving: if the cluster is whole again, an outage the health check
    /// was counting is over.
    pub(super) fn note_health(&mut self) {
        let (agent, workers) = self.health_counts();
        if agent > 0 && workers > 0 {
            self.health_failures = 0;
        }
    }

    /// The started agent (0 or 1) and the live app workers, as the health check counts them.
    fn health_counts(&self) -> (usize, usize) {
        let agent = usize::from(
            self.children
                .agent()
                .is_some_and(|a| a.phase == Phase::Serving),
        );
        (
            agent,
            self.children.apps().filter(|a| a.listening()).count(),
        )
    }

    /// Every bad message is logged with the child's name up to the 16th; after that at the
    /// 32nd, 64th, ... so a flood of garbage cannot flood the log.
    pub(super) fn on_malformed(&mut self, pid: u32, reason: &str, out: &mut Vec<Action>) {
        let name = self.describe(pid);
        let count = match self.children.get_mut(pid) {
            Some(c) => {
                c.malformed += 1;
                c.malformed
            }
            None => 1,
        };
        if count <= 16 || count.is_power_of_two() {
            out.push(Action::Log(
                Level::Warn,
                format!(
                    "[master] dropped a malformed message from {name} ({count} so far): {reason}"
                ),
            ));
        }
    }
}
