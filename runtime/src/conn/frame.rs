use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

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
        FRAME_OVERHEAD + self.len()
    }

    /// The payload's length in bytes.
    pub(crate) fn len(&self) -> usize {
        match self {
            Frame::Text(t) | Frame::Json(t) => t.len(),
            Frame::Binary(b) => b.len(),
        }
    }

    /// The frame's opcode (1 text, 2 binary) and payload on the wire; `binary`: the channel's
    /// payload type is bytes.
    pub(super) fn wire(&self, binary: bool) -> (u8, &[u8]) {
        const TEXT: u8 = 1;
        const BINARY: u8 = 2;
        match self {
            Frame::Json(t) if binary => (BINARY, t.as_bytes()),
            Frame::Text(t) | Frame::Json(t) => (TEXT, t.as_bytes()),
            Frame::Binary(b) => (BINARY, b),
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
