//! The axum router of an app, from its checked routes: each WebSocket route's GET goes to the
//! handshake, with the HTTP route that shares its path (if any) as the fallback for the other
//! methods.

use axum::Router;
use axum::extract::{Request, State};
use axum::routing::{MethodRouter, get};

use crate::App;
use crate::registry::{RouteRegistration, Routes};
use crate::ws;

pub(super) fn assemble(mut routes: Routes) -> Router<App> {
    let mut router = Router::new();
    for registration in routes.ws.iter().copied() {
        let shared = routes.shared.remove(registration.axum_path);
        router = router.route(registration.axum_path, websocket(registration, shared));
    }
    for http in routes.http {
        router = router.route(&http.path, http.method_router);
    }
    router
}

/// GET: the handshake; other methods: the HTTP route on the same path, if any.
fn websocket(
    registration: &'static RouteRegistration,
    shared: Option<MethodRouter<App>>,
) -> MethodRouter<App> {
    let route = &registration.route;
    let handshake =
        get(move |State(app): State<App>, request: Request| ws::handle(route, app, request));
    match shared {
        Some(http) => handshake.fallback(http),
        None => handshake,
    }
}
