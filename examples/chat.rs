//! The chat application of the seed, with recovery after a reconnect in a cluster:
//!
//! - `GET /chat/{room}` (WebSocket): joins group `chat_{room}`; every JSON message the client
//!   sends is emitted as `room.message` with `{"room": room, "message": msg}`, and the listener
//!   sends it to every member of the room, the sender included.
//! - In a cluster (`SWITCHBOARD_BROKER_URL` or `SWITCHBOARD_REDIS_URL` set), or with `SWITCHBOARD_RECOVERY=1`, rooms are
//!   recoverable groups (`SWITCHBOARD_RECOVERY=0` turns it off): members get each message in
//!   an envelope `{"group": "chat_<room>", "epoch": .., "offset": .., "data": {"room": ..,
//!   "message": ..}}`, and a client that comes back with `?since=chat_<room>:EPOCH:OFFSET`
//!   gets what it missed first. After joining, a client gets the join report `{"group": ..,
//!   "position": "EPOCH:OFFSET", "recovery": "fresh" | "recovered" | "not_recoverable",
//!   "reason": ..}`. Otherwise (in one process, by default) messages are bare, as in the seed.
//! - A client that gives its name (`/chat/{room}?name=alice`, as the page does) is also in
//!   the room's presence group `who_{room}`: it gets the roster, `{"roster": {"group": ..,
//!   "members": [..], "next": ..}}`, then the group's diffs, `{"presence": {"group": ..,
//!   "joins": [..], "leaves": [..]}}`, as people come and go (on any server of a cluster).
//! - `GET /rooms/{room}/who`: `{"connections": n, "users": n, "members": [..], "next": ..}`.
//! - `GET /stats`: `{"connections": n, "groups": {"chat_<room>": members, ..}}` (this server).
//! - `GET /cluster`: the rooms of every server, when it runs in a cluster.
//! - `GET /`: a page to chat from a browser.
//!
//! Run it: `cargo run -p switchboard-examples --example chat`, then open http://127.0.0.1:8000.
//!
//! With `SWITCHBOARD_BROKER_URL` set (`redis://..`, `nats://..`) it joins the cluster of every
//! chat server using that broker: a message sent to a room on one server reaches its members on
//! all of them.

use serde::{Deserialize, Serialize};
use switchboard::axum::Json;
use switchboard::axum::extract::Path;
use switchboard::axum::response::Html;
use switchboard::axum::routing::get;
use switchboard::channel::{MemberInfo, Position};
use switchboard::prelude::*;

/// The event `room.message`, typed: the type names it, so neither the emit nor the listener
/// writes (or can mistype) the name. Emitted as itself, so the listener gets it without a
/// JSON round trip.
#[derive(Event, Clone, Serialize, Deserialize)]
#[event("room.message")]
struct RoomMessage {
    room: String,
    message: Value,
}

/// Whether the rooms are recoverable (in a cluster, or with `SWITCHBOARD_RECOVERY=1`).
#[derive(Clone, Copy)]
struct Rooms {
    recoverable: bool,
}

#[ws_route("/chat/{room}")]
async fn chat_room(
    mut ws: WebSocket,
    room: String,
    app: App,
    State(rooms): State<Rooms>,
) -> Result<(), WsError> {
    ws.accept().await?;
    let channel = Channel::new(&ws);
    // Boxed: the join's state is not part of the handler's for the life of the connection
    // (every idle connection would carry it).
    Box::pin(join(&ws, &app, &channel, &room, rooms)).await?;
    if let Some(name) = ws.query_param("name") {
        Box::pin(show_up(&ws, &app, &channel, &room, &name)).await?;
    }
    while let Some(message) = ws.receive_json::<Value>().await? {
        let msg = RoomMessage {
            room: room.clone(),
            message,
        };
        // Boxed: the emit's state is not part of the handler's for the life of the
        // connection (every idle connection would carry it).
        Box::pin(app.events().emit_event(msg)).await;
    }
    Ok(()) // the channel leaves its group when the connection ends
}

/// Joins the room's group: from the client's position when the rooms are recoverable (and
/// answers with the join report), as the seed does otherwise.
async fn join(
    ws: &WebSocket,
    app: &App,
    channel: &Channel,
    room: &str,
    rooms: Rooms,
) -> Result<(), WsError> {
    let group = format!("chat_{room}");
    let joined = if rooms.recoverable {
        // A client coming back says where it was: `?since=GROUP:EPOCH:OFFSET`.
        let since =
            Position::from_query(ws, &group).map_err(|e| WsError::close(4400, e.to_string()))?;
        app.channels()
            .add_channel_to_group_from(channel, &group, since.as_ref())
            .await
            .map(Some)
    } else {
        // The seed's bare messages, as before.
        app.channels()
            .add_channel_to_group(channel, &group)
            .await
            .map(|_| None)
    };
    match joined {
        // Where the room's stream stood, and whether what the client missed was recovered
        // (it came first); the client re-syncs when it was not.
        Ok(Some(joined)) => ws.send_json(&joined).await,
        Ok(None) => Ok(()),
        Err(e) if e.kind() == switchboard::ErrorKind::Broker => {
            // In a cluster whose Redis is unreachable: the room still works on this server
            // (without recovery), and the broker subscribes it to the other servers when
            // Redis is back.
            eprintln!("room {room}: {e}");
            if rooms.recoverable {
                let _ = app.channels().add_channel_to_group(channel, &group).await;
            }
            Ok(())
        }
        Err(e) => Err(WsError::close(close_code::POLICY_VIOLATION, e.to_string())),
    }
}

/// Who is in the room: a client that gives its name (`?name=`, as the page does) joins the
/// room's presence group `who_{room}` as that user, and gets the roster,
/// `{"roster": {"group": "who_<room>", "members": [MEMBER, ..], "next": null}}`; then the
/// group's diffs keep it current (see `switchboard::channel::presence`). Clients without a
/// name (the fan-out harness's) are in the room but not in its roster.
async fn show_up(
    ws: &WebSocket,
    app: &App,
    channel: &Channel,
    room: &str,
    name: &str,
) -> Result<(), WsError> {
    let group = format!("who_{room}");
    let refuse = |e: switchboard::Error| WsError::close(4400, e.to_string());
    let me = MemberInfo::user(name)
        .with_data(json!({ "name": name }))
        .map_err(refuse)?;
    let channels = app.channels();
    channels
        .add_channel_to_group_as(channel, &group, me)
        .await
        .map_err(refuse)?;
    match channels.presence(&group).await {
        Ok(roster) => {
            ws.send_json(&json!({ "roster": {
                "group": group, "members": roster.members, "next": roster.next,
            }}))
            .await
        }
        // In a cluster whose Redis is unreachable: no roster for now; the diffs come back
        // with Redis.
        Err(e) => {
            eprintln!("room {room}: no roster: {e}");
            Ok(())
        }
    }
}

/// `GET /rooms/{room}/who`: the room's presence counts and the first page of its roster.
async fn who(app: App, Path(room): Path<String>) -> Json<Value> {
    let group = format!("who_{room}");
    let channels = app.channels();
    match (
        channels.presence_stats(&group).await,
        channels.presence(&group).await,
    ) {
        (Ok(stats), Ok(page)) => Json(json!({
            "connections": stats.connections, "users": stats.users,
            "members": page.members, "next": page.next,
        })),
        (Err(e), _) | (_, Err(e)) => Json(json!({ "error": e.to_string() })),
    }
}

#[on(RoomMessage)]
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
    // Recoverable rooms in a cluster (a client that drops, or whose server restarts, gets
    // what it missed on any server); in one process the rooms keep the seed's bare messages
    // unless asked. SWITCHBOARD_RECOVERY=1 or 0 says so either way.
    let recoverable = match std::env::var("SWITCHBOARD_RECOVERY").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        Ok(other) => {
            eprintln!("error: SWITCHBOARD_RECOVERY={other}: expected 1 (on) or 0 (off)");
            return std::process::ExitCode::FAILURE;
        }
        Err(_) => ["SWITCHBOARD_BROKER_URL", "SWITCHBOARD_REDIS_URL"]
            .iter()
            .any(|name| std::env::var(name).is_ok_and(|url| !url.is_empty())),
    };
    switchboard_examples::run(|app| {
        let app = app
            .state(Rooms { recoverable })
            .route("/stats", get(stats))
            .route("/cluster", get(cluster))
            .route("/rooms/{room}/who", get(who))
            .route("/", get(page))
            // Who is in each room, kept current for the named clients.
            .presence_groups("who_*")
            .presence_diffs("who_*");
        if recoverable {
            // Every room keeps its last messages with positions: a client that drops gets
            // what it missed when it comes back (across servers, in a cluster).
            app.recoverable_groups("chat_*")
        } else {
            app
        }
    })
    .await
}
