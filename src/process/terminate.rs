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

/// SIGTERM every pid in `pids`, SIGKILL those still alive after `limit`.
pub async fn kill_tree(pids: Vec<i32>, limit: Duration) {
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::process::Child;

    use crate::process::spawn::wait_exit;
    use crate::process::testutil::{spawn_plain, within, ChildChannel, KillOnDrop, Script};

    /// A node child that forks a node grandchild; both install a SIGTERM handler (or not), and
    /// the child reports the grandchild's pid once the grandchild is up.
    fn tree_script(ignore_sigterm: bool) -> Script {
        let handler = if ignore_sigterm {
            "process.on('SIGTERM', () => {});"
        } else {
            ""
        };
        Script::new(
            "tree.js",
            &format!(
                r#"
{handler}
setInterval(() => {{}}, 1000);
if (process.argv[2] === 'grandchild') {{
  process.send('up');
}} else {{
  const grandchild = require('child_process').fork(__filename, ['grandchild']);
  grandchild.once('message', () => process.send({{ grandchild: grandchild.pid }}));
}}
"#
            ),
        )
    }

    struct Tree {
        child: Option<Child>,
        pid: i32,
        grandchild: i32,
        _channel: ChildChannel,
        _guard: KillOnDrop,
    }

    /// Spawns the tree and waits until both processes are up (handlers installed).
    async fn spawn_tree(script: &Script) -> Tree {
        let child = spawn_plain(script);
        let pid = i32::try_from(child.child.id()).expect("pid fits");
        let mut guard = KillOnDrop(vec![pid]);
        let mut channel = ChildChannel::open(child.channel);
        let report = channel.message().await;
        let grandchild = report["grandchild"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or_else(|| panic!("{report}"));
        guard.0.push(grandchild);
        Tree {
            child: Some(child.child),
            pid,
            grandchild,
            _channel: channel,
            _guard: guard,
        }
    }

    impl Tree {
        /// A terminate target whose watch turns `Some` when the child is reaped, and a
        /// receiver to read the exit from.
        fn target(&mut self) -> (Target, watch::Receiver<Option<ExitInfo>>) {
            let child = self.child.take().expect("one target per tree");
            let (tx, rx) = watch::channel(None);
            tokio::spawn(async move {
                let _ = tx.send(Some(wait_exit(child).await));
            });
            let target = Target {
                pid: u32::try_from(self.pid).expect("pid"),
                exited: rx.clone(),
            };
            (target, rx)
        }
    }

    async fn gone(pid: i32) {
        within(&format!("process {pid} to die"), async {
            while tree::is_alive(pid) {
                sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    #[tokio::test]
    async fn descendants_finds_the_grandchild() {
        let script = tree_script(false);
        let mut tree = spawn_tree(&script).await;
        assert_eq!(tree::descendants(tree.pid), vec![tree.grandchild]);
        assert!(tree::descendants(tree.grandchild).is_empty());
        // From this process it is a grandchild, listed after its parent (breadth first).
        let own = tree::descendants(std::process::id() as i32);
        let at = |p: i32| {
            own.iter()
                .position(|&q| q == p)
                .unwrap_or_else(|| panic!("{p}"))
        };
        assert!(at(tree.pid) < at(tree.grandchild), "{own:?}");

        let (target, _) = tree.target();
        within("terminate", terminate(target, Duration::from_secs(30))).await;
        gone(tree.grandchild).await;
    }

    #[tokio::test]
    async fn a_child_that_exits_on_sigterm_is_gone_quickly() {
        let script = tree_script(false);
        let mut tree = spawn_tree(&script).await;
        let (target, exited) = tree.target();
        let started = Instant::now();
        // A limit far above the bound asserted below: terminate must return on the exit.
        within("terminate", terminate(target, Duration::from_secs(30))).await;
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        let info = exited
            .borrow()
            .expect("terminate returns once the child is reaped");
        assert_eq!(info.signal, Some(libc::SIGTERM));
        // The grandchild got SIGTERM too.
        gone(tree.grandchild).await;
    }

    #[tokio::test]
    async fn a_tree_that_ignores_sigterm_is_sigkilled_after_the_limit() {
        let script = tree_script(true);
        let mut tree = spawn_tree(&script).await;
        assert_eq!(tree::descendants(tree.pid), vec![tree.grandchild]);
        let (target, exited) = tree.target();
        let started = Instant::now();
        within("terminate", terminate(target, Duration::from_millis(300))).await;
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        let info = exited
            .borrow()
            .expect("terminate returns once the child is reaped");
        assert_eq!(info.signal, Some(libc::SIGKILL));
        gone(tree.grandchild).await;
    }
}
