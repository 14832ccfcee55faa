//! The processes a dead child left behind. A worker (or the agent) that dies — a crash, a
//! SIGKILL, the OOM killer — leaves its own children to init (or the nearest subreaper), where
//! no descendant walk from the master finds them any more: egg-cluster leaves them running for
//! good, after the master's stop too.
//!
//! Every child gets `EGG_CLUSTER_RS_TREE=<master pid>.<master start time>` in its environment,
//! which its own children inherit unless they are spawned with an environment of their own. A
//! live process of this uid that carries this master's value, started after the master, and
//! has neither the master nor a live child of the master among its ancestors is such an
//! orphan. The environment is read from `/proc/<pid>/environ`, which is the one the process
//! was started with.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use super::tree;
use crate::ops::procstat;

/// The variable that marks this master's tree.
pub const VAR: &str = "EGG_CLUSTER_RS_TREE";

/// A process left behind by a dead child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub pid: u32,
    /// Its start time (clock ticks after boot): a later process with its pid is not it.
    pub start: u64,
    /// Its command line, shortened, for the log.
    pub cmd: String,
}

/// This master's value of [`VAR`]: its pid and start time, so that a later process with the
/// same pid is never taken for it. `None` when /proc cannot say.
pub fn marker() -> Option<String> {
    let pid = std::process::id();
    procstat::read(pid).map(|(_, start)| format!("{pid}.{start}"))
}

/// The orphans of this master's tree now; `live` are its children (pids) now.
pub fn find(marker: &str, live: &[u32]) -> Vec<Orphan> {
    let own = std::process::id();
    let Some((_, own_start)) = procstat::read(own) else {
        return Vec::new();
    };
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let table = tree::process_table();
    let entry = format!("{VAR}={marker}");
    let marked: Vec<(i32, u64)> = table
        .iter()
        .map(|&(pid, _)| pid)
        .filter(|&pid| pid > 1 && pid as u32 != own)
        .filter(|pid| std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid))
        .filter_map(|pid| {
            let (_, start) = procstat::read(pid as u32)?;
            (start >= own_start).then_some((pid, start))
        })
        .filter(|&(pid, _)| carries(pid, entry.as_bytes()))
        .collect();
    if marked.is_empty() {
        return Vec::new();
    }
    let mut roots: HashSet<i32> = live.iter().map(|&p| p as i32).collect();
    roots.insert(own as i32);
    let pids: Vec<i32> = marked.iter().map(|&(p, _)| p).collect();
    let left = orphans_in(&table, &pids, &roots);
    marked
        .into_iter()
        .filter(|(pid, _)| left.contains(pid) && tree::is_alive(*pid))
        .map(|(pid, start)| Orphan {
            pid: pid as u32,
            start,
            cmd: cmdline(pid),
        })
        .collect()
}

/// Whether process `pid` was started with `entry` (`NAME=value`) in its environment.
fn carries(pid: i32, entry: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e == entry))
}

fn cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text = String::from_utf8_lossy(&raw).replace('\0', " ");
    let text = text.trim();
    match text.char_indices().nth(100) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// Pure core of [`find`]: the `marked` pids of `table` (`(pid, ppid)`) none of whose
/// ancestors, nor themselves, is in `roots`. A parent cycle in a malformed table ends the walk.
pub fn orphans_in(table: &[(i32, i32)], marked: &[i32], roots: &HashSet<i32>) -> Vec<i32> {
    let parent: HashMap<i32, i32> = table.iter().copied().collect();
    marked
        .iter()
        .copied()
        .filter(|&pid| {
            let mut seen = HashSet::new();
            let mut p = pid;
            loop {
                if roots.contains(&p) {
                    return false;
                }
                match parent.get(&p) {
                    Some(&pp) if pp > 0 && seen.insert(p) => p = pp,
                    _ => return true,
                }
            }
        })
        .collect()
}

/// SIGTERM every orphan that is still the process found, SIGKILL those left after `limit`.
pub async fn terminate(orphans: Vec<Orphan>, limit: Duration) {
    let same: Vec<i32> = orphans
        .into_iter()
        .filter(|o| procstat::read(o.pid).is_some_and(|(_, start)| start == o.start))
        .map(|o| o.pid as i32)
        .collect();
    super::terminate::kill_tree(same, limit).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::Instant;

    #[test]
    fn orphans_are_marked_processes_outside_the_live_trees() {
        // 1 init; 100 the master; 110 a live worker with child 111 and grandchild 112; 120
        // and its child 121 were a dead worker's, now init's; 130 the master's own child.
        let table = [
            (1, 0),
            (100, 1),
            (110, 100),
            (111, 110),
            (112, 111),
            (120, 1),
            (121, 120),
            (130, 100),
            (7, 7),
        ];
        let roots: HashSet<i32> = [100, 110].into();
        assert_eq!(
            orphans_in(&table, &[111, 112, 120, 121, 130], &roots),
            vec![120, 121]
        );
        // a parent cycle, or a pid missing from the table, ends the walk: not ours
        assert_eq!(orphans_in(&table, &[7, 999], &roots), vec![7, 999]);
        assert!(orphans_in(&table, &[], &roots).is_empty());
    }

    #[test]
    fn a_marked_process_whose_parent_died_is_found_and_terminated() {
        let marker = format!("test-{}", std::process::id());
        // sh starts a marked sleep in the background and exits: the sleep is init's now.
        let out = Command::new("sh")
            .args(["-c", "sleep 30 >/dev/null 2>&1 & echo $!"])
            .env(VAR, &marker)
            .stdout(Stdio::piped())
            .output()
            .expect("sh");
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        // A marked child of ours is not an orphan: it is a root's.
        let mut own = Command::new("sleep")
            .arg("30")
            .env(VAR, &marker)
            .spawn()
            .unwrap();
        let found = find(&marker, &[]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, pid);
        assert!(found[0].cmd.starts_with("sleep 30"), "{found:?}");
        assert!(find(&format!("{marker}x"), &[]).is_empty());

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(terminate(found, Duration::from_secs(5)));
        let deadline = Instant::now() + Duration::from_secs(5);
        while tree::is_alive(pid as i32) {
            assert!(Instant::now() < deadline, "the orphan survived");
            std::thread::sleep(Duration::from_millis(20));
        }
        own.kill().unwrap();
        own.wait().unwrap();
        assert!(super::marker().is_some_and(|m| m.starts_with(&format!("{}.", std::process::id()))));
    }
}
