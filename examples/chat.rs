//! The chat application of the seed, line for line:
//!
//! - `GET /chat/{room}` (WebSocket): joins group `chat_{room}`; every JSON message the client
//!   sends is emitted as `room.message` with `{"room": room, "message": msg}`, and the listener
//!   sends it to every member of the room, the sender included.
//! - `GET /stats`: `{"connections": n, "groups": {"chat_<room>": members, ..}}`.
//! - `GET /`: a page to chat from a browser.
//!
//! Run it: `cargo run -p switchboard-examples --example chat`, then open http://127.0.0.1:8000.

use serde::{Deserialize, Serialize};
use switchboard::axum::Json;
use switchboard::axum::response::Html;
use switchboard::axum::routing::get;
use switchboard::prelude::*;

/// The payload of `room.message`: emitted as itself, so the listener gets it without a JSON
/// round trip.
#[derive(Clone, Serialize, Deserialize)]
struct RoomMessage {
    room: String,
    message: Value,
}

#[ws_route("/chat/{room}")]
async fn chat_room(mut ws: WebSocket, room: String, app: App) -> Result<(), WsError> {
    ws.accept().await?;
    let channel = Channel::new(&ws);
    app.channels()
        .add_channel_to_group(&channel, format!("chat_{room}"))
        .await?;
    while let Some(message) = ws.receive_json::<Value>().await? {
        let msg = RoomMessage {
            room: room.clone(),
            message,
        };
        app.events().emit("room.message", msg).await;
    }
    Ok(()) // the channel leaves its group when the connection ends
}

#[on("room.message")]
async fn broadcast(msg: RoomMessage, channels: ChannelBox) -> Result<(), switchboard::Error> {
    channels
        .group_send(format!("chat_{}", msg.room), &msg)
        .await?;
    Ok(())
}

async fn stats(app: App) -> Json<Value> {
    let groups: serde_json::Map<String, Value> = app
        .channels()
        .groups()
        .into_iter()
        .map(|(name, members)| (name, members.into()))
        .collect();
    Json(json!({ "connections": app.connection_count(), "groups": groups }))
}

async fn page() -> Html<&'static str> {
    Html(include_str!("chat.html"))
}

#[tokio::main]
async fn main() -> Result<(), switchboard::Error> {
    let app = App::builder()
        .route("/stats", get(stats))
        .route("/", get(page))
        .build()?;
    switchboard_examples::serve(app).await
}
