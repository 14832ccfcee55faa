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
        let mut next = 0;
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
                        gather(&mut outbox, &mut next, agent, &routed);
                    }
                }
                Destination::Apps(ref pids) => {
                    for p in pids {
                        gather(&mut outbox, &mut next, *p, &routed);
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
///
/// `next` is where the following receiver is expected: a burst of broadcasts visits the
/// receivers in the same order for every line, so each is found at once instead of by a scan
/// (a broadcast to N workers would cost N²/2 comparisons per line).
fn gather(outbox: &mut Outbox, next: &mut usize, pid: u32, routed: &messenger::Routed) {
    let i = entry(outbox, *next, pid).unwrap_or_else(|| {
        outbox.push((pid, Vec::with_capacity(routed.len_hint() + 1)));
        outbox.len() - 1
    });
    *next = i + 1;
    let bytes = &mut outbox[i].1;
    routed.write_to(bytes);
    bytes.push(b'\n');
}

/// `pid`'s entry: tried at `hint`, then at the start (the next line of a burst), then searched.
fn entry(outbox: &Outbox, hint: usize, pid: u32) -> Option<usize> {
    let at = |i: usize| outbox.get(i).is_some_and(|(p, _)| *p == pid);
    if at(hint) {
        Some(hint)
    } else if at(0) {
        Some(0)
    } else {
        outbox.iter().position(|(p, _)| *p == pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messenger::{route, Peers};

    const APPS: [u32; 16] = [
        11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,
    ];

    fn gathered(from: Role, lines: &[&str]) -> (Outbox, usize) {
        let peers = Peers {
            master_pid: 1,
            agent_pid: Some(10),
            apps: &APPS,
            receiver_worker_id: false,
        };
        let (mut outbox, mut next, mut hits) = (Outbox::new(), 0, 0);
        for line in lines {
            let routed = route(from, line.as_bytes(), &peers).unwrap().unwrap();
            let pids: Vec<u32> = match &routed.dest {
                Destination::Apps(pids) => pids.to_vec(),
                Destination::Agent => vec![10],
                _ => unreachable!(),
            };
            for pid in pids {
                if entry(&outbox, next, pid).is_some_and(|i| i == next || i == 0) {
                    hits += 1;
                }
                gather(&mut outbox, &mut next, pid, &routed);
            }
        }
        (outbox, hits)
    }

    fn text(outbox: &Outbox, pid: u32) -> String {
        let (_, bytes) = outbox.iter().find(|(p, _)| *p == pid).unwrap();
        String::from_utf8(bytes.clone()).unwrap()
    }

    #[test]
    fn a_burst_of_broadcasts_finds_every_receiver_without_a_search() {
        let lines = [
            r#"{"action":"a"}"#,
            r#"{"action":"b"}"#,
            r#"{"action":"c"}"#,
        ];
        let (outbox, hits) = gathered(Role::Agent, &lines);
        assert_eq!(outbox.len(), 16);
        for pid in APPS {
            assert_eq!(
                text(&outbox, pid),
                concat!(
                    r#"{"action":"a","from":"agent","to":"app"}"#,
                    "\n",
                    r#"{"action":"b","from":"agent","to":"app"}"#,
                    "\n",
                    r#"{"action":"c","from":"agent","to":"app"}"#,
                    "\n"
                )
            );
        }
        // the first line creates the 16 entries; each of the other lines' 16 receivers is
        // where it was expected
        assert_eq!(hits, 2 * 16);
    }

    #[test]
    fn unicasts_in_any_order_keep_each_receivers_order() {
        let lines = [
            r#"{"action":"x","receiverPid":"13","data":1}"#,
            r#"{"action":"x","receiverPid":"11","data":2}"#,
            r#"{"action":"x","data":3}"#,
            r#"{"action":"x","receiverPid":"13","data":4}"#,
            r#"{"action":"x","receiverPid":"26","data":5}"#,
        ];
        let (outbox, _) = gathered(Role::Agent, &lines);
        assert_eq!(outbox.len(), 16);
        assert_eq!(outbox[0].0, 13);
        assert_eq!(outbox[1].0, 11);
        let data = |pid| {
            text(&outbox, pid)
                .lines()
                .map(|l| l.split("\"data\":").nth(1).unwrap()[..1].to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(data(13), "1,3,4");
        assert_eq!(data(11), "2,3");
        assert_eq!(data(26), "3,5");
        assert_eq!(data(12), "3");
    }
}
