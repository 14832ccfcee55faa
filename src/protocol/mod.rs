//! The typed protocols the master speaks with its children: the `NODE_CLUSTER` messages of
//! Node's cluster module ([`cluster`]) and the egg messages addressed to the master
//! ([`MasterAction`]). Framing and fd passing are in [`crate::ipc`]; the wire format is
//! described in `docs/ipc-protocol.md`.

pub(crate) mod cluster;
pub(crate) mod stats;

use serde::Deserialize;

/// The `action` of a message addressed to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum MasterAction {
    /// The agent is ready: start the app workers.
    AgentStart,
    /// An app worker's resolved `{port, protocol, reusePort}`.
    Realport,
    /// A worker that bound its port itself with `reusePort` (no cluster `listening`).
    ReusePortListening,
    /// egg-development's agent asks for new app workers (a file changed).
    ReloadWorker,
    /// egg 4: an app worker listens (`{address, workerId}`).
    AppStart,
    /// Test-only fault injection (`EGG_CLUSTER_RS_FAULT_INJECTION=1`).
    #[serde(rename = "egg-cluster-rs:inject-panic")]
    InjectPanic,
    /// An app worker's boot failed (`{error, file}`), told just before it exits: a failed
    /// reload names the file and the error.
    #[serde(rename = "egg-cluster-rs:boot-error")]
    BootError,
    /// Asks for the cluster's status snapshot, answered to the sender as `cluster-status`.
    ClusterStatus,
    /// Names `promise.master` (an EventEmitter) must never emit for a peer: `error` throws
    /// without a listener (the master would die), `newListener`/`removeListener` are
    /// EventEmitter's own, `reload-done` is the master's answer to `reload()`.
    #[serde(rename = "error")]
    Error,
    #[serde(rename = "newListener")]
    NewListener,
    #[serde(rename = "removeListener")]
    RemoveListener,
    ReloadDone,
    /// Anything else: emitted on `promise.master`.
    #[default]
    #[serde(other)]
    Other,
}

impl MasterAction {
    /// From the raw JSON of a message's `action` member (a string, or anything else).
    pub(crate) fn from_raw(raw: Option<&[u8]>) -> Self {
        raw.and_then(|raw| serde_json::from_slice(raw).ok())
            .unwrap_or(MasterAction::Other)
    }

    /// The wire name of a reserved action (for the log line that drops it).
    pub(crate) fn reserved_name(self) -> &'static str {
        match self {
            MasterAction::Error => "error",
            MasterAction::NewListener => "newListener",
            MasterAction::RemoveListener => "removeListener",
            MasterAction::ReloadDone => "reload-done",
            _ => "",
        }
    }
}

/// The internal message that lets an early app worker construct its Application.
pub(crate) const START_GO_AHEAD: &[u8] = b"{\"cmd\":\"NODE_EGG_CLUSTER_RS_START\"}";

/// The internal message that asks a worker thread to close: it emits `SIGTERM` on its
/// `process`, as the signal would for a worker process (threads get no signals of their own).
pub(crate) const THREAD_SIGTERM: &[u8] =
    b"{\"cmd\":\"NODE_EGG_CLUSTER_RS_SIGNAL\",\"signal\":\"SIGTERM\"}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_actions_from_raw_json() {
        let a = |s: &str| MasterAction::from_raw(Some(s.as_bytes()));
        assert_eq!(a("\"agent-start\""), MasterAction::AgentStart);
        assert_eq!(a("\"realport\""), MasterAction::Realport);
        assert_eq!(a("\"reload-worker\""), MasterAction::ReloadWorker);
        assert_eq!(a("\"app-start\""), MasterAction::AppStart);
        assert_eq!(
            a("\"reuse-port-listening\""),
            MasterAction::ReusePortListening
        );
        assert_eq!(
            a("\"egg-cluster-rs:inject-panic\""),
            MasterAction::InjectPanic
        );
        assert_eq!(a("\"agent\\u002dstart\""), MasterAction::AgentStart);
        assert_eq!(a("\"cluster-status\""), MasterAction::ClusterStatus);
        assert_eq!(a("\"custom\""), MasterAction::Other);
        assert_eq!(a("1"), MasterAction::Other);
        assert_eq!(MasterAction::from_raw(None), MasterAction::Other);
    }
}
