//! The runtime's half of hung children: what the children are told (heartbeat interval, and
//! where their watchdog thread finds the master's requests for a report), asking for a hung
//! child's report and collecting it for the core.
//!
//! Why a watchdog thread in the child: Node's `--report-on-signal` runs its report from a JS
//! signal handler, which never runs while the JS thread is busy. A worker thread of the child
//! (`lib/hang_reporter.js`) that sees the main thread stop ticking looks for the master's
//! request, `run/hung.<pid>.request` (a file: the child's IPC channel is read by the stuck
//! thread); when there is one, it connects the inspector to the main thread
//! (`Session.connectToMainThread`, whose messages interrupt running JS), pauses it where it is
//! and has it write `process.report.writeReport()` there: the report's JavaScript stack is the
//! stuck one. It writes a report only when asked, so only for a child the master found hung;
//! when it cannot, it writes why in `run/hung.<pid>.report.error`.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;

use super::Input;
use crate::core::{report_wait, HungReport, NoReport};

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

/// How long the watchdog thread may take to pause the main thread before it gives up and
/// says so: it finds the request within an interval, and must have answered before the
/// master stops waiting ([`report_wait`]), with a second to spare.
fn pause_limit(interval: Duration) -> Duration {
    report_wait(interval).saturating_sub(interval + Duration::from_secs(1))
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
        let pause = worker_timeout.map_or(0, |_| pause_limit(interval).as_millis());
        vec![
            (
                "EGG_CLUSTER_RS_HEARTBEAT".into(),
                interval.as_millis().to_string(),
            ),
            ("EGG_CLUSTER_RS_HANG_REPORT".into(), pause.to_string()),
            (
                "EGG_CLUSTER_RS_REPORT_DIR".into(),
                self.dir.to_string_lossy().into_owned(),
            ),
        ]
    }

    /// `run/hung.<pid>.<what>` (`lib/hang_reporter.js` names them the same).
    fn file(&self, pid: u32, what: &str) -> PathBuf {
        self.dir.join(format!("hung.{pid}.{what}"))
    }

    /// `path` as the log shows it: relative to the app when under it.
    fn shown(&self, path: &Path) -> String {
        shown(path, &self.base_dir)
    }

    /// Asks process `pid`'s watchdog thread for a report whose message is `message`, waits up
    /// to `wait` for it (or for why there is none) and hands what it says to the core.
    pub(super) fn collect(
        &self,
        pid: u32,
        wait: Duration,
        message: &str,
        thread: bool,
        tx: mpsc::UnboundedSender<Input>,
    ) {
        let done = |report| {
            let _ = tx.send(Input::HungReport { pid, report });
        };
        if thread {
            return done(HungReport::none(NoReport::Thread));
        }
        let (report, request, failed) = (
            self.file(pid, "report.json"),
            self.file(pid, "request"),
            self.file(pid, "report.error"),
        );
        // Left by an earlier stall (or an earlier process with this pid): what is there once
        // the request is written is this one's.
        let _ = std::fs::remove_file(&report);
        let _ = std::fs::remove_file(&failed);
        if let Err(e) = self.ask(&request, message) {
            let dir = self.shown(&self.dir);
            return done(HungReport::none(NoReport::Unwritable {
                dir: format!("{}/", dir.trim_end_matches('/')),
                error: e.to_string(),
            }));
        }
        let base_dir = self.base_dir.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + wait;
            let found = loop {
                // Both are renamed into place whole.
                if let Ok(file) = std::fs::File::open(&report) {
                    break parse(BufReader::new(file), &report, &base_dir);
                }
                if let Ok(why) = std::fs::read_to_string(&failed) {
                    break HungReport::none(NoReport::Failed(why.trim().to_string()));
                }
                if tokio::time::Instant::now() >= deadline {
                    break HungReport::none(if request.exists() {
                        NoReport::NotTaken
                    } else {
                        NoReport::NotWritten(wait)
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            // A request left behind would have a later stall of this child reported, which
            // the master did not ask for.
            let _ = std::fs::remove_file(&request);
            let _ = std::fs::remove_file(&failed);
            let _ = tx.send(Input::HungReport { pid, report: found });
        });
    }

    /// Writes the request whole (the watchdog may look at any time).
    fn ask(&self, request: &Path, message: &str) -> std::io::Result<()> {
        // A missing dir is made; one that cannot be is reported by the write.
        let _ = std::fs::create_dir_all(&self.dir);
        let tmp = request.with_extension("request.tmp");
        std::fs::write(&tmp, message)
            .and_then(|()| std::fs::rename(&tmp, request))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
    }
}

fn shown(path: &Path, base_dir: &Path) -> String {
    let base = format!("{}/", base_dir.display());
    path.to_string_lossy().replace(&base, "")
}

/// What the master reads of a Node report: its JavaScript stack. The rest (libuv handles,
/// shared objects, the environment: tens to hundreds of KB in an egg worker) is skipped as it
/// streams by, never held: the master's memory must not grow a step with each report.
#[derive(Deserialize)]
struct NodeReport {
    #[serde(rename = "javascriptStack")]
    javascript_stack: Option<JavascriptStack>,
}

#[derive(Deserialize)]
struct JavascriptStack {
    #[serde(default)]
    stack: Vec<String>,
}

/// The top frames of a report's JavaScript stack, below the frames that wrote it (the
/// inspector's `eval` of `writeReport`), with paths relative to the app.
pub(crate) fn parse(text: impl Read, file: &Path, base_dir: &Path) -> HungReport {
    let rel = |p: &str| shown(Path::new(p), base_dir);
    let frames = serde_json::from_reader::<_, NodeReport>(text)
        .ok()
        .and_then(|r| r.javascript_stack)
        .map(|s| s.stack)
        .unwrap_or_default();
    // The watchdog's evaluation (`lib/hang_reporter.js`) is on top, in one or more frames.
    let below_eval = frames
        .iter()
        .rposition(|f| f.starts_with("at eval (eval at "))
        .map_or(0, |i| i + 1);
    HungReport {
        file: Ok(shown(file, base_dir)),
        frames: frames[below_eval..]
            .iter()
            .map(|f| rel(f.strip_prefix("at ").unwrap_or(f)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_below_the_report_writer_relative_to_the_app() {
        let report = serde_json::json!({
            "header": { "reportVersion": 3, "nodejsVersion": "v22.0.0" },
            "libuv": [ { "type": "tcp", "is_active": true } ],
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
        assert_eq!(r.file.as_deref(), Ok("run/hung.7.report.json"));
        assert_eq!(
            r.frames,
            [
                "spin (app/controller/home.js:12:7)",
                "HomeController.block (app/controller/home.js:20:5)"
            ]
        );
        // Not a report: the file is named, no frames.
        let r = parse(&b"{"[..], Path::new("/x/r.json"), Path::new("/srv/app"));
        assert_eq!((r.file.as_deref(), r.frames.len()), (Ok("/x/r.json"), 0));
        // A report without a stack: no frames.
        let r = parse(
            &b"{\"header\":{}}"[..],
            Path::new("/x/r.json"),
            Path::new("/srv/app"),
        );
        assert_eq!(r.frames.len(), 0);
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
