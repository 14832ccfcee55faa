//! A scrape of `/metrics` with the app's own metrics (docs/observability.md): the master asks
//! every child for its prom-client metrics with an internal message on its channel
//! (`NODE_EGG_CLUSTER_RS_METRICS`, answered by `lib/app_metrics.js`, never seen by the app),
//! waits at most [`SCRAPE_TIMEOUT`] for the answers, counts the children that did not answer
//! (hung, busy, mid-reload) and leaves them out, then renders the snapshot and the merged
//! metrics ([`crate::ops::prom::render_scrape`]). Nothing passes through the master's JS thread.
//!
//! The waiting is done by the scrape's own task; the runtime only sends the questions, routes
//! the answers to that task by their number, and counts the timeouts.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::ops::Waiter;
use super::{Input, Runtime};
use crate::ipc::channel::{Frame, METRICS_CMD};
use crate::ops::app_metrics::Answer;
use crate::ops::prom;

/// The longest a scrape waits for the children's answers.
pub(super) const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);

/// A child's answer: its pid and the raw JSON of its metrics.
pub(super) type Reply = (u32, Vec<u8>);

/// The scrapes waiting for answers, by number.
#[derive(Default)]
pub(super) struct Scrapes {
    next: u64,
    open: HashMap<u64, mpsc::UnboundedSender<Reply>>,
}

impl Runtime {
    /// Asks every child for its metrics; tells the scrape which number and which children.
    pub(super) fn on_scrape_begin(
        &mut self,
        answers: mpsc::UnboundedSender<Reply>,
        reply: oneshot::Sender<(u64, Vec<u32>)>,
    ) {
        self.scrapes.next += 1;
        let seq = self.scrapes.next;
        let question = format!("{{\"cmd\":\"{METRICS_CMD}\",\"seq\":{seq}}}");
        let asked = self
            .children
            .send_to_all(|| Frame::new(question.clone().into_bytes()));
        self.scrapes.open.insert(seq, answers);
        let _ = reply.send((seq, asked));
    }

    /// A child answered scrape `seq` (an answer to a scrape that gave up is dropped).
    pub(super) fn on_metrics_answer(&mut self, pid: u32, seq: u64, metrics: Vec<u8>) {
        if let Some(tx) = self.scrapes.open.get(&seq) {
            let _ = tx.send((pid, metrics));
        }
    }

    /// Scrape `seq` is done waiting: `timed_out` did not answer. Its snapshot goes to `waiter`.
    pub(super) fn on_scrape_end(&mut self, seq: u64, timed_out: Vec<u32>, waiter: Waiter) {
        self.scrapes.open.remove(&seq);
        for pid in timed_out {
            self.ops.scrape_timed_out(pid);
        }
        self.on_status_request(waiter);
    }
}

/// The whole scrape, on its own task: the text to answer with (`None`: the master is going
/// away).
pub(super) async fn scrape(tx: &mpsc::UnboundedSender<Input>, by_process: bool) -> Option<String> {
    let (answers_tx, mut answers) = mpsc::unbounded_channel();
    let (begun_tx, begun) = oneshot::channel();
    tx.send(Input::ScrapeBegin {
        answers: answers_tx,
        reply: begun_tx,
    })
    .ok()?;
    let (seq, asked) = begun.await.ok()?;
    let mut got: HashMap<u32, Vec<u8>> = HashMap::with_capacity(asked.len());
    let deadline = tokio::time::sleep(SCRAPE_TIMEOUT);
    tokio::pin!(deadline);
    while got.len() < asked.len() {
        tokio::select! {
            answer = answers.recv() => match answer {
                Some((pid, metrics)) => { got.insert(pid, metrics); }
                None => break,
            },
            () = &mut deadline => break,
        }
    }
    let timed_out: Vec<u32> = asked
        .iter()
        .copied()
        .filter(|pid| !got.contains_key(pid))
        .collect();
    if !timed_out.is_empty() {
        tracing::debug!(?timed_out, "scrape: no answer in time");
    }
    let (snap_tx, snap) = oneshot::channel();
    tx.send(Input::ScrapeEnd {
        seq,
        timed_out,
        waiter: Waiter::Reply(snap_tx),
    })
    .ok()?;
    let snapshot = snap.await.ok()?;
    // The snapshot's order (the agent, then the app workers in spawn order) is the merge's.
    let answers: Vec<Answer<'_>> = snapshot
        .children
        .iter()
        .filter_map(|c| {
            Some(Answer {
                role: c.core.role,
                id: c.core.id,
                metrics: got.get(&c.core.pid)?,
            })
        })
        .collect();
    let (text, unreadable) = prom::render_scrape(&snapshot, &answers, by_process);
    if unreadable > 0 {
        tracing::debug!(
            unreadable,
            "scrape: answers that could not be read were left out"
        );
    }
    Some(text)
}
