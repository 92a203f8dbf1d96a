//! Liveness and readiness.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::App;

/// `GET` of [`Builder::health_route`](crate::Builder::health_route): the process answers.
pub(crate) async fn health() -> &'static str {
    "ok\n"
}

/// `GET` of [`Builder::ready_route`](crate::Builder::ready_route): 200 when the app takes
/// connections, 503 with the reason when it does not.
pub(crate) async fn ready(app: App) -> Response {
    let connections = app.connection_count();
    match app.readiness() {
        Ok(()) => Json(json!({ "ready": true, "connections": connections })).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": reason, "connections": connections })),
        )
            .into_response(),
    }
}

impl App {
    /// Whether the app takes connections now: it is served (not only built), not shutting
    /// down, and its broker reaches the other servers (when it has one). `Err` says why not.
    ///
    /// This is what [`Builder::ready_route`](crate::Builder::ready_route) answers.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.is_started() {
            return Err("not serving yet".to_owned());
        }
        if self.shutdown_token().is_cancelled() {
            return Err("draining: the server is shutting down".to_owned());
        }
        let broker = self.broker();
        if !broker.is_up() {
            return Err(format!("broker unreachable ({})", broker.describe()));
        }
        Ok(())
    }
}
