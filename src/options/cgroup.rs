//! The default worker count: the host's CPUs, capped by the container's CPU quota (cgroup v2
//! `cpu.max`, or v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`). egg-cluster uses `os.cpus().length`
//! alone, which forks one worker per host core even in a pod limited to two CPUs.

use std::fs;
use std::path::Path;

/// Number of workers to start when the user does not say: the host CPU
/// count, capped by the container's CPU quota so that a pod limited to two
/// CPUs on a 64-core node does not fork 64 workers.
pub(crate) fn default_workers(host_cpus: usize) -> usize {
    let cpu_max = cgroup_v2_cpu_max_files();
    let cpu_max: Vec<&str> = cpu_max.iter().map(String::as_str).collect();
    let (quota, period) = cgroup_v1_files();
    default_workers_from(host_cpus, &cpu_max, quota.as_deref(), period.as_deref())
}

/// Pure part of [`default_workers`].
///
/// `cpu_max` holds the contents of every cgroup v2 `cpu.max` file that
/// applies to the process (its own cgroup and its ancestors; the tightest
/// one wins). `cfs_quota_us`/`cfs_period_us` are the cgroup v1 files and
/// are only consulted when no v2 limit was found. Unparseable contents
/// count as "no limit" rather than an error: a broken cgroup file should
/// not prevent the cluster from starting.
pub(crate) fn default_workers_from(
    host_cpus: usize,
    cpu_max: &[&str],
    cfs_quota_us: Option<&str>,
    cfs_period_us: Option<&str>,
) -> usize {
    let v2 = cpu_max.iter().filter_map(|c| parse_cpu_max(c)).min();
    let limit = v2.or_else(|| {
        let quota = cfs_quota_us?.trim().parse::<i64>().ok()?;
        let period = cfs_period_us?.trim().parse::<i64>().ok()?;
        quota_cpus(quota, period)
    });
    let cpus = match limit {
        Some(limit) => host_cpus.min(limit),
        None => host_cpus,
    };
    cpus.max(1)
}

/// `"max 100000"` means unlimited; `"200000 100000"` means two CPUs.
fn parse_cpu_max(contents: &str) -> Option<usize> {
    let mut fields = contents.split_whitespace();
    let quota = fields.next()?;
    if quota == "max" {
        return None;
    }
    let quota = quota.parse::<i64>().ok()?;
    // The period may be omitted when written, but the kernel always reports
    // it; fall back to the kernel default just in case.
    let period = match fields.next() {
        Some(p) => p.parse::<i64>().ok()?,
        None => 100_000,
    };
    quota_cpus(quota, period)
}

/// ceil(quota / period), or `None` for "unlimited" (v1 uses -1) and for
/// nonsense values that would otherwise divide by zero.
fn quota_cpus(quota: i64, period: i64) -> Option<usize> {
    if quota <= 0 || period <= 0 {
        return None;
    }
    let cpus = (quota + period - 1) / period;
    usize::try_from(cpus).ok()
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Every readable `cpu.max` from the process' own cgroup up to the mount
/// root. With a cgroup namespace (the usual container setup) the root *is*
/// the container's cgroup; without one (e.g. a systemd unit with
/// `CPUQuota=`) the limit sits on the path named in /proc/self/cgroup.
fn cgroup_v2_cpu_max_files() -> Vec<String> {
    let root = Path::new(CGROUP_ROOT);
    let mut dirs = vec![root.to_path_buf()];
    if let Ok(self_cgroup) = fs::read_to_string("/proc/self/cgroup") {
        if let Some(rel) = self_cgroup
            .lines()
            .find_map(|line| line.strip_prefix("0::"))
        {
            let mut dir = root.join(rel.trim_start_matches('/'));
            while dir.starts_with(root) && dir != root {
                dirs.push(dir.clone());
                if !dir.pop() {
                    break;
                }
            }
        }
    }
    dirs.iter()
        .filter_map(|d| fs::read_to_string(d.join("cpu.max")).ok())
        .collect()
}

/// cgroup v1 quota and period from the usual mount points of the cpu
/// controller. Only the mount root is read: inside a v1 container the path
/// in /proc/self/cgroup refers to the host hierarchy and does not exist.
fn cgroup_v1_files() -> (Option<String>, Option<String>) {
    for dir in ["cpu", "cpu,cpuacct", "cpuacct,cpu"] {
        let dir = Path::new(CGROUP_ROOT).join(dir);
        let quota = fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok();
        let period = fs::read_to_string(dir.join("cpu.cfs_period_us")).ok();
        if quota.is_some() && period.is_some() {
            return (quota, period);
        }
    }
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_limits() {
        assert_eq!(default_workers_from(8, &[], None, None), 8);
        assert_eq!(default_workers_from(0, &[], None, None), 1);
        assert_eq!(default_workers_from(8, &["max 100000\n"], None, None), 8);
        assert_eq!(default_workers_from(8, &["200000 100000\n"], None, None), 2);
        assert_eq!(default_workers_from(8, &["150000 100000"], None, None), 2);
        assert_eq!(default_workers_from(8, &["50000 100000"], None, None), 1);
        assert_eq!(default_workers_from(2, &["800000 100000"], None, None), 2);
        // The tightest of several nested limits wins.
        assert_eq!(
            default_workers_from(
                16,
                &["max 100000", "400000 100000", "300000 100000"],
                None,
                None
            ),
            3
        );
        // v1 only applies when v2 gave nothing.
        assert_eq!(
            default_workers_from(8, &[], Some("300000\n"), Some("100000\n")),
            3
        );
        assert_eq!(
            default_workers_from(8, &[], Some("-1\n"), Some("100000\n")),
            8
        );
        assert_eq!(
            default_workers_from(8, &["max 100000"], Some("100000"), Some("100000")),
            1
        );
        // Garbage and zero periods are "no limit", never a panic.
        assert_eq!(
            default_workers_from(8, &["", "abc", "100 0"], Some("x"), Some("0")),
            8
        );
        assert_eq!(default_workers_from(8, &[], Some("100"), Some("0")), 8);
        assert!(default_workers(3) >= 1 && default_workers(3) <= 3);
    }
}
