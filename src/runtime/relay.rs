//! Relaying messages: routing each line a child (or the parent) sent, from the routing view the
//! core published, and delivering it. This is the hot path; it never goes through the JS thread.

use std::sync::Arc;

use smallvec::SmallVec;

use super::Runtime;
use crate::core::{Event, Target};
use crate::ipc::channel::{self, Frame};
use crate::messenger::{self, Destination, Peers, Role};

/// Per-receiver bytes gathered from one read: (pid, newline-terminated lines).
type Outbox = Vec<(u32, Vec<u8>)>;

/// Receivers whose queues are over the high-water mark after this read's messages.
type Congested = SmallVec<[u32; 4]>;

impl Runtime {
    /// Routes the messages `from` sent in one read. Messages for the agent and the app workers
    /// are gathered per receiver and written as one frame each, so a burst costs one queue
    /// operation per receiver instead of one per message; anything addressed to the master or
    /// the parent first flushes what was gathered, so every receiver sees the sender's order.
    pub(super) fn relay<'l>(
        &mut self,
        from: Role,
        pid: u32,
        lines: impl IntoIterator<Item = &'l [u8]>,
    ) {
        let mut outbox: Outbox = Vec::new();
        let mut congested = Congested::new();
        let mut events = Vec::new();
        let (mut relayed, mut relayed_bytes) = (0u64, 0u64);
        for line in lines {
            let peers = Peers {
                master_pid: self.master_pid,
                agent_pid: self.routes.agent,
                apps: &self.routes.apps,
                receiver_worker_id: self.egg4,
            };
            let routed = match messenger::route(from, line, &peers) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    tracing::trace!(from = from.as_str(), pid, "addressed to nobody: dropped");
                    continue;
                }
                Err(e) => {
                    events.push(Event::Malformed {
                        pid,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            tracing::trace!(from = from.as_str(), pid, dest = ?routed.dest, "route");
            relayed += 1;
            relayed_bytes += line.len() as u64;
            match routed.dest {
                Destination::Agent => {
                    if let Some(agent) = peers.agent_pid {
                        gather(&mut outbox, agent, &routed);
                    }
                }
                Destination::Apps(ref pids) => {
                    for p in pids {
                        gather(&mut outbox, *p, &routed);
                    }
                }
                Destination::Master => {
                    self.flush(&mut outbox, &mut events, &mut congested);
                    let line = routed.to_vec();
                    let (action, data) = routed.to_master.unwrap_or_default();
                    events.push(Event::ToMaster {
                        from,
                        pid,
                        action,
                        data,
                        line,
                    });
                }
                Destination::Parent => {
                    self.flush(&mut outbox, &mut events, &mut congested);
                    self.deliver_to_parent(routed.to_vec())
                }
            }
            // The master's own messages can change the routes (agent-start releases workers):
            // decide on them before routing what follows them.
            if !events.is_empty() {
                for event in events.drain(..) {
                    self.dispatch(event);
                }
            }
        }
        self.flush(&mut outbox, &mut events, &mut congested);
        self.ops.relayed(pid, relayed, relayed_bytes);
        if !congested.is_empty() && from != Role::Parent {
            self.hold_back(pid, &congested);
        }
        for event in events {
            self.dispatch(event);
        }
    }

    fn flush(&self, outbox: &mut Outbox, events: &mut Vec<Event>, congested: &mut Congested) {
        for (pid, bytes) in outbox.drain(..) {
            let Some(proc) = self.children.get(pid) else {
                continue;
            };
            let frame = Frame {
                line: channel::Bytes::Owned(bytes),
                fd: None,
            };
            match proc.sender.send(frame) {
                Ok(channel::Sent::Queued) => {}
                Ok(channel::Sent::Congested) => {
                    if !congested.contains(&pid) {
                        congested.push(pid);
                    }
                }
                Err(channel::SendError::Full {
                    first: true,
                    queued,
                }) => events.push(Event::NotReading { pid, queued }),
                Err(_) => {}
            }
        }
    }

    /// One of the master's own messages: never dropped nor held back, unlike relayed ones (so
    /// no event comes of it today).
    pub(super) fn send(&self, target: Target, mut line: Vec<u8>) -> Option<Event> {
        let pids = match target {
            Target::Parent => {
                self.deliver_to_parent(line);
                return None;
            }
            Target::Child(pid) => vec![pid],
            Target::Children(pids) => pids,
        };
        line.push(b'\n');
        let shared: Arc<[u8]> = line.into();
        for pid in pids {
            let frame = Frame {
                line: channel::Bytes::Shared(shared.clone()),
                fd: None,
            };
            if let Some(proc) = self.children.get(pid) {
                // A closed channel is reported as such by the channel task.
                let _ = proc.sender.send_control(frame);
            }
        }
        None
    }

    pub(super) fn deliver_to_parent(&self, line: Vec<u8>) {
        if self.parent_connected {
            self.emit
                .emit("parent", String::from_utf8_lossy(&line).into_owned());
        }
    }
}

/// Writes the routed message and its newline straight into `pid`'s part of the outbox: the
/// read's bytes are copied once, with `from`/`to` spliced in on the way.
fn gather(outbox: &mut Outbox, pid: u32, routed: &messenger::Routed) {
    let bytes = match outbox.iter().position(|(p, _)| *p == pid) {
        Some(i) => &mut outbox[i].1,
        None => {
            outbox.push((pid, Vec::with_capacity(routed.len_hint() + 1)));
            &mut outbox.last_mut().expect("just pushed").1
        }
    };
    routed.write_to(bytes);
    bytes.push(b'\n');
}
