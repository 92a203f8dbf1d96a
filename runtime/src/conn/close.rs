//! The close lane: a close request is accepted even when the outbound queue is full, the first
//! request wins, and the connection is killed if the close cannot complete in time. Also how
//! the client ended the connection.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use super::{Conn, lock};

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
pub(super) struct CloseRequest {
    pub(super) code: u16,
    pub(super) reason: String,
    pub(super) how: Closing,
}

/// How a connection is closing, once it is.
#[derive(Debug, Default)]
struct CloseState {
    /// The close frame for the writer to send, until it takes it.
    close: Option<CloseRequest>,
    /// The close the server sent (the first request wins).
    closed_with: Option<(u16, String)>,
    /// How the client ended the connection.
    peer: Option<PeerClose>,
}

/// The client's close frame (code, reason), or an abnormal end; and whether the client closed
/// first (rather than answering the server's close).
#[derive(Debug)]
struct PeerClose {
    code: u16,
    reason: String,
    first: bool,
}

#[derive(Debug, Default)]
pub(super) struct CloseLane {
    /// Boxed: an open connection (most of them, most of the time) holds one pointer here.
    state: Mutex<Option<Box<CloseState>>>,
    /// A close was requested (or the connection killed): no more frames are accepted. Set
    /// under `state`'s lock, so that the first request wins; read without it.
    closing: AtomicBool,
    /// Signalled on the first close request (the connection task arms the close deadline).
    pub(super) requested_signal: Notify,
    /// Set when the connection is killed: the writer stops, reads return "closed".
    killed: AtomicBool,
    /// An abortive close was requested: the writer drops what it holds.
    aborting: AtomicBool,
}

impl Conn {
    /// Asks for the connection to be closed with `code` and `reason`: the first request wins.
    /// Never waits; accepted even when the queue is full. Returns whether this request won.
    pub(crate) fn close(&self, code: u16, reason: &str, how: Closing) -> bool {
        let mut guard = lock(&self.close.state);
        if self.close.closing.load(Ordering::Acquire) {
            return false;
        }
        self.close.closing.store(true, Ordering::Release);
        if how == Closing::Abort {
            self.close.aborting.store(true, Ordering::Relaxed);
        }
        let state = guard.get_or_insert_default();
        state.closed_with = Some((code, reason.to_owned()));
        state.close = Some(CloseRequest {
            code,
            reason: reason.to_owned(),
            how,
        });
        drop(guard);
        self.writer.wake();
        self.close.requested_signal.notify_one();
        true
    }

    /// Waits for the first close request.
    pub(crate) fn close_requested(&self) -> tokio::sync::futures::Notified<'_> {
        self.close.requested_signal.notified()
    }

    /// Whether a close was requested (or the connection is gone).
    pub(crate) fn is_closing(&self) -> bool {
        self.close.closing.load(Ordering::Acquire)
    }

    /// The close code and reason the server sent, if it closed.
    pub(crate) fn closed_with(&self) -> Option<(u16, String)> {
        lock(&self.close.state).as_ref()?.closed_with.clone()
    }

    /// Ends the connection now: the writer stops, reads return "closed".
    pub(crate) fn kill(&self) {
        {
            let _state = lock(&self.close.state);
            self.close.closing.store(true, Ordering::Release);
        }
        self.close.killed.store(true, Ordering::Release);
        self.reader.wake();
        self.writer.wake();
        self.outbound.space.notify_waiters();
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.close.killed.load(Ordering::Acquire)
    }

    /// An abortive close was requested: what is queued is dropped.
    pub(super) fn is_aborting(&self) -> bool {
        self.close.aborting.load(Ordering::Relaxed)
    }

    /// Takes a close request, if any (a graceful close waits until everything is written).
    pub(super) fn take_close(&self, drained: bool) -> Option<CloseRequest> {
        let mut state = lock(&self.close.state);
        let close = &mut state.as_mut()?.close;
        match close {
            Some(request) if request.how == Closing::Abort || drained => close.take(),
            _ => None,
        }
    }

    /// Records the client's close (the first one counts).
    pub(crate) fn set_peer_close(&self, code: u16, reason: String) {
        let mut state = lock(&self.close.state);
        let first = !self.close.closing.load(Ordering::Acquire);
        let state = state.get_or_insert_default();
        if state.peer.is_none() {
            state.peer = Some(PeerClose {
                code,
                reason,
                first,
            });
        }
    }

    /// The client's close (code, reason), once read.
    pub(crate) fn peer_close(&self) -> Option<(u16, String)> {
        let state = lock(&self.close.state);
        let peer = state.as_ref()?.peer.as_ref()?;
        Some((peer.code, peer.reason.clone()))
    }

    /// The client's close, if the client closed first.
    pub(crate) fn closed_by_peer(&self) -> Option<(u16, String)> {
        let state = lock(&self.close.state);
        let peer = state.as_ref()?.peer.as_ref().filter(|p| p.first)?;
        Some((peer.code, peer.reason.clone()))
    }
}
