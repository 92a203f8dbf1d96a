//! Notifications pushed to a group from an HTTP request, as in the seed:
//!
//! - `GET /notifications` (WebSocket): joins group `notifications`.
//! - `POST /notifications` with a JSON body: emits `notification.created`; the listener sends it
//!   to the group. The response says how many listeners ran.
//!
//! Run it: `cargo run -p switchboard-examples --example notifications`, connect a WebSocket
//! client to `ws://127.0.0.1:8000/notifications`, then
//! `curl -d '{"text":"hi"}' -H 'content-type: application/json' http://127.0.0.1:8000/notifications`.

use switchboard::axum::Json;
use switchboard::axum::routing::post;
use switchboard::prelude::*;

#[ws_route("/notifications")]
async fn subscribe(mut ws: WebSocket, channels: ChannelBox) -> Result<(), WsError> {
    ws.accept().await?;
    channels
        .add_channel_to_group(&ws.channel(), "notifications")
        .await?;
    // Nothing to read but the close: the group sends, the connection listens.
    while ws.receive().await?.is_some() {}
    Ok(())
}

#[on("notification.created")]
async fn push(notification: Value, channels: ChannelBox) -> Result<(), switchboard::Error> {
    channels.group_send("notifications", &notification).await?;
    Ok(())
}

async fn create(events: Events, Json(notification): Json<Value>) -> Json<Value> {
    let report = events.emit("notification.created", notification).await;
    Json(json!({ "listeners": report.listeners_executed, "failed": report.failed }))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    switchboard_examples::run(|app| {
        app.route("/notifications", post(create)).route(
            "/",
            switchboard_examples::about(
                "notifications: connect a WebSocket to /notifications, then POST JSON to \
                 /notifications to send it to every connected client",
            ),
        )
    })
    .await
}
