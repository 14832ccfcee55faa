//! The control socket the CLI asks (`egg-cluster-rs status|upgrade|reload|scale`): a unix
//! stream socket in a directory of the user's own (see [`crate::ops::control`]). One request
//! line; JSON answer lines (progress, then the outcome), then close. Peers of another uid are
//! refused even if they got through the modes. At most [`MAX_CONNECTIONS`] are open at once
//! ([`super::capped`]), those waiting for a reload's or a scaling's outcome included: past it,
//! the oldest one that has not sent its request is closed, so clients holding thousands of
//! connections keep neither the CLI out nor the master short of file descriptors (which its
//! spawns need).

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

use super::Input;
use crate::core::{ControlRequest, Scale};
use crate::ops::control::{self, Answer};

/// This master's control socket, bound.
pub(super) struct Bound {
    pub(super) listener: std::os::unix::net::UnixListener,
    pub(super) path: PathBuf,
    pub(super) uid: u32,
}

/// Binds the socket of master `pid`, in the usual directory or, when that one is not ours
/// (squatted), in a private fallback. What degrades the socket goes to `warnings` (product log
/// lines): `None` means the master runs on without one.
pub(super) fn bind(
    env: &[(String, String)],
    pid: u32,
    warnings: &mut Vec<String>,
) -> Option<Bound> {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let usual = control::dir(var, uid);
    let dir = if make_private_dir(&usual, uid) {
        usual
    } else {
        match fallback_dir(&control::tmp_dir(var), uid) {
            Ok(dir) => {
                warnings.push(format!(
                    "[master] control socket: {} is not a private directory of uid {uid} (another user's, or not a directory): using {} instead",
                    usual.display(),
                    dir.display()
                ));
                dir
            }
            Err(e) => {
                warnings.push(format!(
                    "[master] control socket disabled: {} is not a private directory of uid {uid} and no fallback could be made ({e}); `egg-cluster-rs status` cannot reach this master",
                    usual.display()
                ));
                return None;
            }
        }
    };
    let removed = remove_stale(&dir, uid, pid);
    if removed > 0 {
        tracing::debug!(removed, dir = %dir.display(), "stale control sockets removed");
    }
    let path = dir.join(control::socket_name(pid));
    // A leftover of a dead master with our pid (pids are reused).
    let _ = std::fs::remove_file(&path);
    match std::os::unix::net::UnixListener::bind(&path) {
        Ok(listener) => {
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
            Some(Bound {
                listener,
                path,
                uid,
            })
        }
        Err(e) => {
            warnings.push(format!(
                "[master] control socket disabled: cannot bind {}: {e}; `egg-cluster-rs status` cannot reach this master",
                path.display()
            ));
            None
        }
    }
}

/// Whether `dir` is (after creating it if missing) a real directory of `uid` that nobody else
/// can enter.
fn make_private_dir(dir: &Path, uid: u32) -> bool {
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    is_private_dir(dir, uid)
}

fn is_private_dir(dir: &Path, uid: u32) -> bool {
    std::fs::symlink_metadata(dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0)
}

/// A private directory of `uid` under `tmp`: one an earlier master made, else a new one.
/// `mkdtemp` creates it 0700 under a name nobody could have taken, so another user's
/// directories of the same prefix are merely skipped.
fn fallback_dir(tmp: &Path, uid: u32) -> std::io::Result<PathBuf> {
    let prefix = control::fallback_prefix(uid);
    let mut ours: Vec<PathBuf> = std::fs::read_dir(tmp)?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .map(|e| e.path())
        .filter(|p| is_private_dir(p, uid))
        .collect();
    ours.sort();
    if let Some(dir) = ours.into_iter().next() {
        return Ok(dir);
    }
    mkdtemp(&tmp.join(format!("{prefix}XXXXXX")))
}

fn mkdtemp(template: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut buf = std::ffi::CString::new(template.as_os_str().as_bytes())?.into_bytes_with_nul();
    // SAFETY: `buf` is a NUL-terminated template that mkdtemp rewrites in place.
    if unsafe { libc::mkdtemp(buf.as_mut_ptr().cast()) }.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    buf.pop();
    Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}

/// Removes the sockets of masters that died without removing theirs (SIGKILL, OOM): a socket
/// of `uid` named after a pid that no longer exists and on which nobody listens. The connect
/// covers a master of another pid namespace sharing the directory (its pid means nothing
/// here); the inode is checked again right before the unlink so that a socket a new master
/// just bound under a recycled pid is left alone. Returns how many were removed.
fn remove_stale(dir: &Path, uid: u32, own_pid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.filter_map(|e| e.ok()) {
        let Some(pid) = entry.file_name().to_str().and_then(control::socket_pid) else {
            continue;
        };
        if pid == own_pid {
            continue;
        }
        let path = entry.path();
        if is_stale(&path, pid, uid) {
            let _ = std::fs::remove_file(&path);
            removed += 1;
        }
    }
    removed
}

fn is_stale(path: &Path, pid: u32, uid: u32) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let Ok(before) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !before.file_type().is_socket() || before.uid() != uid || pid_alive(pid) {
        return false;
    }
    if !connect_refused(path) {
        return false;
    }
    std::fs::symlink_metadata(path)
        .is_ok_and(|after| after.ino() == before.ino() && after.dev() == before.dev())
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // EPERM: alive, another user's.
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// A non-blocking connect: a live listener with a full backlog says EAGAIN, not refused, and
/// must not stall the start.
fn connect_refused(path: &Path) -> bool {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;
    let Ok(addr) = UnixAddr::new(path) else {
        return false;
    };
    let Ok(fd) = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    matches!(
        connect(fd.as_raw_fd(), &addr),
        Err(nix::errno::Errno::ECONNREFUSED)
    )
}

/// Connections open at once (as `/metrics`'s).
pub(super) const MAX_CONNECTIONS: usize = 128;

/// Serves the socket. `upgrade_timeout` bounds how long an `upgrade` request may wait for
/// its outcome (the core gives up on the new master at that limit; the margin covers its stop).
pub(super) fn serve(
    listener: std::os::unix::net::UnixListener,
    uid: u32,
    tx: mpsc::UnboundedSender<Input>,
    upgrade_timeout: Duration,
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
        let mut open = super::capped::Capped::new(MAX_CONNECTIONS);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            if stream.peer_cred().map(|c| c.uid()).ok() != Some(uid) {
                continue;
            }
            let tx = tx.clone();
            open.spawn(|busy| async move {
                let (read, mut write) = stream.into_split();
                let mut line = Vec::new();
                let read = tokio::time::timeout(
                    Duration::from_secs(5),
                    BufReader::new(read.take(256)).read_until(b'\n', &mut line),
                )
                .await;
                if !matches!(read, Ok(Ok(_))) {
                    return;
                }
                busy.set();
                let waited = match control::request(&line) {
                    Some(control::Request::Status) => {
                        match tokio::time::timeout(
                            Duration::from_secs(5),
                            super::metrics::snapshot(&tx),
                        )
                        .await
                        {
                            Ok(Some(s)) => serde_json::to_string(&s).unwrap_or_default(),
                            _ => Answer::error("the master is exiting").line(),
                        }
                    }
                    Some(control::Request::Upgrade) => {
                        let limit = upgrade_timeout + Duration::from_secs(60);
                        upgrade_answer(tokio::time::timeout(limit, upgrade(&tx)).await)
                    }
                    Some(control::Request::Reload) => {
                        return answer_job(&tx, ControlRequest::Reload, write).await;
                    }
                    Some(control::Request::Scale(by)) => {
                        return answer_job(&tx, ControlRequest::Scale(Scale::By(by)), write).await;
                    }
                    None => Answer::error("unknown request").line(),
                };
                if write_line(&mut write, &waited).await {
                    let _ = tokio::time::timeout(Duration::from_secs(5), write.shutdown()).await;
                }
            })
            .await;
        }
    });
}

/// Asks the runtime for an upgrade and waits for its outcome (`None`: the master went away).
async fn upgrade(tx: &mpsc::UnboundedSender<Input>) -> Option<Result<u32, String>> {
    let (reply, outcome) = tokio::sync::oneshot::channel();
    tx.send(Input::Upgrade(super::upgrade::Waiter::Reply(reply)))
        .ok()?;
    outcome.await.ok()
}

fn upgrade_answer(
    outcome: Result<Option<Result<u32, String>>, tokio::time::error::Elapsed>,
) -> String {
    let result = match outcome {
        Ok(Some(result)) => result,
        Ok(None) => Err("the master is exiting".into()),
        Err(_) => Err("no outcome in time".into()),
    };
    Answer::upgraded(result).line()
}

/// A reload or a scaling: asks the runtime, then writes each answer line as it comes, until
/// the outcome. The core bounds the wait (each boot's timeout), so no timer here; a client
/// that went away only stops the writing.
async fn answer_job(
    tx: &mpsc::UnboundedSender<Input>,
    request: ControlRequest,
    mut write: tokio::net::unix::OwnedWriteHalf,
) {
    let (answers, mut rx) = mpsc::unbounded_channel();
    if tx.send(Input::Control { request, answers }).is_err() {
        write_line(&mut write, &Answer::error("the master is exiting").line()).await;
        return;
    }
    loop {
        let answer = rx
            .recv()
            .await
            .unwrap_or_else(|| Answer::done(Err("the master is exiting".into())));
        if !write_line(&mut write, &answer.line()).await || answer.is_last() {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), write.shutdown()).await;
}

/// Writes one answer line; `false` when the client is gone or does not read.
async fn write_line(write: &mut tokio::net::unix::OwnedWriteHalf, line: &str) -> bool {
    tokio::time::timeout(Duration::from_secs(5), async {
        write.write_all(line.as_bytes()).await?;
        write.write_all(b"\n").await
    })
    .await
    .is_ok_and(|r| r.is_ok())
}
