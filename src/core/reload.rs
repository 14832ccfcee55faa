//! Live worker replacement: a rolling reload replaces the app workers slot by slot — start the
//! new worker, wait until it serves on the real port, then retire the old one (it stops
//! accepting, drains and exits) — so no request is refused. Up to `reload_concurrency`
//! replacements boot at once (the surge); a slot's drain never holds up the next boot, as the
//! surge counts only replacements that do not serve yet: every old worker serves until its own
//! replacement does, so at least N workers serve throughout. The same
//! mechanism serves dev reload (`reload-worker`), `SIGUSR2`, the JS API, a worker over the
//! memory limit, and scaling down.
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
}

impl ReloadReason {
    fn as_str(&self) -> &'static str {
        match self {
            ReloadReason::Message => "reload-worker",
            ReloadReason::Signal => "SIGUSR2",
            ReloadReason::Api => "api",
            ReloadReason::Memory { .. } => "maxMemoryRestart",
            ReloadReason::Hung { .. } => "workerTimeout",
        }
    }
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
    started_at: u64,
    /// Old workers still to replace.
    pending: VecDeque<u32>,
    /// Slots being replaced: booting (at most the surge), or serving while the old one drains.
    steps: Vec<Step>,
    /// (old pid, new pid) of every slot done.
    replaced: Vec<(u32, u32)>,
    /// Another reload was asked for meanwhile: run it once this one is done.
    again: bool,
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
    /// The replacement's worker id, which names it until its pid is known.
    id: u32,
    /// The replacement, once spawned; it serves once `serving` is true.
    new: Option<u32>,
    serving: bool,
    /// The old worker exited on its own before its replacement served.
    old_gone: bool,
    /// Identifies this step's start timeout.
    seq: u64,
}

impl Core {
    pub(super) fn on_reload(&mut self, reason: ReloadReason, now: u64, out: &mut Vec<Action>) {
        if self.phase != MasterPhase::Up {
            out.push(Action::Log(
                Level::Warn,
                format!(
                    "[master] reload ({}) ignored: the app is not up",
                    reason.as_str()
                ),
            ));
            return;
        }
        if let Some(reload) = &mut self.reload {
            if !reload.again {
                reload.again = true;
                out.push(Action::Log(
                    Level::Info,
                    format!(
                        "[master] reload ({}) queued: a reload is in progress",
                        reason.as_str()
                    ),
                ));
            }
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
        out.push(Action::Log(
            Level::Info,
            format!(
                "[master] rolling reload ({}): replacing {} app worker(s), {} at a time",
                reason.as_str(),
                pending.len(),
                self.cfg.reload_concurrency.max(1)
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
            started_at: now,
            pending,
            steps: Vec::new(),
            replaced: Vec::new(),
            again: false,
        });
        self.next_step(now, out);
    }

    /// Starts replacements for the next old workers still serving while the surge allows, or
    /// ends the reload once every slot is done.
    fn next_step(&mut self, now: u64, out: &mut Vec<Action>) {
        let surge = self.cfg.reload_concurrency.max(1);
        loop {
            let Some(reload) = &mut self.reload else {
                return;
            };
            if reload.steps.iter().filter(|s| !s.serving).count() >= surge {
                return;
            }
            let Some(old) = reload.pending.pop_front() else {
                break;
            };
            let Some(slot) = self
                .children
                .get(old)
                .filter(|c| c.phase == Phase::Serving)
                .and_then(|c| c.slot)
            else {
                continue;
            };
            self.step_seq += 1;
            let seq = self.step_seq;
            let id = self.children.next_id(Role::App);
            let reload = self.reload.as_mut().expect("checked above");
            reload.steps.push(Step {
                old,
                id,
                new: None,
                serving: false,
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
        let data =
            json!({"ok": true, "reason": reload.reason.as_str(), "replaced": reload.replaced});
        self.reload_done(data, out);
        if reload.again {
            self.on_reload(reload.reason, now, out);
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
        out: &mut Vec<Action>,
    ) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        if let Some((boot_error, file)) = boot {
            let first = boot_error.lines().next().unwrap_or_default();
            error = match file {
                Some(file) => format!("{error}: {first} ({file})"),
                None => format!("{error}: {first}"),
            };
            if !self.cfg.is_production {
                let mut block = String::from(
                    "[master] ==================== reload failed ====================\n\
                     The app workers still run the code from before the change.\n",
                );
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
        out.push(Action::Log(
            Level::Error,
            format!(
                "[master] rolling reload ({}) failed: {error}; the old app workers keep serving",
                reload.reason.as_str()
            ),
        ));
        // Replacements that serve keep their slot (their predecessor is already retiring); those
        // still booting are stopped, and their slot's old worker keeps serving.
        let mut replaced = reload.replaced;
        for step in reload.steps {
            match (step.new, step.serving) {
                (Some(new), true) => replaced.push((step.old, new)),
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
        let data = json!({"ok": false, "reason": reload.reason.as_str(), "error": error, "replaced": replaced});
        self.reload_done(data, out);
    }

    /// Tells the parent and `promise.master` how the reload ended.
    fn reload_done(&self, data: serde_json::Value, out: &mut Vec<Action>) {
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

    /// A [`Batch::Replace`] or [`Batch::Scale`] worker was spawned (or could not be).
    pub(super) fn on_replacement_spawned(&mut self, app: &Spawned, out: &mut Vec<Action>) {
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
                self.fail_reload(e, None, out);
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
        let old = step.old;
        if step.old_gone {
            reload.steps.remove(i);
            reload.replaced.push((old, pid));
        } else {
            self.retire(old, out);
        }
        // The next boot starts now, while the old worker drains.
        self.next_step(now, out);
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
            self.fail_reload(e, app.boot_error.as_ref(), out);
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
    pub(super) fn on_reload_timeout(&mut self, seq: u64, out: &mut Vec<Action>) {
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
        self.fail_reload(e, None, out);
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

    /// Memory figures of the serving app workers (bytes of RSS): one over the limit is
    /// replaced — never killed mid-request — once no reload is running.
    pub(super) fn on_memory(&mut self, samples: Vec<(u32, u64)>, now: u64, out: &mut Vec<Action>) {
        if let Some(interval) = self.cfg.memory_check_interval {
            if !self.closing() {
                out.push(Action::After(interval, Timer::MemoryCheck));
            }
        }
        let Some(limit) = self.cfg.max_memory else {
            return;
        };
        if self.reload.is_some() {
            return;
        }
        let Some((pid, rss)) = samples
            .into_iter()
            .filter(|(_, rss)| *rss > limit)
            .max_by_key(|(_, rss)| *rss)
        else {
            return;
        };
        let Some(name) = self.children.get(pid).map(Child::name) else {
            return;
        };
        out.push(Action::Log(
            Level::Warn,
            format!(
                "[master] {name} uses {} MiB of memory (RSS {rss} bytes), over maxMemoryRestart {} MiB ({limit} bytes): replacing it",
                rss / (1024 * 1024),
                limit / (1024 * 1024)
            ),
        ));
        self.on_reload(ReloadReason::Memory { pid, rss }, now, out);
    }

    pub(super) fn on_memory_check(&mut self, out: &mut Vec<Action>) {
        if self.closing() {
            return;
        }
        let pids: Vec<u32> = self
            .children
            .apps()
            .filter(|c| c.phase == Phase::Serving)
            .map(|c| c.pid)
            .collect();
        out.push(Action::SampleMemory(pids));
    }

    /// `SIGTTIN`/`SIGTTOU`/the JS API: more workers are spawned (each joins as a replacement
    /// does), fewer are retired (drained) from the highest slot down.
    pub(super) fn on_scale(&mut self, scale: Scale, out: &mut Vec<Action>) {
        if self.phase != MasterPhase::Up || self.reload.is_some() {
            out.push(Action::Log(
                Level::Warn,
                "[master] scaling ignored: the app is not up, or a reload is in progress".into(),
            ));
            return;
        }
        let from = self.workers;
        let to = match scale {
            Scale::By(d) => (from as i64 + d).max(1) as usize,
            Scale::To(n) => n.max(1),
        };
        if to == from {
            return;
        }
        out.push(Action::Log(
            Level::Info,
            format!("[master] scale app workers from {from} to {to}"),
        ));
        self.workers = to;
        if to > from {
            let apps = self.new_app_ids(to - from);
            out.push(Action::SpawnApps {
                batch: Batch::Scale,
                apps,
            });
            return;
        }
        let mut live: Vec<(usize, u32)> = self
            .children
            .apps()
            .filter(|c| {
                matches!(
                    c.phase,
                    Phase::Serving | Phase::Listening | Phase::Online | Phase::Forked
                )
            })
            .map(|c| (c.slot.unwrap_or(usize::MAX), c.pid))
            .collect();
        live.sort();
        for (_, pid) in live.into_iter().skip(to) {
            self.retire(pid, out);
        }
    }
}
