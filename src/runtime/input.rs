//! What arrives on the runtime's one queue: commands from the JS thread, child channel events and
//! exits, timers, and the answers of tasks the runtime started.

use std::os::fd::OwnedFd;

use super::{ops, scrape, upgrade};
use crate::core::{self, Group, Timer};
use crate::ipc::channel::Incoming;
use crate::messenger::Role;
use crate::process::spawn::ExitInfo;

/// Commands from the JS thread.
pub(crate) enum Command {
    /// SIGINT/SIGQUIT/SIGTERM reached the master, with V8's heap figures for the close lines.
    Signal {
        name: String,
        heap_limit: f64,
        heap_used: f64,
    },
    FromParent(Vec<u8>),
    ParentDisconnected,
    Reload(core::ReloadReason),
    Scale(core::Scale),
    /// `promise.status()`: the snapshot comes back as a `status` event.
    Status,
    /// SIGHUP (`None`) or `promise.upgrade()` number `n`: a master upgrade.
    Upgrade(Option<u32>),
    /// worker_threads mode: the JS thread created the Worker asked for (its `threadId`), or
    /// could not.
    ThreadSpawned {
        role: Role,
        id: u32,
        result: std::result::Result<u32, String>,
    },
    /// A worker thread's `exit` event.
    ThreadExited {
        tid: u32,
        code: i32,
    },
    /// A worker thread's `error` event (an uncaught exception), formatted.
    ThreadError {
        tid: u32,
        message: String,
    },
}

pub(super) enum Input {
    Command(Command),
    Child {
        pid: u32,
        event: ChildEvent,
    },
    Timer(Timer),
    Terminated(Group),
    /// Connections accepted on the real port in sticky mode, with the client address to pick
    /// a worker by.
    StickyConnections(Vec<(OwnedFd, std::net::IpAddr)>),
    /// The metrics endpoint or the control socket wants a snapshot.
    Status(ops::Waiter),
    /// A scrape of /metrics: ask the children for their metrics, answers to `answers`; the
    /// scrape's number and the children asked to `reply`.
    ScrapeBegin {
        answers: tokio::sync::mpsc::UnboundedSender<scrape::Reply>,
        reply: tokio::sync::oneshot::Sender<(u64, Vec<u32>)>,
    },
    /// Scrape `seq` waited long enough: `timed_out` did not answer; a snapshot to `waiter`.
    ScrapeEnd {
        seq: u64,
        timed_out: Vec<u32>,
        waiter: ops::Waiter,
    },
    /// What was found of a hung child's report.
    HungReport {
        pid: u32,
        report: core::HungReport,
    },
    /// The control socket asks for a master upgrade.
    Upgrade(upgrade::Waiter),
    /// The new master of upgrade `seq` said `ready`, or will not.
    UpgradeReadiness {
        seq: u64,
        outcome: std::result::Result<(), String>,
    },
    /// The control socket asks for a reload or a scaling; `answers` gets the progress lines
    /// and the outcome.
    Control {
        request: core::ControlRequest,
        answers: tokio::sync::mpsc::UnboundedSender<crate::ops::control::Answer>,
    },
    /// What dead children left behind.
    Orphans {
        found: Vec<core::Orphan>,
        at_close: bool,
    },
}

pub(super) enum ChildEvent {
    Incoming(Incoming),
    Exited(ExitInfo),
}
