//! The live admin page: one HTML page (no build step) and a WebSocket of its own that pushes
//! the app's state every second: connections, traffic, groups (the largest, searchable),
//! drops and slow consumers, the broker, listeners per event.
//!
//! Both are refused (401) without the token given to `Builder::admin_route` (as `?token=`, as
//! `Authorization: Bearer ..`, or in the `HttpOnly` cookie the page sets when it is opened
//! with `?token=`: the page then drops the token from its address, and its WebSocket carries
//! the cookie, so the token stays out of browser history and access logs after the first
//! request), or when the extractor given to `Builder::admin_route_with` rejects the request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use http::request::Parts;
use http::{StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::metrics::Snapshot;
use crate::ws::handler::{BoxFuture, Route, WsRequest, WsStart};
use crate::{App, WebSocket, WsError};

/// Runs an extractor of the app's on a request head: whether it accepted it.
pub(crate) type Check =
    Arc<dyn for<'a> Fn(&'a mut Parts, &'a App) -> crate::broker::BoxFuture<'a, bool> + Send + Sync>;

/// Who may see the admin page.
#[derive(Clone)]
pub(crate) enum AdminAuth {
    /// Requests that carry this token.
    Token(Arc<str>),
    /// Requests an extractor of the app's accepts.
    Check(Check),
}

impl AdminAuth {
    /// Requests the extractor `E` accepts.
    pub(crate) fn extractor<E>() -> Self
    where
        E: axum::extract::FromRequestParts<App> + Send + 'static,
    {
        AdminAuth::Check(Arc::new(|parts, app| {
            Box::pin(async move { E::from_request_parts(parts, app).await.is_ok() })
        }))
    }
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminAuth::Token(_) => f.write_str("Token(***)"),
            AdminAuth::Check(_) => f.write_str("Check(..)"),
        }
    }
}

/// The admin page's settings and its open views.
#[derive(Debug)]
pub(crate) struct Admin {
    auth: AdminAuth,
    /// The template of its WebSocket route.
    socket: String,
    /// Admin WebSockets open now (left out of the connection count the page shows).
    viewers: AtomicUsize,
}

impl AdminAuth {
    async fn allows(&self, parts: &mut Parts, app: &App) -> bool {
        match self {
            AdminAuth::Check(check) => check(parts, app).await,
            AdminAuth::Token(token) => {
                let bearer = parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                let query = query_token(parts);
                let cookie = cookie_token(parts);
                [bearer.map(str::to_owned), query, cookie]
                    .into_iter()
                    .flatten()
                    .any(|given| same(given.as_bytes(), token.as_bytes()))
            }
        }
    }
}

/// The name of the cookie that carries the token.
const COOKIE: &str = "switchboard_admin";

/// The token in the request's admin cookie, if any.
fn cookie_token(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| {
            form_urlencoded::parse(format!("t={value}").as_bytes())
                .next()
                .map(|(_, token)| token.into_owned())
                .unwrap_or_default()
        })
}

/// Compares without stopping at the first difference (the time taken does not tell how much
/// of a guessed token was right).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Admin {
    pub(crate) fn new(auth: AdminAuth, socket: String) -> Self {
        Admin {
            auth,
            socket,
            viewers: AtomicUsize::new(0),
        }
    }

    /// Whether `route` (a route template) is the admin page's WebSocket.
    pub(crate) fn serves(&self, route: &str) -> bool {
        self.socket == route
    }
}

fn query_token(parts: &Parts) -> Option<String> {
    parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(key, _)| key == "token")
            .map(|(_, value)| value.into_owned())
    })
}

fn refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "the admin page needs its token: ?token=... or Authorization: Bearer ...\n",
    )
        .into_response()
}

/// `GET path`: the page.
pub(crate) fn page_route() -> MethodRouter<App> {
    get(|State(app): State<App>, request: Request| async move {
        let (mut parts, _) = request.into_parts();
        match app.admin() {
            Some(admin) if admin.auth.allows(&mut parts, &app).await => {
                // Not kept by caches, and no token leaks through a referrer.
                let page = (
                    [
                        (header::CACHE_CONTROL, "no-store"),
                        (header::REFERRER_POLICY, "no-referrer"),
                    ],
                    Html(include_str!("admin.html")),
                );
                match (&admin.auth, query_token(&parts)) {
                    // Opened with `?token=`: the cookie carries it from here on.
                    (AdminAuth::Token(_), Some(token)) => {
                        let value: String =
                            form_urlencoded::byte_serialize(token.as_bytes()).collect();
                        let cookie = format!(
                            "{COOKIE}={value}; Path={}; HttpOnly; SameSite=Strict",
                            parts.uri.path()
                        );
                        ([(header::SET_COOKIE, cookie)], page).into_response()
                    }
                    _ => page.into_response(),
                }
            }
            _ => refused(),
        }
    })
}

/// `GET path/ws`: the page's WebSocket, through the app's own handshake (so the connection
/// limits and the origin check apply to it too).
pub(crate) fn socket_route(path: &str) -> MethodRouter<App> {
    // One per admin route of the app, for the life of the process: a few bytes.
    let route: &'static Route = Box::leak(Box::new(Route {
        path: Box::leak(path.to_owned().into_boxed_str()),
        params: &[],
        handler: admin_socket,
    }));
    get(move |State(app): State<App>, request: Request| crate::ws::handle(route, app, request))
}

fn admin_socket(request: WsRequest) -> BoxFuture<WsStart> {
    Box::pin(async move {
        let (mut parts, app, ws) = request.into_parts();
        match app.admin() {
            Some(admin) if admin.auth.allows(&mut parts, &app).await => WsStart::run(view(ws, app)),
            _ => WsStart::reject(refused()),
        }
    })
}

/// What the page asks for: the groups whose name holds `search`, at most `top`.
#[derive(Debug, Deserialize)]
struct Ask {
    #[serde(default)]
    search: String,
    #[serde(default)]
    top: Option<usize>,
}

/// Pushes the app's state every second, filtered by what the page last asked.
async fn view(mut ws: WebSocket, app: App) -> Result<(), WsError> {
    ws.accept().await?;
    let Some(admin) = app.admin() else {
        return Ok(());
    };
    admin.viewers.fetch_add(1, Ordering::Relaxed);
    struct Leave<'a>(&'a AtomicUsize);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let _leave = Leave(&admin.viewers);
    let channel = ws.channel();
    let mut ask = Ask {
        search: String::new(),
        top: None,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            asked = ws.receive_json::<Ask>() => match asked? {
                Some(asked) => {
                    ask = asked;
                    channel.send_json(&state(&app, admin, &ask)).await?;
                }
                None => return Ok(()),
            },
            _ = tick.tick() => channel.send_json(&state(&app, admin, &ask)).await?,
        }
    }
}

/// The page's data: counters (the page turns them into rates), the largest groups, the
/// broker, listeners per event. Nothing secret: the broker is named by its redacted URL.
fn state(app: &App, admin: &Admin, ask: &Ask) -> Value {
    let s = Snapshot::of(app);
    let viewers = admin.viewers.load(Ordering::Relaxed);
    let top = ask.top.unwrap_or(20).clamp(1, 500);
    let mut groups = app.groups().list();
    if !ask.search.is_empty() {
        groups.retain(|(name, _)| name.contains(ask.search.as_str()));
    }
    let matching = groups.len();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    groups.truncate(top);
    let events = app.events();
    let listeners: Vec<Value> = app
        .bus()
        .names()
        .into_iter()
        .map(|name| {
            let count = events.listener_count(&name);
            json!([name, count])
        })
        .collect();
    let emits: Vec<Value> = s
        .events
        .iter()
        .map(|e| {
            json!([
                e.name.as_deref().unwrap_or(super::metrics::OTHER_EVENTS),
                e.emits,
                e.failures
            ])
        })
        .collect();
    json!({
        "connections": s.connections.saturating_sub(viewers),
        "admin_viewers": viewers,
        "received": s.traffic.received,
        "sent": s.traffic.sent,
        "received_bytes": s.traffic.received_bytes,
        "sent_bytes": s.traffic.sent_bytes,
        "groups": s.groups,
        "members": s.group_members,
        "top_groups": groups,
        "matching_groups": matching,
        "deliveries": s.deliveries,
        "dropped": s.dropped.iter().map(|(reason, n)| (reason.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "slow_consumer_closes": s.slow_consumer_closes,
        "disconnects": s.closed.iter().map(|(code, n)| (code.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "broker": {
            "name": app.broker().describe(),
            "up": s.broker_up,
            "queue": s.broker_queue_depth,
            "publish_failures": s.broker_publish_failures,
        },
        "listeners": listeners,
        "emits": emits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, bearer: Option<&str>) -> Parts {
        let mut request = http::Request::builder().uri(uri);
        if let Some(token) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(()).unwrap().into_parts().0
    }

    #[tokio::test]
    async fn the_token_is_checked_in_the_query_or_the_header() {
        let app = App::builder().only_module("none").build().unwrap();
        let auth = AdminAuth::Token("s3cret".into());
        let allows = |uri: &str, bearer: Option<&str>| {
            let mut head = parts(uri, bearer);
            let (auth, app) = (auth.clone(), app.clone());
            async move { auth.allows(&mut head, &app).await }
        };
        assert!(allows("/admin?token=s3cret", None).await);
        assert!(allows("/admin", Some("s3cret")).await);
        assert!(!allows("/admin", None).await);
        assert!(!allows("/admin?token=s3cre", None).await);
        assert!(!allows("/admin?token=s3cret2", Some("nope")).await);
        assert!(format!("{auth:?}") == "Token(***)");
    }
}
