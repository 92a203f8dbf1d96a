use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use futures_util::Stream;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WireError, Message as WireMessage};

use super::lock;

/// What a served connection's WebSocket runs over: the upgraded HTTP connection.
pub(crate) type Upgrade = TokioIo<Upgraded>;

/// The socket, shared by the reader (the handler's `WebSocket`) and the writer task. Each takes
/// the lock for one poll only (never across an `.await`): the writer once per batch of frames,
/// the reader once per read.
pub(crate) struct Socket<S = Upgrade>(Mutex<WebSocketStream<S>>);

impl<S> std::fmt::Debug for Socket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Socket")
    }
}

impl<S> Socket<S> {
    pub(crate) fn new(stream: WebSocketStream<S>) -> Arc<Self> {
        Arc::new(Socket(Mutex::new(stream)))
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, WebSocketStream<S>> {
        lock(&self.0)
    }
}

impl<S: AsyncRead + tokio::io::AsyncWrite + Unpin> Socket<S> {
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
