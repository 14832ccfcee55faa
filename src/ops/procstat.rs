//! CPU usage from `/proc/<pid>/stat`.

/// `utime + stime` and `starttime` (clock ticks) from the text of `/proc/<pid>/stat`. The
/// command name may hold spaces and parentheses, so the fields are counted after the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<(u64, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15, starttime 22 (1-based, man 5 proc).
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some((field(14)? + field(15)?, field(22)?))
}

/// CPU time of `pid` in clock ticks, and when it started (ticks after boot).
pub(crate) fn read(pid: u32) -> Option<(u64, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub(crate) fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Seconds since boot (`/proc/uptime`).
pub(crate) fn uptime_secs() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU % between two samples (`ticks` used over `secs` of wall time), 100 = one core.
pub(crate) fn percent(ticks: u64, secs: f64, clk_tck: u64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    let pct = ticks as f64 / clk_tck as f64 / secs * 100.0;
    (pct * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_strange_name() {
        let line = "1234 (no de) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 11 0 9876 1000 100 18446744073709551615";
        assert_eq!(parse_stat(line), Some((300, 9876)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (a) S 1"), None);
    }

    #[test]
    fn this_process_has_a_stat() {
        let (ticks, start) = read(std::process::id()).unwrap();
        assert!(start > 0);
        let _ = ticks;
        assert!(uptime_secs().unwrap() > 0.0);
        assert_eq!(percent(50, 1.0, 100), 50.0);
        assert_eq!(percent(1, 0.0, 100), 0.0);
    }
}
