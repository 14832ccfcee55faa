//! The metrics endpoint (`metrics: { port, host }`): `/metrics`, `/healthz`, `/readyz`, served
//! by the master's runtime thread, so it answers while workers are busy or dead. One request
//! per connection; the head is bounded ([`http::MAX_HEAD`]) and a slow client is dropped after
//! [`CLIENT_TIMEOUT`]. At most [`MAX_CONNECTIONS`] are open at once: a new one closes the oldest
//! ([`super::capped`]), so the master's fds stay bounded and idle connections (a slowloris)
//! cannot lock the probes out. Parsing and answers are pure, in [`crate::ops::http`].

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::ops::Waiter;
use super::Input;
use crate::ops::http::{self, Parsed, Route};
use crate::ops::prom;
use crate::ops::snapshot::Snapshot;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once. Probes and scrapes take one each for a few milliseconds; past
/// this the oldest is closed rather than the newest refused: a probe sends its request as soon
/// as it connects, so it is answered unless this many connections arrive within its round trip,
/// while refusing would let idle connections fail every probe (and make kubelet restart the
/// pod) until they time out.
pub(super) const MAX_CONNECTIONS: usize = 128;

/// Asks the runtime for a snapshot (`None` when the master is going away).
pub(super) async fn snapshot(tx: &mpsc::UnboundedSender<Input>) -> Option<Snapshot> {
    let (otx, orx) = oneshot::channel();
    tx.send(Input::Status(Waiter::Reply(otx))).ok()?;
    orx.await.ok()
}

/// Serves the metrics listener; the handle stops accepting (requests being answered finish).
pub(super) fn serve(
    listener: std::net::TcpListener,
    tx: mpsc::UnboundedSender<Input>,
) -> Option<tokio::task::AbortHandle> {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "metrics listener");
            return None;
        }
    };
    let task = tokio::spawn(async move {
        let mut open = super::capped::Capped::new(MAX_CONNECTIONS);
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let tx = tx.clone();
                    // A request takes milliseconds: none is marked busy, the oldest goes.
                    open.spawn(|_| async move {
                        let _ = tokio::time::timeout(CLIENT_TIMEOUT, handle(stream, &tx)).await;
                    })
                    .await;
                }
                // EMFILE and the like: wait a little rather than spin.
                Err(e) => {
                    tracing::debug!(error = %e, "metrics accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Some(task.abort_handle())
}

async fn handle(mut stream: TcpStream, tx: &mpsc::UnboundedSender<Input>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let answer = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        match http::parse(&buf) {
            Parsed::Incomplete => continue,
            Parsed::Reject(status) => break http::reject(status),
            Parsed::Request {
                route: Route::Metrics { by_process },
                head,
            } => match super::scrape::scrape(tx, by_process).await {
                Some(text) => break http::response(200, prom::CONTENT_TYPE, &text, head),
                None => break http::reject(503),
            },
            Parsed::Request { route, head } => match snapshot(tx).await {
                Some(s) => break http::answer(route, head, &s),
                None => break http::reject(503),
            },
        }
    };
    stream.write_all(&answer).await?;
    stream.shutdown().await
}
