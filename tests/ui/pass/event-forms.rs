//! Typed events: derived names (with and without a namespace), `#[on(Type)]` listeners with
//! extractors, the framework's own typed events, and every typed emit.

use serde::{Deserialize, Serialize};
use switchboard::channel::{PresenceJoined, PresenceLeft};
use switchboard::prelude::*;
use switchboard::ws::{Connected, Disconnected, HandlerFailed};
use switchboard::ListenerFailed;

#[derive(Event, Clone, Serialize, Deserialize)]
#[event("room.message")]
struct RoomMessage {
    room: String,
}

#[derive(Event, Clone, Serialize)]
#[event("message", namespace = "chat")]
enum ChatEvent {
    Sent { id: u64 },
}

#[derive(Event, Clone, Serialize, Deserialize)]
#[event("user.login")]
struct Login;

#[on(RoomMessage)]
async fn typed(_msg: RoomMessage, _app: App, _meta: EventMeta) {}

#[on(RoomMessage, priority = high)]
fn typed_sync(_events: Events, _msg: RoomMessage) {}

#[on(ChatEvent)]
async fn namespaced(_event: ChatEvent) -> Result<(), String> {
    Ok(())
}

#[once(Login, namespace = "auth")]
async fn first_login(_login: Login, _channels: ChannelBox) {}

#[on(Connected)]
fn opened(_e: Connected) {}

#[on(Disconnected)]
async fn closed(_e: Disconnected) {}

#[on(HandlerFailed)]
async fn failed(_e: HandlerFailed) {}

#[on(ListenerFailed)]
fn listener_failed(_e: ListenerFailed) {}

#[on(PresenceJoined)]
fn joined(_e: PresenceJoined) {}

#[on(PresenceLeft)]
fn left(_e: PresenceLeft) {}

#[on(switchboard::broker::ClusterDown)]
fn down(_e: switchboard::broker::ClusterDown) {}

#[on(switchboard::broker::ClusterUp, priority = low)]
async fn up(_e: switchboard::broker::ClusterUp, _app: App) {}

// Strings keep working beside them.
#[on("room.message")]
fn by_name(_msg: Value) {}

#[allow(dead_code)]
async fn emits(events: Events) -> Result<(), switchboard::Error> {
    events
        .emit_event(RoomMessage {
            room: "lobby".into(),
        })
        .await;
    events.spawn_emit_event(ChatEvent::Sent { id: 1 })?;
    events.emit_cluster_event(Login).await;
    events.namespace("auth").emit_event(Login).await;
    Ok(())
}

fn main() {
    assert_eq!(<RoomMessage as Event>::NAME, "room.message");
    assert_eq!(<ChatEvent as Event>::NAME, "chat:message");
    assert_eq!(<Connected as Event>::NAME, "switchboard:ws.connected");
}
