//! One record per child process (the agent and every app worker), keyed by pid.
//!
//! A child's whole state is here: its role and id, where it is in its life ([`Phase`]), the
//! worker slot it owns, and the few cfork facts its log lines report. An exit is one removal.

use crate::messenger::Role;

/// Where a child is in its life. Ordered: a child only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// An app worker started early (with the agent): it loads the framework and waits for the
    /// go-ahead before constructing its Application. It gets no messages yet.
    Waiting,
    /// Spawned (cluster state `none`); for the agent: booting.
    Forked,
    /// The cluster `online` message came (app workers only).
    Online,
    /// Listening on some port, not (yet) the real one (cluster state `listening`).
    Listening,
    /// Listening on the real port: counted as started, serving traffic. For the agent:
    /// `agent-start` came.
    Serving,
    /// Being replaced or scaled down: SIGTERMed, it stops accepting, drains and exits. It no
    /// longer counts as serving and is not reforked (its channel may already be closed).
    Retiring,
    /// Its IPC channel closed; it is about to exit (or be terminated).
    Disconnected,
}

impl Phase {
    /// The cluster worker state egg-cluster and cfork print.
    pub(crate) fn cluster_state(self) -> &'static str {
        match self {
            Phase::Waiting | Phase::Forked => "none",
            Phase::Online => "online",
            Phase::Listening | Phase::Serving | Phase::Retiring => "listening",
            Phase::Disconnected => "disconnected",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Child {
    pub(crate) role: Role,
    /// `agent_worker#id` / `app_worker#id`: counts from 1 per role, never reused.
    pub(crate) id: u32,
    pub(crate) pid: u32,
    pub(crate) phase: Phase,
    /// The app worker slot (0..workers) it owns: sticky clients and `reusePort` sockets belong
    /// to a slot, so a replacement takes over its predecessor's.
    pub(crate) slot: Option<usize>,
    pub(crate) spawned_at: u64,
    /// When it started serving on the real port.
    pub(crate) serving_since: Option<u64>,
    /// cluster's `exitedAfterDisconnect` (the worker asked to disconnect).
    pub(crate) exited_after_disconnect: bool,
    /// cfork's `worker.disableRefork`: set until the app has started, and during close.
    pub(crate) disable_refork: bool,
    /// cfork already decided about this worker's refork (at its disconnect).
    pub(crate) refork_handled: bool,
    /// What it told about its failed boot (`egg-cluster-rs:boot-error`): the error, and the
    /// file when known.
    pub(crate) boot_error: Option<(String, Option<String>)>,
    /// Malformed messages so far, so a flood is logged at 1..16, 32, 64, ... only.
    pub(crate) malformed: u64,
    /// When its last heartbeat came, and how late that tick's timer fired (ms).
    pub(crate) beat_at: Option<u64>,
    pub(crate) lag_ms: Option<u64>,
    /// Its last heartbeat came while it served: the next one measures serving time only.
    pub(crate) beat_serving: bool,
    /// When the master found it hung (silent past `workerTimeout`).
    pub(crate) hung_since: Option<u64>,
}

impl Child {
    pub(crate) fn new(role: Role, id: u32, pid: u32, slot: Option<usize>, now: u64) -> Self {
        Child {
            role,
            id,
            pid,
            phase: Phase::Forked,
            slot,
            spawned_at: now,
            serving_since: None,
            exited_after_disconnect: false,
            disable_refork: false,
            refork_handled: false,
            boot_error: None,
            malformed: 0,
            beat_at: None,
            lag_ms: None,
            beat_serving: false,
            hung_since: None,
        }
    }

    /// `agent_worker#1:1234` / `app_worker#2:1235`, as every log line names a child.
    pub(crate) fn name(&self) -> String {
        format!("{}_worker#{}:{}", self.role.as_str(), self.id, self.pid)
    }

    /// Whether messages reach it (egg-cluster skips disconnected workers; a waiting worker
    /// has no Application to receive them yet).
    pub(crate) fn reachable(&self) -> bool {
        !matches!(self.phase, Phase::Waiting | Phase::Disconnected)
    }

    /// Listening in cluster terms (egg-cluster's `getListeningWorkerIds`).
    pub(crate) fn listening(&self) -> bool {
        matches!(self.phase, Phase::Listening | Phase::Serving)
    }
}

/// Every live child, in spawn order (log lines and `egg-pids` list them in that order).
#[derive(Debug, Default)]
pub(crate) struct Children {
    all: Vec<Child>,
    agent_seq: u32,
    app_seq: u32,
}

impl Children {
    pub(crate) fn next_id(&mut self, role: Role) -> u32 {
        let seq = if role == Role::Agent {
            &mut self.agent_seq
        } else {
            &mut self.app_seq
        };
        *seq += 1;
        *seq
    }

    pub(crate) fn add(&mut self, child: Child) {
        self.all.push(child);
    }

    pub(crate) fn get(&self, pid: u32) -> Option<&Child> {
        self.all.iter().find(|c| c.pid == pid)
    }

    pub(crate) fn get_mut(&mut self, pid: u32) -> Option<&mut Child> {
        self.all.iter_mut().find(|c| c.pid == pid)
    }

    pub(crate) fn remove(&mut self, pid: u32) -> Option<Child> {
        let idx = self.all.iter().position(|c| c.pid == pid)?;
        Some(self.all.remove(idx))
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Child> {
        self.all.iter()
    }

    pub(crate) fn agent(&self) -> Option<&Child> {
        self.all.iter().find(|c| c.role == Role::Agent)
    }

    pub(crate) fn apps(&self) -> impl Iterator<Item = &Child> {
        self.all.iter().filter(|c| c.role == Role::App)
    }

    pub(crate) fn apps_mut(&mut self) -> impl Iterator<Item = &mut Child> {
        self.all.iter_mut().filter(|c| c.role == Role::App)
    }

    /// The app workers messages reach, in spawn order.
    pub(crate) fn reachable_apps(&self) -> Vec<u32> {
        self.apps()
            .filter(|c| c.reachable())
            .map(|c| c.pid)
            .collect()
    }

    /// `egg-pids` for the agent: the listening app workers.
    pub(crate) fn listening_pids_json(&self) -> Vec<u8> {
        let pids: Vec<u32> = self
            .apps()
            .filter(|c| c.listening())
            .map(|c| c.pid)
            .collect();
        serde_json::to_vec(&pids).unwrap_or_else(|_| b"[]".to_vec())
    }

    /// The lowest slot no app worker owns. A disconnected worker has given its slot up: its
    /// replacement takes the slot over (and with it the slot's sticky clients and queued
    /// `reusePort` connections) while it is still exiting.
    pub(crate) fn free_slot(&self, exclude: &[usize]) -> usize {
        (0..)
            .find(|s| {
                !exclude.contains(s)
                    && !self
                        .apps()
                        .any(|c| c.slot == Some(*s) && c.phase != Phase::Disconnected)
            })
            .unwrap_or(0)
    }

    /// The serving worker of each of `slots` slots (sticky hand-over).
    pub(crate) fn serving_by_slot(&self, slots: usize) -> Vec<Option<u32>> {
        let mut out = vec![None; slots];
        for c in self.apps().filter(|c| c.phase == Phase::Serving) {
            if let Some(s) = c.slot.and_then(|s| out.get_mut(s)) {
                *s = Some(c.pid);
            }
        }
        out
    }
}
