//! worker_threads mode (egg-cluster's `startMode: 'worker_threads'`): the agent and the app
//! workers are threads of the master, named by their thread id where a process has its pid.
//!
//! Everything else is the process mode's (the threads speak the same channel and cluster
//! protocol); what differs is here: egg-cluster's thread lines, an app thread that dies after
//! the start is restarted after 1 s whatever the env (cfork is not involved), and with `ports`
//! each app thread serves its own port.

use std::time::Duration;

use super::children::{Child, Phase};
use super::{js_opt, Action, Batch, Core, Target, Timer};
use crate::messenger::Role;

impl Core {
    /// egg-cluster's line for each app thread it creates.
    pub(super) fn log_thread_starts(&self, tids: &[u32], out: &mut Vec<Action>) {
        for app in self.children.apps().filter(|a| tids.contains(&a.pid)) {
            self.verbose(
                out,
                format!("[master] app_worker#{} (tid:{}) start", app.id, app.pid),
            );
        }
    }

    /// With `ports`, the port the thread's slot serves (the one its listen counts on).
    pub(super) fn thread_port(&self, tid: u32) -> Option<u16> {
        if !self.cfg.threads {
            return None;
        }
        let slot = self.children.get(tid)?.slot?;
        self.cfg.slot_ports.get(slot).copied()
    }

    /// An app thread ended (it was removed from the children already; `current` lists the
    /// app workers before that).
    pub(super) fn on_thread_exit(
        &mut self,
        app: Child,
        current: &[u32],
        code: Option<i32>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        if self.closing() {
            return;
        }
        if app.phase == Phase::Retiring {
            self.on_retired_exit(&app, code, None, out);
            self.reload_on_exit(&app, code, None, now, out);
            self.scaling_on_exit(&app, code, None, now, out);
            return;
        }
        let replaced = self.reload_on_exit(&app, code, None, now, out)
            | self.scaling_on_exit(&app, code, None, now, out);
        // egg-cluster prints `code: undefined, signal: undefined, suicide: true` for every
        // thread (it reads an `exitCode` a Worker does not have); the real exit code is here.
        out.push(Action::LogError(
            "AppWorkerDiedError",
            format!(
                "[master] {} died (code: {}, signal: null, suicide: {}, state: dead), current workers: {}",
                app.name(),
                js_opt(code),
                app.exited_after_disconnect,
                serde_json::to_string(current).unwrap_or_default(),
            ),
        ));
        let pids = self.children.listening_pids_json();
        self.send_agent(out, "egg-pids", Some(&pids));
        if !self.all_started {
            Self::start_fail(&app.name(), out);
            return;
        }
        Self::send(out, Target::Parent, Role::Parent, "app-worker-died", None);
        if !replaced {
            if let Some(slot) = app.slot {
                self.verbose(
                    out,
                    format!("[master] app_worker#{} restarts after 1s", app.id),
                );
                out.push(Action::After(
                    Duration::from_secs(1),
                    Timer::ReforkThread { id: app.id, slot },
                ));
            }
        }
    }

    /// egg-cluster restarts a dead app thread under its old id, in its old place.
    pub(super) fn refork_thread(&mut self, id: u32, slot: usize, out: &mut Vec<Action>) {
        if self.closing() {
            return;
        }
        let taken = self
            .children
            .apps()
            .any(|c| c.slot == Some(slot) && c.phase != Phase::Disconnected);
        let slot = if taken {
            self.children.free_slot(&[])
        } else {
            slot
        };
        self.ops.reforks += 1;
        out.push(Action::SpawnApps {
            batch: Batch::Refork,
            apps: vec![(id, slot)],
        });
    }

    /// An uncaught exception ended a thread: egg-cluster logs the agent's as an
    /// `AgentWorkerError` (an app thread's would crash its master; here it is logged too).
    pub(super) fn on_thread_error(&mut self, tid: u32, message: &str, out: &mut Vec<Action>) {
        let name = match self.children.get(tid).map(|c| c.role) {
            Some(Role::Agent) => "AgentWorkerError",
            _ => "AppWorkerError",
        };
        out.push(Action::LogError(name, message.to_string()));
    }

    /// What the close does to a thread (a `SIGTERM` its handlers get, then
    /// `worker.terminate()`), in egg-cluster's place for its `kill ... by worker.terminate()`.
    pub(super) fn log_thread_close(&self, children: &[&Child], shown: &str, out: &mut Vec<Action>) {
        for c in children {
            self.verbose(
                out,
                format!(
                    "[master] kill {}_worker#{} (tid:{}) (worker_threads): SIGTERM handlers now, worker.terminate() after {shown}ms",
                    c.role.as_str(),
                    c.id,
                    c.pid
                ),
            );
        }
    }
}
