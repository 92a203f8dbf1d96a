//! One connection's shared state: its bounded outbound queue and close lane, the writer task
//! that owns the socket's sink, and keep-alive.
//!
//! Everything sent to a client (by its handler, a group, or the framework) goes through the
//! queue, which is bounded by bytes. The writer takes everything queued at once, feeds it to the
//! socket and flushes once. A close request goes through a separate lane: it is accepted even
//! when the queue is full, and the connection is killed if the close cannot complete in time.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::task::AtomicWaker;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message as WireMessage, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use super::close_code;
use crate::channel::ChannelState;

pub(crate) type WsStream = WebSocketStream<TokioIo<Upgraded>>;
pub(crate) type WsSink = SplitSink<WsStream, WireMessage>;
pub(crate) type WsSource = SplitStream<WsStream>;

/// The id of a connection, which is also the id of its channel: a random UUID, unique across
/// servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnectionId(uuid::Uuid);

impl ConnectionId {
    pub(crate) fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for ConnectionId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

/// An outgoing frame, encoded once and shared by reference count between every queue it is
/// offered to.
#[derive(Debug, Clone)]
pub(crate) enum Frame {
    Text(Utf8Bytes),
    Binary(Bytes),
}

/// What a queued frame counts against the queue's bound, beyond its payload.
const FRAME_OVERHEAD: usize = 64;

impl Frame {
    fn cost(&self) -> usize {
        FRAME_OVERHEAD
            + match self {
                Frame::Text(t) => t.len(),
                Frame::Binary(b) => b.len(),
            }
    }

    fn into_wire(self) -> WireMessage {
        match self {
            Frame::Text(t) => WireMessage::Text(t),
            Frame::Binary(b) => WireMessage::Binary(b),
        }
    }
}

/// What happened to a frame offered to a queue that never waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    Queued,
    /// The queue is at its bound.
    Full,
    /// The connection is closing or closed.
    Closed,
}

/// How a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    /// Send what is queued, then the close frame, and wait for the client's answer.
    Graceful,
    /// The client is gone or too slow: drop what is queued, send the close frame, and end
    /// without waiting for an answer.
    Abort,
}

#[derive(Debug)]
struct CloseRequest {
    code: u16,
    reason: String,
    how: Closing,
}

#[derive(Debug, Default)]
struct Out {
    queue: VecDeque<Frame>,
    bytes: usize,
    close: Option<CloseRequest>,
    /// A close was requested: no more frames are accepted.
    closing: bool,
    /// The close the server sent (the first request wins).
    closed_with: Option<(u16, String)>,
}

/// Keep-alive and limit settings of a connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig {
    pub(crate) max_queue_bytes: usize,
    /// `None`: no server pings.
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) pong_timeout: Duration,
    pub(crate) close_timeout: Duration,
}

/// The state a connection shares between its handler, its writer, its channel and the app.
pub(crate) struct Conn {
    pub(crate) id: ConnectionId,
    pub(crate) config: Arc<ConnConfig>,
    out: Mutex<Out>,
    writer: AtomicWaker,
    reader: AtomicWaker,
    /// Woken when the writer took frames from a full queue (for senders that wait).
    space: Notify,
    /// Signalled on the first close request (the connection task arms the close deadline).
    pub(crate) close_requested: Notify,
    /// Cancelled when the connection is killed: the writer stops, reads return "closed".
    killed: CancellationToken,
    /// Frames read from the client (pongs included): keep-alive compares it across a ping.
    rx_frames: AtomicU64,
    /// A read is waiting for the client: only then does a missing pong mean a dead peer.
    read_pending: AtomicBool,
    /// The client's close frame (code, reason), or an abnormal end; and whether the client
    /// closed first (rather than answering the server's close).
    peer_close: Mutex<Option<(u16, String, bool)>>,
    /// The read half, given back by the handler's `WebSocket` when dropped, to finish the close
    /// handshake.
    returned: Mutex<Option<WsSource>>,
    /// A read failed (oversized message, protocol error): the socket may hold unread data.
    read_failed: AtomicBool,
    /// An abortive close was requested: the writer drops what it holds.
    aborting: AtomicBool,
    /// The connection's channel: its groups, payload type, expiry and data.
    pub(crate) channel: ChannelState,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Conn {
    pub(crate) fn new(config: Arc<ConnConfig>, channel: ChannelState) -> Self {
        Self {
            id: ConnectionId::new(),
            config,
            out: Mutex::default(),
            writer: AtomicWaker::new(),
            reader: AtomicWaker::new(),
            space: Notify::new(),
            close_requested: Notify::new(),
            killed: CancellationToken::new(),
            rx_frames: AtomicU64::new(0),
            read_pending: AtomicBool::new(false),
            peer_close: Mutex::new(None),
            returned: Mutex::new(None),
            read_failed: AtomicBool::new(false),
            aborting: AtomicBool::new(false),
            channel,
        }
    }

    /// Offers a frame without waiting: queued (a reference-counted copy), or refused because the
    /// queue is full or the connection is closing.
    pub(crate) fn offer(&self, frame: &Frame) -> Offer {
        let cost = frame.cost();
        let mut out = lock(&self.out);
        if out.closing {
            return Offer::Closed;
        }
        if out.bytes + cost > self.config.max_queue_bytes && !out.queue.is_empty() {
            return Offer::Full;
        }
        let was_empty = out.queue.is_empty();
        out.queue.push_back(frame.clone());
        out.bytes += cost;
        drop(out);
        // The writer drains the whole queue each time: it needs waking only for the first frame.
        if was_empty {
            self.writer.wake();
        }
        Offer::Queued
    }

    /// Queues a frame, waiting while the queue is full.
    pub(crate) async fn send(&self, frame: Frame) -> Result<(), super::WsError> {
        loop {
            // Registered before offering, so a wake-up between the two is not missed.
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match self.offer(&frame) {
                Offer::Queued => return Ok(()),
                Offer::Closed => return Err(super::WsError::closed()),
                Offer::Full => {
                    tokio::select! {
                        _ = space => {}
                        _ = self.killed.cancelled() => return Err(super::WsError::closed()),
                    }
                }
            }
        }
    }

    /// Asks for the connection to be closed with `code` and `reason`: the first request wins.
    /// Never waits; accepted even when the queue is full. Returns whether this request won.
    pub(crate) fn close(&self, code: u16, reason: &str, how: Closing) -> bool {
        let mut out = lock(&self.out);
        if out.closing {
            return false;
        }
        out.closing = true;
        out.closed_with = Some((code, reason.to_owned()));
        if how == Closing::Abort {
            out.queue.clear();
            out.bytes = 0;
            self.aborting.store(true, Ordering::Relaxed);
        }
        out.close = Some(CloseRequest {
            code,
            reason: reason.to_owned(),
            how,
        });
        drop(out);
        self.writer.wake();
        self.close_requested.notify_one();
        true
    }

    /// Whether a close was requested (or the connection is gone).
    pub(crate) fn is_closing(&self) -> bool {
        lock(&self.out).closing
    }

    /// The close code and reason the server sent, if it closed.
    pub(crate) fn closed_with(&self) -> Option<(u16, String)> {
        lock(&self.out).closed_with.clone()
    }

    /// Ends the connection now: the writer stops, reads return "closed".
    pub(crate) fn kill(&self) {
        lock(&self.out).closing = true;
        self.killed.cancel();
        self.reader.wake();
        self.writer.wake();
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.killed.is_cancelled()
    }

    // The read side (used by the handler's `WebSocket`).

    pub(crate) fn register_reader(&self, waker: &std::task::Waker) {
        self.reader.register(waker);
    }

    pub(crate) fn set_read_pending(&self, pending: bool) {
        self.read_pending.store(pending, Ordering::Relaxed);
    }

    /// Counts a frame read from the client. Only the reader writes this counter.
    pub(crate) fn frame_read(&self) {
        let n = self.rx_frames.load(Ordering::Relaxed);
        self.rx_frames.store(n + 1, Ordering::Relaxed);
    }

    pub(crate) fn set_peer_close(&self, code: u16, reason: String) {
        let first = !lock(&self.out).closing;
        let mut peer = lock(&self.peer_close);
        if peer.is_none() {
            *peer = Some((code, reason, first));
        }
    }

    /// The client's close (code, reason), once read.
    pub(crate) fn peer_close(&self) -> Option<(u16, String)> {
        lock(&self.peer_close)
            .as_ref()
            .map(|(code, reason, _)| (*code, reason.clone()))
    }

    /// The client's close, if the client closed first.
    pub(crate) fn closed_by_peer(&self) -> Option<(u16, String)> {
        lock(&self.peer_close)
            .as_ref()
            .filter(|(_, _, first)| *first)
            .map(|(code, reason, _)| (*code, reason.clone()))
    }

    pub(crate) fn set_read_failed(&self) {
        self.read_failed.store(true, Ordering::Relaxed);
    }

    pub(crate) fn read_failed(&self) -> bool {
        self.read_failed.load(Ordering::Relaxed)
    }

    pub(crate) fn give_back(&self, source: WsSource) {
        *lock(&self.returned) = Some(source);
    }

    pub(crate) fn take_back(&self) -> Option<WsSource> {
        lock(&self.returned).take()
    }

    /// The writer's next job.
    fn poll_job(
        &self,
        cx: &mut Context<'_>,
        batch: &mut VecDeque<Frame>,
        keepalive: &mut Keepalive,
    ) -> Poll<Job> {
        self.writer.register(cx.waker());
        loop {
            if let Some(job) = self.next_job(batch) {
                return Poll::Ready(job);
            }
            match keepalive.poll(cx, self) {
                Poll::Ready(Beat::Ping) => return Poll::Ready(Job::Ping),
                // Through the close lane, so the close deadline and the reader see it.
                Poll::Ready(Beat::Dead) => {
                    self.close(
                        close_code::INTERNAL_ERROR,
                        "keepalive ping timeout",
                        Closing::Abort,
                    );
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn next_job(&self, batch: &mut VecDeque<Frame>) -> Option<Job> {
        if self.is_killed() {
            return Some(Job::Exit);
        }
        let mut out = lock(&self.out);
        if let Some(close) = &out.close
            && (close.how == Closing::Abort || out.queue.is_empty())
        {
            return Some(Job::Close(out.close.take().expect("checked")));
        }
        if !out.queue.is_empty() {
            std::mem::swap(&mut out.queue, batch);
            out.bytes = 0;
            // Do not keep a burst's worth of capacity on an idle connection.
            if out.queue.capacity() > 1024 {
                out.queue = VecDeque::new();
            }
            return Some(Job::Data);
        }
        None
    }
}

/// What keep-alive asks of the writer.
enum Beat {
    Ping,
    /// No pong while a read was waiting: close the connection.
    Dead,
}

enum Job {
    Data,
    Close(CloseRequest),
    Ping,
    Exit,
}

/// Server pings, and the decision that a silent peer is dead.
pub(crate) struct Keepalive {
    interval: Option<Duration>,
    timeout: Duration,
    /// The ping in flight: when it was sent and how many frames had been read then.
    outstanding: Option<(Instant, u64)>,
    sleep: Pin<Box<Sleep>>,
}

impl Keepalive {
    pub(crate) fn new(config: &ConnConfig) -> Self {
        let first = config
            .ping_interval
            .map_or(Instant::now() + Duration::from_secs(86_400 * 365), |i| {
                Instant::now() + i
            });
        Self {
            interval: config.ping_interval,
            timeout: config.pong_timeout,
            outstanding: None,
            sleep: Box::pin(tokio::time::sleep_until(first)),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>, conn: &Conn) -> Poll<Beat> {
        let Some(interval) = self.interval else {
            return Poll::Pending;
        };
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let now = Instant::now();
        let read = conn.rx_frames.load(Ordering::Relaxed);
        match self.outstanding.take() {
            None => {
                self.outstanding = Some((now, read));
                self.sleep.as_mut().reset(now + self.timeout);
                Poll::Ready(Beat::Ping)
            }
            Some((sent, read_then)) => {
                // Silence counts only while a read was waiting: a busy handler is not a dead
                // peer, its pong is just not read yet.
                if read == read_then && conn.read_pending.load(Ordering::Relaxed) {
                    self.interval = None;
                    return Poll::Ready(Beat::Dead);
                }
                self.sleep.as_mut().reset((sent + interval).max(now));
                // Poll again so the timer is registered with this waker.
                self.poll(cx, conn)
            }
        }
    }
}

/// The writer task: owns the sink; ends after sending the close frame, on a write error, or
/// when the connection is killed, and gives the sink back (to finish the close).
pub(crate) async fn write_loop(conn: Arc<Conn>, mut sink: WsSink) -> WsSink {
    let mut keepalive = Keepalive::new(&conn.config);
    let mut batch = VecDeque::new();
    loop {
        let job = poll_fn(|cx| conn.poll_job(cx, &mut batch, &mut keepalive)).await;
        let written = match job {
            Job::Exit => return sink,
            Job::Data => {
                let result = write_batch(&conn, &mut sink, &mut batch).await;
                conn.space.notify_waiters();
                result
            }
            Job::Ping => unless_killed(&conn, sink.send(WireMessage::Ping(Bytes::new()))).await,
            Job::Close(close) => {
                let frame = CloseFrame {
                    code: close.code.into(),
                    reason: close.reason.into(),
                };
                // Errors here mean the peer is gone or closed first: nothing more to do.
                let _ = unless_killed(&conn, sink.send(WireMessage::Close(Some(frame)))).await;
                if close.how == Closing::Abort {
                    conn.kill();
                }
                return sink;
            }
        };
        if !written {
            conn.kill();
            return sink;
        }
    }
}

/// Feeds every frame of the batch, then flushes once. `false` on a write error or a kill.
async fn write_batch(conn: &Conn, sink: &mut WsSink, batch: &mut VecDeque<Frame>) -> bool {
    while let Some(frame) = batch.pop_front() {
        if conn.aborting.load(Ordering::Relaxed) {
            // Closing a slow or dead peer: what it has not taken yet is dropped.
            batch.clear();
            break;
        }
        if !unless_killed(conn, sink.feed(frame.into_wire())).await {
            return false;
        }
    }
    if batch.capacity() > 1024 {
        *batch = VecDeque::new();
    }
    unless_killed(conn, SinkExt::<WireMessage>::flush(sink)).await
}

/// Completes a write unless the connection is killed first. `true` when it succeeded.
async fn unless_killed<E>(
    conn: &Conn,
    write: impl std::future::Future<Output = Result<(), E>>,
) -> bool {
    tokio::select! {
        biased;
        _ = conn.killed.cancelled() => false,
        result = write => result.is_ok(),
    }
}
