//! Helpers for tests that spawn real children (`node` from PATH).

use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::ipc::channel::{self, Incoming, Limits, Sender};

/// Bounds every wait on a child; generous, since the machine may be loaded.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// `name` resolved from PATH, as the JS side passes `process.execPath`.
pub fn which(name: &str) -> String {
    let path = std::env::var_os("PATH").expect("PATH is set");
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| panic!("{name} not found on PATH"))
        .to_string_lossy()
        .into_owned()
}

/// `node <script>` with a channel on fd 3 and nothing else: no execArgv, args or env.
pub fn spawn_plain(script: &Script) -> crate::process::spawn::NodeChild {
    let node = which("node");
    crate::process::spawn::spawn_node(&crate::process::spawn::SpawnSpec {
        exec_path: &node,
        exec_argv: &[],
        script: script.path_str(),
        args: &[],
        env: &[],
        cluster_id: None,
    })
    .expect("spawn node")
}

/// A script in its own temporary directory, removed on drop.
pub struct Script {
    dir: PathBuf,
    path: PathBuf,
}

impl Script {
    pub fn new(name: &str, text: &str) -> Script {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "egg-cluster-rs-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write script");
        Script { dir, path }
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGKILLs the listed pids when dropped during a panic, so a failing test leaves no process
/// behind (nothing else kills a test's children when the test process ends). A test
/// that passes has already reaped or killed them: signalling then could hit a reused pid.
pub struct KillOnDrop(pub Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for &pid in &self.0 {
            if pid > 0 {
                // SAFETY: kill(2) has no memory arguments; these are pids the test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// `fut`, or a panic naming `what` after [`DEADLINE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A child's channel as the master drives it, with what it reported so far.
pub struct ChildChannel {
    /// Kept so that the channel stays open until the test is done with it.
    _sender: Sender,
    rx: mpsc::UnboundedReceiver<Incoming>,
    messages: VecDeque<Vec<u8>>,
    /// `NODE_CLUSTER` lines received so far.
    pub cluster: Vec<String>,
}

impl ChildChannel {
    pub fn open(fd: OwnedFd) -> ChildChannel {
        let (tx, rx) = mpsc::unbounded_channel();
        let limits = Limits {
            max_line: 1024 * 1024,
            max_queued: 1024 * 1024,
            high_water: 512 * 1024,
            low_water: 128 * 1024,
            stall_after: std::time::Duration::from_secs(10),
        };
        let sender = channel::start(fd, limits, move |incoming| {
            let _ = tx.send(incoming);
        })
        .expect("channel::start");
        ChildChannel {
            _sender: sender,
            rx,
            messages: VecDeque::new(),
            cluster: Vec::new(),
        }
    }

    /// One report from the channel; `Some(reason)` once it closed.
    async fn pump(&mut self) -> Option<Option<String>> {
        match within("the child's channel", self.rx.recv()).await {
            Some(Incoming::Messages(lines)) => {
                self.messages.extend(lines.iter().map(<[u8]>::to_vec))
            }
            Some(Incoming::Cluster(line)) => self
                .cluster
                .push(String::from_utf8(line).expect("utf-8 from node")),
            Some(Incoming::Closed { reason }) => return Some(reason),
            Some(Incoming::Malformed { reason }) => panic!("malformed from the child: {reason}"),
            // These tests send the child next to nothing.
            Some(
                Incoming::Drained
                | Incoming::Stalled { .. }
                | Incoming::Heartbeat { .. }
                | Incoming::Metrics { .. },
            ) => {}
            None => panic!("the channel's callback was dropped"),
        }
        None
    }

    /// The next user message from the child, parsed.
    pub async fn message(&mut self) -> serde_json::Value {
        loop {
            if let Some(line) = self.messages.pop_front() {
                return serde_json::from_slice(&line).expect("the child sent JSON");
            }
            if let Some(reason) = self.pump().await {
                panic!("the channel closed ({reason:?}) before a message came");
            }
        }
    }

    /// Waits until at least `n` cluster lines have come.
    pub async fn cluster_lines(&mut self, n: usize) -> &[String] {
        while self.cluster.len() < n {
            if let Some(reason) = self.pump().await {
                panic!("the channel closed ({reason:?}) before {n} cluster lines came");
            }
        }
        &self.cluster
    }

    /// Waits for the channel to close; returns its reason (`None` for a plain EOF).
    pub async fn closed(&mut self) -> Option<String> {
        loop {
            if let Some(reason) = self.pump().await {
                return reason;
            }
        }
    }
}
