//! worker_threads mode: the agent and the app workers are threads of the master process.
//!
//! Only JS can create a `Worker`, so a spawn is a request to the master's JS thread (an event
//! of kind `thread`, op `spawn`), answered later with the thread's id ([`Command`]s
//! `ThreadSpawned`, `ThreadExited`, `ThreadError`); closing one is an op `terminate`. That is
//! all that crosses the JS thread. Each thread gets one end of a socketpair and speaks Node's
//! IPC and cluster protocol on it, exactly as a forked worker does on fd 3
//! (`lib/thread_worker.js`), so its messages are routed here like any child's, and its
//! `listen()` is answered with the same shared or per-slot `SO_REUSEPORT` sockets.
//!
//! [`Command`]: super::Command

use std::collections::HashMap;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::timeout;

use super::{Emit, Runtime};
use crate::core::{Batch, Event, SpawnError, Spawned};
use crate::ipc::channel::Frame;
use crate::messenger::Role;
use crate::process::spawn::{ExitInfo, CHANNEL_VARS};
use crate::protocol::THREAD_SIGTERM;

/// A spawn asked of the JS thread and not answered yet.
struct Pending {
    /// The master's end of the thread's socketpair; driven once the thread id is known.
    master_end: OwnedFd,
    slot: Option<usize>,
    /// The batch it belongs to (app threads).
    batch: Option<u64>,
}

/// The app threads of one `SpawnApps`, reported to the core together as process spawns are.
struct BatchAcc {
    batch: Batch,
    waiting: usize,
    apps: Vec<Spawned>,
}

#[derive(Default)]
pub(super) struct ThreadHost {
    pending: HashMap<(Role, u32), Pending>,
    batches: HashMap<u64, BatchAcc>,
    next_batch: u64,
    /// With `ports`: the port of each app slot, patched into that thread's options.
    ports: Vec<u16>,
}

impl ThreadHost {
    pub(super) fn new(ports: Vec<u16>) -> Self {
        ThreadHost {
            ports,
            ..Default::default()
        }
    }
}

/// A thread to stop: its close handlers first, `worker.terminate()` past the limit.
pub(super) struct ThreadStop {
    pub(super) tid: u32,
    pub(super) exited: watch::Receiver<Option<ExitInfo>>,
}

impl ThreadStop {
    /// The thread already got [`THREAD_SIGTERM`]; waits for its exit, terminates it at `limit`.
    pub(super) async fn stop(mut self, limit: Duration, emit: Arc<dyn Emit>) {
        let exited = timeout(limit, self.exited.wait_for(Option::is_some))
            .await
            .is_ok();
        if !exited {
            tracing::debug!(tid = self.tid, "thread close timed out, worker.terminate()");
            terminate(emit.as_ref(), self.tid);
            let _ = self.exited.wait_for(Option::is_some).await;
        }
    }
}

/// Asks the JS thread for `worker.terminate()` of thread `tid`.
fn terminate(emit: &dyn Emit, tid: u32) {
    emit.emit(
        "thread",
        json!({ "op": "terminate", "threadId": tid }).to_string(),
    );
}

impl Runtime {
    /// Asks the JS thread for an agent thread; the answer is [`Runtime::on_thread_spawned`].
    pub(super) fn request_agent_thread(&mut self, id: u32) -> Option<Event> {
        match self.request_thread(Role::Agent, id, None, None, false) {
            Ok(()) => None,
            Err(e) => Some(Event::AgentSpawned {
                id,
                pid: Err(e.into()),
            }),
        }
    }

    pub(super) fn request_app_threads(
        &mut self,
        batch: Batch,
        apps: Vec<(u32, usize)>,
    ) -> Option<Event> {
        let host = self.threads.as_mut()?;
        let key = host.next_batch;
        host.next_batch += 1;
        let mut acc = BatchAcc {
            batch,
            waiting: 0,
            apps: Vec::new(),
        };
        for (id, slot) in apps {
            match self.request_thread(Role::App, id, Some(slot), Some(key), batch == Batch::Early) {
                Ok(()) => acc.waiting += 1,
                Err(e) => acc.apps.push(Spawned {
                    id,
                    slot,
                    pid: Err(e.into()),
                }),
            }
        }
        if acc.waiting == 0 {
            return Some(Event::AppsSpawned {
                batch,
                apps: acc.apps,
            });
        }
        self.threads.as_mut()?.batches.insert(key, acc);
        None
    }

    fn request_thread(
        &mut self,
        role: Role,
        id: u32,
        slot: Option<usize>,
        batch: Option<u64>,
        wait_start: bool,
    ) -> Result<(), String> {
        // CLOEXEC on both: no child process may inherit either end (a leaked copy hides EOF);
        // the thread's end is handed over by number, in the same process.
        let (master_end, thread_end) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| format!("cannot create the channel of a thread: {e}"))?;
        let options = self.thread_options(slot);
        let launch = self.children.launch();
        let script = match role {
            Role::Agent => &launch.agent_worker_file,
            _ => &launch.app_worker_file,
        };
        let mut env: serde_json::Map<String, Value> = launch
            .env
            .iter()
            .filter(|(k, _)| !CHANNEL_VARS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        if role == Role::App {
            // Makes `require('cluster')` in the thread a cluster worker, as it makes a process.
            env.insert("NODE_UNIQUE_ID".into(), Value::from(id.to_string()));
        }
        if wait_start {
            env.insert("EGG_CLUSTER_RS_WAIT_START".into(), Value::from("1"));
        }
        // From here the thread's end belongs to the JS side (the thread's IPC pipe, or closed
        // by the master's JS thread if the Worker cannot be created).
        let fd = thread_end.into_raw_fd();
        let host = self.threads.as_mut().ok_or("not in worker_threads mode")?;
        host.pending.insert(
            (role, id),
            Pending {
                master_end,
                slot,
                batch,
            },
        );
        tracing::debug!(role = role.as_str(), id, ?slot, fd, "thread requested");
        self.emit.emit(
            "thread",
            json!({
                "op": "spawn",
                "role": role.as_str(),
                "id": id,
                "fd": fd,
                "script": script,
                "argv": [options],
                "env": env,
            })
            .to_string(),
        );
        Ok(())
    }

    /// The options a thread gets as `argv[2]`: with `ports`, its slot's port (egg-cluster's
    /// `Object.assign({}, options, { port: ports[i] })`).
    fn thread_options(&self, slot: Option<usize>) -> String {
        let base = self.children.options_json();
        let port = slot.and_then(|s| self.threads.as_ref()?.ports.get(s).copied());
        let Some(port) = port else {
            return base.to_string();
        };
        match serde_json::from_str::<Value>(base) {
            Ok(Value::Object(mut o)) => {
                o.insert("port".into(), port.into());
                Value::Object(o).to_string()
            }
            _ => base.to_string(),
        }
    }

    /// The JS thread created the Worker (`Ok(threadId)`) or could not.
    pub(super) fn on_thread_spawned(&mut self, role: Role, id: u32, result: Result<u32, String>) {
        let Some(pending) = self
            .threads
            .as_mut()
            .and_then(|h| h.pending.remove(&(role, id)))
        else {
            return;
        };
        let pid = result
            .and_then(|tid| {
                self.children
                    .adopt_thread(role, tid, pending.slot, pending.master_end, &self.tx)
                    .inspect_err(|_| terminate(self.emit.as_ref(), tid))
                    .map(|()| tid)
            })
            .map_err(SpawnError::from);
        if role == Role::Agent {
            self.dispatch(Event::AgentSpawned { id, pid });
            return;
        }
        let (Some(key), Some(slot)) = (pending.batch, pending.slot) else {
            return;
        };
        let Some(host) = self.threads.as_mut() else {
            return;
        };
        let Some(acc) = host.batches.get_mut(&key) else {
            return;
        };
        acc.apps.push(Spawned { id, slot, pid });
        acc.waiting -= 1;
        if acc.waiting == 0 {
            if let Some(acc) = host.batches.remove(&key) {
                self.dispatch(Event::AppsSpawned {
                    batch: acc.batch,
                    apps: acc.apps,
                });
            }
        }
    }

    /// Asks a thread to close as a SIGTERM asks a process: its `process.on('SIGTERM')`
    /// handlers (graceful-process, the drain) run.
    pub(super) fn sigterm_thread(&self, tid: u32) {
        if let Some(p) = self.children.get(tid) {
            let _ = p.sender.send_control(Frame::new(THREAD_SIGTERM.to_vec()));
        }
    }
}
