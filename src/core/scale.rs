//! Scaling: `SIGTTIN`/`SIGTTOU`, `promise.scale(n)`, `egg-cluster-rs scale up|down`.
//!
//! More app workers boot through the surge a rolling reload uses: at most
//! `reload_concurrency` app workers boot at once — counting every app worker that does not
//! serve yet, a reload's replacement or a refork as well as the ones added — and the rest wait
//! for a boot to end. Fifty SIGTTIN in a row thus boot two at a time on 2 CPUs, not fifty at
//! once. An added worker joins as a replacement does (`egg-ready`, `egg-pids`) and is not
//! reforked before it serves: one that exits first, or does not serve within the reload timeout,
//! fails the scaling as a failed step fails a reload — the boots still running are stopped,
//! the workers that serve keep serving, and the number wanted drops to what runs. Fewer workers
//! are retired (drained) from the highest slot down, the ones not spawned yet first.
//!
//! The number of app workers is bounded by `max_workers` (`EGG_CLUSTER_RS_MAX_WORKERS`).
//! Scaling is refused while a reload runs; a whole-app reload asked for while scaling runs
//! starts once it is done, so that the workers it adds run the new code too.

use super::children::{Child, Phase};
use super::{Action, Batch, Core, MasterPhase, ReloadReason, Scale, SpawnError, Spawned, Timer};
use crate::log::Level;

#[derive(Debug)]
pub(super) struct Scaling {
    from: usize,
    started_at: u64,
    /// Workers wanted and not spawned yet: the surge holds them back.
    pending: usize,
    /// Workers added that do not serve yet.
    booting: Vec<Boot>,
    /// Workers a scale-down retired, until they exit.
    retiring: Vec<u32>,
    /// Control-socket clients waiting for the outcome.
    waiters: Vec<u64>,
    /// A whole-app reload asked for meanwhile (why, who waits): it runs once this is done.
    reload_after: Option<(ReloadReason, Vec<u64>)>,
}

#[derive(Debug)]
struct Boot {
    id: u32,
    /// Once spawned.
    pid: Option<u32>,
    /// Identifies its timeout.
    seq: u64,
    /// Why the last spawn failed (the master short of a resource): tried again.
    spawn_error: Option<String>,
}

impl Core {
    /// A change of the number of app workers; `waiter` waits for the outcome.
    pub(super) fn on_scale(
        &mut self,
        scale: Scale,
        waiter: Option<u64>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let waiters: Vec<u64> = waiter.into_iter().collect();
        if self.phase != MasterPhase::Up || self.reload.is_some() {
            out.push(Action::Log(
                Level::Warn,
                "[master] scaling ignored: the app is not up, or a reload is in progress".into(),
            ));
            let why = if self.closing() {
                "this master is closing"
            } else if self.reload.is_some() {
                "a reload is in progress; scale once it is done"
            } else {
                "the app is not up"
            };
            Self::outcome(out, waiters, Err(why.into()));
            return;
        }
        let from = self.workers;
        let wanted = match scale {
            Scale::By(d) => (from as i64).saturating_add(d).max(1) as usize,
            Scale::To(n) => n.max(1),
        };
        let max = self.cfg.max_workers.max(1);
        let to = wanted.min(max);
        if wanted > max {
            out.push(Action::Log(
                Level::Warn,
                format!("[master] scaling to {wanted} app workers capped at {max}, the most this master runs (EGG_CLUSTER_RS_MAX_WORKERS)"),
            ));
        }
        if to == from {
            if let Some(scaling) = &mut self.scaling {
                // The same count: it is reached when the running scaling is done.
                scaling.waiters.extend(waiters);
                return;
            }
            let result = if wanted > max {
                Err(format!("{from} app workers run, the most this master runs (EGG_CLUSTER_RS_MAX_WORKERS={max})"))
            } else if matches!(scale, Scale::By(d) if d < 0) || matches!(scale, Scale::To(0)) {
                Err("1 app worker runs, and an app needs at least one".into())
            } else {
                Ok(format!("{from} app workers run already"))
            };
            Self::outcome(out, waiters, result);
            return;
        }
        out.push(Action::Log(
            Level::Info,
            format!("[master] scale app workers from {from} to {to}"),
        ));
        self.workers = to;
        let scaling = self.scaling.get_or_insert_with(|| Scaling {
            from,
            started_at: now,
            pending: 0,
            booting: Vec::new(),
            retiring: Vec::new(),
            waiters: Vec::new(),
            reload_after: None,
        });
        scaling.waiters.extend(waiters);
        if to > from {
            scaling.pending += to - from;
        } else {
            let fewer = from - to;
            let unspawned = fewer.min(scaling.pending);
            scaling.pending -= unspawned;
            self.retire_top(fewer - unspawned, out);
        }
        self.scale_boot(out);
        self.scaling_done(now, out);
    }

    /// Retires `n` live app workers, the highest slots first.
    fn retire_top(&mut self, n: usize, out: &mut Vec<Action>) {
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
        live.sort_unstable_by(|a, b| b.cmp(a));
        for (_, pid) in live.into_iter().take(n) {
            self.retire(pid, out);
            if let Some(scaling) = &mut self.scaling {
                scaling.booting.retain(|b| b.pid != Some(pid));
                scaling.retiring.push(pid);
            }
        }
    }

    /// Spawns the workers still wanted while fewer than the surge boot.
    fn scale_boot(&mut self, out: &mut Vec<Action>) {
        if self.closing() {
            return;
        }
        let Some(scaling) = &self.scaling else {
            return;
        };
        let booting = self
            .children
            .apps()
            .filter(|c| matches!(c.phase, Phase::Forked | Phase::Online | Phase::Listening))
            .count()
            // asked for, not answered yet (worker_threads: the JS thread answers later)
            + scaling.booting.iter().filter(|b| b.pid.is_none()).count();
        let surge = self.cfg.reload_concurrency.max(1);
        let n = scaling.pending.min(surge.saturating_sub(booting));
        if n == 0 {
            return;
        }
        let apps = self.new_app_ids(n);
        for &(id, _) in &apps {
            self.step_seq += 1;
            let seq = self.step_seq;
            if let Some(scaling) = &mut self.scaling {
                scaling.booting.push(Boot {
                    id,
                    pid: None,
                    seq,
                    spawn_error: None,
                });
            }
            out.push(Action::After(
                self.cfg.reload_timeout,
                Timer::ScaleTimeout(seq),
            ));
        }
        if let Some(scaling) = &mut self.scaling {
            scaling.pending -= n;
        }
        out.push(Action::SpawnApps {
            batch: Batch::Scale,
            apps,
        });
    }

    /// A [`Batch::Scale`] worker was spawned (or could not be).
    pub(super) fn on_scale_spawned(&mut self, app: &Spawned, now: u64, out: &mut Vec<Action>) {
        let Some(boot) = self
            .scaling
            .as_mut()
            .and_then(|s| s.booting.iter_mut().find(|b| b.id == app.id))
        else {
            return;
        };
        match &app.pid {
            Ok(pid) => boot.pid = Some(*pid),
            // A passing shortage of the host's: tried again after the shared backoff, within
            // the boot's timeout (a worker that cannot be spawned by then fails the scaling).
            Err(e @ SpawnError::Resource(why)) => {
                boot.spawn_error = Some(why.clone());
                let seq = boot.seq;
                let first = !self.spawn_retry.failing();
                let delay = self.spawn_failed(&format!("app_worker#{}", app.id), e, now, out);
                out.push(Action::After(delay, Timer::ScaleRetry(seq)));
                if first {
                    let waiters = self
                        .scaling
                        .as_ref()
                        .map_or(Vec::new(), |s| s.waiters.clone());
                    let line = format!(
                        "cannot spawn app_worker#{}: {why} (the master is short of a resource); trying again",
                        app.id
                    );
                    Self::progress(out, &waiters, line);
                }
            }
            Err(e) => {
                let e = format!("cannot spawn app_worker#{}: {e}", app.id);
                self.fail_scaling(e, now, out);
            }
        }
    }

    /// A boot whose spawn failed for want of a resource: its next try, under a new id.
    pub(super) fn on_scale_retry(&mut self, seq: u64, out: &mut Vec<Action>) {
        if self.closing()
            || !self
                .scaling
                .as_ref()
                .is_some_and(|s| s.booting.iter().any(|b| b.seq == seq && b.pid.is_none()))
        {
            return;
        }
        let apps = self.new_app_ids(1);
        if let Some(boot) = self
            .scaling
            .as_mut()
            .and_then(|s| s.booting.iter_mut().find(|b| b.seq == seq))
        {
            boot.id = apps[0].0;
        }
        out.push(Action::SpawnApps {
            batch: Batch::Scale,
            apps,
        });
    }

    /// A worker now serves: one scaling added is done, and any boot's end frees the surge.
    pub(super) fn scaling_on_serving(&mut self, pid: u32, now: u64, out: &mut Vec<Action>) {
        let Some(scaling) = &mut self.scaling else {
            return;
        };
        if let Some(i) = scaling.booting.iter().position(|b| b.pid == Some(pid)) {
            scaling.booting.remove(i);
            let waiters = scaling.waiters.clone();
            let line = format!(
                "{} serves ({} of {} app workers serve)",
                self.children
                    .get(pid)
                    .map_or_else(|| pid.to_string(), Child::name),
                self.serving_count(),
                self.workers
            );
            Self::progress(out, &waiters, line);
        }
        self.scale_boot(out);
        self.scaling_done(now, out);
    }

    /// An app worker exited. Returns whether the scaling takes care of it (no refork): one it
    /// added that never served fails it.
    pub(super) fn scaling_on_exit(
        &mut self,
        app: &Child,
        code: Option<i32>,
        signal: Option<&str>,
        now: u64,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(scaling) = &mut self.scaling else {
            return false;
        };
        if scaling.booting.iter().any(|b| b.pid == Some(app.pid)) {
            let e = format!(
                "the new {} exited before it listened (code: {}, signal: {})",
                app.name(),
                super::js_opt(code),
                signal.unwrap_or("null")
            );
            self.fail_scaling(e, now, out);
            return true;
        }
        if let Some(i) = scaling.retiring.iter().position(|p| *p == app.pid) {
            scaling.retiring.remove(i);
            let waiters = scaling.waiters.clone();
            let line = format!(
                "{} retired ({} app workers serve)",
                app.name(),
                self.serving_count()
            );
            Self::progress(out, &waiters, line);
        }
        self.scale_boot(out);
        self.scaling_done(now, out);
        false
    }

    /// An added worker's boot timeout.
    pub(super) fn on_scale_timeout(&mut self, seq: u64, now: u64, out: &mut Vec<Action>) {
        let Some(boot) = self
            .scaling
            .as_ref()
            .and_then(|s| s.booting.iter().find(|b| b.seq == seq))
        else {
            return;
        };
        let who = boot
            .pid
            .and_then(|p| self.children.get(p))
            .map_or_else(|| format!("app_worker#{}", boot.id), Child::name);
        let ms = self.cfg.reload_timeout.as_millis();
        let e = match (&boot.spawn_error, boot.pid) {
            (Some(why), None) => format!("{who} could not be spawned within {ms}ms: {why}"),
            _ => format!("{who} did not listen within {ms}ms"),
        };
        self.fail_scaling(e, now, out);
    }

    /// The scaling stops: the boots still running are stopped, what serves keeps serving, and
    /// the count wanted is what runs.
    fn fail_scaling(&mut self, error: String, now: u64, out: &mut Vec<Action>) {
        let Some(scaling) = self.scaling.take() else {
            return;
        };
        let to = self.workers;
        for pid in scaling.booting.iter().filter_map(|b| b.pid) {
            if let Some(c) = self.children.get_mut(pid) {
                c.phase = Phase::Retiring;
                c.exited_after_disconnect = true;
                out.push(Action::Terminate {
                    pid,
                    limit: self.cfg.app_close.limit,
                });
            }
        }
        self.workers = to
            .saturating_sub(scaling.pending + scaling.booting.len())
            .max(1);
        out.push(Action::Log(
            Level::Error,
            format!(
                "[master] scaling to {to} app workers failed: {error}; {} app workers wanted now, {} serve",
                self.workers,
                self.serving_count()
            ),
        ));
        Self::outcome(out, scaling.waiters, Err(error));
        if let Some((reason, waiters)) = scaling.reload_after {
            self.start_reload(reason, waiters, now, out);
        }
    }

    /// Every worker added serves and every one retired has exited: done.
    fn scaling_done(&mut self, now: u64, out: &mut Vec<Action>) {
        if !self
            .scaling
            .as_ref()
            .is_some_and(|s| s.pending == 0 && s.booting.is_empty() && s.retiring.is_empty())
        {
            return;
        }
        let Some(scaling) = self.scaling.take() else {
            return;
        };
        let ms = now.saturating_sub(scaling.started_at);
        out.push(Action::Log(
            Level::Info,
            format!(
                "[master] scaled from {} to {} app workers ({ms}ms)",
                scaling.from, self.workers
            ),
        ));
        let summary = format!("{} app workers serve ({ms}ms)", self.serving_count());
        Self::outcome(out, scaling.waiters, Ok(summary));
        if let Some((reason, waiters)) = scaling.reload_after {
            self.start_reload(reason, waiters, now, out);
        }
    }

    /// A whole-app reload while scaling runs waits for it; `false` when none runs.
    pub(super) fn queue_reload_after_scaling(
        &mut self,
        reason: &ReloadReason,
        waiters: &[u64],
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(scaling) = &mut self.scaling else {
            return false;
        };
        match &mut scaling.reload_after {
            Some((_, queued)) => queued.extend_from_slice(waiters),
            None => {
                out.push(Action::Log(
                    Level::Info,
                    format!(
                        "[master] reload ({}) queued: scaling is in progress",
                        reason.as_str()
                    ),
                ));
                scaling.reload_after = Some((reason.clone(), waiters.to_vec()));
            }
        }
        true
    }

    /// The master closes: whoever waits on a reload or a scaling hears why it will not end.
    pub(super) fn abort_waits(&mut self, why: &str, out: &mut Vec<Action>) {
        let mut waiters = Vec::new();
        if let Some(reload) = &mut self.reload {
            waiters.append(&mut reload.waiters);
            if let Some((_, mut queued)) = reload.again.take() {
                waiters.append(&mut queued);
            }
        }
        if let Some(scaling) = self.scaling.take() {
            waiters.extend(scaling.waiters);
            if let Some((_, queued)) = scaling.reload_after {
                waiters.extend(queued);
            }
        }
        Self::outcome(out, waiters, Err(why.into()));
    }

    fn serving_count(&self) -> usize {
        self.children
            .apps()
            .filter(|c| c.phase == Phase::Serving)
            .count()
    }
}
