//! Operations on the runtime thread: status requests and their answers, the relay counters,
//! /proc sampling, `sd_notify` and the watchdog, and the sockets systemd hands over.

use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::Runtime;
use crate::core::{CoreStatus, Event, Notice, StatusTo, Target};
use crate::messenger::{master_message, Role};
use crate::ops::snapshot::{self, Counters, ProcSample, Snapshot};
use crate::ops::{procstat, systemd};
use crate::protocol::stats::ChildStats;

/// Who waits for a snapshot.
pub(crate) enum Waiter {
    /// `promise.status()`: answered with a `status` event to JS.
    Js,
    /// The metrics endpoint or the control socket.
    Reply(oneshot::Sender<Snapshot>),
}

pub(super) struct OpsRuntime {
    totals: Counters,
    per_child: HashMap<u32, Counters>,
    /// What each child's last heartbeat carried.
    stats: HashMap<u32, ChildStats>,
    /// The previous CPU sample of each process: ticks used, and when.
    cpu_prev: HashMap<u32, (u64, Instant)>,
    clk_tck: u64,
    waiters: HashMap<u64, Waiter>,
    next_waiter: u64,
    notifier: Option<systemd::Notifier>,
    /// A failed notice was reported on the product log: once is enough.
    notify_failed: bool,
}

impl OpsRuntime {
    pub(super) fn new(notify_socket: Option<&str>, warnings: &mut Vec<String>) -> Self {
        let notifier = notify_socket.and_then(|s| match systemd::Notifier::new(s) {
            Ok(n) => Some(n),
            Err(e) => {
                warnings.push(format!(
                    "[master] NOTIFY_SOCKET={s} unusable ({e}): systemd gets no READY=1, STATUS or WATCHDOG=1 from this master"
                ));
                None
            }
        });
        OpsRuntime {
            totals: Counters::default(),
            per_child: HashMap::new(),
            stats: HashMap::new(),
            cpu_prev: HashMap::new(),
            clk_tck: procstat::clock_ticks(),
            waiters: HashMap::new(),
            next_waiter: 0,
            notifier,
            notify_failed: false,
        }
    }

    /// `messages` lines of `bytes` from `pid` (0: the parent) were routed. Plain increments:
    /// this runs on the relay path.
    pub(super) fn relayed(&mut self, pid: u32, messages: u64, bytes: u64) {
        self.totals.messages_relayed += messages;
        self.totals.bytes_relayed += bytes;
        if pid != 0 {
            let c = self.per_child.entry(pid).or_default();
            c.messages_relayed += messages;
            c.bytes_relayed += bytes;
        }
    }

    pub(super) fn handed_over(&mut self, pid: u32) {
        self.totals.sticky_handed_over += 1;
        self.per_child.entry(pid).or_default().sticky_handed_over += 1;
    }

    /// A heartbeat's `stats` (dropped, the beat still counting, when unreadable).
    pub(super) fn child_stats(&mut self, pid: u32, raw: &[u8]) {
        match ChildStats::parse(raw) {
            Some(s) => {
                self.stats.insert(pid, s);
            }
            None => tracing::debug!(pid, "unreadable heartbeat stats dropped"),
        }
    }

    /// `pid` did not answer a scrape in time.
    pub(super) fn scrape_timed_out(&mut self, pid: u32) {
        self.totals.scrape_timeouts += 1;
        self.per_child.entry(pid).or_default().scrape_timeouts += 1;
    }

    pub(super) fn forget(&mut self, pid: u32) {
        self.per_child.remove(&pid);
        self.stats.remove(&pid);
        self.cpu_prev.remove(&pid);
    }

    fn sample(&mut self, pid: u32) -> ProcSample {
        let rss = crate::process::tree::rss_bytes(pid);
        let now = Instant::now();
        let cpu = procstat::read(pid).and_then(|(ticks, start)| {
            let pct = match self.cpu_prev.get(&pid) {
                Some(&(prev, at)) => procstat::percent(
                    ticks.saturating_sub(prev),
                    now.duration_since(at).as_secs_f64(),
                    self.clk_tck,
                ),
                // First sample: the average over the process's life.
                None => {
                    let alive = procstat::uptime_secs()? - start as f64 / self.clk_tck as f64;
                    procstat::percent(ticks, alive, self.clk_tck)
                }
            };
            self.cpu_prev.insert(pid, (ticks, now));
            Some(pct)
        });
        ProcSample { rss, cpu }
    }
}

impl Runtime {
    pub(super) fn on_status_request(&mut self, waiter: Waiter) {
        let id = self.ops.next_waiter;
        self.ops.next_waiter += 1;
        self.ops.waiters.insert(id, waiter);
        self.dispatch(Event::StatusRequest(StatusTo::Waiter(id)));
    }

    /// Performs [`crate::core::Action::Status`]: completes the core's half and delivers it.
    pub(super) fn deliver_status(&mut self, to: StatusTo, core: CoreStatus) -> Option<Event> {
        let master_pid = self.master_pid;
        let children = &self.children;
        let ops = &mut self.ops;
        let per_child = ops.per_child.clone();
        let stats = ops.stats.clone();
        let totals = ops.totals;
        let snap = snapshot::build(
            core,
            master_pid,
            super::now_ms(),
            totals,
            // A thread id is no pid: its figures are the master's.
            |pid| {
                if children.is_thread(pid) {
                    Default::default()
                } else {
                    ops.sample(pid)
                }
            },
            |pid| {
                (
                    per_child.get(&pid).copied().unwrap_or_default(),
                    stats.get(&pid).cloned(),
                )
            },
        );
        match to {
            StatusTo::Waiter(id) => match self.ops.waiters.remove(&id) {
                Some(Waiter::Js) => self
                    .emit
                    .emit("status", serde_json::to_string(&snap).unwrap_or_default()),
                Some(Waiter::Reply(tx)) => {
                    let _ = tx.send(snap);
                }
                None => {}
            },
            StatusTo::Message(target) => {
                let role = match &target {
                    Target::Parent => Role::Parent,
                    Target::Child(pid) => self.children.role(*pid)?,
                    Target::Children(_) => Role::App,
                };
                let data = serde_json::to_vec(&snap).unwrap_or_default();
                return self.send(target, master_message("cluster-status", role, Some(&data)));
            }
        }
        None
    }

    pub(super) fn notify(&mut self, notice: Notice) {
        let Some(n) = &self.ops.notifier else {
            return;
        };
        let msg = systemd::message(&notice, self.master_pid, systemd::monotonic_usec());
        if let Err(e) = n.send(&msg) {
            // The notices are datagrams to a path: a wrong or vanished NOTIFY_SOCKET shows only
            // here, and systemd would wait for READY=1 until its start timeout.
            if !self.ops.notify_failed {
                self.ops.notify_failed = true;
                self.logger.warn(&format!(
                    "[master] NOTIFY_SOCKET unusable: cannot send {} to systemd: {e} (further failures are not logged)",
                    msg.lines().next().unwrap_or_default()
                ));
            }
        }
    }
}

/// `WATCHDOG=1` every half of `WATCHDOG_USEC`, from a task of the runtime thread: if the
/// event loop stalls, the pings stop and systemd acts.
pub(super) fn start_watchdog(notify_socket: Option<&str>, usec: Option<u64>) {
    let (Some(socket), Some(usec)) = (notify_socket, usec) else {
        return;
    };
    let Ok(notifier) = systemd::Notifier::new(socket) else {
        return;
    };
    let period = Duration::from_micros((usec / 2).max(1000));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            // A failure was reported by the first notice that failed.
            let _ = notifier.send("WATCHDOG=1");
        }
    });
}

/// A socket systemd passed (socket activation), or an upgrade's old master, that app workers'
/// listens use.
pub(super) struct Inherited {
    pub(super) port: u16,
    pub(super) fd: OwnedFd,
    /// `SO_REUSEPORT` is set: one of the old master's per-slot sockets (`reusePort`), taken by
    /// one slot rather than shared.
    pub(super) reuse_port: bool,
}

/// Takes fds 3.. (`LISTEN_FDS` of them) over: CLOEXEC at once, so no child inherits them (a
/// child's channel is its fd 3), and listening. TCP sockets are kept by port; others are
/// closed with a note.
pub(super) fn take_listen_fds(count: usize, warnings: &mut Vec<String>) -> Vec<Inherited> {
    use nix::sys::socket::{getsockopt, listen, sockopt, Backlog};
    let mut out = Vec::new();
    for raw in systemd::LISTEN_FDS_START..systemd::LISTEN_FDS_START + count as i32 {
        // SAFETY: F_SETFD on a descriptor number; fails harmlessly if it is not open.
        if unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            warnings.push(format!(
                "[master] LISTEN_FDS: fd {raw} is not open, ignored (the workers bind their ports themselves)"
            ));
            continue;
        }
        // SAFETY: systemd passed this descriptor to us and nothing else in the process owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let Some(port) = crate::listen::local_port(&fd) else {
            warnings.push(format!(
                "[master] LISTEN_FDS: fd {raw} is not a TCP socket, closed and ignored"
            ));
            continue;
        };
        if !getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
            if let Err(e) = Backlog::new(511).and_then(|b| listen(&fd, b)) {
                warnings.push(format!(
                    "[master] LISTEN_FDS: cannot listen on fd {raw} (port {port}): {e}; ignored"
                ));
                continue;
            }
        }
        let reuse_port = getsockopt(&fd, sockopt::ReusePort).unwrap_or(false);
        tracing::debug!(fd = raw, port, reuse_port, "inherited listening socket");
        out.push(Inherited {
            port,
            fd,
            reuse_port,
        });
    }
    out
}
