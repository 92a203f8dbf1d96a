//! WebSocket routes: the `WebSocket` a handler gets, its errors and close codes, and what the
//! framework does around it (handshake, outbound queue and writer, keep-alive, lifecycle
//! events).

pub(crate) mod connection;
mod error;
pub(crate) mod handshake;
pub(crate) mod lifecycle;
pub(crate) mod outbox;
pub(crate) mod registry;
pub(crate) mod route;
mod socket;

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub use connection::ConnectionId;
pub use error::{WsError, close_code};
pub use lifecycle::{Connected, Disconnected, HandlerError};
pub use route::{IntoHandlerResult, PathParam, error_kind};
pub use socket::{Accept, ClientClose, Message, WebSocket};

/// The WebSocket settings of an app (see [`Builder`](crate::Builder)).
#[derive(Debug, Clone)]
pub(crate) struct WsSettings {
    pub(crate) tungstenite: WebSocketConfig,
    pub(crate) conn: Arc<connection::ConnConfig>,
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
