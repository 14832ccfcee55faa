//! The pid file (`options.pidFile`), written the way careful daemons write theirs.
//!
//! A plain `write` follows a symlink at the path: another user's `app.pid -> /etc/passwd` in a
//! shared directory would make a root master overwrite the target (and a hard link would be
//! truncated the same way). The pid goes to a fresh file of our own in the same directory
//! (`O_CREAT|O_EXCL|O_NOFOLLOW`, so nothing pre-planted is opened), which is then renamed over
//! the path: `rename(2)` replaces the link itself, never its target. Where the path is not ours
//! to replace (another user's file in a sticky directory such as `/tmp`), the rename fails and
//! so does the start.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub(super) fn write(path: &Path, pid: u32) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = path.with_file_name(format!(".{}.{pid}.{nanos}.tmp", name.to_string_lossy()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| f.write_all(pid.to_string().as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Whether the pid file at exit is still this master's to remove: it is not when it names
/// another pid — the new master of an upgrade rewrote it, or (a new master rolled back) it still
/// names the old one.
pub(super) fn is_ours(path: &Path, pid: u32) -> bool {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<u32>().map_or(true, |p| p == pid),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("egg-cluster-rs-pidfile-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_symlink_at_the_path_is_replaced_and_its_target_untouched() {
        let dir = TempDir::new();
        let target = dir.write("target", "precious");
        let link = dir.path().join("app.pid");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write(&link, 4242).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        assert!(!std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "4242");
        // Nothing else is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_hard_link_at_the_path_is_replaced_and_a_missing_dir_made() {
        let dir = TempDir::new();
        let target = dir.write("target", "precious");
        let link = dir.path().join("app.pid");
        std::fs::hard_link(&target, &link).unwrap();
        write(&link, 7).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        let nested = dir.path().join("run/x/app.pid");
        write(&nested, 8).unwrap();
        assert_eq!(std::fs::read_to_string(&nested).unwrap(), "8");
    }

    #[test]
    fn a_pid_file_naming_another_master_is_not_ours() {
        let dir = TempDir::new();
        let p = dir.write("app.pid", "42");
        assert!(is_ours(&p, 42));
        assert!(!is_ours(&p, 43));
        // Not a pid, or gone: egg-cluster's rule (remove it) stands.
        assert!(is_ours(&dir.write("junk.pid", "hello"), 43));
        assert!(is_ours(&dir.path().join("missing.pid"), 43));
    }
}
