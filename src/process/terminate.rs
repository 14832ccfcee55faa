//! Terminating a child and its whole process tree: SIGTERM, wait up to a timeout, SIGKILL.
//!
//! egg-cluster's `terminate()` has the same shape, but its SIGKILL fallback checks
//! `subProcess.killed`, which Node sets as soon as the SIGTERM was *sent*, so a child that
//! ignores SIGTERM is never killed. Here the fallback is decided by whether the child exited.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{sleep, timeout, Instant};

use super::spawn::ExitInfo;
use super::tree;

/// How often descendants are polled for liveness (egg-cluster's 400 ms).
const CHILD_POLL: Duration = Duration::from_millis(400);

/// A child we spawned: its pid and a watch that turns `Some` when it has been reaped.
pub struct Target {
    pub pid: u32,
    pub exited: watch::Receiver<Option<ExitInfo>>,
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory arguments; errors (ESRCH) just mean it is gone.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// SIGTERM `target` and every descendant it has now; SIGKILL whatever is left after `limit`.
pub async fn terminate(mut target: Target, limit: Duration) {
    // The tree is read before the signal, as egg-cluster does: once the child dies its
    // descendants are reparented and can no longer be found from its pid.
    let descendants = tree::descendants(target.pid as i32);
    let pid = target.pid as i32;
    let own = async move {
        kill(pid, libc::SIGTERM);
        let exited = timeout(limit, target.exited.wait_for(Option::is_some))
            .await
            .is_ok();
        if !exited {
            tracing::debug!(pid, "SIGTERM timed out, SIGKILL");
            kill(pid, libc::SIGKILL);
            let _ = target.exited.wait_for(Option::is_some).await;
        }
    };
    tokio::join!(own, kill_tree(descendants, limit));
}

async fn kill_tree(pids: Vec<i32>, limit: Duration) {
    if pids.is_empty() {
        return;
    }
    for &p in &pids {
        kill(p, libc::SIGTERM);
    }
    let deadline = Instant::now() + limit;
    let mut alive = pids;
    loop {
        alive.retain(|&p| tree::is_alive(p));
        if alive.is_empty() {
            return;
        }
        if Instant::now() + CHILD_POLL >= deadline {
            break;
        }
        sleep(CHILD_POLL).await;
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    sleep(remaining).await;
    alive.retain(|&p| tree::is_alive(p));
    for p in alive {
        tracing::debug!(pid = p, "descendant survived SIGTERM, SIGKILL");
        kill(p, libc::SIGKILL);
    }
}

/// Parses a close timeout env value like JS `setTimeout` would use it (ms), default on garbage.
pub fn parse_timeout(raw: &str, default_ms: u64) -> Duration {
    let ms = raw
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map_or(default_ms, |v| v as u64);
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_like_numbers() {
        assert_eq!(parse_timeout("1000", 5000), Duration::from_millis(1000));
        assert_eq!(parse_timeout(" 250 ", 5000), Duration::from_millis(250));
        assert_eq!(parse_timeout("abc", 5000), Duration::from_millis(5000));
        assert_eq!(parse_timeout("-1", 5000), Duration::from_millis(5000));
    }
}
