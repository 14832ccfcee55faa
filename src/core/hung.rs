//! Hung children: every child's event loop proves it runs with a heartbeat (a tick of a timer on
//! its main JS thread, `lib/heartbeat.js`, which also says how late the timer fired: the
//! event-loop lag). A serving child silent for longer than `workerTimeout` is hung: the master
//! collects the diagnostic report the child's watchdog thread wrote (where its JS is stuck),
//! logs it, and replaces it — an app worker by a rolling replacement of its slot, after which
//! the hung one is SIGKILLed (it cannot drain); the agent by a SIGKILL, after which egg's
//! agent-died rule reforks it in 1 s.
//!
//! An app worker that does not serve within the start timeout after its spawn is hung too:
//! it is reported, SIGKILLed and reforked under the refork limit.

use std::time::Duration;

use super::children::Phase;
use super::{Action, Core, ReloadReason, Timer};
use crate::log::Level;
use crate::messenger::Role;

/// What the runtime found of a hung child's report, answering [`Action::CollectReport`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct HungReport {
    /// The report file, relative to the app's base dir when under it.
    pub(crate) file: Option<String>,
    /// The top JavaScript frames of the stuck thread (`fn (file:line:col)`).
    pub(crate) frames: Vec<String>,
    /// None came, and the report dir refuses writes: why (`run/ is not writable (...)`).
    pub(crate) not_written: Option<String>,
}

/// How many frames the error line shows.
const FRAMES_LOGGED: usize = 3;

impl Core {
    /// A tick from `pid`'s event loop, fired `lag_ms` later than its timer asked.
    pub(super) fn on_heartbeat(&mut self, pid: u32, lag_ms: u64, now: u64) {
        if let Some(c) = self.children.get_mut(pid) {
            c.beat_at = Some(now);
            // A tick measures the loop since the previous one: the first after the child serves
            // still covers its boot (loading egg blocks the loop for seconds), which is no lag
            // of a serving child. The lag is reported from a whole heartbeat after it serves.
            let serving = c.phase >= Phase::Serving;
            if serving && c.beat_serving {
                c.lag_ms = Some(lag_ms);
            }
            c.beat_serving = serving;
        }
    }

    /// Every heartbeat interval once up: finds the serving children silent for too long.
    pub(super) fn on_hung_check(&mut self, now: u64, out: &mut Vec<Action>) {
        let Some(timeout) = self.cfg.worker_timeout else {
            return;
        };
        if self.closing() {
            return;
        }
        let limit = timeout.as_millis() as u64;
        let away = self.master_was_away(now, limit, out);
        self.arm_hung_check(now, out);
        if away {
            return;
        }
        let hung: Vec<u32> = self
            .children
            .all()
            .filter(|c| c.phase == Phase::Serving && c.hung_since.is_none())
            .filter(|c| {
                // A child that never ticked is measured from when it started serving.
                let since = c.beat_at.or(c.serving_since).unwrap_or(c.spawned_at);
                now.saturating_sub(since) > limit
            })
            .map(|c| c.pid)
            .collect();
        for pid in hung {
            if let Some(c) = self.children.get_mut(pid) {
                c.hung_since = Some(now);
            }
            self.ops.hung += 1;
            out.push(Action::CollectReport {
                pid,
                // The watchdog thread writes the report about when the master notices; give
                // it a few heartbeats more.
                wait: self.cfg.heartbeat_interval * 3 + Duration::from_secs(2),
            });
        }
    }

    /// Whether this master itself did not run for a while before this check, which then comes
    /// late (SIGSTOP, a host that starved it): the silence it would measure is partly its own,
    /// and the heartbeats of that time are still unread in the channels. The children's silence is
    /// counted from now instead, so that a stopped master does not, once continued, take every
    /// child for hung; a child hung all along is found `workerTimeout` later.
    fn master_was_away(&mut self, now: u64, limit: u64, out: &mut Vec<Action>) -> bool {
        let late = self.hung_check_due.map_or(0, |due| now.saturating_sub(due));
        if late <= limit / 2 {
            return false;
        }
        let pids: Vec<u32> = self.children.all().map(|c| c.pid).collect();
        for pid in pids {
            if let Some(c) = self.children.get_mut(pid) {
                c.beat_at = Some(now);
            }
        }
        out.push(Action::Log(
            Level::Warn,
            format!(
                "[master] this master did not run for {:.1} s (stopped, or starved of CPU): the children's silence is counted from now",
                late as f64 / 1000.0
            ),
        ));
        true
    }

    /// The next hung check, due one heartbeat interval from now.
    pub(super) fn arm_hung_check(&mut self, now: u64, out: &mut Vec<Action>) {
        let interval = self.cfg.heartbeat_interval;
        self.hung_check_due = Some(now + interval.as_millis() as u64);
        out.push(Action::After(interval, Timer::HungCheck));
    }

    /// The report of hung `pid` is in (or is not coming): log where it is stuck, replace it.
    pub(super) fn on_hung_report(
        &mut self,
        pid: u32,
        report: HungReport,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(c) = self.children.get(pid) else {
            return;
        };
        let Some(since) = c.hung_since else {
            return;
        };
        let (role, phase, name) = (c.role, c.phase, c.name());
        let silent_since = c.beat_at.or(c.serving_since).unwrap_or(c.spawned_at);
        let secs = (since.saturating_sub(silent_since) as f64 / 1000.0).round() as u64;
        let at = if report.frames.is_empty() {
            String::new()
        } else {
            let frames: Vec<&str> = report
                .frames
                .iter()
                .take(FRAMES_LOGGED)
                .map(String::as_str)
                .collect();
            format!(" at {}", frames.join(" < "))
        };
        let file = match (&report.file, &report.not_written) {
            (Some(file), _) => file.clone(),
            (None, Some(why)) => {
                out.push(Action::Log(
                    Level::Warn,
                    format!("[master] the hung report of {name} could not be written: {why}"),
                ));
                format!("none (not written: {why})")
            }
            (None, None) => "none (its JS thread never stopped: stuck in native code?)".to_string(),
        };
        let closing = self.closing() || phase != Phase::Serving;
        let what = match role {
            _ if closing => "",
            Role::Agent => "; killing it (egg reforks a dead agent after 1s)",
            _ => "; replacing it",
        };
        out.push(Action::LogError(
            "WorkerHungError",
            format!(
                "[master] {name} has not answered for {secs} s (event loop blocked){at}; report: {file}{what}"
            ),
        ));
        if closing {
            return;
        }
        if role == Role::Agent {
            out.push(Action::Terminate {
                pid,
                limit: Duration::ZERO,
            });
            return;
        }
        self.ops.hung_replaced += 1;
        self.replace_hung(pid, now, out);
    }

    /// Replaces hung app worker `pid` in its slot, the rolling way: its replacement starts now,
    /// it is SIGKILLed once the replacement serves (see [`Core::retire`]).
    fn replace_hung(&mut self, pid: u32, now: u64, out: &mut Vec<Action>) {
        if let Some(reload) = &mut self.reload {
            reload.put_first(pid);
            return;
        }
        self.on_reload(ReloadReason::Hung { pid }, now, out);
    }

    /// An app worker spawned at `spawned_at` must serve by now (its start timeout).
    pub(super) fn on_start_timeout(&mut self, pid: u32, out: &mut Vec<Action>) {
        let Some(timeout) = self.cfg.start_timeout else {
            return;
        };
        if self.closing() {
            return;
        }
        let Some(c) = self.children.get_mut(pid) else {
            return;
        };
        if c.phase >= Phase::Serving || c.role != Role::App {
            return;
        }
        // Not reforked by the exit handler's rule for workers that were never up: it is
        // reforked here, under the refork limit.
        let name = c.name();
        let state = c.phase.cluster_state();
        out.push(Action::LogError(
            "WorkerStartTimeoutError",
            format!(
                "[master] {name} did not listen within {}ms of its start (state: {state}); killing it",
                timeout.as_millis()
            ),
        ));
        self.ops.hung_replaced += 1;
        out.push(Action::Terminate {
            pid,
            limit: Duration::ZERO,
        });
    }

    /// A new app worker: its start timeout begins.
    pub(super) fn start_timer(&self, pid: u32, out: &mut Vec<Action>) {
        if let Some(timeout) = self.cfg.start_timeout {
            out.push(Action::After(timeout, Timer::StartTimeout { pid }));
        }
    }
}
