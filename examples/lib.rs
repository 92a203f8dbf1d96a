//! Runnable Switchboard programs: `cargo run -p switchboard-examples --example NAME`.
//!
//! | example | what it shows |
//! |---|---|
//! | `chat` | the seed's chat: rooms as groups, messages through the event bus, `/stats`, a web page |
//! | `notifications` | an HTTP `POST` that emits an event a listener sends to a group of WebSocket clients |
//! | `namespaced` | events inside a namespace: a namespace view, `namespace = ".."`, `**` |
//! | `welcome` | `#[once]` greeting the first connection, and connection-scoped listeners |
//! | `errors` | handler failures handled by one central error listener |
//!
//! Every example listens on `SWITCHBOARD_ADDR` (default `127.0.0.1:8000`), prints
//! `listening on http://ADDR` once it accepts connections, and shuts down gracefully on
//! SIGINT or SIGTERM.

use switchboard::{App, Error};

/// The address examples listen on: `SWITCHBOARD_ADDR`, or `127.0.0.1:8000`.
pub fn address() -> String {
    std::env::var("SWITCHBOARD_ADDR").unwrap_or_else(|_| "127.0.0.1:8000".to_owned())
}

/// Binds the example's address, says where it listens, and serves until SIGINT or SIGTERM.
pub async fn serve(app: App) -> Result<(), Error> {
    let server = app.bind(address()).await?;
    println!("listening on http://{}", server.local_addr());
    server.await
}
