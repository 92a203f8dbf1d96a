//! The events a connection emits on the app's bus: connected, disconnected, handler error.
//! Payloads are built only when someone listens, and the emit is boxed: its future is not part
//! of every connection's task.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::App;
use crate::conn::{Conn, ConnectionId};
use crate::event::names;

/// Payload of [`names::WS_CONNECTED`]: a connection was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connected {
    /// The connection (and channel) id.
    pub id: ConnectionId,
    /// The request path.
    pub path: String,
    /// The peer's address, when known.
    pub client: Option<SocketAddr>,
}

/// Payload of [`names::WS_DISCONNECTED`]: a connection ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnected {
    /// The connection (and channel) id.
    pub id: ConnectionId,
    /// The request path.
    pub path: String,
    /// The close code: the client's if it closed first, else the server's.
    pub code: u16,
    /// The close reason.
    pub reason: String,
    /// Whether the client closed first (or went away).
    pub by_client: bool,
}

/// Payload of [`names::WS_ERROR`]: a handler returned an error or panicked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerFailed {
    /// The connection (and channel) id.
    pub id: ConnectionId,
    /// The request path.
    pub path: String,
    /// The peer's address, when known.
    pub client: Option<SocketAddr>,
    /// The error, as displayed.
    pub message: String,
    /// The code the connection is closed with.
    pub code: u16,
}

pub(crate) async fn connected(app: &App, conn: &Conn, path: &str, client: Option<SocketAddr>) {
    let events = app.events();
    if events.has_listeners(names::WS_CONNECTED) {
        let payload = Connected {
            id: conn.id,
            path: path.to_owned(),
            client,
        };
        Box::pin(events.emit(names::WS_CONNECTED, payload)).await;
    }
}

pub(crate) async fn disconnected(
    app: &App,
    conn: &Conn,
    path: &str,
    code: u16,
    reason: &str,
    by_client: bool,
) {
    let events = app.events();
    if events.has_listeners(names::WS_DISCONNECTED) {
        let payload = Disconnected {
            id: conn.id,
            path: path.to_owned(),
            code,
            reason: reason.to_owned(),
            by_client,
        };
        Box::pin(events.emit(names::WS_DISCONNECTED, payload)).await;
    }
}

pub(crate) async fn handler_failed(
    app: &App,
    conn: &Conn,
    path: &str,
    client: Option<SocketAddr>,
    message: &str,
    code: u16,
) {
    let events = app.events();
    if events.has_listeners(names::WS_ERROR) {
        let payload = HandlerFailed {
            id: conn.id,
            path: path.to_owned(),
            client,
            message: message.to_owned(),
            code,
        };
        Box::pin(events.emit(names::WS_ERROR, payload)).await;
    }
}

impl crate::Event for Connected {
    const NAME: &'static str = names::WS_CONNECTED;
}

impl crate::Event for Disconnected {
    const NAME: &'static str = names::WS_DISCONNECTED;
}

impl crate::Event for HandlerFailed {
    const NAME: &'static str = names::WS_ERROR;
}
