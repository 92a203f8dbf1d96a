//! Every accepted form of `#[on]` and `#[once]`: parameters, return types, options.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};
use switchboard::prelude::*;

#[derive(Clone, Serialize, Deserialize)]
struct RoomMessage {
    room: String,
    message: Value,
}

/// Serialisable but not `Deserialize`: reaches typed listeners only.
#[derive(Clone, Serialize)]
struct Live {
    id: u32,
    #[serde(skip)]
    _handle: std::sync::Arc<u8>,
}

#[derive(Clone)]
struct Config;

#[on("room.message")]
async fn typed(_msg: RoomMessage, _app: App) {}

#[on("room.message", priority = highest)]
fn sync_json(_msg: Value) {}

#[on("live", priority = lowest, namespace = "ns")]
async fn not_deserialize(_live: Live, _meta: EventMeta) -> Result<(), String> {
    Ok(())
}

#[on("chat.*")]
async fn wildcard(_events: Events, State(_config): State<Config>) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

#[on("**", namespace = "websocket")]
fn everything() -> Result<ControlFlow<()>, std::fmt::Error> {
    Ok(ControlFlow::Break(()))
}

#[once("connection.init")]
async fn first_connection(_msg: Value) -> anyhow::Result<()> {
    Ok(())
}

#[on("multi.one")]
#[on("multi.two", priority = low)]
async fn two_events() {}

/// A raw identifier, a visibility, doc comments and other attributes, a `where` clause.
#[on("raw.ident")]
#[allow(clippy::unused_async)]
#[inline]
pub(crate) async fn r#match(_msg: Value)
where
    Value: Clone,
{
}

/// A name far longer than usual is still a name.
#[on("a.very.long.name.with.many.segments.that.goes.on.and.on.for.quite.a.while.before.it.ends.at.last")]
pub fn long_name() {}

/// Compiled out: the registration goes with it.
#[on("never.compiled")]
#[cfg(any())]
fn never_compiled(_msg: Value) {}

mod nested {
    pub(super) mod deeper {
        use switchboard::prelude::*;

        #[on("nested.deep")]
        pub(in crate::nested) fn deep(_app: App) {}

        #[once("nested.once")]
        pub async fn once_deep() {}
    }
}

fn main() {
    let app = App::builder()
        .only_module(module_path!())
        .state(Config)
        .build()
        .expect("the registrations are valid");
    assert_eq!(app.events().listener_count("room.message"), 2);
    assert_eq!(app.events().listener_count("ns:live"), 1);
    assert_eq!(app.events().listener_count("websocket:**"), 1);
    assert_eq!(app.events().listener_count("multi.two"), 1);
    assert_eq!(app.events().listener_count("raw.ident"), 1);
    assert_eq!(app.events().listener_count("nested.deep"), 1);
    assert_eq!(app.events().listener_count("nested.once"), 1);
    assert_eq!(app.events().listener_count("never.compiled"), 0);
    assert_eq!(
        app.events()
            .listener_count("a.very.long.name.with.many.segments.that.goes.on.and.on.for.quite.a.while.before.it.ends.at.last"),
        1
    );
}
