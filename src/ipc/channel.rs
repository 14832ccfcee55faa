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
//! (`docs/ipc-protocol.md` §3.1). Our own ACK/NACK lines bypass the queue, as Node's do.
//!
//! Backpressure: relayed messages queued for a child past `high_water` make [`Sender::send`]
//! say so, and the owner pauses the channels of the senders ([`Sender::pause_reading`]): their
//! `process.send` then buffers in their own process, where the messages are produced. Once the
//! queue is back under `low_water` the channel reports [`Incoming::Drained`]. A child that
//! writes nothing for `stall_after` while congested is reported [`Incoming::Stalled`]: from
//! then until it drains, its relayed messages over `max_queued` are dropped, so a child that
//! never reads cannot hold the others back for ever.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use memchr::memmem;
use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::frame::LineBuffer;
use super::json;

const READ_CHUNK: usize = 64 * 1024;
/// Plain lines are coalesced into one write up to about this many bytes.
const WRITE_BATCH: usize = 256 * 1024;
/// The `cmd` of a child's heartbeat (`lib/heartbeat.js`).
pub const HEARTBEAT_CMD: &str = "NODE_EGG_CLUSTER_RS_BEAT";
/// The `cmd` of the master's question for a child's prom-client metrics, and of the child's
/// answer (`lib/app_metrics.js`).
pub const METRICS_CMD: &str = "NODE_EGG_CLUSTER_RS_METRICS";

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

/// The user message lines of one read, in order, in one buffer: a burst of small messages
/// costs one allocation, not one per line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lines {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Lines {
    pub fn push(&mut self, line: &[u8]) {
        self.buf.extend_from_slice(line);
        self.ends.push(self.buf.len());
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter()).map(|(s, e)| &self.buf[s..*e])
    }
}

impl<'a> FromIterator<&'a [u8]> for Lines {
    fn from_iter<I: IntoIterator<Item = &'a [u8]>>(iter: I) -> Self {
        let mut lines = Lines::default();
        for l in iter {
            lines.push(l);
        }
        lines
    }
}

/// What the channel reports to its owner.
#[derive(Debug)]
pub enum Incoming {
    /// User message lines (not internal), raw, in order: all those of one read, so the owner
    /// handles a burst of small messages in one go.
    Messages(Lines),
    /// A `NODE_CLUSTER` line, raw.
    Cluster(Vec<u8>),
    /// A tick of the child's event loop (`NODE_EGG_CLUSTER_RS_BEAT`), its timer `lag_ms` late,
    /// with the raw JSON of the figures it carries (`stats`), read by the owner.
    Heartbeat { lag_ms: u64, stats: Option<Vec<u8>> },
    /// A child's answer to the metrics question `seq`: the raw JSON of its metrics (`null`
    /// when it has none), read by the owner.
    Metrics { seq: u64, metrics: Vec<u8> },
    /// A line the child should never have written; dropped, the channel goes on.
    Malformed { reason: String },
    /// The channel is gone: EOF, an I/O error, or a framing violation we cannot recover from.
    Closed { reason: Option<String> },
    /// The queue went over `high_water` and is now under `low_water`: the senders held back
    /// for this child can go on.
    Drained,
    /// The queue is over `high_water` and the child took nothing for `stall_after`: stop
    /// holding its senders back; its relayed messages over `max_queued` are now dropped.
    Stalled { queued: usize },
}

/// The master's side of a channel: queue frames; dropping every sender closes the socket once
/// the queue is flushed.
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::UnboundedSender<Frame>,
    queue: Arc<QueueState>,
}

/// Bytes of user messages queued for a child and not yet taken by its writer, and the state of
/// the backpressure around them. The runtime is single-threaded, so the flags only ever change
/// between two polls; they are atomics because the queue is shared with the channel's task.
struct QueueState {
    bytes: AtomicUsize,
    cap: usize,
    high: usize,
    low: usize,
    /// Set at the first drop, cleared once the queue has drained to half: one report per episode.
    overflowing: AtomicBool,
    /// Over `high`, not yet back under `low`: senders are being held back.
    congested: AtomicBool,
    /// Congested and not writing: relayed messages over `cap` are dropped until it drains.
    stalled: AtomicBool,
    /// The channel's own reading is paused (this child's messages wait in its process).
    paused: AtomicBool,
    /// Wakes the task when `paused` is cleared or congestion begins (it may be asleep on a
    /// socket that never becomes writable).
    wake: Notify,
}

/// What queuing a relayed message says about its receiver.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Sent {
    Queued,
    /// The receiver's queue is over its high-water mark: hold the sender back until it reports
    /// [`Incoming::Drained`] (or [`Incoming::Stalled`]).
    Congested,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The channel is closed (the frame is dropped, as Node's `sendmessage` does).
    Closed,
    /// The child is not reading fast enough; `first` is true for the first drop of an episode.
    Full { first: bool, queued: usize },
}

impl Sender {
    /// Queues a relayed message. Nothing is dropped while the child takes its messages, however
    /// slowly (its senders are to be held back on [`Sent::Congested`]); only once it is
    /// [`Incoming::Stalled`] are messages over the cap dropped.
    pub fn send(&self, frame: Frame) -> Result<Sent, SendError> {
        let q = &*self.queue;
        let len = frame.line.len();
        if q.stalled.load(Ordering::Relaxed) {
            let queued = q.bytes.load(Ordering::Relaxed);
            if queued > 0 && queued + len > q.cap {
                let first = !q.overflowing.swap(true, Ordering::Relaxed);
                return Err(SendError::Full { first, queued });
            }
            self.send_control(frame)?;
            return Ok(Sent::Queued);
        }
        let queued = q.bytes.fetch_add(len, Ordering::SeqCst) + len;
        self.tx.send(frame).map_err(|_| SendError::Closed)?;
        if queued <= q.high {
            return Ok(Sent::Queued);
        }
        if !q.congested.swap(true, Ordering::SeqCst) {
            // The task may have drained the queue between the add and the swap, seeing no
            // congestion to report: whoever clears the flag owns the episode's end.
            if q.bytes.load(Ordering::SeqCst) <= q.low && q.congested.swap(false, Ordering::SeqCst)
            {
                return Ok(Sent::Queued);
            }
            q.wake.notify_one();
        }
        Ok(Sent::Congested)
    }

    /// Queues a protocol frame (cluster replies, handles, our own lifecycle messages): never
    /// dropped, since the child would hang waiting for it.
    pub fn send_control(&self, frame: Frame) -> Result<(), SendError> {
        self.queue
            .bytes
            .fetch_add(frame.line.len(), Ordering::Relaxed);
        self.tx.send(frame).map_err(|_| SendError::Closed)
    }

    /// Stops reading this child's channel, so what it sends waits in its own process. Whatever
    /// it sends waits, to every receiver: the socket is one stream, in the child's order. A
    /// handle in flight to it is still answered: the channel reads on until its ACK.
    pub fn pause_reading(&self) {
        if !self.queue.paused.swap(true, Ordering::Relaxed) {
            // Now rather than after the next read, which may be a while for a big writer.
            self.queue.wake.notify_one();
        }
    }

    pub fn resume_reading(&self) {
        if self.queue.paused.swap(false, Ordering::Relaxed) {
            self.queue.wake.notify_one();
        }
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
        high: limits.high_water,
        low: limits.low_water.min(limits.high_water),
        overflowing: AtomicBool::new(false),
        congested: AtomicBool::new(false),
        stalled: AtomicBool::new(false),
        paused: AtomicBool::new(false),
        wake: Notify::new(),
    });
    tokio::spawn(
        Conn::new(limits.max_line, queue.clone(), limits.stall_after).run(afd, rx, on_incoming),
    );
    Ok(Sender { tx, queue })
}

/// Bounds on what one channel may make the master hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest line accepted from the child; longer ones are dropped (and reported).
    pub max_line: usize,
    /// Bytes of relayed messages queued for a stalled child before new ones are dropped.
    pub max_queued: usize,
    /// Queued bytes past which the senders to the child are held back...
    pub high_water: usize,
    /// ...until the queue is back under this.
    pub low_water: usize,
    /// How long a congested child may take nothing before it counts as stalled.
    pub stall_after: Duration,
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl on an fd we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Completes when the stall timer, if armed, fires.
async fn stalled(stall: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match stall {
        Some(s) => s.as_mut().await,
        None => std::future::pending().await,
    }
}

/// fds held for a `NODE_HANDLE` line not complete yet. Node keeps one handle in flight (it
/// waits for our ACK before the next), so one would do; a little slack costs nothing.
const MAX_PENDING_FDS: usize = 4;

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
    batch: Lines,
    stall_after: Duration,
    /// Bytes written to the child so far: the progress a congested child is judged by.
    written: u64,
    /// A read lost fds (more than fit our control buffer): reported after its bytes.
    fds_lost: bool,
    /// The queue just went back under `low_water`: to be reported.
    drained: bool,
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
    fn new(max_line: usize, queue: Arc<QueueState>, stall_after: Duration) -> Self {
        Conn {
            queue,
            stall_after,
            written: 0,
            fds_lost: false,
            drained: false,
            batch: Lines::default(),
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
        let queue = self.queue.clone();
        let mut woken = std::pin::pin!(queue.wake.notified());
        // Armed while congested and not stalled; pushed back by every write to the child.
        let mut stall: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        let reason = loop {
            self.fill(&mut rx);
            if std::mem::take(&mut self.drained) {
                stall = None;
                on_incoming(Incoming::Drained);
            }
            let want_write = self.out_pos < self.out.len();
            let can_take = queue_open && self.held.is_none() && !self.awaiting_ack;
            if !queue_open && !want_write && self.held.is_none() {
                // The master dropped us and everything is flushed: close, which the child
                // sees as a disconnect.
                break None;
            }
            // A handle in flight is answered in-band, behind whatever the child sent before
            // the ACK: read on until it comes, or a paused child could hold up its own
            // hand-over (and, through its queue, the senders waiting for it).
            let read = !queue.paused.load(Ordering::Relaxed) || self.awaiting_ack;
            if stall.is_none()
                && queue.congested.load(Ordering::Relaxed)
                && !queue.stalled.load(Ordering::Relaxed)
            {
                stall = Some(Box::pin(tokio::time::sleep(self.stall_after)));
            }
            let written = self.written;
            tokio::select! {
                biased;
                ready = afd.readable(), if read => {
                    let mut guard = match ready {
                        Ok(g) => g,
                        Err(e) => break Some(e.to_string()),
                    };
                    match guard.try_io(|inner| self.read_once(inner.get_ref().as_raw_fd(), &mut buf)) {
                        Ok(Ok((0, _))) => break None,
                        Ok(Ok((n, with_fds))) => {
                            self.on_bytes(&buf[..n], &mut on_incoming);
                            if std::mem::take(&mut self.fds_lost) {
                                on_incoming(Incoming::Malformed {
                                    reason: "fds lost: more arrived with one message than the 64 a read takes (control data truncated)".into(),
                                });
                            }
                            // A short read drained the socket (as tokio's own streams assume
                            // with epoll): skip the read that would only say EAGAIN — one
                            // syscall of every sticky hand-over's ACK. Not after fds: the
                            // kernel ends a read at the message that carried them.
                            if n < buf.len() && !with_fds {
                                guard.clear_ready();
                            }
                        }
                        // The child closed its end with our bytes unread (it exited or was
                        // killed): an EOF, as for Node, not an error. Its own bytes came first.
                        Ok(Err(e)) if e.raw_os_error() == Some(libc::ECONNRESET) => break None,
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
                () = &mut woken => woken.set(queue.wake.notified()),
                () = stalled(&mut stall) => {
                    stall = None;
                    if queue.congested.load(Ordering::Relaxed) {
                        queue.stalled.store(true, Ordering::Relaxed);
                        on_incoming(Incoming::Stalled {
                            queued: queue.bytes.load(Ordering::Relaxed),
                        });
                    }
                }
            }
            if self.written != written {
                if let Some(s) = stall.as_mut() {
                    s.as_mut().reset(Instant::now() + self.stall_after);
                }
            }
        };
        self.flush_batch(&mut on_incoming);
        on_incoming(Incoming::Closed { reason });
    }

    fn dequeued(&mut self, len: usize) {
        let q = &*self.queue;
        let after = q.bytes.fetch_sub(len, Ordering::SeqCst).saturating_sub(len);
        if after <= q.cap / 2 {
            q.overflowing.store(false, Ordering::Relaxed);
        }
        if after <= q.low
            && q.congested.load(Ordering::Relaxed)
            && q.congested.swap(false, Ordering::SeqCst)
        {
            q.stalled.store(false, Ordering::Relaxed);
            self.drained = true;
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
                    self.written += n as u64;
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    /// One `recvmsg`: the bytes read, and whether fds came with them.
    fn read_once(&mut self, fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        let mut cmsg = nix::cmsg_space!([RawFd; 64]);
        let mut iov = [IoSliceMut::new(buf)];
        loop {
            match recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
                Ok(msg) => {
                    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                        self.fds_lost = true;
                    }
                    let mut with_fds = false;
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmRights(fds) = c {
                                with_fds = true;
                                // SAFETY: the kernel just created these fds for us.
                                self.fds.extend(
                                    fds.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }),
                                );
                            }
                        }
                    }
                    return Ok((msg.bytes, with_fds));
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn on_bytes<F: FnMut(Incoming)>(&mut self, data: &[u8], on_incoming: &mut F) {
        self.lines.extend(data);
        loop {
            let line = match self.lines.next_line() {
                None => break,
                Some(Ok(l)) => l,
                Some(Err(e)) => {
                    self.flush_batch(on_incoming);
                    on_incoming(Incoming::Malformed {
                        reason: format!("a message over {} bytes was dropped", e.limit),
                    });
                    continue;
                }
            };
            // Only lines mentioning "cmd" can be internal; the rest (nearly all traffic) are
            // copied once into the batch and validated once, by the router.
            if memmem::find(line, b"\"cmd\"").is_none() {
                self.batch.push(line);
                continue;
            }
            let line = line.to_vec();
            self.on_line(line, on_incoming);
        }
        self.flush_batch(on_incoming);
        self.close_unclaimed_fds(on_incoming);
    }

    /// Closes the fds no `NODE_HANDLE` line claimed. The kernel ends a read right after the
    /// bytes that carried fds, and Node writes a handle's line with its fd in one write: once
    /// every complete line is taken, a leftover fd belongs to no line, unless the line it came
    /// with is still incomplete (a long one split over reads). Up to [`MAX_PENDING_FDS`] wait
    /// for that; a child cannot make the master hold more.
    fn close_unclaimed_fds<F: FnMut(Incoming)>(&mut self, on_incoming: &mut F) {
        let keep = if self.lines.pending() > 0 {
            MAX_PENDING_FDS
        } else {
            0
        };
        if self.fds.len() <= keep {
            return;
        }
        let closed = self.fds.len() - keep;
        self.fds.truncate(keep);
        on_incoming(Incoming::Malformed {
            reason: format!("{closed} file descriptor(s) without a NODE_HANDLE line closed"),
        });
    }

    /// Hands over the batched user messages; called before anything else is reported, so the
    /// owner sees everything in the order the child wrote it.
    fn flush_batch<F: FnMut(Incoming)>(&mut self, on_incoming: &mut F) {
        if !self.batch.is_empty() {
            on_incoming(Incoming::Messages(std::mem::take(&mut self.batch)));
        }
    }

    /// A line that may be internal (it mentions `"cmd"`).
    fn on_line<F: FnMut(Incoming)>(&mut self, line: Vec<u8>, on_incoming: &mut F) {
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
                self.batch.push(&line);
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
            HEARTBEAT_CMD => {
                let lag_ms = scanned
                    .raw("lag")
                    .and_then(|raw| std::str::from_utf8(raw).ok())
                    .and_then(|lag| lag.parse::<f64>().ok())
                    .filter(|lag| lag.is_finite() && *lag >= 0.0)
                    .map_or(0, |lag| lag as u64);
                let stats = scanned.raw("stats").map(<[u8]>::to_vec);
                self.flush_batch(on_incoming);
                on_incoming(Incoming::Heartbeat { lag_ms, stats })
            }
            METRICS_CMD => {
                let seq = scanned
                    .raw("seq")
                    .and_then(|raw| std::str::from_utf8(raw).ok())
                    .and_then(|seq| seq.parse::<u64>().ok());
                self.flush_batch(on_incoming);
                match (seq, scanned.raw("metrics")) {
                    (Some(seq), Some(metrics)) => on_incoming(Incoming::Metrics {
                        seq,
                        metrics: metrics.to_vec(),
                    }),
                    _ => on_incoming(Incoming::Malformed {
                        reason: format!("{METRICS_CMD} without a numeric seq and metrics"),
                    }),
                }
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

    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream as StdUnixStream;
    use std::time::Duration;

    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use tokio::io::{AsyncWriteExt, Interest};
    use tokio::net::UnixStream;

    /// Generous: the machine may be loaded; every wait is for a condition, this only bounds it.
    const DEADLINE: Duration = Duration::from_secs(10);

    const LIMITS: Limits = Limits {
        max_line: 1024 * 1024,
        max_queued: 1024 * 1024,
        high_water: 512 * 1024,
        low_water: 128 * 1024,
        stall_after: Duration::from_secs(60),
    };

    /// Small queues, for the backpressure tests.
    const SMALL: Limits = Limits {
        max_line: 1024 * 1024,
        max_queued: 64 * 1024,
        high_water: 32 * 1024,
        low_water: 8 * 1024,
        stall_after: Duration::from_secs(60),
    };

    /// What the owner saw, with batches flattened so tests do not depend on read boundaries.
    #[derive(Debug, PartialEq, Eq)]
    enum Ev {
        Msg(String),
        Cluster(String),
        Beat(u64),
        /// The `stats` a heartbeat carried, right after its `Beat`.
        Stats(String),
        Metrics(u64, String),
        Malformed(String),
        Closed(Option<String>),
        Drained,
        Stalled,
    }

    fn flatten(incoming: Incoming) -> Vec<Ev> {
        let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8 in tests");
        match incoming {
            Incoming::Messages(lines) => {
                assert!(!lines.is_empty(), "an empty batch was reported");
                lines.iter().map(|l| Ev::Msg(text(l.to_vec()))).collect()
            }
            Incoming::Cluster(line) => vec![Ev::Cluster(text(line))],
            Incoming::Heartbeat { lag_ms, stats } => std::iter::once(Ev::Beat(lag_ms))
                .chain(stats.map(|s| Ev::Stats(text(s))))
                .collect(),
            Incoming::Metrics { seq, metrics } => vec![Ev::Metrics(seq, text(metrics))],
            Incoming::Malformed { reason } => vec![Ev::Malformed(reason)],
            Incoming::Closed { reason } => vec![Ev::Closed(reason)],
            Incoming::Drained => vec![Ev::Drained],
            Incoming::Stalled { .. } => vec![Ev::Stalled],
        }
    }

    /// A channel over a real socketpair: the master's end driven by `start`, the other end held
    /// by the test as a Node child would hold it.
    struct Harness {
        sender: Sender,
        events: Events,
        peer: Peer,
        syncs: usize,
    }

    impl Harness {
        fn open(limits: Limits) -> Harness {
            let (ours, theirs) = socketpair(
                AddressFamily::Unix,
                SockType::Stream,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .expect("socketpair");
            let (tx, events) = mpsc::unbounded_channel();
            let sender = start(ours, limits, move |incoming| {
                let _ = tx.send(incoming);
            })
            .expect("start");
            Harness {
                sender,
                events: Events(events),
                peer: Peer::new(theirs),
                syncs: 0,
            }
        }

        /// Round trip through the channel task: the peer writes a marker line and this waits
        /// for the owner to get it. Returns what the owner got before. Afterwards the task has
        /// done everything it could (the runtime has one thread, and the task only yields when
        /// nothing is ready), so the absence of output is meaningful.
        async fn sync(&mut self) -> Vec<Ev> {
            self.syncs += 1;
            let marker = format!("{{\"sync\":{}}}", self.syncs);
            self.peer.write(format!("{marker}\n").as_bytes()).await;
            let mut before = Vec::new();
            loop {
                for ev in self.events.next().await {
                    if ev == Ev::Msg(marker.clone()) {
                        return before;
                    }
                    before.push(ev);
                }
            }
        }
    }

    /// What the channel reports to its owner.
    struct Events(mpsc::UnboundedReceiver<Incoming>);

    impl Events {
        /// The next events the owner gets, flattened (at least one).
        async fn next(&mut self) -> Vec<Ev> {
            let incoming = tokio::time::timeout(DEADLINE, self.0.recv())
                .await
                .expect("timed out waiting for the channel")
                .expect("the channel's callback was dropped");
            flatten(incoming)
        }

        /// Flattened events until `n` of them have been seen.
        async fn take(&mut self, n: usize) -> Vec<Ev> {
            let mut out = Vec::new();
            while out.len() < n {
                out.extend(self.next().await);
            }
            assert_eq!(out.len(), n, "more events than expected: {out:?}");
            out
        }
    }

    /// The child's end: writes, `recvmsg` with SCM_RIGHTS, line splitting.
    struct Peer {
        sock: UnixStream,
        buf: Vec<u8>,
        fds: VecDeque<OwnedFd>,
    }

    impl Peer {
        fn new(fd: OwnedFd) -> Peer {
            let std = StdUnixStream::from(fd);
            std.set_nonblocking(true).expect("nonblocking");
            Peer {
                sock: UnixStream::from_std(std).expect("register"),
                buf: Vec::new(),
                fds: VecDeque::new(),
            }
        }

        async fn write(&mut self, bytes: &[u8]) {
            self.sock.write_all(bytes).await.expect("peer write");
        }

        /// Writes `line` in one `sendmsg` carrying `fd`, as Node does for a handle.
        async fn write_with_fd(&self, line: &[u8], fd: &OwnedFd) {
            let raw = self.sock.as_raw_fd();
            let fds = [fd.as_raw_fd()];
            let n = self
                .sock
                .async_io(Interest::WRITABLE, || {
                    sendmsg::<()>(
                        raw,
                        &[IoSlice::new(line)],
                        &[ControlMessage::ScmRights(&fds)],
                        MsgFlags::MSG_NOSIGNAL,
                        None,
                    )
                    .map_err(io::Error::from)
                })
                .await
                .expect("peer sendmsg");
            assert_eq!(n, line.len(), "short sendmsg in a test");
        }

        fn recv_io(&self) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
            let mut data = vec![0u8; READ_CHUNK];
            let mut cmsg = nix::cmsg_space!([RawFd; 8]);
            let mut iov = [IoSliceMut::new(&mut data)];
            let msg = recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )?;
            assert!(!msg.flags.contains(MsgFlags::MSG_CTRUNC));
            let mut fds = Vec::new();
            for c in msg.cmsgs()? {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    // SAFETY: the kernel just created these fds for us.
                    fds.extend(raw.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                }
            }
            let n = msg.bytes;
            data.truncate(n);
            Ok((data, fds))
        }

        /// One `recvmsg`; false on EOF.
        async fn recv(&mut self) -> bool {
            let (data, fds) = tokio::time::timeout(
                DEADLINE,
                self.sock.async_io(Interest::READABLE, || self.recv_io()),
            )
            .await
            .expect("timed out waiting for the master's bytes")
            .expect("peer recvmsg");
            self.fds.extend(fds);
            self.buf.extend_from_slice(&data);
            !data.is_empty()
        }

        /// The next complete line, without its `\n`.
        async fn line(&mut self) -> Vec<u8> {
            loop {
                if let Some(i) = memchr::memchr(b'\n', &self.buf) {
                    let line = self.buf[..i].to_vec();
                    self.buf.drain(..=i);
                    return line;
                }
                assert!(self.recv().await, "EOF before a complete line");
            }
        }

        /// Exactly `n` bytes.
        async fn bytes(&mut self, n: usize) -> Vec<u8> {
            while self.buf.len() < n {
                assert!(self.recv().await, "EOF after {} bytes", self.buf.len());
            }
            self.buf.drain(..n).collect()
        }

        /// Nothing buffered and nothing to read right now.
        fn idle(&mut self) -> bool {
            if !self.buf.is_empty() || !self.fds.is_empty() {
                return false;
            }
            match self.sock.try_io(Interest::READABLE, || self.recv_io()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
                Ok((data, fds)) => {
                    self.buf.extend_from_slice(&data);
                    self.fds.extend(fds);
                    false
                }
                Err(e) => panic!("peer recvmsg: {e}"),
            }
        }

        /// Waits for EOF after everything buffered has been taken.
        async fn eof(&mut self) {
            while self.recv().await {}
            assert!(
                self.buf.is_empty(),
                "{:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    fn msg(s: &str) -> Ev {
        Ev::Msg(s.to_string())
    }

    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).expect("utf-8 in tests")
    }

    /// A pipe, both ends CLOEXEC, the read end non-blocking.
    fn pipe() -> (File, OwnedFd) {
        let (r, w) = std::io::pipe().expect("pipe");
        let r = OwnedFd::from(r);
        set_nonblocking(r.as_raw_fd()).expect("nonblocking");
        (File::from(r), OwnedFd::from(w))
    }

    /// Non-blocking read of a pipe: `Some(0)` at EOF, `None` when it would block.
    fn try_read(r: &mut File, buf: &mut [u8]) -> Option<usize> {
        match r.read(buf) {
            Ok(n) => Some(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => panic!("pipe read: {e}"),
        }
    }

    /// Waits until every write end of `r` is closed.
    async fn pipe_eof(r: &mut File) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut buf = [0u8; 64];
        loop {
            match try_read(r, &mut buf) {
                Some(0) => return,
                Some(n) => panic!("unexpected bytes in the pipe: {:?}", &buf[..n]),
                None => {}
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a copy of the pipe's write end is still open"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_user_message_arrives_as_messages() {
        let mut h = Harness::open(LIMITS);
        h.peer.write(b"{\"hello\":\"world\"}\n").await;
        match h.events.0.recv().await {
            Some(Incoming::Messages(lines)) => {
                assert_eq!(
                    lines.iter().collect::<Vec<_>>(),
                    [&b"{\"hello\":\"world\"}"[..]]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn lines_arrive_in_order_whatever_the_write_boundaries() {
        let mut h = Harness::open(LIMITS);
        // Several lines in one write, then one line over several writes (split inside a
        // multi-byte character too), then a string message and a CRLF line.
        h.peer.write(b"{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n").await;
        let split = "{\"n\":4,\"s\":\"\u{e9}\"}\n".as_bytes();
        for chunk in [&split[..3], &split[3..13], &split[13..]] {
            h.peer.write(chunk).await;
            tokio::task::yield_now().await;
        }
        h.peer.write(b"\"five\"\n{\"n\":6}\r\n").await;
        assert_eq!(
            h.events.take(6).await,
            vec![
                msg("{\"n\":1}"),
                msg("{\"n\":2}"),
                msg("{\"n\":3}"),
                msg("{\"n\":4,\"s\":\"\u{e9}\"}"),
                msg("\"five\""),
                msg("{\"n\":6}\r"),
            ]
        );
        assert!(h.events.0.try_recv().is_err());
    }

    #[tokio::test]
    async fn node_cluster_lines_arrive_as_cluster_in_order_with_user_messages() {
        let mut h = Harness::open(LIMITS);
        let online = r#"{"cmd":"NODE_CLUSTER","act":"online","seq":0}"#;
        h.peer
            .write(
                format!("{{\"a\":1}}\n{online}\n{{\"cmd\":\"NODE_\"}}\n{{\"cmd\":\"node_x\"}}\n")
                    .as_bytes(),
            )
            .await;
        assert_eq!(
            h.events.take(4).await,
            vec![
                msg("{\"a\":1}"),
                Ev::Cluster(online.into()),
                // Not internal by Node's rule: user messages.
                msg("{\"cmd\":\"NODE_\"}"),
                msg("{\"cmd\":\"node_x\"}"),
            ]
        );
    }

    #[tokio::test]
    async fn heartbeats_arrive_with_their_lag() {
        let mut h = Harness::open(LIMITS);
        h.peer
            .write(
                concat!(
                    "{\"cmd\":\"NODE_EGG_CLUSTER_RS_BEAT\",\"lag\":312}\n",
                    "{\"a\":1}\n",
                    "{\"cmd\":\"NODE_EGG_CLUSTER_RS_BEAT\",\"lag\":\"x\"}\n",
                )
                .as_bytes(),
            )
            .await;
        assert_eq!(
            h.events.take(3).await,
            vec![Ev::Beat(312), msg("{\"a\":1}"), Ev::Beat(0)]
        );
    }

    #[tokio::test]
    async fn heartbeat_stats_and_metrics_answers_arrive_raw() {
        let mut h = Harness::open(LIMITS);
        h.peer
            .write(
                concat!(
                    "{\"cmd\":\"NODE_EGG_CLUSTER_RS_BEAT\",\"lag\":3,\"stats\":{\"elu\":0.5}}\n",
                    "{\"cmd\":\"NODE_EGG_CLUSTER_RS_METRICS\",\"seq\":7,\"metrics\":[{\"name\":\"x\"}]}\n",
                    "{\"cmd\":\"NODE_EGG_CLUSTER_RS_METRICS\",\"seq\":8,\"metrics\":null}\n",
                    "{\"cmd\":\"NODE_EGG_CLUSTER_RS_METRICS\",\"seq\":\"9\",\"metrics\":null}\n",
                )
                .as_bytes(),
            )
            .await;
        assert_eq!(
            h.events.take(5).await,
            vec![
                Ev::Beat(3),
                Ev::Stats("{\"elu\":0.5}".into()),
                Ev::Metrics(7, "[{\"name\":\"x\"}]".into()),
                Ev::Metrics(8, "null".into()),
                Ev::Malformed(
                    "NODE_EGG_CLUSTER_RS_METRICS without a numeric seq and metrics".into()
                ),
            ]
        );
    }

    #[tokio::test]
    async fn malformed_lines_are_reported_and_the_channel_goes_on() {
        let mut h = Harness::open(LIMITS);
        h.peer
            .write(
                concat!(
                    "{\"cmd\":\"NODE_CLUSTER\",\n",   // truncated JSON
                    "{\"cmd\":\"NODE_CLUSTER\" x}\n", // not JSON
                    "{\"cmd\":\"NODE_NOPE\"}\n",      // internal, unknown
                    "{\"ok\":1}\n",
                )
                .as_bytes(),
            )
            .await;
        let evs = h.events.take(4).await;
        assert!(
            matches!(&evs[..3], [Ev::Malformed(_), Ev::Malformed(_), Ev::Malformed(r)] if r.contains("NODE_NOPE")),
            "{evs:?}"
        );
        assert_eq!(evs[3], msg("{\"ok\":1}"));

        // Lines that cannot be internal (no "cmd" member, or not an object) are not validated
        // here: they go to the owner, whose router validates every user message once and
        // rejects what is not an object or a string.
        h.peer
            .write(b"not json\n[{\"cmd\":\"NODE_CLUSTER\"}]\n42\n{\"ok\":2}\n")
            .await;
        assert_eq!(
            h.events.take(4).await,
            vec![
                msg("not json"),
                msg("[{\"cmd\":\"NODE_CLUSTER\"}]"),
                msg("42"),
                msg("{\"ok\":2}"),
            ]
        );
    }

    #[tokio::test]
    async fn an_over_long_line_is_skipped_without_being_buffered() {
        let mut h = Harness::open(Limits {
            max_line: 1024,
            ..LIMITS
        });
        h.peer.write(b"{\"before\":1}\n").await;
        assert_eq!(h.events.take(1).await, vec![msg("{\"before\":1}")]);
        // The line is reported as soon as it is over the limit, long before its end: the
        // channel does not wait for (and buffer) the rest.
        let chunk = vec![b'x'; 64 * 1024];
        h.peer.write(b"{\"big\":\"").await;
        h.peer.write(&chunk).await;
        match &h.events.next().await[..] {
            [Ev::Malformed(reason)] => assert!(reason.contains("1024"), "{reason}"),
            other => panic!("{other:?}"),
        }
        for _ in 0..16 {
            h.peer.write(&chunk).await;
        }
        h.peer.write(b"\"}\n{\"after\":1}\n").await;
        // Reported once; the next line arrives intact.
        assert_eq!(h.events.take(1).await, vec![msg("{\"after\":1}")]);
        assert!(h.sync().await.is_empty());
    }

    #[tokio::test]
    async fn peer_close_is_reported_once_and_sending_then_fails() {
        let mut h = Harness::open(LIMITS);
        // An unterminated line is dropped at EOF, as Node does.
        h.peer.write(b"{\"last\":1}\n{\"partial\":").await;
        drop(h.peer);
        assert_eq!(
            h.events.take(2).await,
            vec![msg("{\"last\":1}"), Ev::Closed(None)]
        );
        assert!(
            h.events.0.recv().await.is_none(),
            "the callback outlived the task"
        );
        assert_eq!(
            h.sender.send(Frame::new(b"{}".to_vec())),
            Err(SendError::Closed)
        );
        assert_eq!(
            h.sender.send_control(Frame::new(b"{}".to_vec())),
            Err(SendError::Closed)
        );
    }

    #[tokio::test]
    async fn a_peer_that_closes_with_unread_data_is_a_plain_disconnect() {
        // A child that exits (or is killed) before reading what we sent: the kernel makes our
        // next read fail with ECONNRESET instead of returning EOF. Node's channel treats any
        // read error as a disconnect, silently; so do we, and what it wrote still arrives.
        let mut h = Harness::open(LIMITS);
        h.sender
            .send(Frame::new(b"{\"unread\":1}".to_vec()))
            .unwrap();
        assert_eq!(text(&h.peer.line().await), "{\"unread\":1}");
        h.sender
            .send(Frame::new(b"{\"unread\":2}".to_vec()))
            .unwrap();
        // Wait until the second line is in the peer's socket, unread.
        assert!(h.sync().await.is_empty());
        h.peer.write(b"{\"last\":1}\n").await;
        drop(h.peer);
        assert_eq!(
            h.events.take(2).await,
            vec![msg("{\"last\":1}"), Ev::Closed(None)]
        );
    }

    #[tokio::test]
    async fn send_writes_the_exact_bytes_in_order() {
        let mut h = Harness::open(LIMITS);
        let a = "{\"a\":\"\u{e9}\u{2028}\",\"b\":[1,2.5,null]}";
        h.sender.send(Frame::new(a.as_bytes().to_vec())).unwrap();
        let shared: Arc<[u8]> = Arc::from(&b"\"broadcast\"\n"[..]);
        h.sender
            .send(Frame {
                line: Bytes::Shared(shared.clone()),
                fd: None,
            })
            .unwrap();
        h.sender.send_control(Frame::new(b"{}".to_vec())).unwrap();
        let expected = format!("{a}\n\"broadcast\"\n{{}}\n");
        assert_eq!(text(&h.peer.bytes(expected.len()).await), expected);
        assert!(h.sync().await.is_empty());
        assert!(h.peer.idle());
    }

    #[tokio::test]
    async fn dropping_every_sender_flushes_the_queue_then_closes() {
        let mut h = Harness::open(LIMITS);
        let second = h.sender.clone();
        h.sender.send(Frame::new(b"{\"n\":1}".to_vec())).unwrap();
        second.send(Frame::new(b"{\"n\":2}".to_vec())).unwrap();
        drop(h.sender);
        assert_eq!(text(&h.peer.line().await), "{\"n\":1}");
        drop(second);
        assert_eq!(text(&h.peer.line().await), "{\"n\":2}");
        h.peer.eof().await;
        assert_eq!(h.events.take(1).await, vec![Ev::Closed(None)]);
    }

    #[tokio::test]
    async fn a_handle_goes_with_its_line_and_the_next_waits_for_the_ack() {
        let mut h = Harness::open(LIMITS);
        let (mut r1, w1) = pipe();
        let (mut r2, w2) = pipe();
        let newconn =
            |seq: u32| format!(r#"{{"cmd":"NODE_CLUSTER","act":"newconn","key":"k","seq":{seq}}}"#);
        let envelope = |seq: u32| {
            format!(
                r#"{{"cmd":"NODE_HANDLE","type":"net.Native","msg":{}}}"#,
                newconn(seq)
            )
        };
        // A plain line first, so the handle has to wait for an empty write buffer.
        h.sender
            .send(Frame::new(b"{\"first\":1}".to_vec()))
            .unwrap();
        h.sender
            .send_control(Frame::handle("net.Native", newconn(1).as_bytes(), w1))
            .unwrap();
        h.sender
            .send_control(Frame::handle("net.Native", newconn(2).as_bytes(), w2))
            .unwrap();
        h.sender
            .send(Frame::new(b"{\"after\":1}".to_vec()))
            .unwrap();

        assert_eq!(text(&h.peer.line().await), "{\"first\":1}");
        assert_eq!(text(&h.peer.line().await), envelope(1));
        // Exactly one fd, and it is the pipe: write through it.
        assert_eq!(h.peer.fds.len(), 1);
        let fd1 = File::from(h.peer.fds.pop_front().unwrap());
        (&fd1).write_all(b"through").unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(try_read(&mut r1, &mut buf), Some(7));
        assert_eq!(&buf[..7], b"through");

        // Until the ACK, neither the second handle nor the line queued after it goes out, and
        // the master keeps its copy of the first fd.
        assert!(h.sync().await.is_empty());
        assert!(h.peer.idle());
        drop(fd1);
        assert_eq!(try_read(&mut r1, &mut buf), None);

        h.peer.write(b"{\"cmd\":\"NODE_HANDLE_ACK\"}\n").await;
        assert_eq!(text(&h.peer.line().await), envelope(2));
        assert_eq!(h.peer.fds.len(), 1);
        // The ACK released the master's copy of the first fd.
        pipe_eof(&mut r1).await;
        let fd2 = File::from(h.peer.fds.pop_front().unwrap());
        (&fd2).write_all(b"2").unwrap();
        assert_eq!(try_read(&mut r2, &mut buf), Some(1));
        drop(fd2);
        assert!(h.sync().await.is_empty());
        assert!(h.peer.idle());

        // A NACK releases the queue too.
        h.peer.write(b"{\"cmd\":\"NODE_HANDLE_NACK\"}\n").await;
        assert_eq!(text(&h.peer.line().await), "{\"after\":1}");
        pipe_eof(&mut r2).await;
        assert!(h.sync().await.is_empty());
        assert!(h.peer.idle());
    }

    #[tokio::test]
    async fn handles_from_the_child_are_acked_closed_and_unwrapped() {
        let mut h = Harness::open(LIMITS);
        let (mut r, w) = pipe();
        h.peer
            .write_with_fd(
                br#"{"cmd":"NODE_HANDLE","type":"net.Native","msg":{"hello":1}}
"#,
                &w,
            )
            .await;
        drop(w);
        // The message inside goes on like any other; the fd is closed, the sender gets an ACK.
        assert_eq!(h.events.take(1).await, vec![msg("{\"hello\":1}")]);
        assert_eq!(text(&h.peer.line().await), "{\"cmd\":\"NODE_HANDLE_ACK\"}");
        pipe_eof(&mut r).await;

        // Without an fd: NACK, reported, and the (internal) message inside still arrives.
        let inner = r#"{"cmd":"NODE_CLUSTER","act":"listening","seq":1}"#;
        h.peer
            .write(
                format!("{{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":{inner}}}\n")
                    .as_bytes(),
            )
            .await;
        let evs = h.events.take(2).await;
        assert!(
            matches!(&evs[0], Ev::Malformed(r) if r.contains("NACK")),
            "{evs:?}"
        );
        assert_eq!(evs[1], Ev::Cluster(inner.into()));
        assert_eq!(text(&h.peer.line().await), "{\"cmd\":\"NODE_HANDLE_NACK\"}");
    }

    #[tokio::test]
    async fn a_line_right_behind_a_handle_is_read_without_more_data() {
        let mut h = Harness::open(LIMITS);
        let (_r, w) = pipe();
        // Both are in the socket before the channel task reads (nothing here yields): the
        // kernel ends the first read at the message that carried the fd, a short read that
        // did not drain the socket.
        send_with_fds(
            &h,
            b"{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":{\"a\":1}}\n",
            &[w.as_raw_fd()],
        );
        send_with_fds(&h, b"{\"b\":2}\n", &[]);
        assert_eq!(
            h.events.take(2).await,
            vec![msg("{\"a\":1}"), msg("{\"b\":2}")]
        );
    }

    /// Sends `line` with `fds` in one `sendmsg` from the harness's peer end.
    fn send_with_fds(h: &Harness, line: &[u8], fds: &[RawFd]) {
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        sendmsg::<()>(
            h.peer.sock.as_raw_fd(),
            &[IoSlice::new(line)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .expect("peer sendmsg");
    }

    #[tokio::test]
    async fn fds_no_handle_line_claims_are_closed_at_once() {
        let mut h = Harness::open(LIMITS);
        let (mut r, w) = pipe();
        let many = [w.as_raw_fd(); 64];
        send_with_fds(&h, b"{\"a\":1}\n", &many);
        drop(w);
        let evs = h.events.take(2).await;
        assert_eq!(evs[0], msg("{\"a\":1}"));
        assert!(
            matches!(&evs[1], Ev::Malformed(r) if r.starts_with("64 file descriptor(s)")),
            "{evs:?}"
        );
        // every copy of the write end is gone while the channel is open
        pipe_eof(&mut r).await;
    }

    #[tokio::test]
    async fn a_handle_line_split_over_reads_keeps_its_fd() {
        let mut h = Harness::open(LIMITS);
        let (mut r, w) = pipe();
        let line = b"{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":{\"a\":1}}\n";
        // The kernel ends the first read after the bytes that carried the fds: a partial line
        // holds at most MAX_PENDING_FDS of them.
        send_with_fds(&h, &line[..10], &[w.as_raw_fd(); 5]);
        drop(w);
        send_with_fds(&h, &line[10..], &[]);
        let evs = h.events.take(3).await;
        assert!(
            matches!(&evs[0], Ev::Malformed(r) if r.starts_with("1 file descriptor(s)")),
            "{evs:?}"
        );
        assert_eq!(evs[1], msg("{\"a\":1}"));
        assert!(
            matches!(&evs[2], Ev::Malformed(r) if r.starts_with("3 file descriptor(s)")),
            "{evs:?}"
        );
        assert_eq!(text(&h.peer.line().await), "{\"cmd\":\"NODE_HANDLE_ACK\"}");
        pipe_eof(&mut r).await;
    }

    #[tokio::test]
    async fn fds_beyond_a_reads_control_buffer_are_reported_lost() {
        let mut h = Harness::open(LIMITS);
        let pipes: Vec<_> = (0..80).map(|_| pipe()).collect();
        let fds: Vec<RawFd> = pipes.iter().map(|(_, w)| w.as_raw_fd()).collect();
        send_with_fds(&h, b"{\"a\":1}\n", &fds);
        let evs = h.events.take(2).await;
        assert_eq!(evs[0], msg("{\"a\":1}"));
        assert!(
            matches!(&evs[1], Ev::Malformed(r) if r.contains("fds lost")),
            "{evs:?}"
        );
        assert!(h.sync().await.is_empty());
    }

    /// A numbered 4 KB message.
    fn numbered(n: usize) -> String {
        format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(4000))
    }

    /// Sends numbered messages from `from` on, letting the channel task run after each, until
    /// `stop` holds for what `send` returned; returns the lines it queued and that result.
    async fn send_until(
        h: &Harness,
        from: usize,
        stop: impl Fn(&Result<Sent, SendError>) -> bool,
    ) -> (Vec<String>, Result<Sent, SendError>) {
        let mut queued = Vec::new();
        loop {
            assert!(queued.len() < 10_000, "send never got there");
            let line = numbered(from + queued.len());
            let res = h.sender.send(Frame::new(line.clone().into_bytes()));
            if res.is_ok() {
                queued.push(line);
            }
            // Let the channel task move the frame towards the socket.
            tokio::task::yield_now().await;
            if stop(&res) {
                return (queued, res);
            }
            res.expect("send");
        }
    }

    #[tokio::test]
    async fn a_slow_child_congests_its_queue_and_nothing_is_dropped_until_it_drains() {
        let mut h = Harness::open(SMALL);
        let mut sent = 0;
        for episode in 0..2 {
            // The peer reads nothing: the socket fills, then the writer's buffer, then the queue.
            let (mut queued, _) = send_until(&h, sent, |r| *r == Ok(Sent::Congested)).await;
            let bytes: usize = queued.iter().map(|l| l.len() + 1).sum();
            assert!(bytes > WRITE_BATCH + SMALL.high_water, "{bytes}");
            // Past the cap too: the child is slow, not stalled, so its senders are to be held
            // back and nothing is dropped.
            for _ in 0..2 * SMALL.max_queued / 4000 {
                let line = numbered(sent + queued.len());
                let res = h.sender.send(Frame::new(line.clone().into_bytes()));
                assert_eq!(res, Ok(Sent::Congested), "episode {episode}");
                queued.push(line);
                tokio::task::yield_now().await;
            }
            assert!(h.sync().await.is_empty(), "episode {episode}");
            // The peer reads again: everything arrives in order, and the queue reports that
            // it went back under the low-water mark.
            for line in &queued {
                assert_eq!(text(&h.peer.line().await), line);
            }
            assert_eq!(h.events.take(1).await, vec![Ev::Drained]);
            sent += queued.len();
            assert_eq!(
                h.sender.send(Frame::new(b"{\"again\":1}".to_vec())),
                Ok(Sent::Queued)
            );
            assert_eq!(text(&h.peer.line().await), "{\"again\":1}");
            assert!(h.sync().await.is_empty());
            assert!(h.peer.idle());
        }
    }

    #[tokio::test]
    async fn a_paused_channel_reads_nothing_until_resumed_then_everything_in_order() {
        let mut h = Harness::open(LIMITS);
        h.sender.pause_reading();
        tokio::task::yield_now().await;
        let stream: Vec<u8> = (0..100_000)
            .flat_map(|n| format!("{{\"p\":{n}}}\n").into_bytes())
            .collect();
        // The child writes until its socket is full.
        let mut written = 0;
        loop {
            match h.peer.sock.try_write(&stream[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            assert!(written < stream.len(), "the paused channel read everything");
        }
        // Nothing is read: the socket stays full and the owner gets nothing. (An absence can
        // only be checked for a while; a channel that reads would have within milliseconds.)
        let idle = tokio::time::timeout(Duration::from_millis(300), async {
            tokio::join!(h.peer.sock.writable(), h.events.0.recv())
        });
        assert!(idle.await.is_err(), "the paused channel was read");
        h.sender.resume_reading();
        h.peer.write(&stream[written..]).await;
        let expected: Vec<Ev> = (0..100_000)
            .map(|n| msg(&format!("{{\"p\":{n}}}")))
            .collect();
        assert!(h.events.take(100_000).await == expected);
    }

    #[tokio::test]
    async fn a_paused_channel_still_reads_the_ack_of_a_handle_in_flight() {
        let mut h = Harness::open(LIMITS);
        let (_r, w) = pipe();
        h.sender.pause_reading();
        let newconn = br#"{"cmd":"NODE_CLUSTER","act":"newconn","key":"k","seq":1}"#;
        h.sender
            .send_control(Frame::handle("net.Native", newconn, w))
            .unwrap();
        h.sender
            .send(Frame::new(b"{\"after\":1}".to_vec()))
            .unwrap();
        assert!(text(&h.peer.line().await).starts_with("{\"cmd\":\"NODE_HANDLE\""));
        assert_eq!(h.peer.fds.len(), 1);
        h.peer
            .write(b"{\"before_ack\":1}\n{\"cmd\":\"NODE_HANDLE_ACK\"}\n")
            .await;
        // The ACK was read although the channel is paused: the queue goes on.
        assert_eq!(text(&h.peer.line().await), "{\"after\":1}");
        // What the child sends next waits for the resume.
        h.peer.write(b"{\"later\":1}\n").await;
        h.sender.resume_reading();
        assert_eq!(
            h.events.take(2).await,
            vec![msg("{\"before_ack\":1}"), msg("{\"later\":1}")]
        );
    }

    #[tokio::test]
    async fn a_congested_child_that_takes_nothing_stalls_then_drops_but_not_send_control() {
        let limits = Limits {
            stall_after: Duration::from_millis(200),
            ..SMALL
        };
        let mut h = Harness::open(limits);
        let mut sent = 0;
        for episode in 0..2 {
            let (mut accepted, _) = send_until(&h, sent, |r| *r == Ok(Sent::Congested)).await;
            // The peer takes nothing for `stall_after`.
            assert_eq!(h.events.take(1).await, vec![Ev::Stalled], "{episode}");
            // From then on relayed messages over the cap are dropped, the first reported as
            // such; the senders are no longer held back.
            let (more, res) = send_until(&h, sent + accepted.len(), |r| r.is_err()).await;
            match res {
                Err(SendError::Full { first, queued }) => {
                    assert!(
                        first,
                        "episode {episode}: the first drop is reported as such"
                    );
                    assert!(queued > 0 && queued <= limits.max_queued, "{queued}");
                }
                other => panic!("{other:?}"),
            }
            accepted.extend(more);
            sent += accepted.len() + 1;
            // The same episode: reported once.
            for _ in 0..3 {
                assert!(matches!(
                    h.sender.send(Frame::new(accepted[0].clone().into_bytes())),
                    Err(SendError::Full { first: false, .. })
                ));
            }
            // Protocol frames are never dropped.
            h.sender
                .send_control(Frame::new(b"{\"control\":1}".to_vec()))
                .unwrap();

            // The peer reads again: everything accepted arrives, in order, then the control
            // frame, and nothing that was dropped; the queue drains.
            for line in &accepted {
                assert_eq!(text(&h.peer.line().await), line);
            }
            assert_eq!(text(&h.peer.line().await), "{\"control\":1}");
            assert_eq!(h.events.take(1).await, vec![Ev::Drained]);
            // Drained: back to holding senders back rather than dropping.
            assert_eq!(
                h.sender.send(Frame::new(b"{\"again\":1}".to_vec())),
                Ok(Sent::Queued)
            );
            assert_eq!(text(&h.peer.line().await), "{\"again\":1}");
            assert!(h.sync().await.is_empty());
            assert!(h.peer.idle());
        }
    }

    #[tokio::test]
    async fn a_child_that_reads_slowly_but_steadily_never_stalls() {
        let limits = Limits {
            max_line: LIMITS.max_line,
            max_queued: 8 * 1024 * 1024,
            high_water: 2 * 1024 * 1024,
            low_water: 256 * 1024,
            stall_after: Duration::from_secs(1),
        };
        let mut h = Harness::open(limits);
        let (mut queued, _) = send_until(&h, 0, |r| *r == Ok(Sent::Congested)).await;
        for _ in 0..512 {
            let line = numbered(queued.len());
            h.sender
                .send(Frame::new(line.clone().into_bytes()))
                .unwrap();
            queued.push(line);
        }
        // About 1.6 MB/s: it takes seconds, several times `stall_after`, to drain, with pauses
        // far shorter than it (the kernel makes a unix socket writable again only once most of
        // its buffer is read, about 160 KB here).
        let started = std::time::Instant::now();
        for (i, line) in queued.iter().enumerate() {
            assert_eq!(text(&h.peer.line().await), line);
            if i % 4 == 3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert!(
            started.elapsed() > 2 * limits.stall_after,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(h.events.take(1).await, vec![Ev::Drained]);
    }

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
            r.report(Incoming::Messages([&b"{}"[..]].into_iter().collect()));
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
