//! From an HTTP request to a running connection.
//!
//! axum's `on_upgrade` sends the 101 before its callback runs, so the handler could not decide
//! the handshake from inside it. Instead the handler's future is polled here, inside the HTTP
//! handler, until it accepts (the 101 is returned with what it chose, and the socket is handed
//! to the same future once hyper completes the upgrade), refuses (403, or 503 for 1013),
//! returns or panics (500).

use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, RawPathParams, Request};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::Instrument;

use super::handler::{HandlerFailure, Route, WsRequest, WsStart, not_found};
use super::head::Head;
use super::limits::Limiter;
use super::session::{Handler, Session};
use super::socket::{Decision, Handshake, WebSocket};
use crate::App;
use crate::conn::{Conn, ConnCounters, Refused, Slot, close_code};
use crate::event::panic_message;

/// The axum handler of every WebSocket route.
pub(crate) async fn handle(route: &'static Route, app: App, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let upgrade = match check(route, &app, &mut parts).await {
        Ok(upgrade) => upgrade,
        Err(response) => return response,
    };
    let path = parts.uri.path().to_owned();
    let conn = Conn::new(app.ws().conn.clone());
    // Everything about this connection from here on (the handshake, the handler, the close)
    // is logged inside its span.
    let span = tracing::debug_span!(
        "connection",
        route = %route.path,
        path = %path,
        id = %conn.id,
        peer = tracing::field::Empty,
    );
    if let Some(client) = upgrade.client {
        span.record("peer", tracing::field::display(client));
    }
    decide(route, app, parts, upgrade, path, conn)
        .instrument(span)
        .await
}

/// Runs the handler until it accepts (the 101, and the session goes on in a task of its own)
/// or refuses.
async fn decide(
    route: &'static Route,
    app: App,
    parts: Parts,
    upgrade: Upgrade,
    path: String,
    conn: Arc<Conn>,
) -> Response {
    let head = Head::new(&parts, upgrade.params, upgrade.client);
    let limiter = app.ws().limit_for(route.path).map(Limiter::new);
    let (ws, handshake) = WebSocket::pending(conn.clone(), head, app.clone(), limiter);
    let request = WsRequest {
        parts,
        app: app.clone(),
        ws,
    };
    let mut handler = match start(route, request).await {
        Ok(handler) => handler,
        Err(response) => return response,
    };
    let decided = tokio::time::timeout(
        app.ws().handshake_timeout,
        run_until_decided(&mut handler, &handshake),
    )
    .await;
    let Ok(ended) = decided else {
        // The handler is dropped with this request: it gave no answer in time.
        ConnCounters::count(&app.ws().conn.counters.handshake_timeouts);
        tracing::warn!(
            path = route.path,
            "handler neither accepted nor refused within handshake_timeout"
        );
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the server did not answer the handshake in time",
        )
            .into_response();
    };
    match handshake.take_decision() {
        Some(Decision::Accept { protocol, headers }) => {
            let response = switching_protocols(&upgrade.key, protocol, headers);
            let session = Session {
                route: route.path,
                path,
                app: app.clone(),
                conn,
                client: upgrade.client,
                handshake: Some(handshake),
                on_upgrade: Some(upgrade.on_upgrade),
                handler,
                _slot: upgrade.slot,
            };
            tracing::debug!(status = 101, "handshake accepted");
            app.tasks()
                .spawn(session.run().instrument(tracing::Span::current()));
            response
        }
        Some(Decision::Refuse { code, reason }) => {
            tracing::debug!(code, reason, "handshake refused by the handler");
            if ended.is_none() {
                // The rest of the handler runs on, without a connection.
                app.tasks().spawn(async move {
                    let _ = handler.await;
                });
            }
            refusal(code, &reason)
        }
        None => undecided(route, ended),
    }
}

/// What a request that may upgrade brings: its path parameters, key, place under the cap,
/// upgrade and peer.
struct Upgrade {
    params: Vec<(Box<str>, String)>,
    key: HeaderValue,
    slot: Slot,
    on_upgrade: OnUpgrade,
    client: Option<SocketAddr>,
}

/// Everything decided before the handler runs: the route matches, the request asks for a
/// WebSocket, the app takes connections from this origin and has room for one more.
async fn check(route: &Route, app: &App, parts: &mut Parts) -> Result<Upgrade, Response> {
    let max_head = app.ws().max_request_head;
    if head_len(parts) > max_head {
        // Under a server of the user's own, which read it without this bound.
        tracing::debug!(
            max_head,
            "handshake refused: request head over max_request_head"
        );
        return Err((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large",
        )
            .into_response());
    }
    let params = path_params(route, parts).await?;
    let key = upgrade_key(&parts.headers, parts.version)?;
    if app.shutdown_token().is_cancelled() {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response());
    }
    let origin = parts.headers.get(header::ORIGIN);
    if let Err(why) = app
        .ws()
        .origins
        .check(origin, parts.headers.get(header::HOST))
    {
        if let Some(skipped) = app.ws().conn.logs.refusals.allow() {
            tracing::warn!(path = route.path, skipped, "handshake refused: {why}");
        }
        return Err((StatusCode::FORBIDDEN, "origin not allowed").into_response());
    }
    let client = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let address = app.ws().client_address(client, &parts.headers);
    let slot = app
        .connections()
        .reserve(address)
        .map_err(|refused| refusal_for(app, refused, address))?;
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "this connection cannot be upgraded (WebSocket needs HTTP/1.1)",
        )
            .into_response());
    };
    Ok(Upgrade {
        params,
        key,
        slot,
        on_upgrade,
        client,
    })
}

/// The size of the request head as sent: `GET /path HTTP/1.1`, and a `name: value` line per
/// header.
fn head_len(parts: &Parts) -> usize {
    let target = parts
        .uri
        .path_and_query()
        .map_or(1, |target| target.as_str().len());
    let request_line = parts.method.as_str().len() + target + 12;
    let headers: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    request_line + headers + 2
}

/// The answer to a handshake refused by the connection limits (counted).
fn refusal_for(app: &App, refused: Refused, address: Option<IpAddr>) -> Response {
    let counters = &app.ws().conn.counters;
    if let Some(skipped) = app.ws().conn.logs.refusals.allow() {
        let limit = match refused {
            Refused::Full => "max_connections",
            Refused::PerAddress => "max_connections_per_address",
            Refused::Rate => "max_new_connections_per_second",
        };
        tracing::warn!(
            ?address,
            limit,
            skipped,
            "handshake refused: {limit} reached"
        );
    }
    match refused {
        Refused::Full => {
            ConnCounters::count(&counters.refused_full);
            (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response()
        }
        Refused::PerAddress => {
            ConnCounters::count(&counters.refused_per_address);
            (
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from this address",
            )
                .into_response()
        }
        Refused::Rate => {
            ConnCounters::count(&counters.refused_rate);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "too many new connections: try again later",
            )
                .into_response()
        }
    }
}

/// Runs the route's extractors: the handler's future, or the response that refuses.
async fn start(route: &Route, request: WsRequest) -> Result<Handler, Response> {
    match AssertUnwindSafe((route.handler)(request))
        .catch_unwind()
        .await
    {
        Ok(WsStart::Run(handler)) => Ok(AssertUnwindSafe(handler).catch_unwind()),
        Ok(WsStart::Reject(response)) => Err(response),
        Err(panic) => {
            tracing::error!(
                path = route.path,
                "extracting the parameters panicked: {}",
                panic_message(&*panic)
            );
            Err(internal_error())
        }
    }
}

/// Runs the handler until it accepts or refuses (`None`), or ends before deciding.
async fn run_until_decided(
    handler: &mut Handler,
    handshake: &Handshake,
) -> Option<<Handler as std::future::Future>::Output> {
    poll_fn(|cx| match handler.poll_unpin(cx) {
        Poll::Ready(result) => Poll::Ready(Some(result)),
        Poll::Pending if handshake.is_decided() => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    })
    .await
}

/// The answer to a handler that ended without accepting or refusing.
fn undecided(route: &Route, ended: Option<<Handler as std::future::Future>::Output>) -> Response {
    match ended {
        Some(Ok(Err(failure))) => failed_before_accepting(route, failure),
        Some(Ok(Ok(()))) => {
            tracing::warn!(
                path = route.path,
                "handler returned without accepting or refusing the connection"
            );
            internal_error()
        }
        Some(Err(panic)) => {
            tracing::error!(
                path = route.path,
                "handler panicked before accepting: {}",
                panic_message(&*panic)
            );
            internal_error()
        }
        None => internal_error(),
    }
}

fn failed_before_accepting(route: &Route, failure: HandlerFailure) -> Response {
    tracing::debug!(
        path = route.path,
        "handler failed before accepting: {}",
        failure.message
    );
    refusal(failure.code, &failure.reason)
}

/// The path parameters, percent-decoded; a value its converter refuses is no match (404).
async fn path_params(
    route: &Route,
    parts: &mut Parts,
) -> Result<Vec<(Box<str>, String)>, Response> {
    if route.params.is_empty() {
        return Ok(Vec::new());
    }
    let raw = RawPathParams::from_request_parts(parts, &())
        .await
        .map_err(IntoResponse::into_response)?;
    let mut params = Vec::with_capacity(route.params.len());
    for (name, value) in &raw {
        if let Some((_, converter)) = route.params.iter().find(|(n, _)| *n == name)
            && !converter.accepts(value)
        {
            return Err(not_found());
        }
        params.push((name.into(), value.to_owned()));
    }
    Ok(params)
}

/// Checks that the request asks for a WebSocket upgrade; returns its key.
#[allow(clippy::result_large_err)] // the error is the response, built once per refusal
fn upgrade_key(headers: &HeaderMap, version: http::Version) -> Result<HeaderValue, Response> {
    let upgrade_required = |message: &'static str| {
        (
            StatusCode::UPGRADE_REQUIRED,
            [
                (header::UPGRADE, "websocket"),
                (header::SEC_WEBSOCKET_VERSION, "13"),
            ],
            message,
        )
            .into_response()
    };
    if version > http::Version::HTTP_11 {
        return Err(upgrade_required("WebSocket needs HTTP/1.1"));
    }
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(upgrade_required(
            "this is a WebSocket endpoint: upgrade required",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        return Err(upgrade_required(
            "unsupported WebSocket version (expected 13)",
        ));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .cloned()
        .ok_or_else(|| (StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key").into_response())
}

fn switching_protocols(
    key: &HeaderValue,
    protocol: Option<HeaderValue>,
    extra: HeaderMap,
) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.extend(extra);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let accept = derive_accept_key(key.as_bytes());
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    if let Some(protocol) = protocol {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
}

/// The HTTP answer to a handshake refused with a close code: 503 for "try again later", 500
/// for "internal error", 403 otherwise.
fn refusal(code: u16, reason: &str) -> Response {
    let status = match code {
        close_code::TRY_AGAIN_LATER => StatusCode::SERVICE_UNAVAILABLE,
        close_code::INTERNAL_ERROR => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::FORBIDDEN,
    };
    (status, reason.to_owned()).into_response()
}

fn internal_error() -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}
