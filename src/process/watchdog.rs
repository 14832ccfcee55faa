//! What cleans up after a master that died without closing (SIGKILL, OOM killer, a crash).
//!
//! The children first see their IPC channel close and leave through graceful-process's
//! disconnect path, as under egg-cluster (an app worker exits at once, the agent runs
//! `agent.close()` and exits 110). That path runs on the child's JS thread, so a child whose
//! event loop is blocked (a long CPU loop) never takes it: it outlives the master and keeps the
//! port, and the next start fails with EADDRINUSE. Hence a watchdog that needs nothing from the
//! child: a `/bin/sh` per master reading `pid start-time` lines on a pipe. The master holds the
//! only write end (CLOEXEC, so no child inherits it), so EOF on the pipe means the master is
//! gone, whatever killed it. The watchdog then gives each child its grace to leave by itself
//! and SIGKILLs it if it is still alive then. A pid counts only if `/proc/<pid>/stat` still
//! shows the start time recorded at spawn, so a recycled pid is never hit.
//!
//! The grace is per child because the disconnect paths differ: an app worker (a cluster
//! worker) leaves at once — Node's cluster child calls `process.exit` on an unexpected
//! disconnect, no close hook runs — so all it needs is to reach its next event-loop turn, and
//! any longer wait only keeps the port from the next master ([`APP_GRACE`]). The agent runs
//! `agent.close()` on its way out and gets the agent close timeout, as in a normal close.
//!
//! Why not `PR_SET_PDEATHSIG`: it fires at once, before the disconnect path (SIGTERM turned the
//! disconnect lines into SIGTERM lines), and with SIGKILL it would give a healthy child no time
//! to close. A shell is a few hundred KiB, forks nothing until the master dies, and is in the
//! master's process group like the children (a Ctrl-C reaches all; the watchdog ignores it and
//! SIGTERM/SIGHUP, so it outlives a master that dies of them). After a normal exit every child
//! is already gone and the watchdog exits at the EOF.

use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

/// How long an app worker that outlives the master gets to leave by itself (see above): a
/// healthy one is gone within milliseconds; this is for one whose event loop is late, not
/// for one that does not run it at all.
pub const APP_GRACE: Duration = Duration::from_millis(1000);

/// Input: `pid start-time grace-ms` lines until EOF. Each pid still alive (same start time)
/// after its grace, counted in 100 ms ticks from the EOF, is SIGKILLed.
const SCRIPT: &str = r#"
set -f
watched=
while read -r pid start grace; do watched="$watched $pid:$start:$(( (grace + 99) / 100 ))"; done
tick=0
while :; do
  left=
  for entry in $watched; do
    pid=${entry%%:*}
    rest=${entry#*:}
    ticks=${rest#*:}
    stat=
    { read -r stat <"/proc/$pid/stat"; } 2>/dev/null || continue
    set -- ${stat##*) }
    [ "$1" = Z ] && continue
    shift 19
    [ "$1" = "${rest%%:*}" ] || continue
    if [ "$tick" -ge "$ticks" ]; then kill -9 "$pid" 2>/dev/null; continue; fi
    left="$left $entry"
  done
  watched=$left
  [ -z "$watched" ] && exit 0
  tick=$((tick + 1))
  sleep 0.1
done
"#;

pub struct Watchdog {
    child: Child,
    pipe: ChildStdin,
}

impl Watchdog {
    /// Starts the watchdog.
    pub fn spawn() -> io::Result<Watchdog> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("egg-cluster-rs-watchdog")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: signal(2) is async-signal-safe; the closure runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // Ignored dispositions survive exec, and a non-interactive sh cannot un-ignore
                // them: a Ctrl-C to the group, or a group SIGTERM, leaves the watchdog alone.
                for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                    libc::signal(sig, libc::SIG_IGN);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        // std makes the pipe CLOEXEC: only this process holds the write end.
        let pipe = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin"))?;
        Ok(Watchdog { child, pipe })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Has the watchdog kill `pid` if it outlives the master by more than `grace`. The start
    /// time is read now, so call it right after the spawn.
    pub fn watch(&mut self, pid: u32, grace: Duration) -> io::Result<()> {
        let start = start_time(pid)
            .ok_or_else(|| io::Error::other(format!("no /proc/{pid}/stat start time")))?;
        self.record(pid, start, grace)
    }

    fn record(&mut self, pid: u32, start: u64, grace: Duration) -> io::Result<()> {
        self.pipe
            .write_all(format!("{pid} {start} {}\n", grace.as_millis()).as_bytes())
    }

    /// What the master's death does: closes the pipe. Returns the watchdog to wait for.
    #[cfg(test)]
    pub fn close(self) -> Child {
        drop(self.pipe);
        self.child
    }
}

/// Field 22 of /proc/<pid>/stat: the start time in clock ticks after boot. `comm` (field 2) may
/// hold spaces and parentheses, so fields are counted from its last `)`.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;
    use std::time::Instant;

    use crate::process::testutil::KillOnDrop;

    fn sleeper(secs: &str) -> Child {
        Command::new("sleep")
            .arg(secs)
            .spawn()
            .expect("spawn sleep")
    }

    /// Waits for `child` at most `limit`; `None` if it is still running then.
    fn wait_for(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn guard(children: &[&Child]) -> KillOnDrop {
        KillOnDrop(children.iter().map(|c| c.id() as i32).collect())
    }

    #[test]
    fn a_child_that_outlives_the_master_is_sigkilled_after_the_grace() {
        let mut wd = Watchdog::spawn().expect("watchdog");
        // `sleep` ignores nothing; what matters is that it does not leave by itself, as a
        // worker stuck in a CPU loop would not.
        let mut stuck = sleeper("30");
        let _guard = guard(&[&stuck, &wd.child]);
        wd.watch(stuck.id(), Duration::from_millis(600))
            .expect("watch");
        // Nothing happens while the master lives.
        assert_eq!(wait_for(&mut stuck, Duration::from_millis(800)), None);

        let closed = Instant::now();
        let mut wd = wd.close();
        let status = wait_for(&mut stuck, Duration::from_secs(5)).expect("killed");
        let took = closed.elapsed();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(
            took >= Duration::from_millis(600),
            "killed before the grace: {took:?}"
        );
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert!(wait_for(&mut wd, Duration::from_secs(2)).is_some());
    }

    #[test]
    fn children_that_leave_in_time_are_spared_and_the_watchdog_exits_with_them() {
        let mut wd = Watchdog::spawn().expect("watchdog");
        let mut leaving = sleeper("0.3");
        let _guard = guard(&[&leaving, &wd.child]);
        wd.watch(leaving.id(), Duration::from_secs(20))
            .expect("watch");
        let closed = Instant::now();
        let mut wd = wd.close();
        let status = wait_for(&mut leaving, Duration::from_secs(5)).expect("exited");
        assert_eq!(status.code(), Some(0));
        // It exits once the child is gone, long before the 20 s grace.
        assert!(wait_for(&mut wd, Duration::from_secs(5)).is_some());
        assert!(closed.elapsed() < Duration::from_secs(6));
    }

    #[test]
    fn a_pid_with_another_start_time_is_not_killed() {
        let mut wd = Watchdog::spawn().expect("watchdog");
        let mut other = sleeper("30");
        let _guard = guard(&[&other, &wd.child]);
        let start = start_time(other.id()).expect("start time");
        // As if `other` had taken the pid of a child that died earlier.
        wd.record(other.id(), start + 1, Duration::from_millis(200))
            .expect("record");
        let mut wd = wd.close();
        assert!(wait_for(&mut wd, Duration::from_secs(5)).is_some());
        assert_eq!(
            other.try_wait().expect("try_wait"),
            None,
            "a recycled pid was killed"
        );
        other.kill().expect("kill");
        other.wait().expect("wait");
    }

    #[test]
    fn ctrl_c_to_the_group_leaves_the_watchdog_alone() {
        let mut wd = Watchdog::spawn().expect("watchdog");
        let _guard = guard(&[&wd.child]);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(wd.pid() as i32, sig) };
        }
        assert_eq!(wait_for(&mut wd.child, Duration::from_millis(300)), None);
        let mut wd = wd.close();
        assert_eq!(
            wait_for(&mut wd, Duration::from_secs(5)).and_then(|s| s.code()),
            Some(0)
        );
    }

    #[test]
    fn each_child_is_killed_after_its_own_grace() {
        let mut wd = Watchdog::spawn().expect("watchdog");
        let mut short = sleeper("30");
        let mut long = sleeper("30");
        let _guard = guard(&[&short, &long, &wd.child]);
        wd.watch(short.id(), Duration::from_millis(300))
            .expect("watch");
        wd.watch(long.id(), Duration::from_millis(1500))
            .expect("watch");
        let closed = Instant::now();
        let mut wd = wd.close();
        let status = wait_for(&mut short, Duration::from_secs(5)).expect("short killed");
        let took = closed.elapsed();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
            "{took:?}"
        );
        assert_eq!(long.try_wait().expect("try_wait"), None, "killed early");
        let status = wait_for(&mut long, Duration::from_secs(5)).expect("long killed");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(closed.elapsed() >= Duration::from_millis(1500));
        assert!(wait_for(&mut wd, Duration::from_secs(2)).is_some());
    }

    #[test]
    fn start_time_is_field_22() {
        let me = std::process::id();
        let t = start_time(me).expect("own start time");
        assert_eq!(start_time(me), Some(t));
        assert_eq!(start_time(u32::MAX), None);
    }
}
