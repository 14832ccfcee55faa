//! Terminating children for the close sequence: every child of a group at once, each with its
//! descendants (SIGTERM, SIGKILL after the limit); the group is reported done when all are gone.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::children::Stop;
use super::{Emit, Input};
use crate::core::Group;
use crate::process::terminate::terminate;

/// Stops one child within `limit` (a thread must have been sent its SIGTERM already).
pub(super) async fn stop(target: Stop, limit: Duration, emit: Arc<dyn Emit>) {
    match target {
        Stop::Process(t) => terminate(t, limit).await,
        Stop::Thread(t) => t.stop(limit, emit).await,
    }
}

pub(super) async fn terminate_group(
    group: Group,
    targets: Vec<Stop>,
    limit: Duration,
    tx: mpsc::UnboundedSender<Input>,
    emit: Arc<dyn Emit>,
) {
    let tasks: Vec<_> = targets
        .into_iter()
        .map(|t| tokio::spawn(stop(t, limit, emit.clone())))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    tracing::debug!(?group, "close: group terminated");
    let _ = tx.send(Input::Terminated(group));
}
