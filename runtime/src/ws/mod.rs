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

pub(crate) use origin::Origins;

pub(crate) mod handler;
mod handshake;
mod head;
mod lifecycle;
mod limits;
mod metrics;
mod origin;
mod session;
mod socket;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub use crate::conn::{ConnectionId, WsError, close_code};
pub use handler::{IntoHandlerResult, PathParam, error_kind};
pub(crate) use handshake::handle;
pub use lifecycle::{Connected, Disconnected, HandlerFailed};
pub use limits::{InboundLimit, RateLimitAction};
pub use metrics::ConnectionMetrics;
pub use socket::{Accept, ClientClose, Message, WebSocket};

use crate::conn::ConnConfig;

/// The WebSocket settings of an app (see [`Builder`](crate::Builder)).
#[derive(Debug, Clone)]
pub(crate) struct WsSettings {
    pub(crate) tungstenite: WebSocketConfig,
    pub(crate) conn: Arc<ConnConfig>,
    pub(crate) origins: Origins,
    pub(crate) shutdown_timeout: Duration,
    /// How long a served app keeps accepting, not ready, once shutdown starts.
    pub(crate) drain_delay: Duration,
    /// How long a handler may take to accept or refuse.
    pub(crate) handshake_timeout: Duration,
    /// How long a client may take to send its request head.
    pub(crate) request_head_timeout: Duration,
    /// The largest request head (request line and headers), in bytes.
    pub(crate) max_request_head: usize,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub(crate) trusted_proxies: Vec<IpAddr>,
    /// The inbound limit of every route without one of its own.
    pub(crate) inbound_limit: Option<InboundLimit>,
    /// Inbound limits by route template.
    pub(crate) route_limits: HashMap<String, InboundLimit>,
}

impl WsSettings {
    /// The inbound limit of the route with this template.
    pub(crate) fn limit_for(&self, template: &str) -> Option<&InboundLimit> {
        self.route_limits
            .get(template)
            .or(self.inbound_limit.as_ref())
    }

    /// The client's address: the peer's, or, when the peer is a trusted proxy, the last
    /// address of `X-Forwarded-For` that is not itself a trusted proxy.
    pub(crate) fn client_address(
        &self,
        peer: Option<SocketAddr>,
        headers: &HeaderMap,
    ) -> Option<IpAddr> {
        let peer = peer?.ip();
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        forwarded
            .into_iter()
            .rev()
            .find(|a| !self.trusted_proxies.contains(a))
            .or(Some(peer))
    }
}
