//! Holding back the children that send to a child that falls behind.
//!
//! Relayed messages for a child queue in the master. Past [`HIGH_WATER`] queued bytes the
//! master stops reading the channels of the children whose messages are waiting for it, so their
//! `process.send` buffers in their own process — Node's own backpressure, where the messages are
//! produced — and reads them again once the queue is under [`LOW_WATER`]. Node's cluster master
//! buffers without limit instead; ours used to drop past a cap, losing messages to a child that
//! was merely slow.
//!
//! A held-back child's messages to everyone wait, the master and the parent included: its
//! channel is one stream, and reading on would reorder it. That is the price of keeping each
//! sender's order; it lasts as long as the slow receiver takes to catch up.
//!
//! A child that does not read at all (its JS thread blocked for good, or stopped) must not hold
//! the rest of the cluster back for ever: when it has taken nothing for [`STALL_AFTER`], its
//! senders go on and relayed messages to it over [`MAX_QUEUED`] are dropped, with the core's
//! "not reading" warning — until it drains again. The parent's messages and the master's own
//! (`send_control`) are never held back; the master's own are never dropped either.

use std::collections::HashMap;
use std::time::Duration;

use smallvec::SmallVec;

use super::Runtime;

/// Relayed bytes a stalled child may have queued before messages to it are dropped.
pub(super) const MAX_QUEUED: usize = 32 * 1024 * 1024;
/// Half the cap: room for what the held-back senders had already written before they were
/// paused (each one's socket and the reads in flight), so a receiver that catches up in time
/// never reaches the cap.
pub(super) const HIGH_WATER: usize = 16 * 1024 * 1024;
/// Low enough that a resume is not followed at once by the next pause, high enough that a fast
/// receiver never runs dry while the senders start again (4 MiB is ~20 ms of the bench's agent
/// taking 64 KiB messages).
pub(super) const LOW_WATER: usize = 4 * 1024 * 1024;
/// Longer than any pause of a child that works (a GC, a synchronous startup step, a CPU-bound
/// request: seconds at worst), and no longer than the health check's period: a cluster held up
/// by a dead-locked child for more than that is worse than the messages to that child.
pub(super) const STALL_AFTER: Duration = Duration::from_secs(10);

type Pids = SmallVec<[u32; 4]>;

/// Who is held back for whom. A sender may wait for several receivers; it reads again once
/// none holds it.
#[derive(Default)]
pub(super) struct Backpressure {
    /// receiver -> the senders held back for it
    held: HashMap<u32, Pids>,
    /// sender -> how many receivers it waits for
    waits: HashMap<u32, u32>,
}

impl Backpressure {
    /// Records that `sender` waits for `receiver`; true when it must be paused now.
    fn hold(&mut self, receiver: u32, sender: u32) -> bool {
        // A child writing to itself reads what it is sent regardless; holding it back for its
        // own queue would only make that queue wait for its ACKs.
        if sender == receiver {
            return false;
        }
        let list = self.held.entry(receiver).or_default();
        if list.contains(&sender) {
            return false;
        }
        list.push(sender);
        let n = self.waits.entry(sender).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// `receiver` holds nobody back any more: the senders that can read again.
    fn release(&mut self, receiver: u32) -> Pids {
        let mut resume = Pids::new();
        for sender in self.held.remove(&receiver).unwrap_or_default() {
            if let Some(n) = self.waits.get_mut(&sender) {
                *n -= 1;
                if *n == 0 {
                    self.waits.remove(&sender);
                    resume.push(sender);
                }
            }
        }
        resume
    }

    /// `pid`'s channel is gone: it holds nobody back and waits for nobody.
    fn forget(&mut self, pid: u32) -> Pids {
        let resume = self.release(pid);
        if self.waits.remove(&pid).is_some() {
            for list in self.held.values_mut() {
                list.retain(|s| *s != pid);
            }
        }
        resume
    }
}

impl Runtime {
    /// `sender`'s messages were queued for `receivers`, whose queues are over the high-water
    /// mark: stop reading `sender` until they drain.
    pub(super) fn hold_back(&mut self, sender: u32, receivers: &[u32]) {
        let Some(proc) = self.children.get(sender) else {
            return;
        };
        for &receiver in receivers {
            if self.backpressure.hold(receiver, sender) {
                tracing::debug!(sender, receiver, "backpressure: paused");
                proc.sender.pause_reading();
            }
        }
    }

    /// `receiver`'s queue drained, or it stalled, or its channel is gone.
    pub(super) fn release_held(&mut self, receiver: u32, gone: bool) {
        let resume = if gone {
            self.backpressure.forget(receiver)
        } else {
            self.backpressure.release(receiver)
        };
        for sender in resume {
            tracing::debug!(sender, receiver, "backpressure: resumed");
            if let Some(proc) = self.children.get(sender) {
                proc.sender.resume_reading();
            }
        }
    }

    pub(super) fn on_stalled(&mut self, pid: u32, queued: usize) {
        tracing::warn!(
            pid,
            queued,
            "backpressure: no progress for {STALL_AFTER:?}, its senders go on"
        );
        self.release_held(pid, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pids(v: &[u32]) -> Pids {
        v.iter().copied().collect()
    }

    #[test]
    fn a_sender_is_paused_once_and_resumed_when_no_receiver_holds_it() {
        let mut b = Backpressure::default();
        assert!(b.hold(10, 20));
        assert!(!b.hold(10, 20), "already paused for 10");
        assert!(!b.hold(11, 20), "already paused, now for 11 too");
        assert!(b.hold(10, 21));
        assert_eq!(b.release(10), pids(&[21]), "20 still waits for 11");
        assert_eq!(b.release(10), pids(&[]));
        assert_eq!(b.release(11), pids(&[20]));
        // A new episode pauses again.
        assert!(b.hold(11, 20));
    }

    #[test]
    fn a_child_is_never_held_back_for_itself() {
        let mut b = Backpressure::default();
        assert!(!b.hold(10, 10));
        assert_eq!(b.release(10), pids(&[]));
    }

    #[test]
    fn a_gone_child_releases_its_senders_and_waits_for_nobody() {
        let mut b = Backpressure::default();
        assert!(b.hold(10, 20));
        assert!(!b.hold(11, 20), "already paused");
        assert!(b.hold(20, 30));
        // 20 is gone: 30 reads again; 10 and 11 no longer list 20.
        assert_eq!(b.forget(20), pids(&[30]));
        assert_eq!(b.release(10), pids(&[]));
        assert_eq!(b.release(11), pids(&[]));
        assert!(b.waits.is_empty() && b.held.is_empty());
    }
}
