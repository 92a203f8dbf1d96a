//! One connection's shared state: its bounded outbound queue and close lane, the socket its
//! reader and writer share, the writer task, and keep-alive.
//!
//! Everything sent to a client (by its handler, a group, or the framework) goes through the
//! queue, which is bounded by bytes. The writer takes everything queued at once, feeds it to the
//! socket under one lock and flushes once. A close request goes through a separate lane: it is
//! accepted even when the queue is full, and the connection is killed if the close cannot
//! complete in time.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use futures_util::{Sink, Stream};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WireError, Message as WireMessage, Utf8Bytes};

use super::close_code;
use crate::channel::ChannelState;

pub(crate) type WsStream = WebSocketStream<TokioIo<Upgraded>>;

/// The socket, shared by the reader (the handler's `WebSocket`) and the writer task. Each takes
/// the lock for one poll only (never across an `.await`): the writer once per batch of frames,
/// the reader once per read.
pub(crate) struct Socket(Mutex<WsStream>);

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Socket")
    }
}

impl Socket {
    pub(crate) fn new(stream: WsStream) -> Arc<Self> {
        Arc::new(Socket(Mutex::new(stream)))
    }

    fn lock(&self) -> MutexGuard<'_, WsStream> {
        lock(&self.0)
    }

    /// The next message from the client.
    pub(crate) fn poll_next(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<WireMessage, WireError>>> {
        Pin::new(&mut *self.lock()).poll_next(cx)
    }

    /// Reads and drops raw bytes (after a read error, tungstenite can no longer parse the
    /// stream): `Ready(true)` at the end of the stream.
    pub(crate) fn poll_discard(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut buf = [0u8; 4096];
        let mut buf = ReadBuf::new(&mut buf);
        let mut stream = self.lock();
        match ready!(Pin::new(stream.get_mut()).poll_read(cx, &mut buf)) {
            Ok(()) => Poll::Ready(buf.filled().is_empty()),
            Err(_) => Poll::Ready(true),
        }
    }
}

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
    /// Set when the connection is killed: the writer stops, reads return "closed".
    killed: AtomicBool,
    /// Frames read from the client (pongs included): keep-alive compares it across a ping.
    rx_frames: AtomicU64,
    /// A read is waiting for the client: only then does a missing pong mean a dead peer.
    read_pending: AtomicBool,
    /// The client's close frame (code, reason), or an abnormal end; and whether the client
    /// closed first (rather than answering the server's close).
    peer_close: Mutex<Option<(u16, String, bool)>>,
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
            killed: AtomicBool::new(false),
            rx_frames: AtomicU64::new(0),
            read_pending: AtomicBool::new(false),
            peer_close: Mutex::new(None),
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
                // A kill wakes the waiters too.
                Offer::Full => space.await,
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
        self.killed.store(true, Ordering::Release);
        self.reader.wake();
        self.writer.wake();
        self.space.notify_waiters();
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
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

    /// Takes what there is to write: the queue into `batch`, or a close request (a graceful
    /// close waits until the queue is written).
    fn take_work(&self, batch: &mut VecDeque<Frame>) -> Option<Control> {
        let mut out = lock(&self.out);
        if let Some(close) = &out.close
            && (close.how == Closing::Abort || out.queue.is_empty())
        {
            let close = out.close.take().expect("checked");
            return Some(Control::Close(close));
        }
        if !out.queue.is_empty() {
            std::mem::swap(&mut out.queue, batch);
            out.bytes = 0;
        }
        None
    }

    /// Gives back the memory a burst left in the queue, once the connection is idle.
    fn shrink(&self, batch: &mut VecDeque<Frame>) {
        const KEEP: usize = 64;
        batch.shrink_to(KEEP);
        let mut out = lock(&self.out);
        if out.queue.capacity() > KEEP && out.queue.len() <= KEEP {
            out.queue.shrink_to(KEEP);
        }
    }
}

/// A frame of the writer's own: a ping, or the close frame (after which it stops).
enum Control {
    Ping,
    Close(CloseRequest),
}

/// What keep-alive asks of the writer.
enum Beat {
    Ping,
    /// No pong while a read was waiting: close the connection.
    Dead,
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

/// The writer task: ends after sending the close frame, on a write error, or when the
/// connection is killed.
pub(crate) async fn write_loop(conn: Arc<Conn>, socket: Arc<Socket>) {
    let mut writer = Writer {
        keepalive: Keepalive::new(&conn.config),
        batch: VecDeque::new(),
        control: None,
        flushing: false,
        closed: None,
    };
    poll_fn(|cx| writer.poll(cx, &conn, &socket)).await;
}

struct Writer {
    keepalive: Keepalive,
    /// Frames taken from the queue, not yet given to the socket.
    batch: VecDeque<Frame>,
    /// A ping or close frame waiting to be given to the socket.
    control: Option<Control>,
    /// Frames were given to the socket and not flushed yet.
    flushing: bool,
    /// The close frame was given to the socket: how the connection closes.
    closed: Option<Closing>,
}

impl Writer {
    /// Writes until there is nothing to write (`Pending`, woken by the queue, the timer or the
    /// socket) or the writer is done (`Ready`).
    fn poll(&mut self, cx: &mut Context<'_>, conn: &Conn, socket: &Socket) -> Poll<()> {
        conn.writer.register(cx.waker());
        loop {
            if conn.is_killed() {
                return Poll::Ready(());
            }
            if self.batch.is_empty() && self.control.is_none() && !self.flushing {
                if let Some(closed) = self.closed {
                    if closed == Closing::Abort {
                        // No answer is awaited from a peer that is gone or too slow.
                        conn.kill();
                    }
                    return Poll::Ready(());
                }
                self.control = conn.take_work(&mut self.batch);
                if self.batch.is_empty() && self.control.is_none() {
                    match self.keepalive.poll(cx, conn) {
                        Poll::Ready(Beat::Ping) => {
                            // Idle for a ping interval at most: a good time to give back what
                            // a burst grew, without regrowing it in the middle of one.
                            conn.shrink(&mut self.batch);
                            self.control = Some(Control::Ping);
                        }
                        // Through the close lane, so the close deadline and the reader see it.
                        Poll::Ready(Beat::Dead) => {
                            conn.close(
                                close_code::INTERNAL_ERROR,
                                "keepalive ping timeout",
                                Closing::Abort,
                            );
                            continue;
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
            match self.write(cx, conn, socket) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => {
                    conn.kill();
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Feeds the batch and the control frame to the socket and flushes, under one lock.
    fn write(
        &mut self,
        cx: &mut Context<'_>,
        conn: &Conn,
        socket: &Socket,
    ) -> Poll<Result<(), WireError>> {
        let mut stream = socket.lock();
        let mut stream = Pin::new(&mut *stream);
        while !self.batch.is_empty() {
            if conn.aborting.load(Ordering::Relaxed) {
                // Closing a slow or dead peer: what it has not taken yet is dropped.
                self.batch.clear();
                break;
            }
            ready!(stream.as_mut().poll_ready(cx))?;
            let frame = self.batch.pop_front().expect("not empty");
            stream.as_mut().start_send(frame.into_wire())?;
            self.flushing = true;
        }
        if let Some(control) = &self.control {
            ready!(stream.as_mut().poll_ready(cx))?;
            let message = match control {
                Control::Ping => WireMessage::Ping(Bytes::new()),
                Control::Close(close) => WireMessage::Close(Some(CloseFrame {
                    code: close.code.into(),
                    reason: close.reason.as_str().into(),
                })),
            };
            if let Some(Control::Close(close)) = self.control.take() {
                self.closed = Some(close.how);
            }
            // After a close, errors mean the peer is gone or closed first: nothing more to do.
            let sent = stream.as_mut().start_send(message);
            if self.closed.is_none() {
                sent?;
            }
            self.flushing = true;
        }
        if self.flushing {
            let flushed = ready!(stream.as_mut().poll_flush(cx));
            self.flushing = false;
            conn.space.notify_waiters();
            if self.closed.is_none() {
                flushed?;
            }
        }
        Poll::Ready(Ok(()))
    }
}
