//! One-time events and connection-scoped listeners, as in the seed:
//!
//! - `GET /ws` (WebSocket): emits `connection.init` with the connection's channel.
//! - `#[once("connection.init")]` greets the connection it is given with `{"type": "welcome"}`,
//!   once per app: only the first connection is welcomed.
//! - Every connection also listens to `user.joined` for as long as it is open (a
//!   connection-scoped listener), so it hears about the connections that come after it.
//!
//! Run it: `cargo run -p switchboard-examples --example welcome`.

use serde::Serialize;
use switchboard::prelude::*;

/// The payload of `connection.init`: the channel itself (not `Deserialize`), handed to typed
/// listeners without serialisation.
#[derive(Clone, Serialize)]
struct ConnInit {
    channel: Channel,
}

#[ws_route("/ws")]
async fn socket(mut ws: WebSocket, events: Events) -> Result<(), WsError> {
    ws.accept().await?;
    let me = ws.channel();
    // Tell this connection about everyone who joins after it, while it is open.
    let listener = me.clone();
    ws.on("user.joined", move |joined: Value| {
        let channel = listener.clone();
        async move {
            if joined["id"] != json!(channel.id()) {
                let _ = channel
                    .send_json(&json!({ "type": "joined", "id": joined["id"] }))
                    .await;
            }
        }
    })?;
    events
        .emit(
            "connection.init",
            ConnInit {
                channel: me.clone(),
            },
        )
        .await;
    events.emit("user.joined", json!({ "id": me.id() })).await;
    while ws.receive().await?.is_some() {}
    Ok(())
}

#[once("connection.init")]
async fn welcome(init: ConnInit) -> Result<(), WsError> {
    init.channel.send_json(&json!({ "type": "welcome" })).await
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    switchboard_examples::run(|app| {
        app.route(
            "/",
            switchboard_examples::about(
                "welcome: connect WebSockets to /ws; the first is welcomed, each hears who \
                 joins after it",
            ),
        )
    })
    .await
}
