//! From an HTTP request to a running connection.
//!
//! axum's `on_upgrade` sends the 101 before its callback runs, so the handler could not decide
//! the handshake from inside it. Instead the handler's future is polled here, inside the HTTP
//! handler, until it accepts (the 101 is returned with what it chose, and the socket is handed
//! to the same future once hyper completes the upgrade), refuses (403, or 503 for 1013),
//! returns or panics (500).

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, RawPathParams, Request};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::connection::{Closing, Conn, Socket, Transport, write_loop};
use super::route::{HandlerFailure, RouteRegistration, WsRequest, WsStart, not_found};
use super::socket::{Decision, Head, WebSocket};
use super::{close_code, lifecycle};
use crate::App;
use crate::channel::ChannelState;
use crate::event::panic_message;

/// The axum handler of every WebSocket route.
pub(crate) async fn handle(
    route: &'static RouteRegistration,
    app: App,
    request: Request,
) -> Response {
    let (mut parts, _body) = request.into_parts();
    let params = match path_params(route, &mut parts).await {
        Ok(params) => params,
        Err(response) => return response,
    };
    let key = match upgrade_key(&parts.headers, parts.version) {
        Ok(key) => key,
        Err(response) => return response,
    };
    if app.shutdown_token().is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    if !app.ws().origin_allowed(parts.headers.get(header::ORIGIN)) {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let Some(slot) = app.connections().reserve(&app) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    };
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "this connection cannot be upgraded (WebSocket needs HTTP/1.1)",
        )
            .into_response();
    };
    let client = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let path = parts.uri.path().to_owned();
    let conn = Conn::new(app.ws().conn.clone(), ChannelState::new(app.groups()));
    let head = Head::new(&parts, params, client);
    let (ws, handshake) = WebSocket::pending(conn.clone(), head, app.clone());

    let request = WsRequest {
        parts,
        app: app.clone(),
        ws,
    };
    let handler = match AssertUnwindSafe((route.handler)(request))
        .catch_unwind()
        .await
    {
        Ok(WsStart::Run(handler)) => handler,
        Ok(WsStart::Reject(response)) => return response,
        Err(panic) => {
            tracing::error!(
                path = route.path,
                "extracting the parameters panicked: {}",
                panic_message(&*panic)
            );
            return internal_error();
        }
    };

    // Run the handler until it decides (or ends).
    let mut handler = AssertUnwindSafe(handler).catch_unwind();
    let ended = poll_fn(|cx| match handler.poll_unpin(cx) {
        Poll::Ready(result) => Poll::Ready(Some(result)),
        Poll::Pending if handshake.is_decided() => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    })
    .await;

    match handshake.take_decision() {
        Some(Decision::Accept { protocol, headers }) => {
            let response = switching_protocols(&key, protocol, headers);
            let task = run(
                path,
                app.clone(),
                conn,
                client,
                handshake,
                on_upgrade,
                handler,
                slot,
            );
            app.tasks().spawn(task);
            response
        }
        Some(Decision::Refuse { code, reason }) => {
            if ended.is_none() {
                // The rest of the handler runs on, without a connection.
                app.tasks().spawn(async move {
                    let _ = handler.await;
                });
            }
            refusal(code, &reason)
        }
        None => match ended {
            Some(Ok(Err(failure))) => {
                tracing::debug!(
                    path = route.path,
                    "handler failed before accepting: {}",
                    failure.message
                );
                refusal(failure.code, &failure.reason)
            }
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
        },
    }
}

/// The path parameters, percent-decoded; a value its converter refuses is no match (404).
async fn path_params(
    route: &RouteRegistration,
    parts: &mut http::request::Parts,
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

type Handler = futures_util::future::CatchUnwind<
    AssertUnwindSafe<
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), HandlerFailure>> + Send>>,
    >,
>;

/// Leaves the app's registry (and the connection's groups) however the connection ends.
struct Registered {
    app: App,
    conn: Arc<Conn>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.conn.kill();
        self.app.groups().leave_all(&self.conn);
        self.app.connections().remove(&self.conn);
    }
}

/// The life of an accepted connection: upgrade, writer, the handler to its end, the close.
#[allow(clippy::too_many_arguments)]
async fn run(
    path: String,
    app: App,
    conn: Arc<Conn>,
    client: Option<SocketAddr>,
    handshake: Arc<super::socket::Handshake>,
    on_upgrade: OnUpgrade,
    mut handler: Handler,
    slot: super::registry::Slot,
) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(path, "upgrade failed: {e}");
            drop(handshake); // the handler's `accept()` returns an error
            let _ = handler.await;
            return;
        }
    };
    // Boxed: the stream under construction is not part of every connection's task.
    let socket = Socket::new(
        Box::pin(WebSocketStream::from_raw_socket(
            Transport::Upgraded(TokioIo::new(upgraded)),
            Role::Server,
            Some(app.ws().tungstenite),
        ))
        .await,
    );
    let _slot = slot;
    app.connections().insert(conn.clone());
    let _registered = Registered {
        app: app.clone(),
        conn: conn.clone(),
    };
    let writer = app.tasks().spawn(write_loop(conn.clone(), socket.clone()));
    if app.shutdown_token().is_cancelled() {
        // Upgraded while the app was closing its connections.
        conn.close(
            close_code::GOING_AWAY,
            "server shutting down",
            Closing::Graceful,
        );
    }
    if handshake.deliver(socket.clone()).is_err() {
        return;
    }
    drop(handshake);
    lifecycle::connected(&app, &conn, &path, client).await;

    let (code, reason) = match drive(&conn, &mut handler).await {
        Ok(Ok(())) => (close_code::NORMAL, String::new()),
        Ok(Err(failure)) => {
            tracing::debug!(path, %conn.id, failure.code, "handler failed: {}", failure.message);
            lifecycle::handler_error(&app, &conn, &path, client, &failure.message, failure.code)
                .await;
            (failure.code, failure.reason)
        }
        Err(panic) => {
            let message = format!("panicked: {}", panic_message(&*panic));
            tracing::error!(path, %conn.id, "handler {message}");
            lifecycle::handler_error(
                &app,
                &conn,
                &path,
                client,
                &message,
                close_code::INTERNAL_ERROR,
            )
            .await;
            (close_code::INTERNAL_ERROR, "internal error".to_owned())
        }
    };
    conn.close(code, &reason, Closing::Graceful);
    Box::pin(finish_close(&conn, &socket, writer)).await;
    conn.kill();
    let (code, reason, by_client) = match (conn.closed_by_peer(), conn.closed_with()) {
        (Some((code, reason)), _) => (code, reason, true),
        (None, Some((code, reason))) => (code, reason, false),
        (None, None) => (code, reason, false),
    };
    lifecycle::disconnected(&app, &conn, &path, code, &reason, by_client).await;
}

/// Runs the handler to its end; once a close is requested, the connection gets
/// `close_timeout` to finish before it is killed (a killed connection reads as closed, so the
/// handler's receive loop ends). The deadline's timer exists only once a close is requested.
async fn drive(conn: &Conn, handler: &mut Handler) -> <Handler as std::future::Future>::Output {
    let close_requested = conn.close_requested.notified();
    tokio::pin!(close_requested);
    let mut deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    poll_fn(|cx| {
        if let Poll::Ready(result) = handler.poll_unpin(cx) {
            return Poll::Ready(result);
        }
        if deadline.is_none() && close_requested.as_mut().poll(cx).is_ready() {
            deadline = Some(Box::pin(tokio::time::sleep(conn.config.close_timeout)));
        }
        if let Some(sleep) = &mut deadline
            && !conn.is_killed()
            && sleep.as_mut().poll(cx).is_ready()
        {
            conn.kill();
            // The handler's reads now return "closed": poll it again.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    })
    .await
}

/// Finishes the close within `close_timeout`: waits for the writer to send the close frame,
/// reads until the client answers it (or goes away), and after a read error reads what the
/// client still sends, so that the socket is closed with a FIN rather than a reset that could
/// destroy the close frame in flight.
async fn finish_close(conn: &Conn, socket: &Socket, writer: JoinHandle<()>) {
    let deadline = tokio::time::Instant::now() + conn.config.close_timeout;
    if tokio::time::timeout_at(deadline, writer).await.is_err() {
        conn.kill();
        return;
    }
    if conn.is_killed() {
        // An abortive close (or a dead writer): nothing to wait for.
        return;
    }
    let read_failed = conn.read_failed();
    let _ = tokio::time::timeout_at(deadline, async {
        while let Some(Ok(_)) = poll_fn(|cx| socket.poll_next(cx)).await {}
        if read_failed {
            while let Ok(false) = tokio::time::timeout(
                Duration::from_millis(50),
                poll_fn(|cx| socket.poll_discard(cx)),
            )
            .await
            {}
        }
    })
    .await;
}
