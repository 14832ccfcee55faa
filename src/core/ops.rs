//! What an operator sees of the master: the status snapshot (its core half), the history of
//! each worker slot (restarts, last exit), and the lifecycle notices systemd gets.
//!
//! The snapshot is a pure function of the core's state; the runtime adds what only it can
//! measure (RSS and CPU from /proc, relay counters) before it is delivered.

use std::collections::HashMap;

use serde::Serialize;

use super::children::Phase;
use super::{Action, Core, MasterPhase, Target};
use crate::messenger::Role;

/// The master's phase as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OpsPhase {
    Starting,
    Ready,
    Reloading,
    Closing,
}

impl OpsPhase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OpsPhase::Starting => "starting",
            OpsPhase::Ready => "ready",
            OpsPhase::Reloading => "reloading",
            OpsPhase::Closing => "closing",
        }
    }
}

/// Who asked for a status snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StatusTo {
    /// A `cluster-status` message: answered with one to its sender.
    Message(Target),
    /// The runtime's own waiter (JS API, CLI socket, metrics), by its number.
    Waiter(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExitRecord {
    pub(crate) pid: u32,
    pub(crate) code: Option<i32>,
    pub(crate) signal: Option<&'static str>,
    pub(crate) at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChildStatus {
    pub(crate) role: &'static str,
    pub(crate) id: u32,
    pub(crate) pid: u32,
    pub(crate) slot: Option<usize>,
    pub(crate) state: &'static str,
    pub(crate) started_at: u64,
    pub(crate) serving_since: Option<u64>,
    /// Unexpected exits of this slot's workers (of the agent, for the agent) so far.
    pub(crate) restarts: u64,
    pub(crate) last_exit: Option<ExitRecord>,
    /// Malformed lines from this child, dropped.
    pub(crate) malformed: u64,
    /// How late its last heartbeat's timer fired (ms): its event-loop lag.
    pub(crate) lag_ms: Option<u64>,
    /// When it was found hung (ms since the epoch), until it is gone.
    pub(crate) hung_since: Option<u64>,
}

/// The core's half of a status snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct CoreStatus {
    pub(crate) master: MasterStatus,
    pub(crate) children: Vec<ChildStatus>,
}

/// The master as the core sees it (the runtime adds its pid, uptime, RSS, CPU and counters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MasterStatus {
    pub(crate) phase: OpsPhase,
    pub(crate) started_at: u64,
    /// App workers wanted.
    pub(crate) workers: usize,
    /// App workers serving on the real port.
    pub(crate) serving: usize,
    /// The health check's verdict: the agent started and an app worker serves.
    pub(crate) healthy: bool,
    /// Up and not closing: traffic may be sent.
    pub(crate) ready: bool,
    /// Workers (and agents) started again after an unexpected exit.
    pub(crate) reforks: u64,
    /// The delay before the next refork in a crash loop, 0 outside one.
    pub(crate) backoff_ms: u64,
    /// Malformed lines dropped, from every child so far.
    pub(crate) malformed: u64,
    /// Children found hung, and hung or never-listening app workers replaced, so far.
    pub(crate) hung: u64,
    pub(crate) hung_replaced: u64,
    /// Rolling reloads finished so far, and those of them that failed.
    pub(crate) reloads: u64,
    pub(crate) reloads_failed: u64,
    /// Why dead app workers are not being replaced (crash loop, refork off), while some are
    /// missing.
    pub(crate) refork_held: Option<String>,
    /// The new master of an upgrade in progress, once started: the CLI joins that upgrade
    /// rather than starting another.
    pub(crate) upgrading_to: Option<u32>,
}

/// A lifecycle change for the service manager (`sd_notify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Notice {
    /// The phase, when it changed.
    pub(crate) phase: Option<OpsPhase>,
    pub(crate) serving: usize,
    pub(crate) workers: usize,
}

#[derive(Debug, Clone, Default)]
struct SlotHistory {
    restarts: u64,
    last_exit: Option<ExitRecord>,
}

/// What the core remembers only for operators.
#[derive(Debug, Default)]
pub(crate) struct OpsState {
    slots: HashMap<(&'static str, usize), SlotHistory>,
    /// Workers (and agents) started again after an unexpected exit, counted where the core
    /// decides a refork.
    pub(super) reforks: u64,
    /// The last notice's phase and serving count.
    notified: Option<(OpsPhase, usize)>,
    pub(super) malformed: u64,
    /// Children found hung, and hung or never-listening app workers replaced.
    pub(super) hung: u64,
    pub(super) hung_replaced: u64,
    /// Rolling reloads finished, and failed.
    pub(super) reloads: u64,
    pub(super) reloads_failed: u64,
    /// Why dead app workers are not replaced at once (a crash loop's backoff) or at all
    /// (refork off), until every slot serves again.
    pub(super) refork_held: Option<String>,
}

fn slot_key(role: Role, slot: Option<usize>) -> (&'static str, usize) {
    (role.as_str(), slot.unwrap_or(0))
}

fn phase_str(phase: Phase) -> &'static str {
    match phase {
        Phase::Waiting => "waiting",
        Phase::Forked => "forked",
        Phase::Online => "online",
        Phase::Listening => "listening",
        Phase::Serving => "serving",
        Phase::Retiring => "retiring",
        Phase::Disconnected => "disconnected",
    }
}

impl Core {
    pub(super) fn ops_phase(&self) -> OpsPhase {
        match self.phase {
            MasterPhase::Starting | MasterPhase::BindingSticky => OpsPhase::Starting,
            MasterPhase::Up if self.reload.is_some() => OpsPhase::Reloading,
            MasterPhase::Up => OpsPhase::Ready,
            MasterPhase::ShutdownDelay | MasterPhase::Closing | MasterPhase::Exited => {
                OpsPhase::Closing
            }
        }
    }

    fn serving_apps(&self) -> usize {
        self.children
            .apps()
            .filter(|c| c.phase == Phase::Serving)
            .count()
    }

    /// `pid` exited: an exit nobody asked for (not a retirement, not the close) counts as a
    /// restart of its slot. Called before the exit is handled, while the record still exists.
    pub(super) fn ops_record_exit(
        &mut self,
        pid: u32,
        code: Option<i32>,
        signal: Option<&'static str>,
        now: u64,
    ) {
        let closing = self.closing();
        let Some(child) = self.children.get(pid) else {
            return;
        };
        if closing || child.phase == Phase::Retiring {
            return;
        }
        let entry = self
            .ops
            .slots
            .entry(slot_key(child.role, child.slot))
            .or_default();
        entry.restarts += 1;
        entry.last_exit = Some(ExitRecord {
            pid,
            code,
            signal,
            at: now,
        });
    }

    /// After every decision: tells the service manager when the phase or the number of serving
    /// workers changed.
    pub(super) fn ops_after(&mut self, out: &mut Vec<Action>) {
        let phase = self.ops_phase();
        let serving = self.serving_apps();
        if serving >= self.workers {
            self.ops.refork_held = None;
        }
        // After an upgrade's hand-over the new master's READY=1/MAINPID= stand; this one's
        // STOPPING=1 would tell systemd the service stops.
        if phase == OpsPhase::Starting || self.handed_over {
            return;
        }
        let changed = match self.ops.notified {
            None => true,
            // Closing: the one STOPPING=1 says it all, workers leaving is the point.
            Some((OpsPhase::Closing, _)) => false,
            Some((p, s)) => p != phase || s != serving,
        };
        if changed {
            let phase_changed = self.ops.notified.map(|(p, _)| p) != Some(phase);
            self.ops.notified = Some((phase, serving));
            out.push(Action::Notify(Notice {
                phase: phase_changed.then_some(phase),
                serving,
                workers: self.workers,
            }));
        }
    }

    /// The core's half of a status snapshot, at `now`.
    pub(crate) fn status(&self) -> CoreStatus {
        let phase = self.ops_phase();
        let refork_held = self
            .ops
            .refork_held
            .clone()
            .filter(|_| self.serving_apps() < self.workers);
        let agent_up = self
            .children
            .agent()
            .is_some_and(|a| a.phase == Phase::Serving);
        let serving = self.serving_apps();
        let mut children: Vec<&super::children::Child> =
            self.children.agent().into_iter().collect();
        children.extend(self.children.apps());
        CoreStatus {
            master: MasterStatus {
                phase,
                started_at: self.start_time,
                workers: self.workers,
                serving,
                // A hung child serves nobody: unhealthy until it is gone.
                healthy: agent_up
                    && self.children.apps().any(|a| a.listening())
                    && !self.children.all().any(|c| c.hung_since.is_some())
                    && refork_held.is_none(),
                ready: matches!(phase, OpsPhase::Ready | OpsPhase::Reloading) && serving > 0,
                reforks: self.ops.reforks,
                backoff_ms: self.refork.backoff_ms().unwrap_or(0),
                malformed: self.ops.malformed,
                hung: self.ops.hung,
                hung_replaced: self.ops.hung_replaced,
                reloads: self.ops.reloads,
                reloads_failed: self.ops.reloads_failed,
                refork_held,
                upgrading_to: self.upgrading_to(),
            },
            children: children
                .into_iter()
                .map(|c| {
                    let history = self.ops.slots.get(&slot_key(c.role, c.slot));
                    ChildStatus {
                        role: c.role.as_str(),
                        id: c.id,
                        pid: c.pid,
                        slot: c.slot,
                        state: phase_str(c.phase),
                        started_at: c.spawned_at,
                        serving_since: c.serving_since,
                        restarts: history.map_or(0, |h| h.restarts),
                        last_exit: history.and_then(|h| h.last_exit.clone()),
                        malformed: c.malformed,
                        lag_ms: c.lag_ms,
                        hung_since: c.hung_since,
                    }
                })
                .collect(),
        }
    }

    /// A status request: answered at once with the core's half.
    pub(super) fn on_status_request(&self, to: StatusTo, out: &mut Vec<Action>) {
        out.push(Action::Status(to, Box::new(self.status())));
    }
}
