//! What dead children leave behind: the processes an app worker or the agent started, alive
//! after it died unexpectedly (a crash, a SIGKILL, the OOM killer). Nothing finds them from the
//! master's tree any more (init adopted them), so the runtime looks for them by the marker every
//! child's environment carries (`process::orphans`); they are terminated like a worker's own
//! descendants at a close (SIGTERM, SIGKILL after the app close timeout). Looked for after each
//! unexpected exit, and once more at the end of the close, which waits for them before the exit.
//!
//! A retiring worker, or one stopped by the close, has its descendants terminated with it (read
//! before its signal): only unexpected exits leave orphans.

use super::children::Phase;
use super::{Action, Core};
use crate::log::Level;

/// A process a dead child left behind, as the runtime found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Orphan {
    pub(crate) pid: u32,
    /// Its start time: a later process with its pid is not signalled.
    pub(crate) start: u64,
    pub(crate) cmd: String,
}

impl Core {
    /// Before `pid`'s exit is handled: whether it may have left orphans (it died on its own,
    /// not in a close or a retirement that terminated its tree, and it is a process).
    pub(super) fn exit_leaves_orphans(&self, pid: u32) -> bool {
        !self.cfg.threads
            && !self.closing()
            && self
                .children
                .get(pid)
                .is_some_and(|c| c.phase != Phase::Retiring)
    }

    /// The close is done with the agent: the orphans go last, then the exit.
    pub(super) fn close_orphans(&mut self, out: &mut Vec<Action>) {
        if self.cfg.threads {
            self.exit_after_close(out);
            return;
        }
        out.push(Action::FindOrphans { at_close: true });
    }

    pub(super) fn on_orphans(&mut self, found: Vec<Orphan>, at_close: bool, out: &mut Vec<Action>) {
        if found.is_empty() {
            if at_close {
                self.exit_after_close(out);
            }
            return;
        }
        let limit = self.cfg.app_close.limit;
        let list: Vec<String> = found
            .iter()
            .map(|o| format!("{} ({})", o.pid, o.cmd))
            .collect();
        let n = found.len();
        out.push(Action::Log(
            Level::Warn,
            format!(
                "[master] {n} process{} left behind by dead workers: {}; terminating {} (SIGKILL after {}ms)",
                if n == 1 { "" } else { "es" },
                list.join(", "),
                if n == 1 { "it" } else { "them" },
                limit.as_millis()
            ),
        ));
        out.push(Action::TerminateOrphans {
            orphans: found,
            limit,
            at_close,
        });
    }

    pub(super) fn on_orphans_gone(&mut self, out: &mut Vec<Action>) {
        if self.closing() {
            self.exit_after_close(out);
        }
    }

    fn exit_after_close(&mut self, out: &mut Vec<Action>) {
        self.verbose(out, "[master] close done, exiting with code:0".into());
        out.push(Action::Exit(0));
    }
}
