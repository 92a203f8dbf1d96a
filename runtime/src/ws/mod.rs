//! WebSocket routes: the [`WebSocket`] a handler gets, its errors and close codes, and what the
//! framework does around it. It sits on the connection core (which owns the socket, the
//! outbound queue and the writer) and on channel groups (a connection's [`Channel`]).
//!
//! - `socket`: the [`WebSocket`] API (accept or refuse, receive, send, connection-scoped
//!   listeners); `head`: what the request said, kept for the handler.
//! - `handler`: what a handler is to the framework: its route, its arguments, its return types.
//! - `handshake`: from an HTTP request to an accepted connection; `session`: the life of an
//!   accepted connection, to the end of its close handshake.
//! - `lifecycle`: the events a connection emits (connected, disconnected, handler failed).
//!
//! [`Channel`]: crate::Channel

pub(crate) mod handler;
mod handshake;
mod head;
mod lifecycle;
mod session;
mod socket;

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub use crate::conn::{ConnectionId, WsError, close_code};
pub use handler::{IntoHandlerResult, PathParam, error_kind};
pub(crate) use handshake::handle;
pub use lifecycle::{Connected, Disconnected, HandlerFailed};
pub use socket::{Accept, ClientClose, Message, WebSocket};

use crate::conn::ConnConfig;

/// The WebSocket settings of an app (see [`Builder`](crate::Builder)).
#[derive(Debug, Clone)]
pub(crate) struct WsSettings {
    pub(crate) tungstenite: WebSocketConfig,
    pub(crate) conn: Arc<ConnConfig>,
    pub(crate) origins: Option<Vec<String>>,
    pub(crate) shutdown_timeout: Duration,
}

impl WsSettings {
    /// Whether a request with this `Origin` may connect: always, without an allow-list or
    /// without the header (non-browser clients send none).
    pub(crate) fn origin_allowed(&self, origin: Option<&HeaderValue>) -> bool {
        match (&self.origins, origin) {
            (Some(allowed), Some(origin)) => origin
                .to_str()
                .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o))),
            _ => true,
        }
    }
}
