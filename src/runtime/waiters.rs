//! The control socket's clients that wait on a reload or a scaling (`egg-cluster-rs reload`,
//! `scale up|down`): each gets a number the core keeps with the work, then its progress lines
//! and its outcome ([`Action::Progress`](crate::core::Action::Progress),
//! [`Action::Outcome`](crate::core::Action::Outcome)).

use std::collections::HashMap;

use tokio::sync::mpsc;

use super::Runtime;
use crate::core::{ControlRequest, Event};
use crate::ops::control::Answer;

#[derive(Default)]
pub(super) struct Waiters {
    next: u64,
    senders: HashMap<u64, mpsc::UnboundedSender<Answer>>,
}

impl Runtime {
    pub(super) fn on_control_request(
        &mut self,
        request: ControlRequest,
        answers: mpsc::UnboundedSender<Answer>,
    ) {
        let waiter = self.waiters.next;
        self.waiters.next += 1;
        self.waiters.senders.insert(waiter, answers);
        self.dispatch(Event::Control { waiter, request });
    }

    /// Performs `Action::Progress`.
    pub(super) fn control_progress(&mut self, waiters: &[u64], line: String) {
        for id in waiters {
            if let Some(tx) = self.waiters.senders.get(id) {
                let _ = tx.send(Answer::Progress {
                    progress: line.clone(),
                });
            }
        }
    }

    /// Performs `Action::Outcome`: the last line for each waiter.
    pub(super) fn control_outcome(&mut self, waiters: Vec<u64>, result: Result<String, String>) {
        for id in waiters {
            if let Some(tx) = self.waiters.senders.remove(&id) {
                let _ = tx.send(Answer::done(result.clone()));
            }
        }
    }
}
