//! Not public API (the hidden `__bench` feature): connections without a network, for
//! `cargo bench` (the writer runs as in a served app, but its socket discards what it is given
//! and counts the bytes).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::App;
use crate::channel::Channel;
use crate::conn::{Conn, Socket, write_loop};

/// A socket that never has anything to read and accepts every byte written.
#[derive(Debug)]
struct Discard(Arc<AtomicUsize>);

impl AsyncRead for Discard {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for Discard {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.fetch_add(buf.len(), Ordering::Relaxed);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A connection of `app` whose writer writes to a discarding socket.
#[derive(Debug)]
pub struct Detached {
    /// Its channel (add it to groups, send to it).
    pub channel: Channel,
    written: Arc<AtomicUsize>,
}

impl Detached {
    /// Starts the connection's writer (call inside a Tokio runtime).
    pub async fn new(app: &App) -> Detached {
        let written = Arc::new(AtomicUsize::new(0));
        let io = Discard(written.clone());
        let conn = Conn::new(app.ws().conn.clone());
        let socket = Socket::server(io, app.ws().tungstenite, conn.clone()).await;
        tokio::spawn(write_loop(conn.clone(), socket));
        Detached {
            channel: Channel::from_conn(conn),
            written,
        }
    }

    /// Bytes the writer has written so far.
    pub fn written(&self) -> usize {
        self.written.load(Ordering::Relaxed)
    }
}
