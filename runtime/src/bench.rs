//! Not public API (the hidden `__bench` feature): connections without a network, for
//! `cargo bench`: [`Detached`] (the writer runs as in a served app, but its socket discards
//! what it is given and counts the bytes) and [`Reading`] (the server's read of what a client
//! sent, from memory).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::App;
use crate::channel::Channel;
use crate::conn::{Conn, Read, Socket, write_loop};

/// A socket in memory: reads serve `input` (at most `chunk` bytes at a time, from `at` on;
/// `Pending` once it is used up), writes are counted and dropped.
#[derive(Debug)]
struct Memory {
    input: Arc<[u8]>,
    chunk: usize,
    at: Arc<Mutex<usize>>,
    written: Arc<AtomicUsize>,
}

impl Memory {
    fn new(input: Vec<u8>, chunk: usize) -> Memory {
        Memory {
            input: input.into(),
            chunk,
            at: Arc::default(),
            written: Arc::default(),
        }
    }
}

impl AsyncRead for Memory {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut at = self.at.lock().unwrap_or_else(|e| e.into_inner());
        if *at == self.input.len() {
            return Poll::Pending;
        }
        let end = (*at + self.chunk.min(buf.remaining())).min(self.input.len());
        buf.put_slice(&self.input[*at..end]);
        *at = end;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Memory {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written.fetch_add(buf.len(), Ordering::Relaxed);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A connection of `app` whose writer writes to a socket that discards (and counts) the
/// bytes.
#[derive(Debug)]
pub struct Detached {
    /// Its channel (add it to groups, send to it).
    pub channel: Channel,
    written: Arc<AtomicUsize>,
}

impl Detached {
    /// Starts the connection's writer (call inside a Tokio runtime).
    pub async fn new(app: &App) -> Detached {
        let io = Memory::new(Vec::new(), 0);
        let written = io.written.clone();
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

/// A connection of `app` whose client sent `input` (masked frames, as a client sends them),
/// read by the server as a handler's `receive` reads it.
#[derive(Debug)]
pub struct Reading {
    socket: Arc<Socket<Memory>>,
    at: Arc<Mutex<usize>>,
}

impl Reading {
    /// The connection, its client's bytes arriving at most `chunk` at a time.
    pub async fn new(app: &App, input: Vec<u8>, chunk: usize) -> Reading {
        let io = Memory::new(input, chunk);
        let at = io.at.clone();
        let conn = Conn::new(app.ws().conn.clone());
        let socket = Socket::server(io, app.ws().tungstenite, conn).await;
        Reading { socket, at }
    }

    /// Reads messages until the client's bytes are used up: how many, and their bytes.
    pub fn read_all(&self) -> (usize, usize) {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let (mut messages, mut bytes) = (0, 0);
        loop {
            match self.socket.poll_next(&mut cx) {
                Read::Message(Some(Ok(message))) => {
                    messages += 1;
                    bytes += message.len();
                }
                Read::Pending => return (messages, bytes),
                Read::Message(other) => panic!("not a message: {other:?}"),
                Read::Paused { .. } => panic!("paused"),
            }
        }
    }

    /// Serves the client's bytes from the start again.
    pub fn rewind(&self) {
        *self.at.lock().unwrap_or_else(|e| e.into_inner()) = 0;
    }
}
