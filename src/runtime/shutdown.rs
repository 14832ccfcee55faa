//! Terminating children for the close sequence: every child of a group at once, each with its
//! descendants (SIGTERM, SIGKILL after the limit); the group is reported done when all are gone.

use std::time::Duration;

use tokio::sync::mpsc;

use super::Input;
use crate::core::Group;
use crate::process::terminate::{terminate, Target};

pub(super) async fn terminate_group(
    group: Group,
    targets: Vec<Target>,
    limit: Duration,
    tx: mpsc::UnboundedSender<Input>,
) {
    let tasks: Vec<_> = targets
        .into_iter()
        .map(|t| tokio::spawn(terminate(t, limit)))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    tracing::debug!(?group, "close: group terminated");
    let _ = tx.send(Input::Terminated(group));
}
