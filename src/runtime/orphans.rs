//! The runtime's half of orphans (see `core/orphans.rs`): the /proc scan runs off the master
//! thread (it reads every candidate's environment), its answer comes back as an input.

use std::time::Duration;

use super::{Input, Runtime};
use crate::core::{Group, Orphan};
use crate::process::orphans;

impl Runtime {
    pub(super) fn find_orphans(&self, at_close: bool) {
        let tx = self.tx.clone();
        let Some(marker) = self.tree_marker.clone() else {
            let _ = tx.send(Input::Orphans {
                found: Vec::new(),
                at_close,
            });
            return;
        };
        let live = self.children.running_pids();
        tokio::task::spawn_blocking(move || {
            let found = orphans::find(&marker, &live)
                .into_iter()
                .map(|o| Orphan {
                    pid: o.pid,
                    start: o.start,
                    cmd: o.cmd,
                })
                .collect();
            let _ = tx.send(Input::Orphans { found, at_close });
        });
    }

    pub(super) fn terminate_orphans(&self, found: Vec<Orphan>, limit: Duration, at_close: bool) {
        let tx = self.tx.clone();
        let found = found
            .into_iter()
            .map(|o| orphans::Orphan {
                pid: o.pid,
                start: o.start,
                cmd: o.cmd,
            })
            .collect();
        tokio::spawn(async move {
            orphans::terminate(found, limit).await;
            if at_close {
                let _ = tx.send(Input::Terminated(Group::Orphans));
            }
        });
    }
}
