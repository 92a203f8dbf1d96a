//! The writer task: the one owner of a connection's sink. It takes what the connection's rings
//! hold (in the order it was sent), feeds it to the socket under one lock, and flushes once;
//! between batches it sends pings and, at the end, the close frame.
//!
//! tungstenite's write buffer is left without a maximum (`max_write_buffer_size`), so a write
//! never fails with `WriteBufferFull`; the buffer is bounded here instead. Once a write would
//! block, the sink's `poll_ready` flushes the whole buffer before the next frame goes in, so it
//! holds at most `write_buffer_size` plus one frame, and the pongs tungstenite adds are bounded
//! by the reader (see [`super::socket`]).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::Sink;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WireError, Message as WireMessage};

use super::close::{CloseRequest, Closing};
use super::frame::Frame;
use super::keepalive::{Beat, Keepalive};
use super::ring::Taken;
use super::socket::{Socket, Tracked};
use super::{Conn, close_code, lock};

/// Bytes a writer takes from one ring at a time: many frames per write to the socket, while
/// its batch and tungstenite's output buffer stay small (a burst waits in the shared ring, not
/// in a copy per member; buffers stay below the allocator's mmap threshold).
const FILL_BYTES: usize = 64 * 1024;

/// Runs a connection's writer: ends after sending the close frame, on a write error, or when
/// the connection is killed.
pub(crate) async fn write_loop<S>(conn: Arc<Conn>, socket: Arc<Socket<S>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    *lock(&conn.keepalive) = Keepalive::new(&conn.config);
    let mut writer = Writer {
        batch: VecDeque::new(),
        batch_bytes: 0,
        limit: None,
        control: None,
        flushing: false,
        closed: None,
    };
    poll_fn(|cx| writer.poll(cx, &conn, &socket)).await;
}

/// A frame of the writer's own: a ping, or the close frame (after which it stops).
enum Control {
    Ping,
    Close(CloseRequest),
}

/// What the writer does next when it has nothing in hand.
enum Next {
    /// Frames or a control frame are ready to be written.
    Write,
    /// Something changed meanwhile (a ring got entries, a close was requested): look again.
    Again,
    /// Nothing to write until woken (by a ring, the close lane, the timer or the socket).
    Wait,
    /// The close frame is out: the writer is done.
    Done,
}

struct Writer {
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
    /// Writes until there is nothing to write (`Pending`) or the writer is done (`Ready`).
    fn poll<S>(&mut self, cx: &mut Context<'_>, conn: &Conn, socket: &Socket<S>) -> Poll<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        conn.writer.register(cx.waker());
        loop {
            if conn.is_killed() {
                return Poll::Ready(());
            }
            if self.writable() == 0 && self.control.is_none() && !self.flushing {
                match self.write_direct(cx, conn, socket) {
                    None => {}
                    Some(Poll::Ready(Ok(()))) => continue,
                    Some(Poll::Ready(Err(_))) => {
                        conn.kill();
                        return Poll::Ready(());
                    }
                    Some(Poll::Pending) => return Poll::Pending,
                }
                match self.next(cx, conn) {
                    Next::Write => {}
                    Next::Again => continue,
                    Next::Wait => return Poll::Pending,
                    Next::Done => return Poll::Ready(()),
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

    /// With nothing in hand: takes what the rings hold, else the close frame, else a ping when
    /// one is due.
    fn next(&mut self, cx: &mut Context<'_>, conn: &Conn) -> Next {
        if let Some(closed) = self.closed {
            if closed == Closing::Abort {
                // No answer is awaited from a peer that is gone or too slow.
                conn.kill();
            }
            return Next::Done;
        }
        if conn.is_aborting() {
            self.drop_batch();
        } else {
            self.fill(conn);
        }
        if self.writable() > 0 {
            return Next::Write;
        }
        if let Some(close) = conn.take_close(self.batch.is_empty()) {
            self.control = Some(Control::Close(close));
            return Next::Write;
        }
        if !self.wait(conn) {
            return Next::Again; // a ring got entries meanwhile
        }
        if conn.pongs_waiting() {
            // The reader stopped for the pongs the client has not taken: get them out (the
            // flush that does wakes the reader).
            self.flushing = true;
            return Next::Write;
        }
        let beat = {
            let mut keepalive = lock(&conn.keepalive);
            let beat = match keepalive.as_mut() {
                Some(keepalive) => keepalive.poll(cx, conn),
                None => Poll::Pending,
            };
            if matches!(beat, Poll::Ready(Beat::Dead)) {
                *keepalive = None;
            }
            beat
        };
        match beat {
            Poll::Ready(Beat::Ping) => {
                // Idle for a ping interval at most: give back what a burst grew, without
                // regrowing it in the middle of one.
                self.batch.shrink_to(64);
                self.control = Some(Control::Ping);
                Next::Write
            }
            // Through the close lane, so the close deadline and the reader see it.
            Poll::Ready(Beat::Dead) => {
                conn.close(
                    close_code::INTERNAL_ERROR,
                    "keepalive ping timeout",
                    Closing::Abort,
                );
                Next::Again
            }
            Poll::Pending => Next::Wait,
        }
    }

    /// The common case under load, without the batch: the connection is in one group and
    /// nothing else is queued for it or held in the batch, so the ring's frames are framed
    /// straight into the transport's buffer under the ring's lock (no copy of the frames, no
    /// ordering between sources). `None` when that is not the case: [`Self::next`] takes over.
    fn write_direct<S>(
        &mut self,
        cx: &mut Context<'_>,
        conn: &Conn,
        socket: &Socket<S>,
    ) -> Option<Poll<Result<(), WireError>>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let own = &conn.outbound.own;
        // What the batch holds (frames after a budget's cut) goes first, through `next`.
        if !self.batch.is_empty() || self.closed.is_some() || conn.is_aborting() || own.bytes() > 0
        {
            return None;
        }
        if !matches!(lock(&conn.outbound.groups).as_slice(), [sub] if sub.behind() > 0) {
            return None;
        }
        let mut guard = socket.lock();
        let transport = match transport_for_frames(cx, Pin::new(&mut *guard)) {
            Poll::Ready(Ok(transport)) => transport,
            Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e))),
            Poll::Pending => return Some(Poll::Pending),
        };
        let mut sent = Sent::new(conn);
        // Under the groups' lock, as `fill` reads them: a group joined meanwhile is not
        // skipped.
        let groups = lock(&conn.outbound.groups);
        let [sub] = groups.as_slice() else {
            return None;
        };
        // A frame queued for this connection alone before one of the ring's was sent (so
        // with a lower sequence number) is visible once the ring's lock is held: then the
        // batch merges the two.
        let taken = sub.ring.read_unless(
            sub,
            conn.id,
            FILL_BYTES,
            || own.bytes() > 0,
            |_, frame| {
                sent.frame(transport, frame);
            },
        )?;
        drop(groups);
        drop(sent);
        // Taken from the ring, not on the socket yet (until the flush that follows).
        conn.set_unwritten(taken.bytes);
        self.flushing = true;
        Some(Poll::Ready(Ok(())))
    }

    /// How many frames at the front of the batch may be written now.
    fn writable(&self) -> usize {
        match self.limit {
            None => self.batch.len(),
            Some(limit) => self.batch.partition_point(|(seq, _)| *seq < limit),
        }
    }

    fn drop_batch(&mut self) {
        self.batch.clear();
        self.batch_bytes = 0;
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
        // The groups first: a frame queued for this connection alone before one of theirs
        // was sent is then in its own queue by the time that queue is read.
        for sub in lock(&conn.outbound.groups).iter() {
            let len = self.batch.len();
            let taken = sub.ring.take(sub, conn.id, &mut self.batch, FILL_BYTES);
            add(&self.batch, len, taken);
        }
        let len = self.batch.len();
        let taken = conn.outbound.own.take(&mut self.batch, FILL_BYTES);
        add(&self.batch, len, taken);
        if sources > 1 || (sources == 1 && before > 0) {
            self.batch.make_contiguous().sort_by_key(|(seq, _)| *seq);
        }
        self.limit = limit;
        conn.set_unwritten(self.batch_bytes);
    }

    /// Registers with every ring to be woken by its next entry; `false` if one has entries.
    fn wait(&self, conn: &Conn) -> bool {
        if conn.outbound.own.wait() {
            return false;
        }
        lock(&conn.outbound.groups)
            .iter()
            .all(|sub| !sub.ring.wait(sub))
    }

    /// Feeds the writable frames and the control frame to the socket and flushes, under one
    /// lock.
    fn write<S>(
        &mut self,
        cx: &mut Context<'_>,
        conn: &Conn,
        socket: &Socket<S>,
    ) -> Poll<Result<(), WireError>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut guard = socket.lock();
        let mut stream = Pin::new(&mut *guard);
        ready!(self.feed_frames(cx, conn, stream.as_mut()))?;
        ready!(self.feed_control(cx, stream.as_mut()))?;
        if self.flushing {
            let flushed = ready!(stream.as_mut().poll_flush(cx));
            self.flushing = false;
            conn.set_unwritten(self.batch_bytes);
            conn.outbound.space.notify_waiters();
            if self.closed.is_none() {
                flushed?;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Frames the writable data messages into the transport's buffer (see [`Tracked`]), writing
    /// it out whenever it holds `write_buffer_size` bytes.
    fn feed_frames<S>(
        &mut self,
        cx: &mut Context<'_>,
        conn: &Conn,
        stream: Pin<&mut WebSocketStream<Tracked<S>>>,
    ) -> Poll<Result<(), WireError>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut writable = self.writable();
        if writable == 0 {
            return Poll::Ready(Ok(()));
        }
        let chunk = stream.get_config().write_buffer_size.max(1);
        let transport = ready!(transport_for_frames(cx, stream))?;
        let mut sent = Sent::new(conn);
        while writable > 0 {
            if conn.is_aborting() {
                // Closing a slow or dead peer: what it has not taken yet is dropped.
                self.drop_batch();
                break;
            }
            if transport.unwritten() >= chunk {
                ready!(transport.poll_write_out(cx))?;
            }
            let Some((_, frame)) = self.batch.pop_front() else {
                break;
            };
            self.batch_bytes = self.batch_bytes.saturating_sub(frame.cost());
            writable -= 1;
            sent.frame(transport, &frame);
            self.flushing = true;
        }
        Poll::Ready(Ok(()))
    }

    fn feed_control<S>(
        &mut self,
        cx: &mut Context<'_>,
        mut stream: Pin<&mut WebSocketStream<Tracked<S>>>,
    ) -> Poll<Result<(), WireError>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(control) = &self.control else {
            return Poll::Ready(Ok(()));
        };
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
        Poll::Ready(Ok(()))
    }
}

/// Data frames handed to the socket by one `feed_frames` call, added to the connection's
/// traffic when the call returns (also when it returns `Pending` or an error midway).
struct Sent<'a> {
    conn: &'a Conn,
    /// The connection's payload type is bytes (JSON goes out as binary frames).
    binary: bool,
    messages: u64,
    bytes: u64,
}

impl<'a> Sent<'a> {
    fn new(conn: &'a Conn) -> Self {
        Sent {
            conn,
            binary: conn.sends_binary(),
            messages: 0,
            bytes: 0,
        }
    }

    /// Frames `frame` into the transport's buffer, and counts it.
    fn frame<S: AsyncWrite + Unpin>(&mut self, transport: &mut Tracked<S>, frame: &Frame) {
        let (opcode, payload) = frame.wire(self.binary);
        transport.push_frame(opcode, payload);
        self.messages += 1;
        self.bytes += payload.len() as u64;
    }
}

/// The transport, ready for data frames: whatever tungstenite holds (a pong, a ping) is
/// flushed first, so the frames go after it; an error once the client closed (tungstenite
/// answered its close, or it is gone), since nothing may follow that.
fn transport_for_frames<'a, S>(
    cx: &mut Context<'_>,
    mut stream: Pin<&'a mut WebSocketStream<Tracked<S>>>,
) -> Poll<Result<&'a mut Tracked<S>, WireError>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ready!(stream.as_mut().poll_flush(cx))?;
    let transport = stream.get_mut().get_mut();
    if transport.peer_closed() {
        return Poll::Ready(Err(WireError::Protocol(ProtocolError::SendAfterClosing)));
    }
    Poll::Ready(Ok(transport))
}

impl Drop for Sent<'_> {
    fn drop(&mut self) {
        self.conn.traffic.sent(self.messages, self.bytes);
    }
}
