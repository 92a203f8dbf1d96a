//! Accepted forms of `#[ws_route]`: converters, parameter orders, extractors, return types.

use serde::Deserialize;
use switchboard::axum::extract::Query;
use switchboard::axum::http::HeaderMap;
use switchboard::prelude::*;

#[derive(Deserialize)]
struct Filter {
    _topic: Option<String>,
}

#[derive(Clone)]
struct Config;

/// A path parameter the handler does not take is allowed.
#[ws_route("/rooms/{room}/users/{user:int}")]
async fn unused_param(mut ws: WebSocket, user: u64) -> Result<(), WsError> {
    let _ = user;
    ws.accept().await
}

#[ws_route("/all/{a:str}/{b:int}/{c:float}/{d:uuid}/{e:slug}/{f:path}")]
async fn every_converter(
    a: String,
    b: i64,
    c: f64,
    d: uuid::Uuid,
    e: String,
    f: String,
    mut ws: WebSocket,
) -> anyhow::Result<()> {
    let _ = (a, b, c, d, e, f);
    ws.accept().await?;
    Ok(())
}

#[ws_route("/extractors")]
async fn extractors(
    Query(_filter): Query<Filter>,
    _headers: HeaderMap,
    State(_config): State<Config>,
    _app: App,
    _events: Events,
    mut ws: WebSocket,
) -> Result<(), String> {
    ws.accept().await.map_err(|e| e.to_string())
}

#[ws_route("/unit")]
async fn unit(mut ws: WebSocket) {
    let _ = ws.accept().await;
}

#[ws_route("/boxed")]
async fn boxed(mut ws: WebSocket) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    ws.accept().await?;
    Ok(())
}

/// A raw identifier as the name and as a path parameter, a visibility, attributes, `where`.
#[ws_route("/kinds/{type}")]
#[allow(clippy::unused_async)]
pub(crate) async fn r#type(mut ws: WebSocket, r#type: String) -> Result<(), WsError>
where
    String: Clone,
{
    let _ = r#type;
    ws.accept().await
}

/// Compiled out: the route goes with it.
#[ws_route("/never")]
#[cfg(any())]
async fn never(mut ws: WebSocket) {}

mod nested {
    pub mod deeper {
        use switchboard::prelude::*;

        /// Documented.
        #[ws_route("/nested/deep")]
        pub async fn deep(mut ws: WebSocket, _app: App) -> Result<(), WsError> {
            ws.accept().await
        }
    }
}

fn main() {
    App::builder()
        .only_module(module_path!())
        .state(Config)
        .build()
        .expect("the routes are valid and do not conflict");
}
