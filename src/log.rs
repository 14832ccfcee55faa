//! The master's product log, byte-compatible with egg-logger's
//! `EggConsoleLogger` as egg-cluster configures it:
//!
//! ```text
//! 2024-05-01 12:34:56,789 INFO 12345 [master] egg started on http://127.0.0.1:7001 (1234ms)
//! ```
//!
//! Lines are written straight to fd 1 (ERROR to fd 2) with `write(2)`, one
//! line per write loop, so they can't be torn apart by Node's own writes to
//! the same descriptors and nothing sits in a buffer when the process dies.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

/// egg-logger levels, in increasing severity. `None` disables logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
    None,
}

impl Level {
    /// Case-insensitive level name, as egg-logger's `normalizeLevel`.
    /// `ALL` (egg-logger's `-Infinity`) enables everything, like `DEBUG`.
    pub fn from_name(name: &str) -> Option<Level> {
        // JS `toUpperCase()` is Unicode-aware, and so is this.
        match name.to_uppercase().as_str() {
            "ALL" | "DEBUG" => Some(Level::Debug),
            "INFO" => Some(Level::Info),
            "WARN" => Some(Level::Warn),
            "ERROR" => Some(Level::Error),
            "NONE" => Some(Level::None),
            _ => None,
        }
    }

    /// The name printed in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
            Level::None => "NONE",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LoggerConfig {
    /// `EGG_MASTER_LOGGER_LEVEL`; missing or empty means INFO.
    pub level: Option<String>,
    /// `EGG_LOG`, which overrides `level` when non-empty, as egg-logger's
    /// ConsoleTransport does.
    pub egg_log: Option<String>,
    /// Minutes east of UTC (`-new Date().getTimezoneOffset()`). Passed in
    /// from JS because calling `localtime_r` here would race with Node
    /// mutating the environment (`TZ`) on another thread.
    pub tz_offset_minutes: i32,
    /// Colorize like chalk does when the terminal supports it.
    pub color: bool,
}

/// Thread-safe console logger; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Logger {
    threshold: Level,
    tz_offset_minutes: AtomicI32,
    color: bool,
    pid: u32,
    hostname: String,
}

/// Serialises our own writers. The descriptors are process-wide, so one lock
/// is shared by every `Logger` instance.
static WRITE_LOCK: Mutex<()> = Mutex::new(());

impl Logger {
    pub fn new(cfg: LoggerConfig) -> Self {
        let requested = cfg
            .egg_log
            .as_deref()
            .filter(|s| !s.is_empty())
            .or(cfg.level.as_deref().filter(|s| !s.is_empty()))
            .unwrap_or("INFO");
        // egg-logger would silently log nothing for an unknown name; falling
        // back to the default is friendlier for a master process.
        let threshold = Level::from_name(requested).unwrap_or(Level::Info);
        Logger {
            threshold,
            tz_offset_minutes: AtomicI32::new(cfg.tz_offset_minutes),
            color: cfg.color,
            pid: std::process::id(),
            hostname: hostname(),
        }
    }

    pub fn enabled(&self, level: Level) -> bool {
        level != Level::None && self.threshold != Level::None && level >= self.threshold
    }

    /// Logs at a level chosen at runtime; `Level::None` logs nothing.
    pub fn log_at(&self, level: Level, msg: &str) {
        self.emit(level, msg);
    }

    pub fn info(&self, msg: &str) {
        self.emit(Level::Info, msg);
    }

    pub fn warn(&self, msg: &str) {
        self.emit(Level::Warn, msg);
    }

    pub fn error(&self, msg: &str) {
        self.emit(Level::Error, msg);
    }

    /// `logger.error(err)` for an error with `err.name = name`.
    pub fn error_named(&self, name: &str, message: &str) {
        if self.enabled(Level::Error) {
            self.error(&self.format_error(name, message));
        }
    }

    /// The message part egg-logger's `formatError` produces, minus the stack
    /// and property lines, which have no counterpart for a Rust-side error.
    pub fn format_error(&self, name: &str, message: &str) -> String {
        let name = if name.is_empty() { "no_name" } else { name };
        let message = if message.is_empty() {
            "no_message"
        } else {
            message
        };
        format!(
            "nodejs.{name}: {message}\npid: {}\nhostname: {}\n",
            self.pid, self.hostname
        )
    }

    /// `"YYYY-MM-DD HH:mm:ss,SSS LEVEL PID msg"` without color or newline.
    pub fn format_line(&self, level: Level, msg: &str, unix_millis: i64) -> String {
        let offset = self.tz_offset_minutes.load(Ordering::Relaxed);
        format!(
            "{} {} {} {}",
            log_date(unix_millis, offset),
            level.as_str(),
            self.pid,
            msg
        )
    }

    /// Exactly the bytes written for a line: colored if configured, with
    /// the trailing newline.
    pub fn render(&self, level: Level, msg: &str, unix_millis: i64) -> String {
        let line = self.format_line(level, msg, unix_millis);
        let mut out = if self.color {
            colorize(level, &line)
        } else {
            line
        };
        out.push('\n');
        out
    }

    /// One of cfork's `console.info`/`console.error` lines,
    /// `[YYYY-MM-DD HH:mm:ss.SSS] [cfork:master:PID] msg`: console output, so no level applies.
    pub fn cfork(&self, error: bool, msg: &str) {
        let offset = self.tz_offset_minutes.load(Ordering::Relaxed);
        let line = format!(
            "[{}] [cfork:master:{}] {msg}\n",
            log_date_sep(now_millis(), offset, '.'),
            self.pid
        );
        let fd = if error {
            libc::STDERR_FILENO
        } else {
            libc::STDOUT_FILENO
        };
        let _ = write_line(fd, line.as_bytes());
    }

    fn emit(&self, level: Level, msg: &str) {
        if !self.enabled(level) {
            return;
        }
        let line = self.render(level, msg, now_millis());
        let fd = if level >= Level::Error {
            libc::STDERR_FILENO
        } else {
            libc::STDOUT_FILENO
        };
        // A failed log write has nowhere to be reported; dropping the line
        // is the only sensible outcome (Node would emit an EPIPE error on
        // the stream and carry on too).
        let _ = write_line(fd, line.as_bytes());
    }
}

fn now_millis() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        // Clock before 1970: negate the distance instead of failing.
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |m| -m),
    }
}

/// Writes the whole buffer with as few `write(2)` calls as the kernel
/// allows, holding the lock so our own lines never interleave.
fn write_line(fd: libc::c_int, mut buf: &[u8]) -> std::io::Result<()> {
    let _guard = WRITE_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid, initialised slice for its whole length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            // `n <= buf.len()` is guaranteed by write(2).
            buf = buf.get(n as usize..).unwrap_or_default();
            continue;
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            // Someone (a parent process, or libuv for a shared TTY) made the
            // descriptor non-blocking. Wait for room instead of dropping the
            // line: Node's stdout on pipes and TTYs is synchronous on Linux,
            // so blocking here matches what the JS master would do.
            Some(code) if code == libc::EAGAIN || code == libc::EWOULDBLOCK => wait_writable(fd)?,
            _ => return Err(err),
        }
    }
    Ok(())
}

fn wait_writable(fd: libc::c_int) -> std::io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is a valid pollfd and we pass a count of one.
        let rc = unsafe { libc::poll(&mut pfd, 1, -1) };
        if rc >= 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// `os.hostname()`, read once per logger.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    // POSIX does not promise NUL termination on truncation.
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// utility's `logDate(',')`: local time as `YYYY-MM-DD HH:mm:ss,SSS`, where
/// the year is not zero-padded (`${d.getFullYear()}`).
fn log_date(unix_millis: i64, tz_offset_minutes: i32) -> String {
    log_date_sep(unix_millis, tz_offset_minutes, ',')
}

/// utility's `logDate(sep)`; cfork uses the default separator `.`.
fn log_date_sep(unix_millis: i64, tz_offset_minutes: i32, sep: char) -> String {
    let local = unix_millis.saturating_add(i64::from(tz_offset_minutes) * 60_000);
    let days = local.div_euclid(86_400_000);
    let ms_of_day = local.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let secs = ms_of_day / 1000;
    format!(
        "{year}-{month:02}-{day:02} {:02}:{:02}:{:02}{sep}{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ms_of_day % 1000
    )
}

/// Proleptic Gregorian date for a count of days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const GREEN: &str = "\x1b[32m";
const BLUE: &str = "\x1b[34m";
const CYAN: &str = "\x1b[36m";
/// chalk's foreground close code, shared by every color.
const CLOSE: &str = "\x1b[39m";

/// The colored half of egg-logger's `consoleFormatter`.
fn colorize(level: Level, line: &str) -> String {
    match level {
        Level::Error => chalk(RED, line),
        Level::Warn => chalk(YELLOW, line),
        _ => highlight(line),
    }
}

/// chalk 4's `applyStyle` for a single foreground color.
fn chalk(open: &str, s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    // Re-open after any close code already inside, so the rest of the
    // string keeps the color.
    let reopened = if s.contains('\x1b') {
        s.replace(CLOSE, &format!("{CLOSE}{open}"))
    } else {
        s.to_owned()
    };
    // Close before each line break and re-open after it (chalk does this so
    // colors don't bleed in some terminals); `\r\n` stays together.
    let mut body = String::with_capacity(reopened.len() + 16);
    let mut rest = reopened.as_str();
    while let Some(i) = rest.find('\n') {
        let (line, eol) = match rest[..i].strip_suffix('\r') {
            Some(line) => (line, "\r\n"),
            None => (&rest[..i], "\n"),
        };
        body.push_str(line);
        body.push_str(CLOSE);
        body.push_str(eol);
        body.push_str(open);
        rest = &rest[i + 1..];
    }
    body.push_str(rest);
    format!("{open}{body}{CLOSE}")
}

/// The highlighting egg-logger's `consoleFormatter` applies to non-error
/// lines, in the same order as its three `String.replace` calls (so their
/// interactions are reproduced too).
fn highlight(line: &str) -> String {
    let s = replace_matches(line, GREEN, match_duration);
    let s = replace_matches(&s, BLUE, match_category);
    replace_matches(&s, CYAN, match_http_method)
}

/// Global regex replace: `matcher(s, i)` returns the end of a match starting
/// at byte `i`. Matches are ASCII, so all slicing is on char boundaries.
fn replace_matches(s: &str, open: &str, matcher: fn(&[u8], usize) -> Option<usize>) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        match matcher(bytes, i) {
            Some(end) => {
                out.push_str(&s[copied..i]);
                out.push_str(open);
                out.push_str(&s[i..end]);
                out.push_str(CLOSE);
                copied = end;
                i = end;
            }
            None => i += 1,
        }
    }
    out.push_str(&s[copied..]);
    out
}

/// `/([0-9]+ms)/`
fn match_duration(b: &[u8], i: usize) -> Option<usize> {
    // A match can only start at the beginning of a digit run: a later start
    // would reach the same end, and the regex engine tries the earliest one.
    if i > 0 && b[i - 1].is_ascii_digit() {
        return None;
    }
    let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    let end = i + digits;
    (digits > 0 && b[end..].starts_with(b"ms")).then_some(end + 2)
}

/// `/(\[[\w\-_.:]+\])/`
fn match_category(b: &[u8], i: usize) -> Option<usize> {
    if b[i] != b'[' {
        return None;
    }
    let inner = b[i + 1..]
        .iter()
        .take_while(|&&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':'))
        .count();
    let close = i + 1 + inner;
    (inner > 0 && b.get(close) == Some(&b']')).then_some(close + 1)
}

/// `/(GET|POST|PUT|PATH|HEAD|DELETE) /` (egg-logger really says `PATH`).
fn match_http_method(b: &[u8], i: usize) -> Option<usize> {
    ["GET ", "POST ", "PUT ", "PATH ", "HEAD ", "DELETE "]
        .iter()
        .find(|m| b[i..].starts_with(m.as_bytes()))
        .map(|m| i + m.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logger(level: Option<&str>, egg_log: Option<&str>, offset: i32, color: bool) -> Logger {
        Logger::new(LoggerConfig {
            level: level.map(str::to_owned),
            egg_log: egg_log.map(str::to_owned),
            tz_offset_minutes: offset,
            color,
        })
    }

    // 2021-03-04T05:06:07.089Z
    const T: i64 = 1_614_834_367_089;

    #[test]
    fn format_line_utc_and_offsets() {
        let pid = std::process::id();
        let l = logger(None, None, 0, false);
        assert_eq!(
            l.format_line(Level::Info, "[master] hi", T),
            format!("2021-03-04 05:06:07,089 INFO {pid} [master] hi")
        );
        // +08:00 (China), +05:45 (Nepal), -03:30 (Newfoundland).
        let l = logger(None, None, 480, false);
        assert!(l
            .format_line(Level::Warn, "x", T)
            .starts_with("2021-03-04 13:06:07,089 WARN "));
        let l = logger(None, None, 345, false);
        assert!(l
            .format_line(Level::Info, "x", T)
            .starts_with("2021-03-04 10:51:07,089"));
        let l = logger(None, None, -210, false);
        assert!(l
            .format_line(Level::Info, "x", T)
            .starts_with("2021-03-04 01:36:07,089"));
    }

    #[test]
    fn format_line_day_month_year_rollover() {
        // 2020-12-31T23:30:00.005Z
        let t = 1_609_457_400_005;
        assert!(logger(None, None, 60, false)
            .format_line(Level::Info, "", t)
            .starts_with("2021-01-01 00:30:00,005 INFO "));
        // 2021-01-01T00:10:00.000Z going west into the previous year.
        let t = 1_609_459_800_000;
        assert!(logger(None, None, -600, false)
            .format_line(Level::Info, "", t)
            .starts_with("2020-12-31 14:10:00,000 "));
        // Leap day, and the day after.
        let leap = 1_582_934_400_000; // 2020-02-29T00:00:00Z
        assert!(logger(None, None, 0, false)
            .format_line(Level::Info, "", leap)
            .starts_with("2020-02-29 00:00:00,000"));
        assert!(logger(None, None, 0, false)
            .format_line(Level::Info, "", leap + 86_400_000)
            .starts_with("2020-03-01 00:00:00,000"));
    }

    #[test]
    fn log_date_edges() {
        assert_eq!(log_date(0, 0), "1970-01-01 00:00:00,000");
        assert_eq!(log_date(-1, 0), "1969-12-31 23:59:59,999");
        assert_eq!(log_date(951_782_400_000, 0), "2000-02-29 00:00:00,000");
        // Years are not zero-padded, as in `${d.getFullYear()}`.
        assert_eq!(log_date(-62_135_596_800_000, 0), "1-01-01 00:00:00,000");
        // Absurd inputs must not panic.
        let _ = log_date(i64::MAX, i32::MAX);
        let _ = log_date(i64::MIN, i32::MIN);
    }

    #[test]
    fn civil_from_days_matches_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
    }

    #[test]
    fn levels() {
        assert!(Level::Debug < Level::Info && Level::Error < Level::None);
        assert_eq!(Level::from_name("warn"), Some(Level::Warn));
        assert_eq!(Level::from_name("Error"), Some(Level::Error));
        assert_eq!(Level::from_name("all"), Some(Level::Debug));
        assert_eq!(Level::from_name("verbose"), None);

        let l = logger(None, None, 0, false);
        assert!(!l.enabled(Level::Debug) && l.enabled(Level::Info) && l.enabled(Level::Error));
        assert!(!l.enabled(Level::None));

        let l = logger(Some("warn"), None, 0, false);
        assert!(!l.enabled(Level::Info) && l.enabled(Level::Warn));

        // EGG_LOG wins; empty values are ignored; unknown falls back to INFO.
        let l = logger(Some("ERROR"), Some("debug"), 0, false);
        assert!(l.enabled(Level::Debug));
        let l = logger(Some("error"), Some(""), 0, false);
        assert!(!l.enabled(Level::Warn));
        let l = logger(Some(""), None, 0, false);
        assert!(l.enabled(Level::Info) && !l.enabled(Level::Debug));
        let l = logger(Some("loud"), None, 0, false);
        assert!(l.enabled(Level::Info) && !l.enabled(Level::Debug));

        let l = logger(Some("NONE"), None, 0, false);
        assert!(!l.enabled(Level::Error));
        let l = logger(None, Some("none"), 0, false);
        assert!(!l.enabled(Level::Error));
    }

    #[test]
    fn error_named_layout() {
        let l = logger(None, None, 0, false);
        let msg = l.format_error("AgentWorkerDiedError", "[master] agent_worker#1:42 died");
        assert_eq!(
            msg,
            format!(
                "nodejs.AgentWorkerDiedError: [master] agent_worker#1:42 died\npid: {}\nhostname: {}\n",
                std::process::id(),
                hostname()
            )
        );
        assert!(l
            .format_error("", "")
            .starts_with("nodejs.no_name: no_message\npid: "));
        // The full output ends with the message's own newline plus the EOL.
        let out = l.render(Level::Error, &msg, T);
        assert!(out.starts_with("2021-03-04 05:06:07,089 ERROR "));
        assert!(out.ends_with(&format!("hostname: {}\n\n", hostname())));
    }

    #[test]
    fn render_plain_and_colored() {
        let pid = std::process::id();
        let plain = logger(None, None, 0, false);
        assert_eq!(
            plain.render(Level::Info, "[master] started (12ms)", T),
            format!("2021-03-04 05:06:07,089 INFO {pid} [master] started (12ms)\n")
        );

        let color = logger(None, None, 0, true);
        assert_eq!(
            color.render(Level::Error, "boom", T),
            format!("\x1b[31m2021-03-04 05:06:07,089 ERROR {pid} boom\x1b[39m\n")
        );
        assert_eq!(
            color.render(Level::Warn, "a\nb", T),
            format!("\x1b[33m2021-03-04 05:06:07,089 WARN {pid} a\x1b[39m\n\x1b[33mb\x1b[39m\n")
        );
        assert_eq!(
            color.render(Level::Info, "[master] GET /x took 12ms", T),
            format!(
                "2021-03-04 05:06:07,089 INFO {pid} \x1b[34m[master]\x1b[39m \
                 \x1b[36mGET \x1b[39m/x took \x1b[32m12ms\x1b[39m\n"
            )
        );
    }

    /// Expected outputs generated by egg-logger 3.6.1's `consoleFormatter`
    /// with chalk 4.1.2 forced to color.
    #[test]
    fn colorize_matches_egg_logger_golden_output() {
        let cases = [
            ("INFO", "[master] GET /x took 12ms", "D INFO 1 \x1b[34m[master]\x1b[39m \x1b[36mGET \x1b[39m/x took \x1b[32m12ms\x1b[39m"),
            ("WARN", "[master] GET /x took 12ms", "\x1b[33mD WARN 1 [master] GET /x took 12ms\x1b[39m"),
            ("ERROR", "[master] GET /x took 12ms", "\x1b[31mD ERROR 1 [master] GET /x took 12ms\x1b[39m"),
            ("INFO", "[5ms]", "D INFO 1 [\x1b[32m5ms\x1b\x1b[34m[39m]\x1b[39m"),
            ("WARN", "[5ms]", "\x1b[33mD WARN 1 [5ms]\x1b[39m"),
            ("ERROR", "[5ms]", "\x1b[31mD ERROR 1 [5ms]\x1b[39m"),
            ("INFO", "1x 23ms 4msg", "D INFO 1 1x \x1b[32m23ms\x1b[39m \x1b[32m4ms\x1b[39mg"),
            ("WARN", "1x 23ms 4msg", "\x1b[33mD WARN 1 1x 23ms 4msg\x1b[39m"),
            ("ERROR", "1x 23ms 4msg", "\x1b[31mD ERROR 1 1x 23ms 4msg\x1b[39m"),
            ("INFO", "PATCH PUT DELETE", "D INFO 1 PATCH \x1b[36mPUT \x1b[39mDELETE"),
            ("WARN", "PATCH PUT DELETE", "\x1b[33mD WARN 1 PATCH PUT DELETE\x1b[39m"),
            ("ERROR", "PATCH PUT DELETE", "\x1b[31mD ERROR 1 PATCH PUT DELETE\x1b[39m"),
            ("INFO", "a\r\nb\x1b[39mc", "D INFO 1 a\r\nb\x1b[39mc"),
            ("WARN", "a\r\nb\x1b[39mc", "\x1b[33mD WARN 1 a\x1b[39m\r\n\x1b[33mb\x1b[39m\x1b[33mc\x1b[39m"),
            ("ERROR", "a\r\nb\x1b[39mc", "\x1b[31mD ERROR 1 a\x1b[39m\r\n\x1b[31mb\x1b[39m\x1b[31mc\x1b[39m"),
            ("INFO", "[x]\n2ms", "D INFO 1 \x1b[34m[x]\x1b[39m\n\x1b[32m2ms\x1b[39m"),
            ("WARN", "[x]\n2ms", "\x1b[33mD WARN 1 [x]\x1b[39m\n\x1b[33m2ms\x1b[39m"),
            ("ERROR", "[x]\n2ms", "\x1b[31mD ERROR 1 [x]\x1b[39m\n\x1b[31m2ms\x1b[39m"),
        ];
        for (level, msg, expected) in cases {
            let level = Level::from_name(level).expect("known level");
            let line = format!("D {} 1 {msg}", level.as_str());
            assert_eq!(colorize(level, &line), expected, "{level:?} {msg:?}");
        }
    }

    #[test]
    fn chalk_semantics() {
        assert_eq!(chalk(RED, ""), "");
        assert_eq!(
            chalk(RED, "a\x1b[39mb"),
            "\x1b[31ma\x1b[39m\x1b[31mb\x1b[39m"
        );
        assert_eq!(
            chalk(RED, "a\r\nb"),
            "\x1b[31ma\x1b[39m\r\n\x1b[31mb\x1b[39m"
        );
    }

    #[test]
    fn highlight_matches_egg_logger_regexes() {
        // Only whole digit runs directly followed by "ms".
        assert_eq!(
            highlight("1x 23ms 4msg"),
            "1x \x1b[32m23ms\x1b[39m \x1b[32m4ms\x1b[39mg"
        );
        // Categories: word chars plus -_.: only, and non-empty.
        assert_eq!(
            highlight("[a.b-c:d] [] [x y] [é]"),
            "\x1b[34m[a.b-c:d]\x1b[39m [] [x y] [é]"
        );
        // The JS quirk: the green close code's "[39m" becomes a category.
        assert_eq!(highlight("[5ms]"), "[\x1b[32m5ms\x1b\x1b[34m[39m]\x1b[39m");
        assert_eq!(
            highlight("PATCH PUT DELETE"),
            "PATCH \x1b[36mPUT \x1b[39mDELETE"
        );
    }

    #[test]
    fn write_line_reaches_a_pipe_and_reports_bad_fds() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) returns.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let line = b"hello world\n";
        write_line(fds[1], line).expect("write to pipe");
        let mut buf = [0u8; 32];
        // SAFETY: reading into a buffer we own, then closing our own fds.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        assert_eq!(&buf[..n as usize], line);
        assert!(write_line(-1, b"x\n").is_err());
    }

    #[test]
    fn logger_is_send_sync_and_methods_do_not_panic() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Logger>();
        let l = logger(Some("NONE"), None, 0, false);
        l.info("x");
        l.error("x");
        l.error_named("E", "x");
        l.log_at(Level::Warn, "x");
        l.log_at(Level::None, "x");
        assert!(logger(None, None, 60, false)
            .format_line(Level::Info, "", 0)
            .starts_with("1970-01-01 01:00"));
    }
}
