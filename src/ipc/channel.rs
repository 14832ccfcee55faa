//! One child's IPC socket, driven by a tokio task.
//!
//! Reading: `recvmsg` into a 64 KiB buffer with room for 64 fds (`MSG_CMSG_CLOEXEC`, so a
//! received fd never leaks into a later child); fds go to a FIFO that the next `NODE_HANDLE` line
//! takes from, which is exactly Node's single pending-handle slot as long as the peer keeps
//! one handle in flight. Every `NODE_HANDLE` is answered with `NODE_HANDLE_ACK` (or `_NACK` when
//! no fd came with it): until it is, the child queues everything it sends, cluster traffic
//! included.
//!
//! Writing: frames queue in an unbounded channel; plain lines are coalesced into one `sendmsg`.
//! A frame carrying an fd is written only from the start of an empty buffer, with the fd on its
//! first `sendmsg` (libuv binds the fd to that read), and nothing else is taken from the queue
//! until the child ACKs it: two handles in flight can bind the wrong fd to a message
//! (protocol spec §4.4). Our own ACK/NACK lines bypass the queue, as Node's do.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use memchr::memmem;
use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::frame::LineBuffer;
use super::json;

const READ_CHUNK: usize = 64 * 1024;
/// Plain lines are coalesced into one write up to about this many bytes.
const WRITE_BATCH: usize = 256 * 1024;
const ACK: &[u8] = b"{\"cmd\":\"NODE_HANDLE_ACK\"}\n";
const NACK: &[u8] = b"{\"cmd\":\"NODE_HANDLE_NACK\"}\n";

/// One outgoing message: a complete line including its `\n`, and at most one fd.
pub struct Frame {
    pub line: Bytes,
    pub fd: Option<OwnedFd>,
}

impl Frame {
    /// A frame from a JSON text without its newline.
    pub fn new(mut json: Vec<u8>) -> Self {
        json.push(b'\n');
        Frame {
            line: Bytes::Owned(json),
            fd: None,
        }
    }

    /// A `NODE_HANDLE` envelope around `inner`, carrying `fd`.
    pub fn handle(kind: &str, inner: &[u8], fd: OwnedFd) -> Self {
        let mut line = Vec::with_capacity(inner.len() + 48);
        line.extend_from_slice(b"{\"cmd\":\"NODE_HANDLE\",\"type\":");
        line.extend_from_slice(&json::quote(kind));
        line.extend_from_slice(b",\"msg\":");
        line.extend_from_slice(inner);
        line.extend_from_slice(b"}\n");
        Frame {
            line: Bytes::Owned(line),
            fd: Some(fd),
        }
    }
}

/// A frame's bytes: owned when it has one receiver (no copy), shared for a broadcast.
pub enum Bytes {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Shared(a) => a,
        }
    }
}

/// What the channel reports to its owner.
#[derive(Debug)]
pub enum Incoming {
    /// User message lines (not internal), raw, in order: all those of one read, so the owner
    /// handles a burst of small messages in one go.
    Messages(Vec<Vec<u8>>),
    /// A `NODE_CLUSTER` line, raw.
    Cluster(Vec<u8>),
    /// A line the child should never have written; dropped, the channel goes on.
    Malformed { reason: String },
    /// The channel is gone: EOF, an I/O error, or a framing violation we cannot recover from.
    Closed { reason: Option<String> },
}

/// The master's side of a channel: queue frames; dropping every sender closes the socket once
/// the queue is flushed.
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::UnboundedSender<Frame>,
    queue: Arc<QueueState>,
}

/// Bytes of user messages queued for a child and not yet taken by its writer. A child that stops
/// reading must not make the master buffer without bound: past `cap`, its messages are dropped.
struct QueueState {
    bytes: AtomicUsize,
    cap: usize,
    /// Set at the first drop, cleared once the queue has drained to half: one report per episode.
    overflowing: AtomicBool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The channel is closed (the frame is dropped, as Node's `sendmessage` does).
    Closed,
    /// The child is not reading fast enough; `first` is true for the first drop of an episode.
    Full { first: bool, queued: usize },
}

impl Sender {
    /// Queues a user message, unless the child's queue is over its cap.
    pub fn send(&self, frame: Frame) -> Result<(), SendError> {
        let len = frame.line.len();
        let queued = self.queue.bytes.load(Ordering::Relaxed);
        if queued > 0 && queued + len > self.queue.cap {
            let first = !self.queue.overflowing.swap(true, Ordering::Relaxed);
            return Err(SendError::Full { first, queued });
        }
        self.send_control(frame)
    }

    /// Queues a protocol frame (cluster replies, handles, our own lifecycle messages): never
    /// dropped, since the child would hang waiting for it.
    pub fn send_control(&self, frame: Frame) -> Result<(), SendError> {
        self.queue
            .bytes
            .fetch_add(frame.line.len(), Ordering::Relaxed);
        self.tx.send(frame).map_err(|_| SendError::Closed)
    }
}

/// Starts driving `fd` (our end of the socketpair) on the current tokio runtime.
pub fn start<F>(fd: OwnedFd, limits: Limits, on_incoming: F) -> io::Result<Sender>
where
    F: FnMut(Incoming) + Send + 'static,
{
    set_nonblocking(fd.as_raw_fd())?;
    // SAFETY: `fd` is an owned, open socket that stays open and unchanged until the AsyncFd
    // (which owns it) is dropped.
    let afd = unsafe { AsyncFd::register(fd) }?;
    let (tx, rx) = mpsc::unbounded_channel();
    let queue = Arc::new(QueueState {
        bytes: AtomicUsize::new(0),
        cap: limits.max_queued,
        overflowing: AtomicBool::new(false),
    });
    tokio::spawn(Conn::new(limits.max_line, queue.clone()).run(afd, rx, on_incoming));
    Ok(Sender { tx, queue })
}

/// Bounds on what one channel may make the master hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest line accepted from the child; longer ones are dropped (and reported).
    pub max_line: usize,
    /// Bytes of messages queued for the child before new ones are dropped.
    pub max_queued: usize,
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl on an fd we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

struct Conn {
    lines: LineBuffer,
    fds: VecDeque<OwnedFd>,
    out: Vec<u8>,
    out_pos: usize,
    /// fd to attach to the first `sendmsg` of `out` (its handle line starts at offset 0).
    out_fd: Option<OwnedFd>,
    /// Our copy of a handle the child has not ACKed yet; closed on ACK.
    in_flight: Option<OwnedFd>,
    awaiting_ack: bool,
    /// A frame taken from the queue that cannot be written yet (a handle behind other bytes).
    held: Option<Frame>,
    queue: Arc<QueueState>,
    /// User messages of the current read, handed over together.
    batch: Vec<Vec<u8>>,
}

/// Hands events to the channel's owner and makes sure `Closed` is reported exactly once: when
/// the loop ends, or, should the task unwind from a bug, when it is dropped — so the owner never
/// waits on a channel that died silently.
struct Reporter<F: FnMut(Incoming)> {
    sink: F,
    closed: bool,
}

impl<F: FnMut(Incoming)> Reporter<F> {
    fn report(&mut self, incoming: Incoming) {
        if matches!(incoming, Incoming::Closed { .. }) {
            self.closed = true;
        }
        (self.sink)(incoming);
    }
}

impl<F: FnMut(Incoming)> Drop for Reporter<F> {
    fn drop(&mut self) {
        if !self.closed {
            self.closed = true;
            (self.sink)(Incoming::Closed {
                reason: Some("internal error in the channel task".into()),
            });
        }
    }
}

impl Conn {
    fn new(max_line: usize, queue: Arc<QueueState>) -> Self {
        Conn {
            queue,
            batch: Vec::new(),
            lines: LineBuffer::new(max_line),
            fds: VecDeque::new(),
            out: Vec::new(),
            out_pos: 0,
            out_fd: None,
            in_flight: None,
            awaiting_ack: false,
            held: None,
        }
    }

    async fn run<F: FnMut(Incoming)>(
        mut self,
        afd: AsyncFd<OwnedFd>,
        mut rx: mpsc::UnboundedReceiver<Frame>,
        on_incoming: F,
    ) {
        let mut reporter = Reporter {
            sink: on_incoming,
            closed: false,
        };
        let mut on_incoming = |incoming: Incoming| reporter.report(incoming);
        let mut buf = vec![0u8; READ_CHUNK];
        let mut queue_open = true;
        let reason = loop {
            self.fill(&mut rx);
            let want_write = self.out_pos < self.out.len();
            let can_take = queue_open && self.held.is_none() && !self.awaiting_ack;
            if !queue_open && !want_write && self.held.is_none() {
                // The master dropped us and everything is flushed: close, which the child
                // sees as a disconnect.
                break None;
            }
            tokio::select! {
                biased;
                ready = afd.readable() => {
                    let mut guard = match ready {
                        Ok(g) => g,
                        Err(e) => break Some(e.to_string()),
                    };
                    match guard.try_io(|inner| self.read_once(inner.get_ref().as_raw_fd(), &mut buf)) {
                        Ok(Ok(0)) => break None,
                        Ok(Ok(n)) => self.on_bytes(&buf[..n], &mut on_incoming),
                        Ok(Err(e)) => break Some(format!("read: {e}")),
                        Err(_would_block) => {}
                    }
                }
                ready = afd.writable(), if want_write => {
                    let mut guard = match ready {
                        Ok(g) => g,
                        Err(e) => break Some(e.to_string()),
                    };
                    match guard.try_io(|inner| self.flush(inner.get_ref().as_raw_fd())) {
                        Ok(Ok(())) => {}
                        // The child closed its end; the read side reports the EOF.
                        Ok(Err(e)) if e.raw_os_error() == Some(libc::EPIPE) => {
                            self.out.clear();
                            self.out_pos = 0;
                        }
                        Ok(Err(e)) => break Some(format!("write: {e}")),
                        Err(_would_block) => {}
                    }
                }
                frame = rx.recv(), if can_take => match frame {
                    Some(frame) => {
                        self.dequeued(frame.line.len());
                        self.held = Some(frame);
                    }
                    None => queue_open = false,
                },
            }
        };
        self.flush_batch(&mut on_incoming);
        on_incoming(Incoming::Closed { reason });
    }

    fn dequeued(&self, len: usize) {
        let before = self.queue.bytes.fetch_sub(len, Ordering::Relaxed);
        if before.saturating_sub(len) <= self.queue.cap / 2 {
            self.queue.overflowing.store(false, Ordering::Relaxed);
        }
    }

    /// Moves queued frames into the write buffer, honouring the one-handle-in-flight rule.
    fn fill(&mut self, rx: &mut mpsc::UnboundedReceiver<Frame>) {
        loop {
            if self.awaiting_ack || self.out.len() - self.out_pos >= WRITE_BATCH {
                return;
            }
            let frame = match self.held.take() {
                Some(f) => f,
                None => match rx.try_recv() {
                    Ok(f) => {
                        self.dequeued(f.line.len());
                        f
                    }
                    Err(_) => return,
                },
            };
            if frame.fd.is_some() && self.out_pos < self.out.len() {
                self.held = Some(frame);
                return;
            }
            if self.out_pos == self.out.len() {
                self.out.clear();
                self.out_pos = 0;
            } else if self.out_pos >= self.out.len() / 2 && self.out_fd.is_none() {
                // A reader that stays a little behind would otherwise keep the written prefix
                // around forever; drop it once it is most of the buffer. (Not while an fd waits
                // for the first sendmsg of its line: that line starts at `out_pos`.)
                self.out.drain(..self.out_pos);
                self.out_pos = 0;
            }
            self.out.extend_from_slice(&frame.line);
            if let Some(fd) = frame.fd {
                self.out_fd = Some(fd);
                self.awaiting_ack = true;
            }
        }
    }

    fn flush(&mut self, fd: RawFd) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            let iov = [IoSlice::new(&self.out[self.out_pos..])];
            let res = match &self.out_fd {
                Some(handle) => {
                    let fds = [handle.as_raw_fd()];
                    sendmsg::<()>(
                        fd,
                        &iov,
                        &[ControlMessage::ScmRights(&fds)],
                        MsgFlags::MSG_NOSIGNAL,
                        None,
                    )
                }
                None => sendmsg::<()>(fd, &iov, &[], MsgFlags::MSG_NOSIGNAL, None),
            };
            match res {
                Ok(n) => {
                    if let Some(handle) = self.out_fd.take() {
                        self.in_flight = Some(handle);
                    }
                    self.out_pos += n;
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    fn read_once(&mut self, fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
        let mut cmsg = nix::cmsg_space!([RawFd; 64]);
        let mut iov = [IoSliceMut::new(buf)];
        loop {
            match recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
                Ok(msg) => {
                    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                        tracing::warn!("ipc: control data truncated, fds lost");
                    }
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmRights(fds) = c {
                                // SAFETY: the kernel just created these fds for us.
                                self.fds.extend(
                                    fds.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }),
                                );
                            }
                        }
                    }
                    return Ok(msg.bytes);
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn on_bytes<F: FnMut(Incoming)>(&mut self, data: &[u8], on_incoming: &mut F) {
        self.lines.extend(data);
        while let Some(line) = self.lines.next_line() {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    self.flush_batch(on_incoming);
                    on_incoming(Incoming::Malformed {
                        reason: format!("a message over {} bytes was dropped", e.limit),
                    });
                    continue;
                }
            };
            self.on_line(line, on_incoming);
        }
        self.flush_batch(on_incoming);
    }

    /// Hands over the batched user messages; called before anything else is reported, so the
    /// owner sees everything in the order the child wrote it.
    fn flush_batch<F: FnMut(Incoming)>(&mut self, on_incoming: &mut F) {
        if !self.batch.is_empty() {
            on_incoming(Incoming::Messages(std::mem::take(&mut self.batch)));
        }
    }

    fn on_line<F: FnMut(Incoming)>(&mut self, line: Vec<u8>, on_incoming: &mut F) {
        // Only lines mentioning "cmd" can be internal; the rest (nearly all traffic) skip the scan
        // here and are validated once, by the router.
        if memmem::find(&line, b"\"cmd\"").is_none() {
            self.batch.push(line);
            return;
        }
        let scanned = match json::scan(&line) {
            Ok(s) => s,
            Err(e) => {
                self.flush_batch(on_incoming);
                on_incoming(Incoming::Malformed {
                    reason: e.to_string(),
                });
                return;
            }
        };
        let cmd = match scanned.str("cmd") {
            Some(cmd) if super::is_internal_cmd(&cmd) => cmd,
            _ => {
                self.batch.push(line);
                return;
            }
        };
        match cmd.as_ref() {
            "NODE_HANDLE_ACK" | "NODE_HANDLE_NACK" => {
                // Node retransmits only `net.Socket`s on NACK; we send `net.Native` handles, so a
                // NACK just releases the queue.
                self.awaiting_ack = false;
                self.in_flight = None;
            }
            "NODE_HANDLE" => {
                let fd = self.fds.pop_front();
                self.out
                    .extend_from_slice(if fd.is_some() { ACK } else { NACK });
                if fd.is_none() {
                    self.flush_batch(on_incoming);
                    on_incoming(Incoming::Malformed {
                        reason: "a NODE_HANDLE without a file descriptor (answered NACK)".into(),
                    });
                }
                // The master accepts no handles from children: the fd is closed here, the message
                // itself goes on like any other.
                drop(fd);
                if let Some(inner) = scanned.raw("msg") {
                    let inner = inner.to_vec();
                    self.on_line(inner, on_incoming);
                }
            }
            "NODE_CLUSTER" => {
                self.flush_batch(on_incoming);
                on_incoming(Incoming::Cluster(line))
            }
            other => {
                // Node ignores internal messages it does not know; so do we, but say so.
                self.flush_batch(on_incoming);
                on_incoming(Incoming::Malformed {
                    reason: format!("unknown internal message {other} ignored"),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closes(events: &[Incoming]) -> usize {
        events
            .iter()
            .filter(|e| matches!(e, Incoming::Closed { .. }))
            .count()
    }

    #[test]
    fn closed_is_reported_once_even_when_the_task_unwinds() {
        let mut events = Vec::new();
        {
            let mut r = Reporter {
                sink: |i| events.push(i),
                closed: false,
            };
            r.report(Incoming::Messages(vec![b"{}".to_vec()]));
            // dropped without a Closed, as when the task panics
        }
        assert_eq!(closes(&events), 1);

        let mut events = Vec::new();
        {
            let mut r = Reporter {
                sink: |i| events.push(i),
                closed: false,
            };
            r.report(Incoming::Closed { reason: None });
        }
        assert_eq!(closes(&events), 1);
    }
}
