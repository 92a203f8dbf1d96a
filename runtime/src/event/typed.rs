//! Typed events: a payload type that names its event, so emits and listeners need no string.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use switchboard::prelude::*;
//!
//! #[derive(Event, Clone, Serialize, Deserialize)]
//! #[event("room.message")]
//! struct RoomMessage {
//!     room: String,
//!     text: String,
//! }
//!
//! #[on(RoomMessage)] // the name comes from the type; the payload must be a `RoomMessage`
//! async fn log(msg: RoomMessage, app: App) {
//!     println!("{}: {}", msg.room, msg.text);
//! }
//!
//! # async fn demo(app: App) {
//! app.events()
//!     .emit_event(RoomMessage { room: "lobby".into(), text: "hi".into() })
//!     .await;
//! // The same event by name, as before: typed listeners get it when the value fits.
//! app.events().emit("room.message", json!({"room": "lobby", "text": "hi"})).await;
//! # }
//! ```
//!
//! The name is checked at compile time by the same rules as `#[on]`'s; a listener of a typed
//! event whose payload parameter is not the event's type is a compile error on that
//! parameter.

use serde::Serialize;

use super::listener::kind;

/// A payload type that names its event: derive it with `#[derive(Event)]` and
/// `#[event("name")]` (or `#[event("name", namespace = "ns")]`: the event is `ns:name`).
///
/// Emit it with [`Events::emit_event`](crate::Events::emit_event) (also
/// [`spawn_emit_event`](crate::Events::spawn_emit_event) and
/// [`emit_cluster_event`](crate::Events::emit_cluster_event)), listen to it with
/// `#[on(TheType)]`. The framework's own events are typed too:
/// [`Connected`](crate::ws::Connected), [`Disconnected`](crate::ws::Disconnected),
/// [`HandlerFailed`](crate::ws::HandlerFailed), [`ListenerFailed`](crate::ListenerFailed),
/// [`ClusterDown`](crate::broker::ClusterDown), [`ClusterUp`](crate::broker::ClusterUp),
/// [`PresenceJoined`](crate::channel::PresenceJoined) and
/// [`PresenceLeft`](crate::channel::PresenceLeft).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event type",
    label = "not an event type",
    note = "derive it: `#[derive(Event, Clone, Serialize)]` with `#[event(\"room.message\")]`, or name the event with a string: `#[on(\"room.message\")]`"
)]
pub trait Event: EventPayload {
    /// The event's full name (`namespace:name` when the type gives a namespace).
    const NAME: &'static str;
}

/// What an event type must be: `Serialize + Clone + Send + Sync + 'static` (emitted as
/// itself to typed listeners, serialised once for the others).
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an event type: it must be `Serialize + Clone + Send + Sync + 'static`",
    label = "not `Serialize + Clone + Send + Sync + 'static`",
    note = "derive `Clone` and `serde::Serialize` beside `Event`: `#[derive(Event, Clone, serde::Serialize)]`; every field must be `Send + Sync` and own its data"
)]
pub trait EventPayload: Serialize + Clone + Send + Sync + 'static {}

#[diagnostic::do_not_recommend]
impl<T: Serialize + Clone + Send + Sync + 'static> EventPayload for T {}

/// Generated code's check of an event type's name: one exact name (a hand-written `Event`
/// impl is held to what the derive checks).
#[doc(hidden)]
pub const fn assert_exact_event_name(name: &str) {
    use switchboard_syntax::event_name::{Kind, check};
    match check(name, Kind::Pattern) {
        Ok(false) => {}
        Ok(true) => panic!("an event type names one event: its name has no wildcard"),
        Err(e) => panic!("{}", e.summary()),
    }
}

/// Checks, for a listener of the typed event `E`, that a parameter of type `T` (whose kind the
/// probe chose) is the event's own type or a context extractor.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "this listener of `{E}` takes `{T}` as its payload",
    label = "expected `{E}`",
    note = "a listener of a typed event takes the event's own type, and context extractors such as `App`, `Events`, `ChannelBox`, `State<T>` or `EventMeta`; to take another type, name the event with a string"
)]
pub trait PayloadOf<E, T> {}

impl<E, T> PayloadOf<E, T> for kind::Context {}
impl<E> PayloadOf<E, E> for kind::Cloned {}
impl<E> PayloadOf<E, E> for kind::Json {}
impl<E> PayloadOf<E, E> for kind::Typed {}

/// Generated code's check of one parameter of a typed listener (see [`PayloadOf`]).
#[doc(hidden)]
// No `E: Event` bound: a type that is not an event is reported once, where it is named.
pub const fn check_payload<E, T, K: PayloadOf<E, T>>(_kind: &K) {}
