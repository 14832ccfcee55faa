//! The status snapshot: the core's half ([`CoreStatus`]) plus what the runtime measures.

use serde::Serialize;

use crate::core::ops::ChildStatus;
use crate::core::{CoreStatus, MasterStatus};
use crate::protocol::stats::ChildStats;

/// Counters the runtime keeps per child (and in total), plain integers bumped on its thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Counters {
    /// Messages this child sent that were routed on (to anyone, the master included).
    pub(crate) messages_relayed: u64,
    pub(crate) bytes_relayed: u64,
    /// Sticky connections handed to this worker.
    pub(crate) sticky_handed_over: u64,
    /// Scrapes of /metrics this child did not answer in time (and was left out of).
    pub(crate) scrape_timeouts: u64,
}

/// What /proc says about one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct ProcSample {
    /// Resident set size, bytes.
    pub(crate) rss: Option<u64>,
    /// CPU % since the previous sample (since the process started, for the first), 100 = a core.
    pub(crate) cpu: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MasterSnapshot {
    pub(crate) pid: u32,
    #[serde(flatten)]
    pub(crate) core: MasterStatus,
    pub(crate) uptime_ms: u64,
    pub(crate) rss: Option<u64>,
    pub(crate) cpu: Option<f64>,
    /// Totals over every child that ever ran, and the parent.
    #[serde(flatten)]
    pub(crate) counters: Counters,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChildSnapshot {
    #[serde(flatten)]
    pub(crate) core: ChildStatus,
    pub(crate) rss: Option<u64>,
    pub(crate) cpu: Option<f64>,
    #[serde(flatten)]
    pub(crate) counters: Counters,
    /// What its last heartbeat carried (`None` until the first, or if it was unreadable).
    pub(crate) stats: Option<ChildStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Snapshot {
    pub(crate) master: MasterSnapshot,
    pub(crate) children: Vec<ChildSnapshot>,
}

/// Merges the core's half with the runtime's figures: `sample` and `counters` look a pid up.
pub(crate) fn build(
    core: CoreStatus,
    master_pid: u32,
    now: u64,
    totals: Counters,
    mut sample: impl FnMut(u32) -> ProcSample,
    counters: impl Fn(u32) -> (Counters, Option<ChildStats>),
) -> Snapshot {
    let master = sample(master_pid);
    Snapshot {
        master: MasterSnapshot {
            pid: master_pid,
            uptime_ms: now.saturating_sub(core.master.started_at),
            core: core.master,
            rss: master.rss,
            cpu: master.cpu,
            counters: totals,
        },
        children: core
            .children
            .into_iter()
            .map(|c| {
                let s = sample(c.pid);
                let (counters, stats) = counters(c.pid);
                ChildSnapshot {
                    counters,
                    stats,
                    rss: s.rss,
                    cpu: s.cpu,
                    core: c,
                }
            })
            .collect(),
    }
}
