//! The socket the reader and the writer share, and the bound on the pongs a client that sends
//! pings without reading can make the server hold.
//!
//! tungstenite answers every ping by itself: the pong is written the next time anything reads
//! or writes the socket, into a write buffer without a maximum. A client that sends pings and
//! never reads would have its pongs pile up there at wire speed. The [`Tracked`] transport under
//! tungstenite sees when everything buffered has gone out (a flush completes); until then the
//! reader counts the pings it has read. At [`MAX_PONGS_OWED`] it stops reading the client (its
//! pings wait in the kernel's socket buffers, behind at most [`SCRATCH`] bytes read ahead, and
//! TCP flow control then stops the client) and asks the writer to flush; the flush that gets
//! the pongs out wakes the reader.
//!
//! An idle connection keeps no read buffer of its own beyond tungstenite's small one
//! ([`Builder::read_buffer_size`](crate::Builder::read_buffer_size), 512 bytes by default): the
//! transport reads the connection into a buffer of its worker thread ([`SCRATCH`] bytes) and
//! keeps only what tungstenite has not taken yet, until it does. A large message or a burst
//! still arrives in few system calls.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use futures_util::Stream;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WireError, Message as WireMessage};

use super::{Conn, close_code, lock};

/// What a served connection's WebSocket runs over: the upgraded HTTP connection.
pub(crate) type Upgrade = TokioIo<Upgraded>;

/// Pings read whose pongs may still be in the write buffer, after which the client is not read
/// until they are out: at most this many pongs of at most 127 bytes each are held for a client
/// that does not read (RFC 6455 5.5.3 would even allow answering only the latest).
pub(crate) const MAX_PONGS_OWED: u32 = 16;

/// The socket, shared by the reader (the handler's `WebSocket`) and the writer task. Each takes
/// the lock for one poll only (never across an `.await`): the writer once per batch of frames,
/// the reader once per read.
pub(crate) struct Socket<S = Upgrade>(Mutex<WebSocketStream<Tracked<S>>>);

impl<S> std::fmt::Debug for Socket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Socket")
    }
}

/// What a read of the socket gave.
pub(crate) enum Read {
    /// A message, an error, or the end of the stream (`None`).
    Message(Option<Result<WireMessage, WireError>>),
    /// Nothing yet: the reader is woken when the client sends.
    Pending,
    /// Not read: the client has not taken the pongs it is owed. The writer is asked to flush
    /// them, and the flush that gets them out wakes the reader. `new`: the first time since the
    /// last pause ended.
    Paused { new: bool },
}

impl<S: AsyncRead + AsyncWrite + Unpin> Socket<S> {
    /// The server end of `conn` over `io`, an upgraded connection.
    pub(crate) async fn server(io: S, config: WebSocketConfig, conn: Arc<Conn>) -> Arc<Self> {
        let tracked = Tracked {
            io,
            conn,
            out: Vec::new(),
            written: 0,
            ahead: Vec::new(),
            ahead_taken: 0,
            peer_closed: false,
        };
        let stream = WebSocketStream::from_raw_socket(tracked, Role::Server, Some(config)).await;
        Arc::new(Socket(Mutex::new(stream)))
    }

    /// The next message from the client, unless the client owes the server too many pongs.
    /// The caller has registered with the connection's reader waker.
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Read {
        let mut stream = self.lock();
        let conn = &stream.get_ref().conn;
        let pongs = &conn.inbound.pongs;
        // Once closing, the writer ends after its close frame and tungstenite answers no more
        // pings: the reader reads on, to the client's close (bounded by `close_timeout`).
        if pongs.owed.load(Ordering::Acquire) >= MAX_PONGS_OWED && !conn.is_closing() {
            let new = !pongs.paused.swap(true, Ordering::AcqRel);
            return Read::Paused { new };
        }
        match Pin::new(&mut *stream).poll_next(cx) {
            Poll::Pending => Read::Pending,
            Poll::Ready(item) => {
                match &item {
                    Some(Ok(WireMessage::Ping(_))) => {
                        let pongs = &stream.get_ref().conn.inbound.pongs;
                        pongs.owed.fetch_add(1, Ordering::AcqRel);
                    }
                    // (Nothing is locked under the keep-alive lock.)
                    Some(Ok(WireMessage::Pong(_))) => stream.get_ref().conn.pong_read(),
                    Some(Ok(WireMessage::Close(_))) | None => {
                        peer_ended(&stream.get_ref().conn, &item);
                        stream.get_mut().peer_closed = true;
                    }
                    Some(Err(e)) if ends_the_stream(e) => {
                        peer_ended(&stream.get_ref().conn, &item);
                        stream.get_mut().peer_closed = true;
                    }
                    _ => {}
                }
                Read::Message(item)
            }
        }
    }

    /// The next message, for the close handshake: once the close frame is sent tungstenite
    /// answers no more pings, so nothing can be owed any more.
    pub(crate) fn poll_closing(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<WireMessage, WireError>>> {
        let mut stream = self.lock();
        let item = ready!(Pin::new(&mut *stream).poll_next(cx));
        match &item {
            Some(Ok(WireMessage::Close(_))) | None => stream.get_mut().peer_closed = true,
            Some(Err(e)) if ends_the_stream(e) => stream.get_mut().peer_closed = true,
            _ => {}
        }
        Poll::Ready(item)
    }

    /// Reads and drops raw bytes (after a read error, tungstenite can no longer parse the
    /// stream): `Ready(true)` at the end of the stream.
    pub(crate) fn poll_discard(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut buf = [0u8; 4096];
        let mut buf = ReadBuf::new(&mut buf);
        let mut stream = self.lock();
        let transport = stream.get_mut();
        if transport.ahead_taken < transport.ahead.len() {
            transport.ahead = Vec::new();
            transport.ahead_taken = 0;
            return Poll::Ready(false);
        }
        match ready!(Pin::new(&mut transport.io).poll_read(cx, &mut buf)) {
            Ok(()) => Poll::Ready(buf.filled().is_empty()),
            Err(_) => Poll::Ready(true),
        }
    }
}

impl<S> Socket<S> {
    pub(super) fn lock(&self) -> MutexGuard<'_, WebSocketStream<Tracked<S>>> {
        lock(&self.0)
    }
}

/// Records how the client ended the stream (its close frame, or the connection lost), under
/// the socket's lock: the writer, which writes no more once it sees `peer_closed` and then ends
/// the connection, finds it recorded, so a close the client chose is never taken for the
/// server's.
fn peer_ended(conn: &Conn, item: &Option<Result<WireMessage, WireError>>) {
    let (code, reason) = match item {
        Some(Ok(WireMessage::Close(Some(frame)))) => {
            (u16::from(frame.code), frame.reason.as_str().to_owned())
        }
        Some(Ok(WireMessage::Close(None))) => (close_code::NO_STATUS, String::new()),
        None => (close_code::ABNORMAL, "connection lost".to_owned()),
        Some(Err(WireError::Io(e))) => (close_code::ABNORMAL, format!("connection lost: {e}")),
        _ => return,
    };
    conn.set_peer_close(code, reason);
}

/// A read error after which tungstenite writes nothing more (the client dropped the
/// connection without a close frame, or it is gone): data frames must not pile up behind it.
/// After other errors (a protocol violation, a message too large) the connection still sends
/// its close frame, and the data frames queued before it.
fn ends_the_stream(error: &WireError) -> bool {
    matches!(
        error,
        WireError::ConnectionClosed
            | WireError::AlreadyClosed
            | WireError::Io(_)
            | WireError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
    )
}

/// Pongs the server owes a client, shared by the reader, the writer and the transport.
#[derive(Debug, Default)]
pub(super) struct Pongs {
    /// Pings read since everything buffered was last written out.
    owed: AtomicU32,
    /// The reader stopped for them: the writer is to flush.
    paused: AtomicBool,
}

impl Conn {
    /// Whether the reader stopped for pongs the client has not taken, so that the writer must
    /// flush even with nothing of its own to write.
    pub(super) fn pongs_waiting(&self) -> bool {
        self.inbound.pongs.paused.load(Ordering::Acquire)
    }
}

/// The transport under tungstenite: the connection, the connection's state to tell when what
/// is buffered for it has gone out, and the writer's data frames.
///
/// The writer frames its data messages itself, straight into [`Tracked::out`] (a group's
/// payload is copied once per member, after a header of two to ten bytes), and tungstenite
/// writes only control frames: its pongs and close replies, the writer's pings and close frame.
/// The two never interleave on the wire: the writer adds frames only once tungstenite has
/// flushed everything it buffered, and everything tungstenite writes goes
/// out after the frames already here (`poll_write` writes those first).
pub(crate) struct Tracked<S> {
    io: S,
    conn: Arc<Conn>,
    /// Data frames, header and payload, written by the writer and not yet to the transport.
    out: Vec<u8>,
    /// How much of `out` is written already.
    written: usize,
    /// Bytes read from the connection that tungstenite has not taken yet (empty, with nothing
    /// allocated, once it has).
    ahead: Vec<u8>,
    /// How much of `ahead` tungstenite has taken.
    ahead_taken: usize,
    /// tungstenite read the client's close (and answers it) or the end of the stream: no data
    /// frame may follow.
    peer_closed: bool,
}

/// Above this, `out`'s memory is given back once it is written out (a burst's buffer is not
/// kept by a connection that then sits idle).
const KEEP_OUT: usize = 64 * 1024;

impl<S: AsyncWrite + Unpin> Tracked<S> {
    /// Bytes of data frames not yet written to the transport.
    pub(super) fn unwritten(&self) -> usize {
        self.out.len() - self.written
    }

    /// Whether data frames may still be sent: the client has not closed.
    pub(super) fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Appends a data frame: `opcode` 1 (text) or 2 (binary), final, unmasked (RFC 6455 5.2).
    pub(super) fn push_frame(&mut self, opcode: u8, payload: &[u8]) {
        let len = payload.len();
        self.out.reserve(len + 10);
        self.out.push(0x80 | opcode);
        if len < 126 {
            self.out.push(len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            self.out.push(126);
            self.out.extend_from_slice(&len.to_be_bytes());
        } else {
            self.out.push(127);
            self.out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.out.extend_from_slice(payload);
    }

    /// Writes the data frames in `out` to the transport, all of them or `Pending`.
    pub(super) fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if self.written > 0 {
            self.written = 0;
            if self.out.capacity() > KEEP_OUT {
                self.out = Vec::new();
            } else {
                self.out.clear();
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The most a connection is read at once, into its worker thread's buffer.
const SCRATCH: usize = 16 * 1024;

thread_local! {
    /// Where connections polled on this thread are read into, before what tungstenite asked
    /// for is copied out. Allocated by a thread's first read.
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// tungstenite reads at most its read buffer's size at a time (512 bytes by default): the rest
/// of what the connection has is read at once into the thread's buffer, and the part
/// tungstenite did not take is kept in `ahead` until it does. A connection between messages
/// holds nothing here.
impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.ahead_taken < this.ahead.len() {
            let rest = &this.ahead[this.ahead_taken..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.ahead_taken += n;
            if this.ahead_taken == this.ahead.len() {
                this.ahead = Vec::new();
                this.ahead_taken = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= SCRATCH {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        SCRATCH_BUF.with_borrow_mut(|scratch| {
            let mut read = ReadBuf::new(scratch);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            let read = read.filled();
            let n = read.len().min(buf.remaining());
            buf.put_slice(&read[..n]);
            if n < read.len() {
                this.ahead = read[n..].to_vec();
            }
            Poll::Ready(Ok(()))
        })
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // tungstenite's frames go after the data frames the writer added before them.
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    /// tungstenite flushes the transport only once its whole write buffer, pongs included, is
    /// written: from here nothing is owed.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        let flushed = ready!(Pin::new(&mut self.io).poll_flush(cx));
        if flushed.is_ok() {
            let pongs = &self.conn.inbound.pongs;
            if pongs.owed.load(Ordering::Acquire) > 0 {
                pongs.owed.store(0, Ordering::Release);
            }
            if pongs.paused.load(Ordering::Acquire) && pongs.paused.swap(false, Ordering::AcqRel) {
                self.conn.reader.wake();
            }
        }
        Poll::Ready(flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
