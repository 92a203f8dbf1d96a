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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
use super::outbox::{Ring, Sub, Taken};

/// Bytes a writer takes from one ring at a time: many frames per write to the socket, while
/// its batch and tungstenite's output buffer stay small (a burst waits in the shared ring, not
/// in a copy per member; buffers stay below the allocator's mmap threshold).
const FILL_BYTES: usize = 64 * 1024;
use crate::channel::ChannelState;

pub(crate) type WsStream = WebSocketStream<Transport>;

/// What a connection's WebSocket runs over: the upgraded HTTP connection, or (in the crate's
/// benchmarks) a socket that discards what it is given.
#[derive(Debug)]
pub(crate) enum Transport {
    Upgraded(TokioIo<Upgraded>),
    Discard(crate::bench::Discard),
}

macro_rules! delegate {
    ($self:ident, $io:ident => $call:expr) => {
        match $self.get_mut() {
            Transport::Upgraded($io) => $call,
            Transport::Discard($io) => $call,
        }
    };
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        delegate!(self, io => Pin::new(io).poll_read(cx, buf))
    }
}

impl tokio::io::AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        delegate!(self, io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        delegate!(self, io => Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Upgraded(io) => io.is_write_vectored(),
            Transport::Discard(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, io => Pin::new(io).poll_shutdown(cx))
    }
}

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

    /// The id with this UUID (ids travel between servers as UUIDs).
    pub fn from_uuid(uuid: uuid::Uuid) -> Self {
        Self(uuid)
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
    /// JSON for a channel: a text frame, or binary for a channel whose payload type is bytes.
    Json(Utf8Bytes),
}

/// What a queued frame counts against the queue's bound, beyond its payload.
const FRAME_OVERHEAD: usize = 64;

impl Frame {
    pub(crate) fn cost(&self) -> usize {
        FRAME_OVERHEAD
            + match self {
                Frame::Text(t) | Frame::Json(t) => t.len(),
                Frame::Binary(b) => b.len(),
            }
    }

    /// The wire message; `binary`: the channel's payload type is bytes.
    fn into_wire(self, binary: bool) -> WireMessage {
        match self {
            Frame::Json(t) if binary => WireMessage::Binary(Bytes::from(t)),
            Frame::Text(t) | Frame::Json(t) => WireMessage::Text(t),
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

/// The close lane.
#[derive(Debug, Default)]
struct Out {
    close: Option<CloseRequest>,
    /// A close was requested: no more frames are accepted.
    closing: bool,
    /// The close the server sent (the first request wins).
    closed_with: Option<(u16, String)>,
}

/// Keep-alive and limit settings of an app's connections, and the counter that orders
/// everything they are sent.
#[derive(Debug)]
pub(crate) struct ConnConfig {
    pub(crate) max_queue_bytes: usize,
    /// Sequence numbers of outgoing frames (rings of one app share it).
    pub(crate) sequence: AtomicU64,
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
    /// This connection's own ring: what its handler and `send_to` send it.
    own: Arc<Sub>,
    /// The rings of the groups it is in.
    groups: Mutex<Vec<Arc<Sub>>>,
    /// More than half the bound waits for the writer: reads pause until it is below a quarter
    /// (set by the reader, cleared by the writer).
    backlogged: AtomicBool,
    /// Bytes the writer took from the rings and has not given to the socket yet.
    unwritten: AtomicUsize,
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
    pub(crate) fn new(config: Arc<ConnConfig>, channel: ChannelState) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            id: ConnectionId::new(),
            config,
            out: Mutex::default(),
            own: Ring::new().subscribe(me.clone(), None),
            groups: Mutex::default(),
            backlogged: AtomicBool::new(false),
            unwritten: AtomicUsize::new(0),
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
        })
    }

    /// Offers a frame to this connection's own ring without waiting: queued, or refused because
    /// it is full or the connection is closing.
    pub(crate) fn offer(&self, frame: &Frame) -> Offer {
        if self.is_closing() {
            return Offer::Closed;
        }
        let ring = &self.own.ring;
        let held = ring.bytes();
        if held > 0 && held + frame.cost() > self.config.max_queue_bytes {
            return Offer::Full;
        }
        ring.push(
            frame.clone(),
            None,
            &self.config.sequence,
            usize::MAX,
            false,
        );
        Offer::Queued
    }

    pub(crate) fn wake_writer(&self) {
        self.writer.wake();
    }

    /// Joins a group's ring (its writer reads it from now on).
    pub(crate) fn join(self: &Arc<Self>, ring: &Arc<Ring>, group: Arc<str>) -> bool {
        let mut groups = lock(&self.groups);
        if groups.iter().any(|s| Arc::ptr_eq(&s.ring, ring)) {
            return false;
        }
        groups.push(ring.subscribe(Arc::downgrade(self), Some(group)));
        drop(groups);
        self.writer.wake();
        true
    }

    /// Leaves a group's ring; returns the members left in it, or `None` if not a member.
    pub(crate) fn leave(&self, ring: &Arc<Ring>) -> Option<usize> {
        let mut groups = lock(&self.groups);
        let i = groups.iter().position(|s| Arc::ptr_eq(&s.ring, ring))?;
        let sub = groups.swap_remove(i);
        drop(groups);
        Some(sub.ring.unsubscribe(&sub))
    }

    /// Leaves every group: returns the subscriptions left (their rings, their names).
    pub(crate) fn leave_all(&self) -> Vec<Arc<Sub>> {
        std::mem::take(&mut *lock(&self.groups))
    }

    /// Whether this connection is in a group's ring.
    pub(crate) fn is_in(&self, ring: &Arc<Ring>) -> bool {
        lock(&self.groups)
            .iter()
            .any(|s| Arc::ptr_eq(&s.ring, ring))
    }

    /// The names of the groups this connection is in.
    pub(crate) fn group_names(&self) -> Vec<Arc<str>> {
        lock(&self.groups)
            .iter()
            .filter_map(|s| s.group.clone())
            .collect()
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

    /// Takes a close request, if any (a graceful close waits until everything is written).
    fn take_close(&self, drained: bool) -> Option<CloseRequest> {
        let mut out = lock(&self.out);
        match &out.close {
            Some(close) if close.how == Closing::Abort || drained => out.close.take(),
            _ => None,
        }
    }

    /// Bytes waiting for this connection: in its rings, and taken by its writer but not
    /// written yet.
    pub(crate) fn queued_bytes(&self) -> usize {
        let mut queued = self.unwritten.load(Ordering::SeqCst) + self.own.behind();
        for sub in lock(&self.groups).iter() {
            queued += sub.behind();
        }
        queued
    }

    /// Whether the reader should pause: more than half the bound waits for the writer (the
    /// client sends faster than it takes what it is sent). The writer wakes the reader once
    /// less than a quarter waits.
    pub(crate) fn should_pause_reading(&self) -> bool {
        if self.backlogged.load(Ordering::SeqCst) {
            return true;
        }
        let bound = self.config.max_queue_bytes;
        if self.queued_bytes() <= bound / 2 {
            return false;
        }
        self.backlogged.store(true, Ordering::SeqCst);
        // The writer may have caught up before it could see the flag: look again.
        if self.queued_bytes() <= bound / 4 {
            self.backlogged.store(false, Ordering::SeqCst);
            return false;
        }
        true
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
        batch_bytes: 0,
        limit: None,
        control: None,
        flushing: false,
        closed: None,
    };
    poll_fn(|cx| writer.poll(cx, &conn, &socket)).await;
}

struct Writer {
    keepalive: Keepalive,
    /// Frames taken from the rings, in sequence order, not yet given to the socket.
    batch: VecDeque<(u64, Frame)>,
    batch_bytes: usize,
    /// When the budget left entries in a ring: frames from this sequence number on wait until
    /// those are taken (so the rings' frames stay in order).
    limit: Option<u64>,
    /// A ping or close frame waiting to be given to the socket.
    control: Option<Control>,
    /// Frames were given to the socket and not flushed yet.
    flushing: bool,
    /// The close frame was given to the socket: how the connection closes.
    closed: Option<Closing>,
}

impl Writer {
    /// Writes until there is nothing to write (`Pending`, woken by a ring, the close lane, the
    /// timer or the socket) or the writer is done (`Ready`).
    fn poll(&mut self, cx: &mut Context<'_>, conn: &Conn, socket: &Socket) -> Poll<()> {
        conn.writer.register(cx.waker());
        loop {
            if conn.is_killed() {
                return Poll::Ready(());
            }
            if self.writable() == 0 && self.control.is_none() && !self.flushing {
                if let Some(closed) = self.closed {
                    if closed == Closing::Abort {
                        // No answer is awaited from a peer that is gone or too slow.
                        conn.kill();
                    }
                    return Poll::Ready(());
                }
                if conn.aborting.load(Ordering::Relaxed) {
                    self.batch.clear();
                    self.batch_bytes = 0;
                } else {
                    self.fill(conn);
                }
                if self.writable() == 0 {
                    if let Some(close) = conn.take_close(self.batch.is_empty()) {
                        self.control = Some(Control::Close(close));
                    } else if !self.wait(conn) {
                        continue; // a ring got entries meanwhile
                    } else {
                        match self.keepalive.poll(cx, conn) {
                            Poll::Ready(Beat::Ping) => {
                                // Idle for a ping interval at most: give back what a burst
                                // grew, without regrowing it in the middle of one.
                                self.batch.shrink_to(64);
                                self.control = Some(Control::Ping);
                            }
                            // Through the close lane, so the close deadline and the reader see
                            // it.
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

    /// How many frames at the front of the batch may be written now.
    fn writable(&self) -> usize {
        match self.limit {
            None => self.batch.len(),
            Some(limit) => self.batch.partition_point(|(seq, _)| *seq < limit),
        }
    }

    /// Takes what the rings hold for this connection, at most [`FILL_BYTES`] from each, in
    /// sequence order; the rest waits in the rings (shared, not copied per member).
    fn fill(&mut self, conn: &Conn) {
        let before = self.batch.len();
        let mut sources = 0;
        let mut limit: Option<u64> = None;
        let mut add = |batch: &VecDeque<(u64, Frame)>, len: usize, taken: Taken| {
            if batch.len() > len {
                sources += 1;
            }
            self.batch_bytes += taken.bytes;
            limit = match (limit, taken.left) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        };
        let len = self.batch.len();
        let taken = conn
            .own
            .ring
            .take_own(&conn.own, &mut self.batch, FILL_BYTES);
        add(&self.batch, len, taken);
        for sub in lock(&conn.groups).iter() {
            let len = self.batch.len();
            let taken = sub.ring.take(sub, conn.id, &mut self.batch, FILL_BYTES);
            add(&self.batch, len, taken);
        }
        if sources > 1 || (sources == 1 && before > 0) {
            self.batch.make_contiguous().sort_by_key(|(seq, _)| *seq);
        }
        self.limit = limit;
        self.update_backlog(conn);
    }

    /// Registers with every ring to be woken by its next entry; `false` if one has entries.
    fn wait(&self, conn: &Conn) -> bool {
        if conn.own.ring.wait(&conn.own) {
            return false;
        }
        lock(&conn.groups).iter().all(|sub| !sub.ring.wait(sub))
    }

    /// Publishes what the writer holds and, when the reader paused and less than a quarter
    /// of the bound waits now, lets it read again.
    fn update_backlog(&self, conn: &Conn) {
        conn.unwritten.store(self.batch_bytes, Ordering::SeqCst);
        if conn.backlogged.load(Ordering::SeqCst)
            && conn.queued_bytes() <= conn.config.max_queue_bytes / 4
        {
            conn.backlogged.store(false, Ordering::SeqCst);
            conn.reader.wake();
        }
    }

    /// Feeds the writable frames and the control frame to the socket and flushes, under one
    /// lock.
    fn write(
        &mut self,
        cx: &mut Context<'_>,
        conn: &Conn,
        socket: &Socket,
    ) -> Poll<Result<(), WireError>> {
        let binary = conn.channel.sends_binary();
        let mut guard = socket.lock();
        let mut stream = Pin::new(&mut *guard);
        let mut writable = self.writable();
        while writable > 0 {
            if conn.aborting.load(Ordering::Relaxed) {
                // Closing a slow or dead peer: what it has not taken yet is dropped.
                self.batch.clear();
                self.batch_bytes = 0;
                break;
            }
            ready!(stream.as_mut().poll_ready(cx))?;
            let (_, frame) = self.batch.pop_front().expect("writable");
            self.batch_bytes = self.batch_bytes.saturating_sub(frame.cost());
            writable -= 1;
            stream.as_mut().start_send(frame.into_wire(binary))?;
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
            self.update_backlog(conn);
            conn.space.notify_waiters();
            if self.closed.is_none() {
                flushed?;
            }
        }
        Poll::Ready(Ok(()))
    }
}
