//! Process-tree queries used when killing a worker together with everything
//! it spawned, as egg-cluster's `terminate()` does with ps-tree.
//!
//! Reading /proc directly avoids spawning `ps` (which may not even exist in
//! slim container images) and finds grandchildren whose pid is lower than
//! their parent's after pid wrap-around, which ps-tree's single sorted pass
//! misses.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;

/// Every live descendant of `pid` (children, grandchildren, ...), breadth
/// first, without `pid` itself. Processes that vanish while /proc is being
/// scanned are skipped; an unreadable /proc gives an empty list, like
/// egg-cluster ignoring a ps-tree error.
pub fn descendants(pid: i32) -> Vec<i32> {
    if pid <= 0 {
        return Vec::new();
    }
    descendants_in(&process_table(), pid)
}

/// Pure core of [`descendants`] over `(pid, ppid)` pairs. Children are
/// listed in table order within each generation. A malformed table with a
/// parent cycle cannot loop forever, and `root` is never returned.
///
/// A `root` of 0 or below yields nothing: pid 0's "children" are init and
/// kthreadd, and a caller about to signal the result must never get the
/// whole system back from a bogus pid.
pub fn descendants_in(table: &[(i32, i32)], root: i32) -> Vec<i32> {
    if root <= 0 {
        return Vec::new();
    }
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for &(pid, ppid) in table {
        children.entry(ppid).or_default().push(pid);
    }
    let mut seen = HashSet::from([root]);
    let mut queue = VecDeque::from([root]);
    let mut out = Vec::new();
    while let Some(parent) = queue.pop_front() {
        for &child in children.get(&parent).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(child) {
                out.push(child);
                queue.push_back(child);
            }
        }
    }
    out
}

/// The resident set size of `pid` in bytes (`VmRSS` of /proc/<pid>/status), as PM2's
/// `max_memory_restart` measures a process; `None` once it is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// Whether `pid` exists and has not yet exited. Like egg-cluster's
/// `process.kill(pid, 0)` check, except that a zombie (exited but not yet
/// reaped) counts as dead: it will never exit "more", and waiting for it to
/// disappear would only burn the kill timeout. A zombie *main thread* is not
/// enough, though: after a SIGKILL a Node process's other threads may still be
/// exiting, and they share its file table, so its sockets (a listening port)
/// stay open until the last one is gone.
pub fn is_alive(pid: i32) -> bool {
    // kill() with 0 or a negative pid addresses process groups.
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only performs the existence and permission checks.
    let rc = unsafe { libc::kill(pid, 0) };
    let exists = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    match fs::read(format!("/proc/{pid}/stat")) {
        Ok(stat) if exited(&stat) => threads_exiting(pid),
        Ok(_) => true,
        // It may have been reaped in between, or /proc may be hidden; the
        // kill() answer is the best we have.
        Err(_) => true,
    }
}

fn exited(stat: &[u8]) -> bool {
    matches!(parse_stat(stat), Some(s) if s.state == b'Z' || s.state == b'X')
}

/// Whether some thread of `pid` other than its zombie main thread still runs.
fn threads_exiting(pid: i32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks
        .filter_map(Result::ok)
        .any(|task| fs::read(task.path().join("stat")).is_ok_and(|stat| !exited(&stat)))
}

/// The fields of /proc/<pid>/stat that we need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    pid: i32,
    state: u8,
    ppid: i32,
}

/// Parses `pid (comm) state ppid ...`. `comm` is arbitrary bytes (spaces,
/// parentheses, even newlines), so the fields resume after the *last* `)`.
fn parse_stat(stat: &[u8]) -> Option<Stat> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let pid = std::str::from_utf8(stat.get(..open)?)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Stat { pid, state, ppid })
}

/// `(pid, ppid)` for every process in /proc.
pub fn process_table() -> Vec<(i32, i32)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut table: Vec<(i32, i32)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = parse_stat(&fs::read(format!("/proc/{pid}/stat")).ok()?)?;
            Some((stat.pid, stat.ppid))
        })
        .collect();
    // readdir order is unspecified; ascending pids give a stable, ps-like
    // order within each generation.
    table.sort_unstable();
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_of_this_process() {
        let rss = rss_bytes(std::process::id()).unwrap();
        assert!(rss > 1 << 20, "{rss}");
        assert_eq!(rss_bytes(0), None);
    }
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    #[test]
    fn a_zombie_main_thread_with_a_running_thread_is_alive() {
        // The main thread leaves by the exit(2) syscall (not exit_group), as it does first
        // when a multi-threaded Node process is SIGKILLed; another thread runs on with the
        // process's files until it is killed.
        let code = "import ctypes, platform, threading, time\n\
                    threading.Thread(target=time.sleep, args=(30,)).start()\n\
                    print('up', flush=True)\n\
                    nr = {'x86_64': 60, 'aarch64': 93}[platform.machine()]\n\
                    ctypes.CDLL(None).syscall(nr, 0)\n";
        let mut child = Command::new("python3")
            .args(["-c", code])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (a test dependency, as in ops.test.js)");
        let pid = child.id() as i32;
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "up\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !exited(&fs::read(format!("/proc/{pid}/stat")).unwrap()) {
            assert!(Instant::now() < deadline, "the main thread did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            is_alive(pid),
            "a zombie main thread, but its other thread runs"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!is_alive(pid));
    }

    #[test]
    fn descendants_in_is_breadth_first_and_excludes_root() {
        let table = [
            (1, 0),
            (10, 1),
            (11, 10),
            (12, 10),
            (13, 11),
            (14, 12),
            (15, 1),
            (5, 13), // a grandchild with a lower pid (wrap-around)
        ];
        assert_eq!(descendants_in(&table, 10), vec![11, 12, 13, 14, 5]);
        assert_eq!(descendants_in(&table, 13), vec![5]);
        assert_eq!(descendants_in(&table, 14), Vec::<i32>::new());
        assert_eq!(descendants_in(&table, 999), Vec::<i32>::new());
        assert_eq!(descendants_in(&[], 1), Vec::<i32>::new());
    }

    #[test]
    fn descendants_in_survives_cycles_and_refuses_bogus_roots() {
        // 2 -> 3 -> 4 -> 2, and a self-parented process.
        let table = [(2, 4), (3, 2), (4, 3), (7, 7), (8, 7)];
        assert_eq!(descendants_in(&table, 2), vec![3, 4]);
        assert_eq!(descendants_in(&table, 7), vec![8]);
        assert_eq!(descendants_in(&[(1, 0), (2, 0)], 0), Vec::<i32>::new());
        assert_eq!(descendants_in(&[(1, -1)], -1), Vec::<i32>::new());
    }

    #[test]
    fn parse_stat_handles_hostile_comm() {
        let s = b"123 (a) b) (c) S 45 123 123 0 -1 4194560";
        assert_eq!(
            parse_stat(s),
            Some(Stat {
                pid: 123,
                state: b'S',
                ppid: 45
            })
        );
        let s = b"7 (x\ny z) Z 1 7";
        assert_eq!(parse_stat(s).map(|s| (s.state, s.ppid)), Some((b'Z', 1)));
        let s = b"9 (\xff\xfe) R 2 9";
        assert_eq!(parse_stat(s).map(|s| s.ppid), Some(2));
        for bad in [
            &b""[..],
            b"1 (x",
            b"1 x) S 2",
            b"x (y) S 2",
            b"1 (y) S",
            b"1 (y) S z",
        ] {
            assert_eq!(parse_stat(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn real_process_tree() {
        // sh -> sleep, where sh waits so the tree stays put.
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sh");
        let pid = i32::try_from(child.id()).expect("pid fits");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut kids = descendants(pid);
        while kids.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            kids = descendants(pid);
        }
        assert_eq!(kids.len(), 1, "{kids:?}");
        assert!(!kids.contains(&pid));
        assert!(is_alive(pid) && is_alive(kids[0]));
        let own = i32::try_from(std::process::id()).expect("pid fits");
        assert!(descendants(own).contains(&pid));

        // SAFETY: signalling processes this test started.
        unsafe { libc::kill(kids[0], libc::SIGKILL) };
        child.wait().expect("wait");
        // The sleep was reparented and reaped elsewhere; sh is reaped now.
        assert!(!is_alive(pid));
        assert!(descendants(pid).is_empty());
        assert!(descendants(0).is_empty());
    }

    #[test]
    fn zombies_are_dead() {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = i32::try_from(child.id()).expect("pid fits");
        // Not reaped yet: it becomes a zombie once it exits.
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!is_alive(pid));
        // SAFETY: signal 0 to our own unreaped child.
        assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "still a zombie");
        child.wait().expect("reap");
        assert!(!is_alive(pid));
        assert!(!is_alive(0) && !is_alive(-1));
        assert!(is_alive(
            i32::try_from(std::process::id()).expect("pid fits")
        ));
    }
}
