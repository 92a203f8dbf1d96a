//! Centralised error handling through events, as in the seed: handlers just fail; one listener
//! of `switchboard:ws.error` sees every failure, with the path, the client and the message.
//!
//! - `GET /orders` (WebSocket): expects `{"item": "...", "quantity": n}` messages; a quantity of
//!   0 is refused with close code 4422; invalid JSON closes with 1007; anything else that goes
//!   wrong closes with 1011.
//! - `GET /errors`: the failures the central listener recorded.
//!
//! Run it: `cargo run -p switchboard-examples --example errors`.

use std::sync::{Arc, Mutex};

use serde::Deserialize;
use switchboard::axum::Json;
use switchboard::axum::routing::get;
use switchboard::event::names;
use switchboard::prelude::*;
use switchboard::ws::HandlerFailed;

#[derive(Deserialize)]
struct Order {
    item: String,
    quantity: u32,
}

/// What the central listener saw.
#[derive(Clone, Default)]
struct ErrorLog(Arc<Mutex<Vec<Value>>>);

#[ws_route("/orders")]
async fn orders(mut ws: WebSocket) -> Result<(), WsError> {
    ws.accept().await?;
    while let Some(order) = ws.receive_json::<Order>().await? {
        if order.quantity == 0 {
            return Err(WsError::close(
                4422,
                format!("no quantity for {}", order.item),
            ));
        }
        ws.send_json(&json!({ "accepted": order.item, "quantity": order.quantity }))
            .await?;
    }
    Ok(())
}

/// The one place handler failures are handled (`names::WS_ERROR` is
/// `"switchboard:ws.error"`).
#[on(names::WS_ERROR)]
fn record(error: HandlerFailed, State(log): State<ErrorLog>) {
    eprintln!(
        "handler failed on {}: {} (code {})",
        error.path, error.message, error.code
    );
    if let Ok(mut log) = log.0.lock() {
        log.push(json!({ "path": error.path, "code": error.code, "message": error.message }));
    }
}

async fn errors(State(log): State<ErrorLog>) -> Json<Value> {
    Json(Value::Array(
        log.0.lock().map(|l| l.clone()).unwrap_or_default(),
    ))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    switchboard_examples::run(|app| {
        app.state(ErrorLog::default())
            .route("/errors", get(errors))
            .route(
                "/",
                switchboard_examples::about(
                    "errors: connect a WebSocket to /orders and send {\"item\": \"..\", \
                     \"quantity\": n}; GET /errors lists the failures",
                ),
            )
    })
    .await
}
