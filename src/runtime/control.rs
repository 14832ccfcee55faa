//! The control socket the CLI asks (`egg-cluster-rs status`): a unix stream socket in a
//! directory of the user's own (see [`crate::ops::control`]). One request line, one JSON
//! answer, then close. Peers of another uid are refused even if they got through the modes.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

use super::Input;
use crate::ops::control;

/// Binds the socket of this master; `None` (and a diagnostic) when the directory is not safe
/// or not writable — the master runs on without it.
pub(super) fn bind(path: &Path, uid: u32) -> Option<std::os::unix::net::UnixListener> {
    let dir = path.parent()?;
    let made = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    let safe = made.is_ok()
        && std::fs::symlink_metadata(dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0);
    if !safe {
        tracing::warn!(dir = %dir.display(), "control socket: directory missing or not private, CLI status disabled");
        return None;
    }
    // A leftover of a dead master with our pid (pids are reused).
    let _ = std::fs::remove_file(path);
    match std::os::unix::net::UnixListener::bind(path) {
        Ok(l) => {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            Some(l)
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "control socket");
            None
        }
    }
}

pub(super) fn socket_path(env: &[(String, String)], pid: u32) -> (PathBuf, u32) {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    (control::path(var, uid, pid), uid)
}

pub(super) fn serve(
    listener: std::os::unix::net::UnixListener,
    uid: u32,
    tx: mpsc::UnboundedSender<Input>,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| UnixListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "control socket");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            if stream.peer_cred().map(|c| c.uid()).ok() != Some(uid) {
                continue;
            }
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), async move {
                    let (read, mut write) = stream.into_split();
                    let mut line = Vec::new();
                    BufReader::new(read.take(256))
                        .read_until(b'\n', &mut line)
                        .await?;
                    let answer = if control::request_ok(&line) {
                        match super::metrics::snapshot(&tx).await {
                            Some(s) => serde_json::to_string(&s).unwrap_or_default(),
                            None => "{\"error\":\"the master is exiting\"}".into(),
                        }
                    } else {
                        "{\"error\":\"unknown request\"}".into()
                    };
                    write.write_all(answer.as_bytes()).await?;
                    write.write_all(b"\n").await?;
                    write.shutdown().await
                })
                .await;
            });
        }
    });
}
