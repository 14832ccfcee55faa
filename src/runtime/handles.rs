//! The listening sockets the master hands to app workers, and the rest of the cluster
//! protocol's worker messages.
//!
//! A worker's `server.listen()` becomes a `queryServer`; the master binds (once per handle
//! key), keeps the socket, and sends each asking worker a duplicate with `NODE_HANDLE`. With
//! `reusePort` every worker slot gets its own `SO_REUSEPORT` socket, which outlives the worker:
//! the connections queued on it wait for the slot's next worker instead of being reset.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use serde_json::Value;

use super::Runtime;
use crate::core::{Event, ListenVia};
use crate::ipc::channel::Frame;
use crate::listen;
use crate::protocol::cluster::{self, Act, BindRequest, ClusterMessage};

struct SharedHandle {
    /// The key the workers know this handle by (Node's `address:port:addressType:fd:index`).
    node_key: String,
    /// The worker slot owning this socket, for per-slot `SO_REUSEPORT` sockets.
    slot: Option<usize>,
    fd: OwnedFd,
    /// The first querying worker's `data` (TLS ticket keys), echoed to every worker.
    data: Value,
    workers: Vec<u32>,
}

pub(super) struct Handles {
    by_key: HashMap<String, SharedHandle>,
    /// `reusePort` in the options: every worker gets per-slot sockets.
    reuse_port: bool,
    /// Per-slot sockets are kept for a replacement only while dead workers are replaced.
    keep_slots: bool,
    /// The `seq` of the master's cluster messages.
    seq: u64,
    /// Listening sockets from systemd (socket activation), used instead of binding their port.
    inherited: Vec<super::ops::Inherited>,
}

impl Handles {
    pub(super) fn new(
        reuse_port: bool,
        is_production: bool,
        inherited: Vec<super::ops::Inherited>,
    ) -> Self {
        Handles {
            by_key: HashMap::new(),
            reuse_port,
            keep_slots: is_production,
            seq: 0,
            inherited,
        }
    }

    /// A duplicate of the socket systemd (or an upgrade's old master) passed for `port`, if
    /// one was.
    /// A per-slot socket of an old master serves only when nothing else was passed.
    pub(super) fn inherited(&self, port: u16) -> Option<std::io::Result<OwnedFd>> {
        let on_port = |s: &&super::ops::Inherited| s.port == port;
        self.inherited
            .iter()
            .filter(on_port)
            .find(|s| !s.reuse_port)
            .or_else(|| self.inherited.iter().find(on_port))
            .map(|s| s.fd.try_clone())
    }

    /// One of the old master's per-slot sockets for `port`, for a slot of this master: taken,
    /// so that each slot gets its own and queued connections carry over.
    fn take_inherited_slot(&mut self, port: u16) -> Option<OwnedFd> {
        let i = self
            .inherited
            .iter()
            .position(|s| s.port == port && s.reuse_port)?;
        Some(self.inherited.remove(i).fd)
    }

    /// At an upgrade's ready: per-slot sockets no slot took (the old master ran more workers)
    /// are closed; the kernel would otherwise go on queueing connections where nobody accepts.
    pub(super) fn drop_untaken_slot_sockets(&mut self) {
        self.inherited.retain(|s| !s.reuse_port);
    }

    /// Every listening socket the workers use (shared and per-slot) and those inherited: what
    /// a new master (an upgrade) inherits.
    pub(super) fn listening_fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.by_key
            .values()
            .map(|h| h.fd.as_fd())
            .chain(self.inherited.iter().map(|s| s.fd.as_fd()))
            .collect()
    }

    /// The master closes: no worker will take a slot over any more.
    pub(super) fn closing(&mut self) {
        self.keep_slots = false;
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq += 1;
        s
    }

    /// `pid` stopped using the handle it knows as `node_key`. The shared socket closes with its
    /// last worker; a per-slot socket stays while a replacement worker is expected to take the
    /// slot over, so its queued connections are served rather than reset.
    fn release(&mut self, node_key: &str, pid: u32) {
        let keep_slots = self.keep_slots;
        self.by_key.retain(|_, h| {
            if h.node_key != node_key || !h.workers.contains(&pid) {
                return true;
            }
            h.workers.retain(|p| *p != pid);
            let keep = !h.workers.is_empty() || (h.slot.is_some() && keep_slots);
            if !keep {
                tracing::debug!(key = %h.node_key, slot = ?h.slot, "handle closed");
            }
            keep
        });
    }

    /// `pid` is gone (channel closed or exited): it holds no handle any more.
    pub(super) fn forget(&mut self, pid: u32) {
        let keys: Vec<String> = self
            .by_key
            .values()
            .filter(|h| h.workers.contains(&pid))
            .map(|h| h.node_key.clone())
            .collect();
        for key in keys {
            self.release(&key, pid);
        }
    }
}

impl Runtime {
    /// A `NODE_CLUSTER` message from app worker `pid`: answered here when it is about handles,
    /// turned into an event for the core when it is about the worker's life.
    pub(super) fn on_cluster(&mut self, pid: u32, line: &[u8]) -> Option<Event> {
        let msg = match cluster::parse(line) {
            Ok(m) => m,
            Err(e) => {
                return Some(Event::Malformed {
                    pid,
                    reason: format!("bad cluster message: {e}"),
                })
            }
        };
        match msg.act {
            Act::Online => Some(Event::Online { pid }),
            Act::QueryServer => {
                self.query_server(pid, &msg);
                None
            }
            Act::Listening => Some(Event::Listening {
                pid,
                address: msg.listening_address(),
                via: ListenVia::Cluster,
            }),
            Act::Close => {
                if let Some(key) = &msg.key {
                    self.handles.release(key, pid);
                }
                None
            }
            Act::ExitedAfterDisconnect => {
                let seq = self.handles.next_seq();
                if let (Some(ack), Some(app)) = (msg.seq, self.children.get(pid)) {
                    let _ = app
                        .sender
                        .send_control(Frame::new(cluster::ack_reply(ack, seq)));
                }
                Some(Event::ExitedAfterDisconnect { pid })
            }
            Act::Unknown => None,
        }
    }

    fn query_server(&mut self, pid: u32, msg: &ClusterMessage) {
        let Some(proc) = self.children.get(pid) else {
            return;
        };
        let key = msg.handle_key();
        let ack = msg.seq.unwrap_or(0);
        let request = msg.bind_request();
        // TCP listens get a socket of the worker's slot with `reusePort` in the options or in
        // the app's `config.cluster.listen` (reported in `realport`).
        let slot = match &request {
            Ok(BindRequest::Tcp { .. }) if self.handles.reuse_port || proc.reuse_port => proc.slot,
            _ => None,
        };
        let map_key = match slot {
            Some(n) => format!("{key}@slot{n}"),
            None => key.clone(),
        };
        let handles = &mut self.handles;
        let bound = match handles.by_key.get(&map_key) {
            Some(_) => Ok(()),
            None => request
                .and_then(|req| {
                    let fd = match slot {
                        // The master listens on its per-slot socket itself and keeps it, so
                        // connections queue there while the slot's worker is being replaced.
                        Some(_) => match &req {
                            BindRequest::Tcp { port, .. } if *port != 0 => handles
                                .take_inherited_slot(*port)
                                .map_or_else(|| listen::bind_reuse_port(&req, msg.backlog), Ok),
                            _ => listen::bind_reuse_port(&req, msg.backlog),
                        },
                        None => match &req {
                            BindRequest::Tcp { port, .. } if *port != 0 => handles
                                .inherited(*port)
                                .unwrap_or_else(|| listen::bind_request(&req)),
                            _ => listen::bind_request(&req),
                        },
                    };
                    fd.map_err(|e| listen::uv_errno(&e))
                })
                .map(|fd| {
                    tracing::debug!(key = %key, ?slot, "handle bound");
                    handles.by_key.insert(
                        map_key.clone(),
                        SharedHandle {
                            node_key: key.clone(),
                            slot,
                            fd,
                            data: msg.data.clone(),
                            workers: Vec::new(),
                        },
                    );
                }),
        };
        let seq = handles.next_seq();
        let reply = |errno: i32, data: &Value| cluster::query_reply(errno, &key, ack, data, seq);
        let frame = match bound {
            Ok(()) => {
                let Some(handle) = handles.by_key.get_mut(&map_key) else {
                    return;
                };
                match handle.fd.try_clone() {
                    Ok(dup) => {
                        if !handle.workers.contains(&pid) {
                            handle.workers.push(pid);
                        }
                        tracing::debug!(pid, key = %key, ?slot, "handle passed");
                        Frame::handle("net.Native", &reply(0, &handle.data), dup)
                    }
                    Err(e) => Frame::new(reply(listen::uv_errno(&e), &msg.data)),
                }
            }
            Err(errno) => {
                tracing::debug!(pid, key = %key, errno, "queryServer failed");
                Frame::new(reply(errno, &msg.data))
            }
        };
        let _ = proc.sender.send_control(frame);
    }
}
