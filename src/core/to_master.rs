//! Messages to the master: its own protocol (`agent-start`, `reload-worker`, `realport`, a
//! worker's listening under `reusePort` or egg 4's `app-start`, boot errors, `cluster-status`),
//! the actions reserved for its EventEmitter refused, anything else emitted on `promise.master`.

use serde_json::Value;

use super::{Action, Core, Dialect, ListenVia, ReloadReason, StatusTo, Target};
use crate::messenger::Role;
use crate::protocol::MasterAction;

impl Core {
    /// Messages to the master: the master's own protocol is handled here, anything else goes
    /// to `promise.master` as egg-cluster's `master.emit(action, data)` does.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_to_master(
        &mut self,
        from: Role,
        pid: u32,
        action: MasterAction,
        data: Option<&[u8]>,
        line: Vec<u8>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let data = || {
            data.and_then(|raw| serde_json::from_slice::<Value>(raw).ok())
                .unwrap_or(Value::Null)
        };
        match action {
            MasterAction::AgentStart => self.on_agent_start(now, out),
            MasterAction::ReloadWorker => self.on_reload(ReloadReason::Message, now, out),
            MasterAction::Realport => self.on_realport(from, pid, &data(), out),
            MasterAction::ReusePortListening if from == Role::App => {
                self.on_listening(pid, &data(), ListenVia::ReusePortMessage, now, out)
            }
            MasterAction::AppStart if from == Role::App && self.cfg.dialect == Dialect::Egg4 => {
                let address = data().get("address").cloned().unwrap_or(Value::Null);
                self.on_listening(pid, &address, ListenVia::AppStart, now, out)
            }
            // Fault injection for the test suite only (EGG_CLUSTER_RS_FAULT_INJECTION=1): proves
            // that a bug while handling one event is reported and survived.
            MasterAction::InjectPanic if self.cfg.fault_injection => {
                panic!("injected fault (EGG_CLUSTER_RS_FAULT_INJECTION)")
            }
            MasterAction::BootError if from == Role::App => self.on_boot_error(pid, &data(), out),
            MasterAction::ClusterStatus => {
                let to = if pid == 0 {
                    Target::Parent
                } else {
                    Target::Child(pid)
                };
                self.on_status_request(StatusTo::Message(to), out)
            }
            MasterAction::Error
            | MasterAction::NewListener
            | MasterAction::RemoveListener
            | MasterAction::ReloadDone => {
                self.ops.malformed += 1;
                let reason = format!(
                    "action '{}' is reserved for the master's EventEmitter",
                    action.reserved_name()
                );
                self.on_malformed(pid, &reason, out)
            }
            MasterAction::ReusePortListening
            | MasterAction::BootError
            | MasterAction::InjectPanic
            | MasterAction::AppStart
            | MasterAction::Other => out.push(Action::EmitMaster(line)),
        }
    }
}
