//! What the reader (the handler's `WebSocket`) shares with the writer and keep-alive.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Waker;

use super::Conn;

#[derive(Debug, Default)]
pub(super) struct Inbound {
    /// Frames read from the client (pongs included): keep-alive compares it across a ping.
    frames: AtomicU64,
    /// A read is waiting for the client: only then does a missing pong mean a dead peer.
    pending: AtomicBool,
    /// A read failed (oversized message, protocol error): the socket may hold unread data.
    failed: AtomicBool,
    /// The pongs owed to the client (see [`super::socket`]).
    pub(super) pongs: super::socket::Pongs,
}

impl Conn {
    pub(crate) fn register_reader(&self, waker: &Waker) {
        self.reader.register(waker);
    }

    pub(crate) fn set_read_pending(&self, pending: bool) {
        self.inbound.pending.store(pending, Ordering::Relaxed);
    }

    pub(super) fn is_read_pending(&self) -> bool {
        self.inbound.pending.load(Ordering::Relaxed)
    }

    /// Counts a frame read from the client. Only the reader writes this counter.
    pub(crate) fn frame_read(&self) {
        let n = self.inbound.frames.load(Ordering::Relaxed);
        self.inbound.frames.store(n + 1, Ordering::Relaxed);
    }

    /// The reader read a pong: keep-alive's next wake-up is the next ping.
    pub(super) fn pong_read(&self) {
        if let Some(keepalive) = super::lock(&self.keepalive).as_mut() {
            keepalive.answered(&self.config);
        }
    }

    pub(super) fn frames_read(&self) -> u64 {
        self.inbound.frames.load(Ordering::Relaxed)
    }

    pub(crate) fn set_read_failed(&self) {
        self.inbound.failed.store(true, Ordering::Relaxed);
    }

    pub(crate) fn read_failed(&self) -> bool {
        self.inbound.failed.load(Ordering::Relaxed)
    }
}
