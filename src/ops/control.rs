//! The master's control socket, through which the CLI asks a running master for its status
//! (`egg-cluster-rs status`), an upgrade (`egg-cluster-rs upgrade`), a reload or a scaling
//! (`egg-cluster-rs reload`, `scale up|down`), and waits for the outcome. The protocol:
//! one request line ([`Request`]), then JSON lines ([`Answer`]) until the master closes the
//! connection (docs/operations.md). Same user only: the socket lives in a directory only the user can
//! enter (`$XDG_RUNTIME_DIR/egg-cluster-rs`, else `<tmpdir>/egg-cluster-rs-<uid>`, mode 0700),
//! is itself mode 0600, and the master checks the peer's uid (`SO_PEERCRED`) too.
//! `bin/egg-cluster-rs.js` computes the same path.
//!
//! Another local user can squat the tmp directory's name before us (`/tmp` is shared); the
//! master then falls back to a directory `mkdtemp` made for it in the same tmp dir,
//! `egg-cluster-rs-<uid>.XXXXXX`, which only the user can have created with that owner and
//! mode; the CLI looks there too.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The directory for control sockets, from the master's environment (`var` looks one up).
pub(crate) fn dir<'a>(var: impl Fn(&str) -> Option<&'a str>, uid: u32) -> PathBuf {
    match var("XDG_RUNTIME_DIR").filter(|d| d.starts_with('/')) {
        Some(d) => PathBuf::from(d).join("egg-cluster-rs"),
        None => tmp_dir(var).join(format!("egg-cluster-rs-{uid}")),
    }
}

/// The name of master `pid`'s socket in [`dir`].
pub(crate) fn socket_name(pid: u32) -> String {
    format!("{pid}.sock")
}

/// The pid of a socket named by [`socket_name`]; `None` for any other name.
pub(crate) fn socket_pid(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".sock")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// The tmp dir the fallback directories live in.
pub(crate) fn tmp_dir<'a>(var: impl Fn(&str) -> Option<&'a str>) -> PathBuf {
    PathBuf::from(
        var("TMPDIR")
            .filter(|d| d.starts_with('/'))
            .unwrap_or("/tmp"),
    )
}

/// The name prefix of the fallback directories of `uid` (the `mkdtemp` template minus `XXXXXX`).
pub(crate) fn fallback_prefix(uid: u32) -> String {
    format!("egg-cluster-rs-{uid}.")
}

/// What a request line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    /// The status snapshot, as JSON.
    Status,
    /// A master upgrade; answered with its outcome once known.
    Upgrade,
    /// A rolling reload: a progress line per worker replaced, then the outcome.
    Reload,
    /// One app worker more (`scale up`, +1) or fewer (`scale down`, -1): a progress line per
    /// worker added or retired, then the outcome.
    Scale(i64),
}

/// A request is one line naming what is wanted; `None` for anything else.
pub(crate) fn request(line: &[u8]) -> Option<Request> {
    match line.trim_ascii() {
        b"status" => Some(Request::Status),
        b"upgrade" => Some(Request::Upgrade),
        b"reload" => Some(Request::Reload),
        b"scale up" => Some(Request::Scale(1)),
        b"scale down" => Some(Request::Scale(-1)),
        _ => None,
    }
}

/// A line the master answers with (one JSON object per line). `status` is answered with the
/// snapshot itself (or [`Answer::Error`]); `upgrade` with [`Answer::Outcome`]; `reload` and
/// `scale` with [`Answer::Progress`] lines, then [`Answer::Outcome`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Answer {
    /// A step of what was asked (a worker replaced, added, retired), as it happens.
    Progress { progress: String },
    /// How it ended; the last line.
    Outcome(Outcome),
    /// The request was not understood, or cannot be answered.
    Error { error: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Outcome {
    pub(crate) ok: bool,
    /// An upgrade's new master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pid: Option<u32>,
    /// What was done, when it went well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) summary: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl Answer {
    /// The outcome of a reload or a scaling.
    pub(crate) fn done(result: Result<String, String>) -> Answer {
        let (summary, error) = match result {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        };
        Answer::Outcome(Outcome {
            ok: error.is_none(),
            pid: None,
            summary,
            error,
        })
    }

    /// The outcome of an upgrade: the new master's pid, or why it failed.
    pub(crate) fn upgraded(result: Result<u32, String>) -> Answer {
        let (pid, error) = match result {
            Ok(pid) => (Some(pid), None),
            Err(e) => (None, Some(e)),
        };
        Answer::Outcome(Outcome {
            ok: error.is_none(),
            pid,
            summary: None,
            error,
        })
    }

    pub(crate) fn error(error: impl Into<String>) -> Answer {
        Answer::Error {
            error: error.into(),
        }
    }

    /// Whether this is the last line of an answer.
    pub(crate) fn is_last(&self) -> bool {
        !matches!(self, Answer::Progress { .. })
    }

    /// One line of JSON (without the newline).
    pub(crate) fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path<'a>(var: impl Fn(&str) -> Option<&'a str>, uid: u32, pid: u32) -> PathBuf {
        dir(var, uid).join(socket_name(pid))
    }

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    #[test]
    fn socket_paths() {
        assert_eq!(
            path(env(&[("XDG_RUNTIME_DIR", "/run/user/1000")]), 1000, 42),
            PathBuf::from("/run/user/1000/egg-cluster-rs/42.sock")
        );
        assert_eq!(
            path(env(&[]), 1000, 42),
            PathBuf::from("/tmp/egg-cluster-rs-1000/42.sock")
        );
        assert_eq!(
            path(
                env(&[("XDG_RUNTIME_DIR", "rel"), ("TMPDIR", "/var/tmp")]),
                7,
                1
            ),
            PathBuf::from("/var/tmp/egg-cluster-rs-7/1.sock")
        );
        assert_eq!(request(b"status\n"), Some(Request::Status));
        assert_eq!(request(b" upgrade\r\n"), Some(Request::Upgrade));
        assert_eq!(socket_pid("42.sock"), Some(42));
        for bad in [
            "42",
            ".sock",
            "042.sock",
            "4x.sock",
            "-1.sock",
            "99999999999.sock",
        ] {
            assert_eq!(socket_pid(bad), None, "{bad}");
        }
        assert_eq!(fallback_prefix(7), "egg-cluster-rs-7.");
        assert_eq!(tmp_dir(env(&[("TMPDIR", "rel")])), PathBuf::from("/tmp"));
        assert_eq!(request(b"reload\n"), Some(Request::Reload));
        assert_eq!(request(b"scale up\n"), Some(Request::Scale(1)));
        assert_eq!(request(b"scale down"), Some(Request::Scale(-1)));
        for bad in [
            &b"status upgrade\n"[..],
            b"scale",
            b"scale 3",
            b"reload now",
            b"",
        ] {
            assert_eq!(request(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn answers_are_one_json_object_per_line() {
        let cases = [
            (
                Answer::Progress {
                    progress: "app_worker#3:30 serves".into(),
                },
                r#"{"progress":"app_worker#3:30 serves"}"#,
            ),
            (
                Answer::done(Ok("2 app worker(s) replaced".into())),
                r#"{"ok":true,"summary":"2 app worker(s) replaced"}"#,
            ),
            (
                Answer::done(Err("boom".into())),
                r#"{"ok":false,"error":"boom"}"#,
            ),
            (Answer::upgraded(Ok(42)), r#"{"ok":true,"pid":42}"#),
            (
                Answer::error("unknown request"),
                r#"{"error":"unknown request"}"#,
            ),
        ];
        for (answer, text) in cases {
            assert_eq!(answer.line(), text);
            assert_eq!(serde_json::from_str::<Answer>(text).unwrap(), answer);
        }
        assert!(!Answer::Progress {
            progress: String::new()
        }
        .is_last());
        assert!(Answer::done(Ok(String::new())).is_last());
    }
}
