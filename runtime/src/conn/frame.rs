use bytes::Bytes;
use tokio_tungstenite::tungstenite::{Message as WireMessage, Utf8Bytes};

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

    /// The wire message; `binary`: the channel's payload type is bytes.
    pub(super) fn into_wire(self, binary: bool) -> WireMessage {
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
