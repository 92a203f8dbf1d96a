//! Events inside a namespace, as in the seed's `app.events.namespace("websocket")`:
//!
//! - `GET /ws` (WebSocket): each text message is emitted through the `websocket` namespace view
//!   as `message.received` (the full name is `websocket:message.received`).
//! - `#[on("message.received", namespace = "websocket")]` answers the sender.
//! - `#[on("**", namespace = "websocket")]` sees every event of the namespace.
//! - `GET /events`: how many events the namespace saw, and the bus's metrics.
//!
//! Run it: `cargo run -p switchboard-examples --example namespaced`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use switchboard::axum::Json;
use switchboard::axum::routing::get;
use switchboard::prelude::*;

#[derive(Clone, Serialize, Deserialize)]
struct Received {
    /// The sender's channel: a live handle for typed listeners, its id in JSON.
    #[serde(skip_deserializing)]
    channel: Option<Channel>,
    text: String,
}

/// Events of the `websocket` namespace seen so far.
#[derive(Clone, Default)]
struct Seen(Arc<AtomicU64>);

#[ws_route("/ws")]
async fn socket(mut ws: WebSocket, events: Events) -> Result<(), WsError> {
    ws.accept().await?;
    let websocket = events.namespace("websocket");
    websocket.emit("connected", json!({ "id": ws.id() })).await;
    while let Some(text) = ws.receive_text().await? {
        let received = Received {
            channel: Some(ws.channel()),
            text,
        };
        websocket.emit("message.received", received).await;
    }
    websocket
        .emit("disconnected", json!({ "id": ws.id() }))
        .await;
    Ok(())
}

#[on("message.received", namespace = "websocket")]
async fn answer(received: Received) -> Result<(), WsError> {
    if let Some(channel) = &received.channel {
        channel
            .send_json(&json!({ "echo": received.text, "event": "websocket:message.received" }))
            .await?;
    }
    Ok(())
}

#[on("**", namespace = "websocket", priority = high)]
fn count(State(seen): State<Seen>, meta: EventMeta) {
    debug_assert!(meta.name.starts_with("websocket"));
    seen.0.fetch_add(1, Ordering::Relaxed);
}

async fn seen(State(seen): State<Seen>, events: Events) -> Json<Value> {
    let received = events
        .metrics("websocket:message.received")
        .map_or(0, |m| m.emits);
    Json(json!({ "seen": seen.0.load(Ordering::Relaxed), "messages": received }))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    switchboard_examples::run(|app| {
        app.state(Seen::default())
            .route("/events", get(seen))
            .route(
                "/",
                switchboard_examples::about(
                    "namespaced: connect a WebSocket to /ws and send text; GET /events counts \
                     the events of the `websocket` namespace",
                ),
            )
    })
    .await
}
