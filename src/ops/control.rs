//! The master's control socket, through which the CLI asks a running master for its status
//! (`egg-cluster-rs status`) or for an upgrade (`egg-cluster-rs upgrade`, which waits for the
//! outcome). Same user only: the socket lives in a directory only the user can
//! enter (`$XDG_RUNTIME_DIR/egg-cluster-rs`, else `<tmpdir>/egg-cluster-rs-<uid>`, mode 0700),
//! is itself mode 0600, and the master checks the peer's uid (`SO_PEERCRED`) too.
//! `bin/egg-cluster-rs.js` computes the same path.
//!
//! Another local user can squat the tmp directory's name before us (`/tmp` is shared); the
//! master then falls back to a directory `mkdtemp` made for it in the same tmp dir,
//! `egg-cluster-rs-<uid>.XXXXXX`, which only the user can have created with that owner and
//! mode; the CLI looks there too.

use std::path::PathBuf;

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
}

/// A request is one line naming what is wanted; `None` for anything else.
pub(crate) fn request(line: &[u8]) -> Option<Request> {
    match line.trim_ascii() {
        b"status" => Some(Request::Status),
        b"upgrade" => Some(Request::Upgrade),
        _ => None,
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
        assert_eq!(request(b"reload\n"), None);
        assert_eq!(request(b"status upgrade\n"), None);
    }
}
