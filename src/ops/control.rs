//! The master's control socket, through which the CLI (`egg-cluster-rs status`) asks a running
//! master for its status. Same user only: the socket lives in a directory only the user can
//! enter (`$XDG_RUNTIME_DIR/egg-cluster-rs`, else `<tmpdir>/egg-cluster-rs-<uid>`, mode 0700),
//! is itself mode 0600, and the master checks the peer's uid (`SO_PEERCRED`) too.
//! `bin/egg-cluster-rs.js` computes the same path.

use std::path::PathBuf;

/// The directory for control sockets, from the master's environment (`var` looks one up).
pub(crate) fn dir<'a>(var: impl Fn(&str) -> Option<&'a str>, uid: u32) -> PathBuf {
    match var("XDG_RUNTIME_DIR").filter(|d| d.starts_with('/')) {
        Some(d) => PathBuf::from(d).join("egg-cluster-rs"),
        None => {
            let tmp = var("TMPDIR")
                .filter(|d| d.starts_with('/'))
                .unwrap_or("/tmp");
            PathBuf::from(tmp).join(format!("egg-cluster-rs-{uid}"))
        }
    }
}

/// The socket of the master `pid`.
pub(crate) fn path<'a>(var: impl Fn(&str) -> Option<&'a str>, uid: u32, pid: u32) -> PathBuf {
    dir(var, uid).join(format!("{pid}.sock"))
}

/// The one request the socket understands is a line naming what is wanted.
pub(crate) fn request_ok(line: &[u8]) -> bool {
    matches!(line.trim_ascii(), b"status")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(request_ok(b"status\n"));
        assert!(!request_ok(b"reload\n"));
    }
}
