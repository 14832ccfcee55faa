//! The master upgrade (SIGHUP, `promise.upgrade()`, `egg-cluster-rs upgrade`): a new master,
//! started by this one with the same command line and environment, inherits the listening
//! sockets and boots its own agent and app workers on them while this tree serves. When the new
//! master says it is ready, this one closes as on SIGTERM (its workers stop accepting on sockets
//! the new workers accept on too, so nothing is refused) and exits 0. When it fails (exits
//! before it is ready, or is not ready in time), it is stopped and this tree serves on: the
//! rollback is simply not handing over.
//!
//! The decisions here are what may run and when; spawning, the readiness pipe and stopping a
//! failed new master are the runtime's ([`Action::SpawnMaster`], [`Action::StopMaster`]).

use std::time::Duration;

use super::{Action, Core, MasterPhase, Timer};
use crate::log::Level;

/// A request to upgrade, with what only the runtime knows at the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UpgradeRequest {
    /// Who gets the outcome ([`Action::UpgradeOutcome`]).
    pub(crate) waiter: u64,
    /// The master has a connected IPC parent (egg-bin dev, egg-mock, a launcher waiting for
    /// `egg-ready`).
    pub(crate) ipc_parent: bool,
}

/// Where the running upgrade is; `None` in [`Core`] when none runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// [`Action::SpawnMaster`] was given; its answer has not come.
    Spawning,
    /// The new master runs; its readiness has not come.
    AwaitingReady { pid: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Upgrade {
    /// Numbers upgrades, so that a late answer about an earlier one is recognised.
    seq: u64,
    phase: Phase,
    /// Everyone who asked while this one ran gets its outcome.
    waiters: Vec<u64>,
    started_at: u64,
}

impl Core {
    pub(super) fn on_upgrade(&mut self, req: UpgradeRequest, now: u64, out: &mut Vec<Action>) {
        if let Some(reason) = self.upgrade_refusal(req) {
            out.push(Action::Log(
                Level::Warn,
                format!("[master] upgrade refused: {reason}"),
            ));
            out.push(Action::UpgradeOutcome {
                waiters: vec![req.waiter],
                result: Err(reason),
            });
            return;
        }
        if let Some(up) = &mut self.upgrade {
            // One at a time; a second request waits for the running one's outcome.
            up.waiters.push(req.waiter);
            return;
        }
        self.upgrade_seq += 1;
        let seq = self.upgrade_seq;
        self.upgrade = Some(Upgrade {
            seq,
            phase: Phase::Spawning,
            waiters: vec![req.waiter],
            started_at: now,
        });
        out.push(Action::Log(
            Level::Info,
            "[master] upgrade: starting a new master with this one's command line, environment and listening sockets; this one serves until it is ready".into(),
        ));
        // A runtime scale is carried over: the new tree starts with the workers this one runs
        // now, not with the start option's count.
        out.push(Action::SpawnMaster {
            seq,
            workers: self.workers,
        });
        out.push(Action::After(
            self.cfg.upgrade_timeout,
            Timer::UpgradeTimeout(seq),
        ));
    }

    /// The new master of the upgrade in progress, once it runs.
    pub(super) fn upgrading_to(&self) -> Option<u32> {
        match self.upgrade.as_ref()?.phase {
            Phase::AwaitingReady { pid } => Some(pid),
            Phase::Spawning => None,
        }
    }

    /// Why an upgrade cannot run now, if it cannot. Each reason says what to do instead.
    fn upgrade_refusal(&self, req: UpgradeRequest) -> Option<String> {
        if self.cfg.threads {
            return Some("worker_threads mode: the app runs in this process's own threads, which another process cannot take over; restart the master instead".into());
        }
        if self.cfg.is_pid1 {
            return Some("this master is PID 1 (a container's init): the container ends with it, the new master too; run it under an init (tini, dumb-init, `docker run --init`) or deploy a new container (Kubernetes: a rolling update)".into());
        }
        if req.ipc_parent {
            return Some("this master has an IPC parent (egg-bin dev, egg-mock, a launcher): it talks to this process and would lose the cluster; use a reload (SIGUSR2) instead".into());
        }
        match self.phase {
            MasterPhase::Starting | MasterPhase::BindingSticky => {
                Some("the cluster is not ready yet".into())
            }
            MasterPhase::ShutdownDelay | MasterPhase::Closing | MasterPhase::Exited => {
                Some("this master is closing".into())
            }
            MasterPhase::Up => None,
        }
    }

    pub(super) fn on_upgrade_spawned(
        &mut self,
        seq: u64,
        result: Result<u32, String>,
        out: &mut Vec<Action>,
    ) {
        let Some(up) = self.upgrade.as_mut().filter(|u| u.seq == seq) else {
            // Stopped meanwhile (this master closes): a new master that came up anyway goes.
            if let Ok(pid) = result {
                out.push(self.stop_master(pid));
            }
            return;
        };
        match result {
            Ok(pid) => {
                up.phase = Phase::AwaitingReady { pid };
                out.push(Action::Log(
                    Level::Info,
                    format!(
                        "[master] upgrade: new master pid {pid} started, waiting for its ready"
                    ),
                ));
            }
            Err(e) => self.upgrade_failed(format!("cannot start a new master: {e}"), out),
        }
    }

    /// The new master's tree is ready: hand over.
    pub(super) fn on_upgrade_ready(&mut self, seq: u64, now: u64, out: &mut Vec<Action>) {
        let Some(Upgrade {
            phase: Phase::AwaitingReady { pid },
            waiters,
            started_at,
            ..
        }) = self.upgrade.clone().filter(|u| u.seq == seq)
        else {
            return;
        };
        self.upgrade = None;
        self.handed_over = true;
        out.push(Action::Log(
            Level::Info,
            format!(
                "[master] upgrade: new master pid {pid} is ready after {}ms; this master closes and leaves the sockets to it",
                now.saturating_sub(started_at)
            ),
        ));
        out.push(Action::UpgradeOutcome {
            waiters,
            result: Ok(pid),
        });
        // No shutdownDelay: it is for a load balancer that still routes here, and here the
        // new workers accept on the very sockets the old ones stop accepting on.
        out.push(Action::StopAccepting);
        self.begin_close(out);
    }

    /// The new master exited, or closed its readiness channel, before it was ready.
    pub(super) fn on_upgrade_failed(&mut self, seq: u64, reason: String, out: &mut Vec<Action>) {
        if self.upgrade.as_ref().is_some_and(|u| u.seq == seq) {
            self.upgrade_failed(reason, out);
        }
    }

    pub(super) fn on_upgrade_timeout(&mut self, seq: u64, out: &mut Vec<Action>) {
        if self.upgrade.as_ref().is_some_and(|u| u.seq == seq) {
            let ms = self.cfg.upgrade_timeout.as_millis();
            self.upgrade_failed(
                format!(
                    "the new master was not ready within {ms}ms (EGG_CLUSTER_RS_UPGRADE_TIMEOUT)"
                ),
                out,
            );
        }
    }

    /// This master closes (`signal`) while an upgrade runs: the new master goes too, as the
    /// one who asked for the close meant the whole cluster. Nothing serves on: the lines say so.
    pub(super) fn abort_upgrade(&mut self, signal: &str, out: &mut Vec<Action>) {
        let Some(up) = self.upgrade.take() else {
            return;
        };
        let line = match up.phase {
            Phase::AwaitingReady { pid } => {
                out.push(self.stop_master(pid));
                format!("[master] upgrade abandoned: {signal} came before new master pid {pid} was ready; it is stopped, and this master closes")
            }
            Phase::Spawning => format!("[master] upgrade abandoned: {signal} came while the new master was being started; it is stopped once started, and this master closes"),
        };
        out.push(Action::Log(Level::Warn, line));
        out.push(Action::UpgradeOutcome {
            waiters: up.waiters,
            result: Err("this master is closing".into()),
        });
    }

    fn upgrade_failed(&mut self, reason: String, out: &mut Vec<Action>) {
        let Some(up) = self.upgrade.take() else {
            return;
        };
        let who = match up.phase {
            Phase::AwaitingReady { pid } => {
                out.push(self.stop_master(pid));
                format!("new master pid {pid}")
            }
            Phase::Spawning => "new master".into(),
        };
        out.push(Action::Log(
            Level::Error,
            format!("[master] upgrade failed ({who}): {reason}; this master serves on"),
        ));
        out.push(Action::UpgradeOutcome {
            waiters: up.waiters,
            result: Err(reason),
        });
    }

    /// Stops a new master that will not take over, with its tree (it may have workers serving
    /// already): its own close first, then whatever is left of its process group.
    fn stop_master(&self, pid: u32) -> Action {
        Action::StopMaster {
            pid,
            limit: self.cfg.app_close.limit + self.cfg.agent_close.limit + Duration::from_secs(1),
        }
    }
}
