//! Telling the OOM killer's SIGKILL from any other. The kernel counts its kills, and counts
//! them before it sends the signal: per memory cgroup (`oom_kill` in v2's `memory.events`, in
//! v1's `memory.oom_control`; a kill counts in the victim's cgroup and every ancestor's) and for
//! the host (`oom_kill` in `/proc/vmstat`, Linux ≥ 4.13).
//!
//! The children start in this master's memory cgroup, and an operator may move one into a
//! cgroup below it (a tighter limit for the app workers). So the counters of that cgroup and of
//! every one below are read at start and again after each child's death by SIGKILL: the
//! deepest one that moved is where the victim was, and the nearest limit at or above it the
//! one it ran into. A cgroup created since the last look counts from 0. Where no cgroup counter
//! moved (the master in the root cgroup, or a child moved elsewhere), the host's counter is
//! the witness. A counter that moved is a witness, not a proof: a `kill -9` at the moment the
//! OOM killer took another process of the same cgroup is blamed on it (the line says which
//! counter moved).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The most cgroup directories read at one look (a master's subtree has a handful).
const MAX_DIRS: usize = 256;

/// What says the OOM killer took a child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomKill {
    /// The memory cgroup whose counter moved (the deepest), `None` for the host's.
    pub cgroup: Option<PathBuf>,
    /// The nearest memory limit at or above it, in bytes (`None`: none below the mount).
    pub limit: Option<u64>,
}

/// A memory cgroup subtree this master's children live in.
#[derive(Debug)]
struct Tree {
    /// Where the hierarchy is mounted (a limit is looked for up to here).
    mount: PathBuf,
    /// The master's own cgroup directory in it.
    root: PathBuf,
}

/// The OOM kill counters that cover this master's children.
#[derive(Debug, Default)]
pub struct OomWatch {
    trees: Vec<Tree>,
    /// `oom_kill` of every cgroup directory of the trees, at the last look.
    seen: HashMap<PathBuf, u64>,
    /// The host's `oom_kill` at the last look.
    host: Option<u64>,
}

impl OomWatch {
    /// The counters of this process's memory cgroup(s), v2 or v1, and the host's.
    pub fn new() -> Self {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let trees = memory_cgroup_dirs(&cgroup, &mountinfo)
            .into_iter()
            .filter(|(mount, dir)| watchable(mount, dir))
            .map(|(mount, root)| Tree { mount, root })
            .collect();
        let mut w = OomWatch {
            trees,
            seen: HashMap::new(),
            host: None,
        };
        w.look();
        w
    }

    /// Reads every counter; returns the cgroup directories' values (the host's is kept).
    fn look(&mut self) -> HashMap<PathBuf, u64> {
        let mut counts = HashMap::new();
        for tree in &self.trees {
            walk(&tree.root, &mut counts);
        }
        let before = std::mem::replace(&mut self.seen, counts.clone());
        if let Some(host) = read_count(Path::new("/proc/vmstat")) {
            self.host = Some(host);
        }
        before
    }

    /// After a child died of SIGKILL: what says the OOM killer did it (a counter moved since
    /// the last look), or `None`.
    pub fn check(&mut self) -> Option<OomKill> {
        let host_before = self.host;
        let before = self.look();
        let moved = self
            .seen
            .iter()
            .filter(|(dir, n)| **n > before.get(*dir).copied().unwrap_or(0))
            .map(|(dir, _)| dir)
            .max_by_key(|dir| (dir.components().count(), *dir));
        if let Some(dir) = moved {
            let mount = self
                .trees
                .iter()
                .find(|t| dir.starts_with(&t.root))
                .map(|t| t.mount.as_path());
            return Some(OomKill {
                cgroup: Some(dir.clone()),
                limit: mount.and_then(|m| nearest_limit(dir, m)),
            });
        }
        match (host_before, self.host) {
            (Some(before), Some(now)) if now > before => Some(OomKill {
                cgroup: None,
                limit: None,
            }),
            _ => None,
        }
    }
}

/// `dir` and the cgroup directories below it with an OOM kill counter, at most [`MAX_DIRS`].
fn walk(dir: &Path, counts: &mut HashMap<PathBuf, u64>) {
    let mut todo = vec![dir.to_path_buf()];
    let mut visited = 0;
    while let Some(dir) = todo.pop() {
        visited += 1;
        if visited > MAX_DIRS {
            return;
        }
        let count = ["memory.events", "memory.oom_control"]
            .iter()
            .find_map(|f| read_count(&dir.join(f)));
        if let Some(n) = count {
            counts.insert(dir.clone(), n);
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            todo.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
}

/// `oom_kill N` in a counter file.
fn read_count(file: &Path) -> Option<u64> {
    parse_count(&std::fs::read_to_string(file).ok()?)
}

fn parse_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// The memory limit of `dir` or of its nearest ancestor with one, up to `mount`.
fn nearest_limit(dir: &Path, mount: &Path) -> Option<u64> {
    dir.ancestors()
        .take_while(|d| d.starts_with(mount))
        .find_map(limit)
}

/// The memory limit of a cgroup directory (`max`, or v1's huge "no limit": `None`).
fn limit(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("memory.max"))
        .or_else(|_| std::fs::read_to_string(dir.join("memory.limit_in_bytes")))
        .ok()?;
    parse_limit(&text)
}

fn parse_limit(text: &str) -> Option<u64> {
    let bytes: u64 = text.trim().parse().ok()?;
    // v1 says "no limit" with a number near i64::MAX (rounded down to a page)
    (bytes < 1 << 60).then_some(bytes)
}

/// Whether the cgroup `dir` is worth a walk: not the host's root cgroup, whose subtree is the
/// whole host's and which counts nothing of its own (the host's counter stands for it). At its
/// mount's root, only a cgroup2 with `memory.events` is a cgroup of its own: a container's in
/// its cgroup namespace, which names it `/` (the host's root has no `memory.events`).
fn watchable(mount: &Path, dir: &Path) -> bool {
    dir != mount || dir.join("memory.events").is_file()
}

/// The memory cgroup(s) `/proc/self/cgroup` names, under the mounts `/proc/self/mountinfo`
/// lists — the v2 hierarchy's, and v1's memory controller — as (mount point, directory).
fn memory_cgroup_dirs(cgroup: &str, mountinfo: &str) -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for line in cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let v2 = controllers.is_empty();
        if !v2 && !controllers.split(',').any(|c| c == "memory") {
            continue;
        }
        for m in mountinfo.lines() {
            // id parent major:minor root mountpoint options [optional...] - fstype source super
            let Some((left, right)) = m.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = left.split(' ').collect();
            let rest: Vec<&str> = right.split(' ').collect();
            let (Some(root), Some(point), Some(fstype)) =
                (fields.get(3), fields.get(4), rest.first())
            else {
                continue;
            };
            let matches = if v2 {
                *fstype == "cgroup2"
            } else {
                *fstype == "cgroup"
                    && rest
                        .get(2)
                        .is_some_and(|o| o.split(',').any(|o| o == "memory"))
            };
            if !matches {
                continue;
            }
            // the cgroup's path relative to the mount's root
            let rel = path
                .strip_prefix(root)
                .unwrap_or(path)
                .trim_start_matches('/');
            let mount = PathBuf::from(point);
            let dir = if rel.is_empty() {
                mount.clone()
            } else {
                mount.join(rel)
            };
            out.push((mount, dir));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_limits_and_cgroup_dirs() {
        assert_eq!(
            parse_count("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n"),
            Some(2)
        );
        assert_eq!(
            parse_count("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n"),
            Some(5)
        );
        assert_eq!(parse_count("pgfault 1\n"), None);
        assert_eq!(parse_limit("67108864\n"), Some(64 << 20));
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("max\n"), None);
        let mountinfo = "\
29 1 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
33 29 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
34 29 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
40 29 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        // hybrid: memory on v1, the root of the v2 hierarchy (which `watchable` leaves out)
        let cgroup = "4:memory:/app/x\n1:cpu:/\n0::/\n";
        let mem = PathBuf::from("/sys/fs/cgroup/memory");
        let unified = PathBuf::from("/sys/fs/cgroup/unified");
        assert_eq!(
            memory_cgroup_dirs(cgroup, mountinfo),
            [(mem.clone(), mem.join("app/x")), (unified.clone(), unified)]
        );
        // pure v2, in a container whose cgroup namespace root is its own cgroup
        let mountinfo = "30 1 0:27 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let v2 = PathBuf::from("/sys/fs/cgroup");
        assert_eq!(
            memory_cgroup_dirs("0::/kubepods/pod1/app\n", mountinfo),
            [(v2.clone(), v2.join("app"))]
        );
        // the container's own cgroup, mounted as the root; the host's root, or a container's
        // in its cgroup namespace (`watchable` tells them apart)
        assert_eq!(
            memory_cgroup_dirs("0::/kubepods/pod1\n", mountinfo),
            [(v2.clone(), v2.clone())]
        );
        let host = "30 1 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            memory_cgroup_dirs("0::/\n", host),
            [(v2.clone(), v2.clone())]
        );
        assert!(memory_cgroup_dirs("", "").is_empty());
    }

    #[test]
    fn the_deepest_counter_that_moved_names_the_cgroup_and_the_nearest_limit() {
        // a fake hierarchy in a scratch directory: v2's files
        let mount = std::env::temp_dir().join(format!("egg-cluster-rs-oom-{}", std::process::id()));
        let root = mount.join("master");
        let workers = root.join("workers");
        let one = workers.join("one");
        std::fs::create_dir_all(&one).unwrap();
        let events = |dir: &Path, n: u64| {
            std::fs::write(dir.join("memory.events"), format!("oom 0\noom_kill {n}\n")).unwrap()
        };
        for dir in [&root, &workers, &one] {
            events(dir, 0);
            std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        }
        std::fs::write(workers.join("memory.max"), "67108864\n").unwrap();
        // a cgroup below its mount's root is watched; at the root, only one with memory.events
        // (a container's, in its cgroup namespace; the host's root has none)
        assert!(watchable(&mount, &root));
        assert!(!watchable(&mount, &mount));
        assert!(watchable(&root, &root));
        let mut w = OomWatch {
            trees: vec![Tree {
                mount: mount.clone(),
                root: root.clone(),
            }],
            ..OomWatch::default()
        };
        w.look();
        // nothing moved (the host's counter is the real one: it may move, so the cgroups are
        // only checked when it does not say None for them)
        assert!(w.check().is_none_or(|k| k.cgroup.is_none()));
        // a kill in `one` counts there and in every ancestor
        for dir in [&root, &workers, &one] {
            events(dir, 1);
        }
        let k = w.check().unwrap();
        assert_eq!(k.cgroup.as_deref(), Some(one.as_path()));
        assert_eq!(k.limit, Some(64 << 20));
        // a cgroup made since the last look, with a kill already: counted from 0
        let two = workers.join("two");
        std::fs::create_dir_all(&two).unwrap();
        events(&two, 1);
        std::fs::write(two.join("memory.max"), "33554432\n").unwrap();
        let k = w.check().unwrap();
        assert_eq!(k.cgroup.as_deref(), Some(two.as_path()));
        assert_eq!(k.limit, Some(32 << 20));
        assert!(w.check().is_none_or(|k| k.cgroup.is_none()));
        std::fs::remove_dir_all(&mount).unwrap();
    }

    #[test]
    fn a_watch_sees_no_kill_when_none_happened() {
        let mut w = OomWatch::new();
        // this host may have no counter at all (an old kernel), else nothing moved just now
        // that this test would be blamed for; a second look right away finds nothing new
        w.check();
        assert_eq!(w.check(), None);
    }
}
