//! Closing on SIGINT/SIGQUIT/SIGTERM, in egg-cluster's `_doClose` order: every app worker
//! (SIGTERM, SIGKILL after the app close timeout), then the agent (the same with its own
//! timeout), then what dead workers left behind (`orphans.rs`), then exit 0. A second signal
//! changes nothing.
//!
//! With a `shutdownDelay` (Kubernetes keeps routing to a terminating pod for a few seconds
//! after its SIGTERM), the close waits that long first: the master stops being ready at once
//! (`/readyz` 503, systemd `STOPPING=1`) while the workers go on accepting and serving. A second
//! signal during the delay ends it: the close begins at once.
//!
//! Each step SIGKILLs what is left at its timeout, so the close ends by their sum; only a child
//! that even SIGKILL does not end (stuck in the kernel: a hung NFS or FUSE read) could hold it.
//! @eggjs/cluster 4 exits 2 after a fixed 15 s, which also cuts a close whose timeouts were set
//! longer; here the deadline is the steps' timeouts and [`CLOSE_MARGIN`] (15 s at the defaults,
//! 20 s with the orphans' step, which processes have and threads do not: an orphan that ignores
//! its SIGTERM is SIGKILLed before the deadline, not left behind by an exit 2).

use std::time::Duration;

use super::{Action, Core, Group, MasterPhase, Timer};
use crate::log::Level;

/// How long past the app and agent close timeouts the close may take before the master gives up
/// on it and exits 2.
pub(crate) const CLOSE_MARGIN: Duration = Duration::from_secs(5);

impl Core {
    pub(super) fn on_signal(
        &mut self,
        signal: &str,
        heap_limit: f64,
        heap_used: f64,
        mem_total: u64,
        mem_free: u64,
        out: &mut Vec<Action>,
    ) {
        if self.phase == MasterPhase::ShutdownDelay {
            out.push(Action::Log(
                Level::Info,
                format!("[master] {signal} during the shutdown delay: closing now"),
            ));
            self.close_apps(out);
            return;
        }
        if self.closing() {
            return;
        }
        let info = |out: &mut Vec<Action>, msg: String| out.push(Action::Log(Level::Info, msg));
        info(
            out,
            format!("[master] master is killed by signal {signal}, closing"),
        );
        info(
            out,
            format!("[master] system memory: total {mem_total}, free {mem_free}"),
        );
        info(
            out,
            format!("[master] process info: heap_limit {heap_limit}, heap_used {heap_used}"),
        );
        self.abort_upgrade(signal, out);
        self.abort_waits("this master is closing", out);
        let delay = self.cfg.shutdown_delay;
        if delay.is_zero() {
            self.begin_close(out);
            return;
        }
        self.phase = MasterPhase::ShutdownDelay;
        for app in self.children.apps_mut() {
            app.disable_refork = true;
        }
        info(
            out,
            format!(
                "[master] shutdownDelay: not ready any more, the workers serve for another {}ms before the close",
                delay.as_millis()
            ),
        );
        out.push(Action::After(delay, Timer::ShutdownDelay));
    }

    pub(super) fn on_shutdown_delay_over(&mut self, out: &mut Vec<Action>) {
        if self.phase == MasterPhase::ShutdownDelay {
            self.close_apps(out);
        }
    }

    /// egg-cluster's `close()`: what a signal does after its lines, and what a debugger's
    /// SIGKILL of an app worker does (see `exits.rs`).
    pub(super) fn begin_close(&mut self, out: &mut Vec<Action>) {
        if self.closing() {
            return;
        }
        self.close_apps(out);
    }

    /// The close proper: the app workers first.
    fn close_apps(&mut self, out: &mut Vec<Action>) {
        self.phase = MasterPhase::Closing;
        self.abort_waits("this master is closing", out);
        for app in self.children.apps_mut() {
            app.disable_refork = true;
        }
        let info = |out: &mut Vec<Action>, msg: String| out.push(Action::Log(Level::Info, msg));
        let shown = &self.cfg.app_close.shown;
        info(
            out,
            format!(
                "[master] send kill SIGTERM to app workers, will exit with code:0 after {shown}ms"
            ),
        );
        info(out, format!("[master] wait {shown}ms"));
        if self.cfg.threads {
            let apps: Vec<_> = self.children.apps().collect();
            self.log_thread_close(&apps, shown, out);
        }
        out.push(Action::TerminateGroup {
            group: Group::Apps,
            pids: self.children.apps().map(|a| a.pid).collect(),
            limit: self.cfg.app_close.limit,
        });
        out.push(Action::After(self.close_deadline(), Timer::CloseTimeout));
    }

    fn close_deadline(&self) -> Duration {
        self.cfg.app_close.limit + self.cfg.agent_close.limit + self.orphans_step() + CLOSE_MARGIN
    }

    /// The longest the close's last step, terminating orphans, may take (none with threads).
    fn orphans_step(&self) -> Duration {
        if self.cfg.threads {
            Duration::ZERO
        } else {
            self.cfg.app_close.limit
        }
    }

    /// The close is still not over at its deadline: @eggjs/cluster 4's line, and exit 2.
    pub(super) fn on_close_timeout(&mut self, out: &mut Vec<Action>) {
        if self.phase != MasterPhase::Closing {
            return;
        }
        let left: Vec<String> = self.children.all().map(|c| c.name()).collect();
        out.push(Action::Log(
            Level::Error,
            format!(
                "[master] the close is not over {}ms after it began ({} and {}ms); still alive: {}",
                self.close_deadline().as_millis(),
                if self.cfg.threads {
                    "both close timeouts"
                } else {
                    "the app, agent and orphans' close timeouts"
                },
                CLOSE_MARGIN.as_millis(),
                if left.is_empty() {
                    "none".to_string()
                } else {
                    left.join(", ")
                }
            ),
        ));
        self.verbose(out, "[master] close timeout, exiting with code:2".into());
        out.push(Action::Exit(2));
    }

    pub(super) fn on_terminated(&mut self, group: Group, out: &mut Vec<Action>) {
        match group {
            Group::Apps => {
                let shown = &self.cfg.agent_close.shown;
                out.push(Action::Log(
                    Level::Info,
                    format!("[master] send kill SIGTERM to agent worker, will exit with code:0 after {shown}ms"),
                ));
                out.push(Action::Log(Level::Info, format!("[master] wait {shown}ms")));
                let agent: Vec<u32> = self.children.agent().map(|a| a.pid).into_iter().collect();
                if self.cfg.threads {
                    let agent: Vec<_> = self.children.agent().into_iter().collect();
                    self.log_thread_close(&agent, shown, out);
                } else if !agent.is_empty() {
                    self.verbose(out, "[master] kill agent worker with signal SIGTERM".into());
                }
                out.push(Action::TerminateGroup {
                    group: Group::Agent,
                    pids: agent,
                    limit: self.cfg.agent_close.limit,
                });
            }
            Group::Agent => self.close_orphans(out),
            Group::Orphans => self.on_orphans_gone(out),
        }
    }
}
