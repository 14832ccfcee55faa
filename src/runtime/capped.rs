//! The cap on the connections a listener the master serves itself holds open (`/metrics` and
//! the control socket): a task per connection, at most `max` at once. At the cap, one more
//! closes the oldest idle one (connected, its request not read yet) rather than being refused:
//! a probe or the CLI asks as soon as it connects, so it is answered unless `max` connections
//! arrive within its round trip, while refusing would let idle connections (a slowloris, a
//! careless client holding thousands) lock every real client out until they time out — and
//! without a cap they would run the master out of file descriptors, and its spawns with it. A
//! connection whose request is being answered (an upgrade waits for its outcome) is never
//! closed for a newer one; when every open one is, the newer one is refused.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::task::JoinHandle;

pub(super) struct Capped {
    /// Oldest first; aborting a task drops (closes) its connection.
    open: VecDeque<Conn>,
    max: usize,
}

struct Conn {
    task: JoinHandle<()>,
    busy: Arc<AtomicBool>,
}

/// Given to a connection's task: it says when its request is read, after which the connection
/// is no longer closed for a newer one.
#[derive(Clone)]
pub(super) struct Busy(Arc<AtomicBool>);

impl Busy {
    pub(super) fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Capped {
    pub(super) fn new(max: usize) -> Self {
        Capped {
            open: VecDeque::with_capacity(max),
            max,
        }
    }

    /// Runs one more connection's task, `serve` (which owns the connection), once there is
    /// room for it. Returns `false` when there is none — every open connection is busy —,
    /// and the connection is dropped unserved.
    pub(super) async fn spawn<F, Fut>(&mut self, serve: F) -> bool
    where
        F: FnOnce(Busy) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.open.retain(|c| !c.task.is_finished());
        if self.open.len() >= self.max {
            let Some(idle) = self
                .open
                .iter()
                .position(|c| !c.busy.load(Ordering::Relaxed))
                .and_then(|i| self.open.remove(i))
            else {
                return false;
            };
            idle.task.abort();
            // Done once the task is dropped, its connection with it: the count stays at the
            // cap even while a burst is accepted.
            let _ = idle.task.await;
        }
        let busy = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(serve(Busy(busy.clone())));
        self.open.push_back(Conn { task, busy });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use tokio::sync::oneshot;

    /// A task that holds `guard` (its "connection") until it ends or is aborted; marks
    /// itself busy when told to.
    fn conn(
        guard: oneshot::Sender<()>,
        busy_now: bool,
    ) -> impl FnOnce(Busy) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        move |busy| {
            Box::pin(async move {
                if busy_now {
                    busy.set();
                }
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(guard);
            })
        }
    }

    #[tokio::test]
    async fn the_oldest_idle_connection_makes_room_a_busy_one_never() {
        let mut capped = Capped::new(2);
        let (busy_tx, mut busy_rx) = oneshot::channel();
        let (idle_tx, mut idle_rx) = oneshot::channel();
        assert!(capped.spawn(conn(busy_tx, true)).await);
        assert!(capped.spawn(conn(idle_tx, false)).await);
        tokio::task::yield_now().await;

        // The idle one, though newer, is closed for the third.
        let (third_tx, _third_rx) = oneshot::channel();
        assert!(capped.spawn(conn(third_tx, true)).await);
        assert!(idle_rx
            .try_recv()
            .is_err_and(|e| e == oneshot::error::TryRecvError::Closed));
        assert_eq!(
            busy_rx.try_recv(),
            Err(oneshot::error::TryRecvError::Empty),
            "a busy connection was closed"
        );

        // Every open one busy: the newcomer is refused, and dropped.
        tokio::task::yield_now().await;
        let (fourth_tx, mut fourth_rx) = oneshot::channel();
        assert!(!capped.spawn(conn(fourth_tx, false)).await);
        assert_eq!(
            fourth_rx.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        );
        assert_eq!(capped.open.len(), 2);
    }
}
