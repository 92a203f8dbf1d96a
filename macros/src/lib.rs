//! Attribute macros for [Switchboard](https://docs.rs/switchboard): `#[ws_route]`, `#[on]` and
//! `#[once]`.
//!
//! Use them through `switchboard` (`use switchboard::prelude::*;`), which re-exports them; the
//! code they generate names only `::switchboard::__private`.
//!
//! Each macro checks what it can at compile time (every mistake is a spanned error), emits the
//! function unchanged, and registers it with one `inventory::submit!` of a constant record that
//! `App::from_registry()` collects at startup.

mod event;
mod handler;
mod private;
mod route;

use proc_macro::TokenStream;

/// Registers an `async fn` (or a plain `fn`) as a listener of an event.
///
/// ```text
/// #[on("room.message")]
/// async fn broadcast(msg: RoomMessage, app: App) -> Result<(), switchboard::Error> { .. }
///
/// #[on("message.received", namespace = "websocket", priority = high)]
/// fn log(msg: serde_json::Value) { .. }
/// ```
///
/// The name may be a pattern: `*` matches one segment, `**` any number (`chat.*`,
/// `websocket:**`). It may also be a path to a `const` holding the name, named in
/// SCREAMING_SNAKE_CASE (`#[on(names::WS_ERROR)]`, `#[on(ROOM_MESSAGE)]`): the constant is
/// checked at compile time by the same rules. Options: `priority = highest | high | normal | low | lowest` (default
/// `normal`) and `namespace = "ns"` (the listener hears `ns:name`).
///
/// Parameters are the payload (the emitted type itself, any `DeserializeOwned` type, or
/// `serde_json::Value`) and context extractors (`App`, `Events`, `ChannelBox`, `State<T>`,
/// `EventMeta`), in any order. The return type is `()`, `Result<(), E>` with `E: Display`,
/// `ControlFlow<()>` (`Break` stops lower priorities) or `Result<ControlFlow<()>, E>`.
#[proc_macro_attribute]
pub fn on(args: TokenStream, item: TokenStream) -> TokenStream {
    event::expand(event::Kind::On, args.into(), item.into()).into()
}

/// Registers an `async fn` (or a plain `fn`) as a listener that runs at most once per app, even
/// when many tasks emit at the same moment. Takes the same arguments as [`macro@on`].
///
/// ```text
/// #[once("connection.init")]
/// async fn welcome(init: ConnInit) { .. }
/// ```
#[proc_macro_attribute]
pub fn once(args: TokenStream, item: TokenStream) -> TokenStream {
    event::expand(event::Kind::Once, args.into(), item.into()).into()
}

/// Registers an `async fn` as the handler of a WebSocket route.
///
/// ```text
/// #[ws_route("/chat/{room}")]
/// async fn chat_room(mut ws: WebSocket, room: String, app: App) -> Result<(), WsError> {
///     ws.accept().await?;
///     ..
/// }
/// ```
///
/// The path has static segments and parameters: `{name}`, or with one of Nexios' converters
/// `{name:int|float|str|path|uuid|slug}` (`path` takes the rest of the path, slashes included,
/// and must come last). A value that does not match its converter, or does not parse into the
/// parameter's type, is no match: 404, before any upgrade.
///
/// Parameters: the connection (`WebSocket`, exactly once); parameters named like a path
/// parameter, parsed with `FromStr`; and extractors (`App`, `Events`, `State<T>`, `Query<T>`,
/// `HeaderMap`, your own `FromRequestParts<App>` types), which run before the upgrade (a
/// rejection is their HTTP response). The return type is `()` or `Result<(), E>`.
#[proc_macro_attribute]
pub fn ws_route(args: TokenStream, item: TokenStream) -> TokenStream {
    route::expand(args.into(), item.into()).into()
}
