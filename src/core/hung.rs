//! Hung children: every child's event loop proves it runs with a heartbeat (a tick of a timer on
//! its main JS thread, `lib/heartbeat.js`, which also says how late the timer fired: the
//! event-loop lag). A serving child whose loop has been blocked for longer than `workerTimeout`
//! is hung: the master asks the child's watchdog thread for a diagnostic report (where its JS is
//! stuck), logs it, and replaces it — an app worker by a rolling replacement of its slot, after
//! which the hung one is SIGKILLed (it cannot drain); the agent by a SIGKILL, after which egg's
//! agent-died rule reforks it in 1 s.
//!
//! Every step is decided on what is true when it is taken: a child that ticks again is no
//! longer hung, whatever was found before. It is not killed: kept, or — when its replacement is
//! already on its way — drained like any replaced worker once the replacement serves.
//!
//! An app worker that does not serve within the start timeout after its spawn is hung too:
//! it is reported, SIGKILLed and reforked under the refork limit.

use std::time::Duration;

use super::children::{Child, Phase};
use super::{Action, Core, ReloadReason, Timer};
use crate::log::Level;
use crate::messenger::Role;

/// What the runtime found of a hung child's report, answering [`Action::CollectReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HungReport {
    /// The report file (relative to the app's base dir when under it), or why there is none.
    pub(crate) file: Result<String, NoReport>,
    /// The top JavaScript frames of the stuck thread (`fn (file:line:col)`).
    pub(crate) frames: Vec<String>,
}

impl HungReport {
    pub(crate) fn none(why: NoReport) -> Self {
        HungReport {
            file: Err(why),
            frames: Vec::new(),
        }
    }
}

/// Why a hung child has no report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NoReport {
    /// A worker thread has no watchdog thread (a thread cannot reach a sibling's inspector).
    Thread,
    /// The master could not ask for one: the report directory (as shown) is not writable,
    /// so no report could be written there either.
    Unwritable { dir: String, error: String },
    /// The child's watchdog thread tried, and says why it wrote none.
    Failed(String),
    /// The watchdog thread never took the request: the whole process is stopped, or the
    /// thread is gone.
    NotTaken,
    /// The watchdog thread took the request and wrote nothing within the wait.
    NotWritten(Duration),
}

impl NoReport {
    /// What the hung line says after `report: `.
    pub(super) fn shown(&self) -> String {
        match self {
            NoReport::Thread => "none (worker threads have no watchdog thread to write one)".into(),
            NoReport::Unwritable { dir, error } => {
                format!("not written (cannot write to {dir}: {error})")
            }
            NoReport::Failed(why) => format!("not written ({why})"),
            NoReport::NotTaken => "not written (the worker's watchdog thread did not take the request: is the process stopped, or the thread gone?)".into(),
            NoReport::NotWritten(wait) => format!(
                "not written (the worker's watchdog thread took the request and wrote nothing within {} s)",
                wait.as_secs()
            ),
        }
    }
}

/// How many frames the error line shows.
const FRAMES_LOGGED: usize = 3;

/// How long the master waits for a report it asked for: the watchdog thread looks for the
/// request every heartbeat interval while the main thread does not tick, then has a shorter
/// limit of its own for pausing it (`runtime::hung`), so that it can say why it failed in time.
pub(crate) fn report_wait(interval: Duration) -> Duration {
    interval * 3 + Duration::from_secs(2)
}

impl Child {
    /// Since when nothing proves its event loop ran: its last tick, else when it started
    /// serving (it had just said so), else its spawn.
    fn silent_since(&self) -> u64 {
        self.beat_at
            .or(self.serving_since)
            .unwrap_or(self.spawned_at)
    }
}

fn seconds(ms: u64) -> u64 {
    (ms as f64 / 1000.0).round() as u64
}

impl Core {
    /// A tick from `pid`'s event loop, fired `lag_ms` later than its timer asked. A hung child
    /// that ticks again has recovered: it is no longer hung, and nothing kills it.
    pub(super) fn on_heartbeat(&mut self, pid: u32, lag_ms: u64, now: u64, out: &mut Vec<Action>) {
        let Some(c) = self.children.get_mut(pid) else {
            return;
        };
        let silent_since = c.silent_since();
        c.beat_at = Some(now);
        // A tick measures the loop since the previous one: the first after the child serves
        // still covers its boot (loading egg blocks the loop for seconds), which is no lag
        // of a serving child. The lag is reported from a whole heartbeat after it serves.
        let serving = c.phase >= Phase::Serving;
        if serving && c.beat_serving {
            c.lag_ms = Some(lag_ms);
        }
        c.beat_serving = serving;
        if c.phase != Phase::Serving || c.hung_since.take().is_none() {
            return;
        }
        let name = c.name();
        let replacing =
            c.role == Role::App && self.reload.as_ref().is_some_and(|r| r.will_replace(pid));
        let what = if replacing {
            "its replacement is on its way: it serves until then, and is then drained, not killed"
        } else {
            "keeping it"
        };
        out.push(Action::Log(
            Level::Warn,
            format!(
                "[master] {name} answers again after {} s (its event loop was blocked, not stuck for good); {what}",
                seconds(now.saturating_sub(silent_since))
            ),
        ));
    }

    /// Every heartbeat interval once up: finds the serving children blocked for too long.
    pub(super) fn on_hung_check(&mut self, now: u64, out: &mut Vec<Action>) {
        let Some(timeout) = self.cfg.worker_timeout else {
            return;
        };
        if self.closing() {
            return;
        }
        let interval = self.cfg.heartbeat_interval;
        // A loop that runs ticks every interval: silence proves it blocked only from when the
        // next tick was due. Counting from the last tick would find a block up to one
        // interval shorter than `workerTimeout` hung.
        let limit = (timeout + interval).as_millis() as u64;
        let away = self.master_was_away(now, timeout.as_millis() as u64, out);
        self.arm_hung_check(now, out);
        if away {
            return;
        }
        let hung: Vec<u32> = self
            .children
            .all()
            .filter(|c| c.phase == Phase::Serving && c.hung_since.is_none())
            .filter(|c| now.saturating_sub(c.silent_since()) > limit)
            .map(|c| c.pid)
            .collect();
        for pid in hung {
            let Some(c) = self.children.get_mut(pid) else {
                continue;
            };
            c.hung_since = Some(now);
            // What the report says it is for (its JavaScript stack's message).
            let message = format!(
                "egg-cluster-rs: {} hung: no heartbeat for {} s, its event loop blocked (workerTimeout {}ms)",
                c.name(),
                seconds(now.saturating_sub(c.silent_since())),
                timeout.as_millis()
            );
            self.ops.hung += 1;
            out.push(Action::CollectReport {
                pid,
                wait: report_wait(interval),
                message,
            });
        }
    }

    /// Whether this master itself did not run for a while before this check, which then comes
    /// late (SIGSTOP, a host that starved it): the silence it would measure is partly its own,
    /// and the heartbeats of that time are still unread in the channels. The children's silence is
    /// counted from now instead, so that a stopped master does not, once continued, take every
    /// child for hung; a child hung all along is found a hung check's limit later.
    fn master_was_away(&mut self, now: u64, timeout_ms: u64, out: &mut Vec<Action>) -> bool {
        let late = self.hung_check_due.map_or(0, |due| now.saturating_sub(due));
        if late <= timeout_ms / 2 {
            return false;
        }
        // One found hung before keeps its silence: its report's line says how long.
        let pids: Vec<u32> = self
            .children
            .all()
            .filter(|c| c.hung_since.is_none())
            .map(|c| c.pid)
            .collect();
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

    /// The report of hung `pid` is in (or is not coming): log where it is stuck, replace it —
    /// unless it ticked again meanwhile.
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
        let (role, phase, name) = (c.role, c.phase, c.name());
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
        let Some(since) = c.hung_since else {
            // It answered again first (and is kept, or drained): where it was blocked is
            // still worth knowing.
            if let (Ok(file), Phase::Serving) = (&report.file, phase) {
                out.push(Action::Log(
                    Level::Warn,
                    format!("[master] {name} was blocked{at}; report: {file}"),
                ));
            }
            return;
        };
        let secs = seconds(since.saturating_sub(c.silent_since()));
        let file = match &report.file {
            Ok(file) => file.clone(),
            Err(why) => {
                if let NoReport::Unwritable { dir, error } = why {
                    out.push(Action::Log(
                        Level::Warn,
                        format!("[master] the hung report of {name} could not be written: {dir} is not writable ({error})"),
                    ));
                }
                why.shown()
            }
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
            // Being killed: a tick it sent before does not make it kept.
            if let Some(c) = self.children.get_mut(pid) {
                c.phase = Phase::Retiring;
            }
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
