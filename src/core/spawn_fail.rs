//! A spawn that fails once the cluster is up — the master out of fds (EMFILE), the user out of
//! processes (EAGAIN), the host out of memory — is the host's fault, not a dead worker's: it
//! does not count towards cfork's refork limit (60 instant "deaths" and a crash-loop backoff
//! before), it is said once per streak (not once per attempt), and the spawn is retried after
//! a growing delay, 100 ms doubling to 5 s, so that the cluster is whole again soon after the
//! host recovers. The first success after a streak says so.

use std::time::Duration;

use super::{Action, Core, Timer};
use crate::log::Level;
use crate::messenger::Role;

/// The longest wait between two attempts.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Spawns failing since `since` (ms), `attempts` in a row.
#[derive(Debug, Clone, Copy)]
pub(super) struct SpawnFailing {
    attempts: u32,
    since: u64,
}

impl Core {
    /// Spawning `role`'s worker `id` failed after the start: said the first time in a streak,
    /// retried later.
    pub(super) fn spawn_failed(
        &mut self,
        role: Role,
        id: u32,
        error: &str,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        // The attempt was counted as a refork; it did not happen.
        self.ops.reforks = self.ops.reforks.saturating_sub(1);
        let streak = self.spawn_failing.get_or_insert(SpawnFailing {
            attempts: 0,
            since: now,
        });
        streak.attempts += 1;
        let attempts = streak.attempts;
        let delay = (Duration::from_millis(100) * 2u32.pow((attempts - 1).min(6))).min(RETRY_MAX);
        let name = match role {
            Role::Agent => "agent_worker",
            _ => "app_worker",
        };
        if attempts == 1 {
            out.push(Action::Log(
                Level::Error,
                format!(
                    "[master] failed to spawn {name}#{id}: {error}; retrying every {}s at most, not logged again until a spawn succeeds",
                    RETRY_MAX.as_secs()
                ),
            ));
        }
        if role == Role::App {
            // the status and the health verdict say why a slot is empty
            self.refork_held(format!("cannot spawn app workers: {error}"), out);
        }
        let timer = match role {
            Role::Agent => Timer::ReforkAgent,
            _ => Timer::ReforkApp,
        };
        out.push(Action::After(delay, timer));
    }

    /// A spawn succeeded: a streak of failures ends, said.
    pub(super) fn spawn_succeeded(&mut self, now: u64, out: &mut Vec<Action>) {
        if let Some(streak) = self.spawn_failing.take() {
            out.push(Action::Log(
                Level::Info,
                format!(
                    "[master] spawning works again, after {} failed attempt{} in {}ms",
                    streak.attempts,
                    if streak.attempts == 1 { "" } else { "s" },
                    now.saturating_sub(streak.since)
                ),
            ));
        }
    }

    /// Whether spawns are failing now (a retry is pending).
    pub(super) fn spawns_failing(&self) -> bool {
        self.spawn_failing.is_some()
    }
}
