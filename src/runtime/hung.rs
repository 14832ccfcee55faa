//! The runtime's half of hung children: what the children are told (heartbeat interval, when
//! their watchdog thread writes a report, and where), and collecting that report for the core.
//!
//! Why a watchdog thread in the child: Node's `--report-on-signal` runs its report from a JS
//! signal handler, which never runs while the JS thread is busy. A worker thread of the child
//! that sees the main thread's heartbeat stop connects the inspector to the main thread
//! (`Session.connectToMainThread`, whose messages interrupt running JS), pauses it where it is
//! and has it write `process.report.writeReport()` there: the report's JavaScript stack is the
//! stuck one. See `lib/heartbeat.js`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::mpsc;

use super::Input;
use crate::core::HungReport;

/// Where children write reports and what they are told, fixed at start.
pub(super) struct Reports {
    /// `<baseDir>/run`, egg's run dir.
    pub(super) dir: PathBuf,
    pub(super) base_dir: PathBuf,
}

/// The heartbeat interval for a `workerTimeout`: 1 s (the lag gauge's resolution), shorter
/// when the timeout is so short that a few ticks would not fit (tests).
pub(crate) fn heartbeat_interval(worker_timeout: Option<Duration>) -> Duration {
    let second = Duration::from_secs(1);
    worker_timeout.map_or(second, |t| {
        (t / 3).clamp(Duration::from_millis(100), second)
    })
}

impl Reports {
    pub(super) fn new(base_dir: &Path) -> Self {
        Reports {
            dir: base_dir.join("run"),
            base_dir: base_dir.to_path_buf(),
        }
    }

    /// The variables `lib/heartbeat.js` reads.
    pub(super) fn child_env(
        &self,
        interval: Duration,
        worker_timeout: Option<Duration>,
    ) -> Vec<(String, String)> {
        // The watchdog thread writes its report a tick before the master gives up on the
        // child, so that the report is there when the master looks.
        let report_after =
            worker_timeout.map_or(0, |t| t.saturating_sub(interval).max(interval).as_millis());
        vec![
            (
                "EGG_CLUSTER_RS_HEARTBEAT".into(),
                interval.as_millis().to_string(),
            ),
            (
                "EGG_CLUSTER_RS_HANG_REPORT".into(),
                report_after.to_string(),
            ),
            (
                "EGG_CLUSTER_RS_REPORT_DIR".into(),
                self.dir.to_string_lossy().into_owned(),
            ),
        ]
    }

    /// The report the watchdog thread of process `pid` writes (`lib/heartbeat.js` names it).
    fn file(&self, pid: u32) -> PathBuf {
        self.dir.join(format!("hung.{pid}.report.json"))
    }

    /// Waits up to `wait` for `pid`'s report (one written in the last `fresh`, not one of an
    /// earlier process with the same pid) and hands what it says to the core.
    pub(super) fn collect(
        &self,
        pid: u32,
        wait: Duration,
        fresh: Duration,
        thread: bool,
        tx: mpsc::UnboundedSender<Input>,
    ) {
        if thread {
            // A worker thread has no watchdog of its own (a thread cannot connect the
            // inspector to its sibling): no report.
            let _ = tx.send(Input::HungReport {
                pid,
                report: HungReport::default(),
            });
            return;
        }
        let file = self.file(pid);
        let dir = self.dir.clone();
        let base_dir = self.base_dir.clone();
        let since = SystemTime::now() - fresh;
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + wait;
            let report = loop {
                let written = std::fs::metadata(&file)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= since);
                if written {
                    if let Ok(text) = std::fs::read(&file) {
                        break parse(&text, &file, &base_dir);
                    }
                }
                if tokio::time::Instant::now() >= deadline {
                    break HungReport {
                        not_written: unwritable(&dir, &base_dir),
                        ..HungReport::default()
                    };
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let _ = tx.send(Input::HungReport { pid, report });
        });
    }
}

/// Why no report could be written in `dir` (full, read-only, gone), or `None` if one could: a
/// page written and removed, as a report's first page would be.
fn unwritable(dir: &Path, base_dir: &Path) -> Option<String> {
    use std::io::Write;
    let probe = dir.join(format!(".hung-probe.{}", std::process::id()));
    let written = std::fs::File::create(&probe)
        .and_then(|mut f| f.write_all(&[b' '; 4096]).and_then(|()| f.sync_all()));
    let _ = std::fs::remove_file(&probe);
    let shown = dir
        .strip_prefix(base_dir)
        .map_or_else(|_| dir.display().to_string(), |d| d.display().to_string());
    written
        .err()
        .map(|e| format!("{shown}/ is not writable ({e})"))
}

/// The top frames of a report's JavaScript stack, below the frames that wrote it (the
/// inspector's `eval` of `writeReport`), with paths relative to the app.
pub(crate) fn parse(text: &[u8], file: &Path, base_dir: &Path) -> HungReport {
    let rel = |p: &str| {
        let base = format!("{}/", base_dir.display());
        p.replace(&base, "")
    };
    let frames = serde_json::from_slice::<Value>(text)
        .ok()
        .and_then(|v| v.pointer("/javascriptStack/stack").cloned())
        .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
        .unwrap_or_default();
    // The watchdog's evaluation (`lib/hang_reporter.js`) is on top, in one or more frames.
    let below_eval = frames
        .iter()
        .rposition(|f| f.starts_with("at eval (eval at "))
        .map_or(0, |i| i + 1);
    HungReport {
        file: Some(rel(&file.to_string_lossy())),
        frames: frames[below_eval..]
            .iter()
            .map(|f| rel(f.strip_prefix("at ").unwrap_or(f)))
            .collect(),
        not_written: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_below_the_report_writer_relative_to_the_app() {
        let report = serde_json::json!({
            "javascriptStack": {
                "message": "Error [ERR_SYNTHETIC]: JavaScript Callstack",
                "stack": [
                    "at eval (eval at spin (/srv/app/app/controller/home.js:1:1), <anonymous>:1:87)",
                    "at eval (eval at spin (/srv/app/app/controller/home.js:1:1), <anonymous>:1:217)",
                    "at spin (/srv/app/app/controller/home.js:12:7)",
                    "at HomeController.block (/srv/app/app/controller/home.js:20:5)",
                ]
            }
        });
        let r = parse(
            report.to_string().as_bytes(),
            Path::new("/srv/app/run/hung.7.report.json"),
            Path::new("/srv/app"),
        );
        assert_eq!(r.file.as_deref(), Some("run/hung.7.report.json"));
        assert_eq!(
            r.frames,
            [
                "spin (app/controller/home.js:12:7)",
                "HomeController.block (app/controller/home.js:20:5)"
            ]
        );
        // Not a report: the file is named, no frames.
        let r = parse(b"{", Path::new("/x/r.json"), Path::new("/srv/app"));
        assert_eq!((r.file.as_deref(), r.frames.len()), (Some("/x/r.json"), 0));
    }

    #[test]
    fn a_dir_that_refuses_a_page_is_said_unwritable() {
        let base = std::env::temp_dir().join(format!("hung-probe-{}", std::process::id()));
        let run = base.join("run");
        std::fs::create_dir_all(&run).unwrap();
        assert_eq!(unwritable(&run, &base), None);
        assert_eq!(
            std::fs::read_dir(&run).unwrap().count(),
            0,
            "the probe is removed"
        );
        let gone = base.join("gone");
        assert_eq!(
            unwritable(&gone, &base).as_deref(),
            Some("gone/ is not writable (No such file or directory (os error 2))")
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn interval_fits_the_timeout() {
        assert_eq!(heartbeat_interval(None), Duration::from_secs(1));
        assert_eq!(
            heartbeat_interval(Some(Duration::from_secs(60))),
            Duration::from_secs(1)
        );
        assert_eq!(
            heartbeat_interval(Some(Duration::from_millis(1500))),
            Duration::from_millis(500)
        );
        assert_eq!(
            heartbeat_interval(Some(Duration::from_millis(30))),
            Duration::from_millis(100)
        );
    }
}
