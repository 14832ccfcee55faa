//! Live worker replacement: a rolling reload replaces the app workers slot by slot — start the
//! new worker, wait until it serves on the real port, then retire the old one (it stops
//! accepting, drains and exits) — so no request is refused. Up to `reload_concurrency`
//! replacements boot at once (the surge); a slot's drain never holds up the next boot, as the
//! surge counts only replacements that do not serve yet: every old worker serves until its own
//! replacement does, so at least N workers serve throughout. The same
//! mechanism serves dev reload (`reload-worker`), `SIGUSR2`, the JS API, the CLI, a worker over
//! the memory limit, and scaling down.
//!
//! Outside production (the local env, where a reload follows an edit) the policy is
//! [`Policy::Dev`]: every replacement boots at once and every old worker retires as soon as one
//! new worker serves, so the edit answers everywhere within one boot instead of old and new
//! code answering at random for several boots.
//!
//! egg-cluster's `reload-worker` (cluster-reload) kills every old worker but one at once and
//! forks their replacements; requests to the killed ones fail.

use std::collections::VecDeque;

use serde_json::json;

use super::children::{Child, Phase};
use super::{Action, Batch, Core, MasterPhase, Spawned, Target, Timer};
use crate::log::Level;
use crate::messenger::Role;

/// Why workers are replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReloadReason {
    /// `reload-worker` (egg-development's agent sends it when a file changes).
    Message,
    /// `SIGUSR2` to the master.
    Signal,
    /// The JS API of a program that embeds the master.
    Api,
    /// This worker's RSS went over `maxMemoryRestart`.
    Memory { pid: u32, rss: u64 },
    /// This worker's event loop is stuck (`workerTimeout`).
    Hung { pid: u32 },
    /// `egg-cluster-rs reload`, which waits for the outcome on the control socket.
    Control,
}

impl ReloadReason {
    pub(super) fn as_str(&self) -> &'static str {
        match self {
            ReloadReason::Message => "reload-worker",
            ReloadReason::Signal => "SIGUSR2",
            ReloadReason::Api => "api",
            ReloadReason::Memory { .. } => "maxMemoryRestart",
            ReloadReason::Hung { .. } => "workerTimeout",
            ReloadReason::Control => "egg-cluster-rs reload",
        }
    }

    /// Every app worker is replaced (not one over a limit).
    pub(super) fn whole_app(&self) -> bool {
        !matches!(
            self,
            ReloadReason::Memory { .. } | ReloadReason::Hung { .. }
        )
    }
}

/// How a reload replaces the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Policy {
    /// Production: `surge` replacements boot at a time; each old worker retires when its own
    /// replacement serves, so N workers serve throughout.
    Rolling { surge: usize },
    /// The local env (egg-development's `reload-worker` after an edit): every replacement boots
    /// at once, and every old worker retires as soon as one new worker serves, so no old code
    /// answers after the first new worker does. egg's own master replaces all at once too.
    Dev,
}

/// A change of the number of app workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scale {
    /// `SIGTTIN` (+1) / `SIGTTOU` (-1).
    By(i64),
    To(usize),
}

#[derive(Debug)]
pub(super) struct Reload {
    reason: ReloadReason,
    policy: Policy,
    started_at: u64,
    /// How many workers this reload replaces (for the progress lines).
    total: usize,
    /// Old workers still to replace.
    pending: VecDeque<u32>,
    /// Slots being replaced: booting (at most the surge), or serving while the old one drains.
    steps: Vec<Step>,
    /// (old pid, new pid) of every slot done.
    replaced: Vec<(u32, u32)>,
    /// Control-socket clients waiting for the outcome (answered once every new worker serves).
    pub(super) waiters: Vec<u64>,
    /// Another reload was asked for meanwhile (why, who waits): it runs once this one ends,
    /// done or failed — a fix saved while a broken edit's reload fails must still load.
    pub(super) again: Option<(ReloadReason, Vec<u64>)>,
}

impl Reload {
    /// A hung worker goes before the others (it serves nobody meanwhile).
    pub(super) fn put_first(&mut self, pid: u32) {
        if self.steps.iter().any(|s| s.old == pid) {
            return;
        }
        self.pending.retain(|p| *p != pid);
        self.pending.push_front(pid);
    }

    /// Whether old worker `pid` is being replaced, or will be.
    pub(super) fn will_replace(&self, pid: u32) -> bool {
        self.pending.contains(&pid) || self.steps.iter().any(|s| s.old == pid)
    }
}

#[derive(Debug)]
struct Step {
    old: u32,
    /// The old worker's name, for the lines written after it is gone.
    old_name: String,
    slot: usize,
    /// The replacement's worker id, which names it until its pid is known.
    id: u32,
    /// The replacement, once spawned; it serves once `serving` is true.
    new: Option<u32>,
    serving: bool,
    /// The old worker was told to retire (its replacement served; in [`Policy::Dev`], any
    /// replacement did).
    old_retired: bool,
    /// The old worker exited (retired, or on its own) before its replacement served.
    old_gone: bool,
    /// Identifies this step's start timeout.
    seq: u64,
}

impl Core {
    pub(super) fn on_reload(&mut self, reason: ReloadReason, now: u64, out: &mut Vec<Action>) {
        self.start_reload(reason, Vec::new(), now, out);
    }

    /// The reload policy: production's rolling surge, or the local env's all-at-once.
    fn reload_policy(&self, reason: &ReloadReason) -> Policy {
        if !self.cfg.is_production && reason.whole_app() {
            Policy::Dev
        } else {
            Policy::Rolling {
                surge: self.cfg.reload_concurrency.max(1),
            }
        }
    }

    /// A reload `waiters` wait for: it starts now, or after the reload or scaling in progress.
    pub(super) fn start_reload(
        &mut self,
        reason: ReloadReason,
        waiters: Vec<u64>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        if self.phase != MasterPhase::Up {
            out.push(Action::Log(
                Level::Warn,
                format!(
                    "[master] reload ({}) ignored: the app is not up",
                    reason.as_str()
                ),
            ));
            let why = if self.closing() {
                "this master is closing"
            } else {
                "the app is not up"
            };
            Self::outcome(out, waiters, Err(why.into()));
            return;
        }
        if let Some(reload) = &mut self.reload {
            match &mut reload.again {
                Some((_, queued)) => queued.extend(waiters),
                None => {
                    out.push(Action::Log(
                        Level::Info,
                        format!(
                            "[master] reload ({}) queued: a reload is in progress",
                            reason.as_str()
                        ),
                    ));
                    reload.again = Some((reason, waiters));
                }
            }
            return;
        }
        // The workers scaling adds must run the new code too: the reload waits for them.
        if reason.whole_app() && self.queue_reload_after_scaling(&reason, &waiters, out) {
            return;
        }
        let pending: VecDeque<u32> = match reason {
            ReloadReason::Memory { pid, .. } | ReloadReason::Hung { pid } => VecDeque::from([pid]),
            _ => {
                let mut serving: Vec<&Child> = self
                    .children
                    .apps()
                    .filter(|c| c.phase == Phase::Serving)
                    .collect();
                serving.sort_by_key(|c| c.slot);
                serving.iter().map(|c| c.pid).collect()
            }
        };
        // egg-cluster's line for `reload-worker` (@eggjs/cluster's names the count). egg-cluster
        // logs it at DEBUG in the local env, which hides it exactly where dev reloads happen;
        // ours is INFO everywhere (docs/fidelity.md, differences).
        let line = match self.cfg.dialect {
            super::Dialect::Egg3 => "[master] reload workers...".to_string(),
            super::Dialect::Egg4 => format!("[master] reload {} workers...", self.workers),
        };
        out.push(Action::Log(Level::Info, line));
        let policy = self.reload_policy(&reason);
        let how = match policy {
            Policy::Rolling { surge } => format!("{surge} at a time"),
            Policy::Dev => {
                "all at once; the old ones retire as soon as one new worker serves (local env)"
                    .into()
            }
        };
        out.push(Action::Log(
            Level::Info,
            format!(
                "[master] rolling reload ({}): replacing {} app worker(s), {how}",
                reason.as_str(),
                pending.len(),
            ),
        ));
        let data = json!({"reason": reason.as_str(), "workers": pending.len()}).to_string();
        Self::send(
            out,
            Target::Parent,
            Role::Parent,
            "reload-start",
            Some(data.as_bytes()),
        );
        self.reload = Some(Reload {
            reason,
            policy,
            started_at: now,
            total: pending.len(),
            pending,
            steps: Vec::new(),
            replaced: Vec::new(),
            waiters,
            again: None,
        });
        self.next_step(now, out);
    }

    /// Starts replacements for the next old workers still serving while the surge allows, or
    /// ends the reload once every slot is done.
    fn next_step(&mut self, now: u64, out: &mut Vec<Action>) {
        loop {
            let Some(reload) = &mut self.reload else {
                return;
            };
            let surge = match reload.policy {
                Policy::Rolling { surge } => surge,
                Policy::Dev => usize::MAX,
            };
            if reload.steps.iter().filter(|s| !s.serving).count() >= surge {
                return;
            }
            let Some(old) = reload.pending.pop_front() else {
                break;
            };
            let Some((slot, old_name)) = self
                .children
                .get(old)
                .filter(|c| c.phase == Phase::Serving)
                .and_then(|c| Some((c.slot?, c.name())))
            else {
                continue;
            };
            self.step_seq += 1;
            let seq = self.step_seq;
            let id = self.children.next_id(Role::App);
            let reload = self.reload.as_mut().expect("checked above");
            reload.steps.push(Step {
                old,
                old_name,
                slot,
                id,
                new: None,
                serving: false,
                old_retired: false,
                old_gone: false,
                seq,
            });
            out.push(Action::SpawnApps {
                batch: Batch::Replace,
                apps: vec![(id, slot)],
            });
            out.push(Action::After(
                self.cfg.reload_timeout,
                Timer::ReloadTimeout(seq),
            ));
        }
        if self.reload.as_ref().is_some_and(|r| r.steps.is_empty()) {
            self.finish_reload(now, out);
        }
    }

    fn finish_reload(&mut self, now: u64, out: &mut Vec<Action>) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        out.push(Action::Log(
            Level::Info,
            format!(
                "[master] rolling reload ({}) done: {} app worker(s) replaced ({}ms)",
                reload.reason.as_str(),
                reload.replaced.len(),
                now.saturating_sub(reload.started_at)
            ),
        ));
        if let Some(failed) = self.reload_failed.take() {
            if !reload.replaced.is_empty() {
                out.push(Action::Log(
                    Level::Info,
                    format!(
                        "[master] reload recovered: the app workers run the current code again (the previous reload failed: {failed})"
                    ),
                ));
            }
        }
        let summary = format!(
            "{} app worker(s) replaced in {}ms",
            reload.replaced.len(),
            now.saturating_sub(reload.started_at)
        );
        Self::outcome(out, reload.waiters, Ok(summary));
        let data =
            json!({"ok": true, "reason": reload.reason.as_str(), "replaced": reload.replaced});
        self.reload_done(data, out);
        if let Some((reason, waiters)) = reload.again {
            self.start_reload(reason, waiters, now, out);
        }
    }

    /// The reload stops: the old workers keep serving, nothing is retried. `boot` is what the
    /// replacement told about its failed boot: in the local env (a dev reload after an edit)
    /// the failure is shown as a block naming the file and the error, as it would otherwise
    /// be one line among egg's and the old code would go on answering unnoticed.
    fn fail_reload(
        &mut self,
        mut error: String,
        boot: Option<&(String, Option<String>)>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        // Policy::Dev: a new worker served already, and the old ones were told to retire.
        let old_retired = reload.steps.iter().any(|s| s.old_retired);
        if let Some((boot_error, file)) = boot {
            let first = boot_error.lines().next().unwrap_or_default();
            error = match file {
                Some(file) => format!("{error}: {first} ({file})"),
                None => format!("{error}: {first}"),
            };
            if !self.cfg.is_production {
                let mut block = String::from(
                    "[master] ==================== reload failed ====================\n",
                );
                block.push_str(if old_retired {
                    "Another new app worker serves the change already; this one's slot stays empty until the next change.\n"
                } else {
                    "The app workers still run the code from before the change.\n"
                });
                if let Some(file) = file {
                    block.push_str(&format!("  file:  {file}\n"));
                }
                block.push_str(&format!(
                    "  error: {}\n",
                    boot_error.trim_end().replace('\n', "\n         ")
                ));
                block.push_str(
                    "Fix it and save: the next change reloads the workers again.\n\
                     ===========================================================",
                );
                out.push(Action::Log(Level::Error, block));
            }
        }
        self.reload_failed = Some(error.clone());
        let after = if old_retired {
            "the new app workers serve, and those still booting take their slots when they do"
        } else {
            "the old app workers keep serving"
        };
        out.push(Action::Log(
            Level::Error,
            format!(
                "[master] rolling reload ({}) failed: {error}; {after}",
                reload.reason.as_str()
            ),
        ));
        // Replacements that serve keep their slot (their predecessor is already retiring); those
        // still booting are stopped, and their slot's old worker keeps serving — unless it has
        // retired already (Policy::Dev), and then the replacement boots on to take the slot.
        let mut replaced = reload.replaced;
        for step in reload.steps {
            match (step.new, step.serving) {
                (Some(new), true) => replaced.push((step.old, new)),
                (Some(_), false) if step.old_retired => {}
                (Some(new), false) => {
                    if let Some(c) = self.children.get_mut(new) {
                        c.phase = Phase::Retiring;
                        c.exited_after_disconnect = true;
                        out.push(Action::Terminate {
                            pid: new,
                            limit: self.cfg.app_close.limit,
                        });
                    }
                }
                (None, _) => {}
            }
        }
        // A hung worker whose replacement failed serves nobody: it goes now, and its slot is
        // reforked as a dead worker's (a refork that cannot spawn is tried again).
        let hung: Vec<u32> = self
            .children
            .apps()
            .filter(|c| c.phase == Phase::Serving && c.hung_since.is_some())
            .map(|c| c.pid)
            .collect();
        for pid in hung {
            out.push(Action::Terminate {
                pid,
                limit: std::time::Duration::ZERO,
            });
        }
        Self::outcome(out, reload.waiters, Err(error.clone()));
        let data = json!({"ok": false, "reason": reload.reason.as_str(), "error": error, "replaced": replaced});
        self.reload_done(data, out);
        if let Some((reason, waiters)) = reload.again {
            self.start_reload(reason, waiters, now, out);
        }
    }

    /// Tells the parent and `promise.master` how the reload ended.
    fn reload_done(&mut self, data: serde_json::Value, out: &mut Vec<Action>) {
        self.ops.reloads += 1;
        if data["ok"] != true {
            self.ops.reloads_failed += 1;
        }
        let data = data.to_string();
        Self::send(
            out,
            Target::Parent,
            Role::Parent,
            "reload-done",
            Some(data.as_bytes()),
        );
        out.push(Action::EmitMaster(crate::messenger::master_message(
            "reload-done",
            Role::Master,
            Some(data.as_bytes()),
        )));
    }

    /// A [`Batch::Replace`] worker was spawned (or could not be).
    pub(super) fn on_replacement_spawned(
        &mut self,
        app: &Spawned,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(step) = self
            .reload
            .as_mut()
            .and_then(|r| r.steps.iter_mut().find(|s| s.id == app.id))
        else {
            return;
        };
        match &app.pid {
            Ok(pid) => step.new = Some(*pid),
            Err(e) => {
                let e = format!("cannot spawn app_worker#{}: {e}", app.id);
                self.fail_reload(e, None, now, out);
            }
        }
    }

    /// A worker now serves on the real port: if it is a replacement, its predecessor retires.
    pub(super) fn on_serving(&mut self, pid: u32, now: u64, out: &mut Vec<Action>) {
        let Some(reload) = self.reload.as_mut() else {
            return;
        };
        let Some(i) = reload
            .steps
            .iter()
            .position(|s| s.new == Some(pid) && !s.serving)
        else {
            return;
        };
        let step = &mut reload.steps[i];
        step.serving = true;
        let (old, slot) = (step.old, step.slot);
        let line = format!(
            "{} serves in slot {slot}, replacing {}",
            self.children
                .get(pid)
                .map_or_else(|| pid.to_string(), Child::name),
            step.old_name
        );
        if step.old_gone {
            reload.steps.remove(i);
            reload.replaced.push((old, pid));
        }
        // Policy::Dev: one new worker serves, so no old one may answer any more.
        let retire: Vec<u32> = reload
            .steps
            .iter_mut()
            .filter(|s| {
                !s.old_retired && !s.old_gone && (s.old == old || reload.policy == Policy::Dev)
            })
            .map(|s| {
                s.old_retired = true;
                s.old
            })
            .collect();
        let done = reload.replaced.len() + reload.steps.iter().filter(|s| s.serving).count();
        let waiters = reload.waiters.clone();
        Self::progress(out, &waiters, format!("{line} ({done}/{})", reload.total));
        for old in retire {
            self.retire(old, out);
        }
        // The next boot starts now, while the old worker drains.
        self.next_step(now, out);
        self.reload_served(now, out);
    }

    /// Once every replacement serves, whoever waits hears it (the old workers may still drain).
    fn reload_served(&mut self, now: u64, out: &mut Vec<Action>) {
        let Some(reload) = self
            .reload
            .as_mut()
            .filter(|r| r.pending.is_empty() && r.steps.iter().all(|s| s.serving))
        else {
            return;
        };
        let waiters = std::mem::take(&mut reload.waiters);
        let summary = format!(
            "{} app worker(s) replaced in {}ms; every new one serves",
            reload.total,
            now.saturating_sub(reload.started_at)
        );
        Self::outcome(out, waiters, Ok(summary));
    }

    /// Stops `pid` gracefully: it is no longer counted as serving (the agent's `egg-pids`, the
    /// sticky slots), is not reforked, and gets SIGTERM — the worker stops accepting, answers
    /// what it has and exits — then SIGKILL after the app close timeout.
    pub(super) fn retire(&mut self, pid: u32, out: &mut Vec<Action>) {
        let Some(c) = self.children.get_mut(pid) else {
            return;
        };
        c.phase = Phase::Retiring;
        c.disable_refork = true;
        // The master itself lets it go, as egg-cluster's reload does with `worker.disconnect()`,
        // which sets cluster's `exitedAfterDisconnect` (egg-cluster's `suicide`).
        c.exited_after_disconnect = true;
        let name = c.name();
        // A hung worker cannot drain: SIGKILL at once.
        let limit = if c.hung_since.is_some() {
            std::time::Duration::ZERO
        } else {
            self.cfg.app_close.limit
        };
        self.verbose(
            out,
            format!("[master] {name} retiring: draining, then exit"),
        );
        let pids = self.children.listening_pids_json();
        self.send_agent(out, "egg-pids", Some(&pids));
        out.push(Action::Terminate { pid, limit });
    }

    /// An app worker exited. Returns whether the reload takes care of it (no refork).
    pub(super) fn reload_on_exit(
        &mut self,
        app: &Child,
        code: Option<i32>,
        signal: Option<&str>,
        now: u64,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(reload) = self.reload.as_mut() else {
            return false;
        };
        if reload
            .steps
            .iter()
            .any(|s| s.new == Some(app.pid) && !s.serving)
        {
            let e = format!(
                "the new {} exited before it listened (code: {}, signal: {})",
                app.name(),
                super::js_opt(code),
                signal.unwrap_or("null")
            );
            self.fail_reload(e, app.boot_error.as_ref(), now, out);
            return true;
        }
        let Some(i) = reload.steps.iter().position(|s| s.old == app.pid) else {
            return false;
        };
        // Retired after its replacement served; or it died on its own meanwhile, and the
        // replacement takes its slot when it serves.
        let step = &mut reload.steps[i];
        match (step.new, step.serving) {
            (Some(new), true) => {
                reload.steps.remove(i);
                reload.replaced.push((app.pid, new));
                self.next_step(now, out);
            }
            _ => step.old_gone = true,
        }
        true
    }

    /// An app worker tells why its boot failed, just before it exits (`{error, file}`).
    pub(super) fn on_boot_error(
        &mut self,
        pid: u32,
        data: &serde_json::Value,
        out: &mut Vec<Action>,
    ) {
        let text = |key: &str| {
            data.get(key)
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty())
                // A report, not a log dump: bounded.
                .map(|s| s.chars().take(4000).collect::<String>())
        };
        let Some(error) = text("error") else {
            self.on_malformed(pid, "egg-cluster-rs:boot-error without an error", out);
            return;
        };
        if let Some(c) = self.children.get_mut(pid) {
            c.boot_error = Some((error, text("file")));
        }
    }

    /// The step's replacement did not serve in time.
    pub(super) fn on_reload_timeout(&mut self, seq: u64, now: u64, out: &mut Vec<Action>) {
        let Some(step) = self
            .reload
            .as_ref()
            .and_then(|r| r.steps.iter().find(|s| s.seq == seq && !s.serving))
        else {
            return;
        };
        let who = step
            .new
            .and_then(|p| self.children.get(p))
            .map_or_else(|| "the new app worker".to_string(), Child::name);
        let e = format!(
            "{who} did not listen within {}ms",
            self.cfg.reload_timeout.as_millis()
        );
        self.fail_reload(e, None, now, out);
    }

    /// A retiring worker (scaled down, or failed replacement) exited.
    pub(super) fn on_retired_exit(
        &mut self,
        app: &Child,
        code: Option<i32>,
        signal: Option<&str>,
        out: &mut Vec<Action>,
    ) {
        out.push(Action::Log(
            Level::Info,
            format!(
                "[master] {} retired (code: {}, signal: {})",
                app.name(),
                super::js_opt(code),
                signal.unwrap_or("null")
            ),
        ));
        let pids = self.children.listening_pids_json();
        self.send_agent(out, "egg-pids", Some(&pids));
    }
}
