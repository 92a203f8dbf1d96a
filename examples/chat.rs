//! The chat application of the seed, line for line:
//!
//! - `GET /chat/{room}` (WebSocket): joins group `chat_{room}`; every JSON message the client
//!   sends is emitted as `room.message` with `{"room": room, "message": msg}`, and the listener
//!   sends it to every member of the room, the sender included.
//! - `GET /stats`: `{"connections": n, "groups": {"chat_<room>": members, ..}}` (this server).
//! - `GET /cluster`: the rooms of every server, when it runs in a cluster.
//! - `GET /`: a page to chat from a browser.
//!
//! Run it: `cargo run -p switchboard-examples --example chat`, then open http://127.0.0.1:8000.
//!
//! With `SWITCHBOARD_REDIS_URL` set it joins the cluster of every chat server using that Redis:
//! a message sent to a room on one server reaches its members on all of them.

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
    if let Err(e) = app
        .channels()
        .add_channel_to_group(&channel, format!("chat_{room}"))
        .await
    {
        // In a cluster whose Redis is unreachable: the room still works on this server, and
        // the broker subscribes it to the other servers when Redis is back.
        if e.kind() != switchboard::ErrorKind::Broker {
            return Err(WsError::close(close_code::POLICY_VIOLATION, e.to_string()));
        }
        eprintln!("room {room}: {e}");
    }
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

async fn cluster(app: App) -> Json<Value> {
    match app.channels().cluster_groups().await {
        Ok(groups) => {
            let groups: serde_json::Map<String, Value> = groups
                .into_iter()
                .map(|(name, members)| (name, members.into()))
                .collect();
            Json(json!({ "groups": groups }))
        }
        Err(e) => Json(json!({ "error": e.to_string() })),
    }
}

async fn page() -> Html<&'static str> {
    Html(include_str!("chat.html"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    switchboard_examples::run(|app| {
        app.route("/stats", get(stats))
            .route("/cluster", get(cluster))
            .route("/", get(page))
    })
    .await
}
