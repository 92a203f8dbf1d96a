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
//! Every example runs through [`run`]: it logs through `tracing` (`RUST_LOG`, default `info`),
//! serves the browser client at `/client/switchboard.js`, `/healthz` and `/readyz` for load
//! balancers, `/metrics` for Prometheus and, with
//! `SWITCHBOARD_ADMIN_TOKEN` set, the admin page at `/admin?token=..`, listens on `SWITCHBOARD_ADDR` (default
//! `127.0.0.1:8000`), takes at most `SWITCHBOARD_MAX_CONNECTIONS` WebSocket connections
//! (default 50,000), joins a cluster when
//! `SWITCHBOARD_BROKER_URL` (`redis://..` or `nats://..`) or `SWITCHBOARD_REDIS_URL` is set,
//! prints `listening on http://ADDR` once it accepts
//! connections, and shuts down gracefully on SIGINT or SIGTERM. A setting it cannot use ends
//! it with one line on standard error naming the setting, its value and what was expected,
//! and exit code 1.

use std::process::ExitCode;

use switchboard::axum::routing::{MethodRouter, get};
use switchboard::{App, Builder};
use tracing_subscriber::EnvFilter;

/// The address when `SWITCHBOARD_ADDR` is not set.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8000";

/// Runs an example: logging, the app `configure` makes of a builder (which already reads
/// `SWITCHBOARD_BROKER_URL` and `SWITCHBOARD_REDIS_URL`), the address, serving until SIGINT or SIGTERM.
pub async fn run(configure: impl FnOnce(Builder) -> Builder) -> ExitCode {
    init_logging();
    match serve(configure).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(configure: impl FnOnce(Builder) -> Builder) -> Result<(), String> {
    let addr = address()?;
    let mut builder = App::builder()
        .broker_from_env()
        .health_route("/healthz")
        .ready_route("/readyz")
        .metrics_route("/metrics")
        .route("/client/switchboard.js", get(client_js));
    if let Some(token) = std::env::var("SWITCHBOARD_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        builder = builder.admin_route("/admin", &token);
    }
    if let Some(max) = max_connections()? {
        builder = builder.max_connections(max);
    }
    let app = configure(builder).build().map_err(|e| e.to_string())?;
    let server = app
        .bind(addr.as_str())
        .await
        .map_err(|e| format!("SWITCHBOARD_ADDR={addr}: {e}"))?;
    println!("listening on http://{}", server.local_addr());
    server.await.map_err(|e| e.to_string())
}

/// `SWITCHBOARD_MAX_CONNECTIONS`: the most WebSocket connections open at once (default
/// 50,000), a positive number.
fn max_connections() -> Result<Option<usize>, String> {
    match std::env::var("SWITCHBOARD_MAX_CONNECTIONS") {
        Err(_) => Ok(None),
        Ok(value) => match value.parse::<usize>() {
            Ok(max) if max > 0 => Ok(Some(max)),
            _ => Err(format!(
                "SWITCHBOARD_MAX_CONNECTIONS={value}: expected a positive number of connections"
            )),
        },
    }
}

/// The address to listen on: `SWITCHBOARD_ADDR` checked to be `HOST:PORT`, or
/// [`DEFAULT_ADDR`].
pub fn address() -> Result<String, String> {
    match std::env::var("SWITCHBOARD_ADDR") {
        Ok(value) => check_address(&value).map(|()| value),
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_ADDR.to_owned()),
        Err(std::env::VarError::NotUnicode(value)) => Err(format!(
            "SWITCHBOARD_ADDR={}: not valid UTF-8; expected HOST:PORT such as {DEFAULT_ADDR}",
            value.to_string_lossy()
        )),
    }
}

/// Whether `value` has the form `HOST:PORT` (a name or an address, `[..]` around IPv6; a port
/// from 0 to 65535).
fn check_address(value: &str) -> Result<(), String> {
    let well_formed = value.rsplit_once(':').is_some_and(|(host, port)| {
        let host_ok = !host.is_empty()
            && !host.contains(['/', '@', '?', '#', ' '])
            && (host.starts_with('[') == host.ends_with(']'))
            && (host.starts_with('[') || !host.contains(':'));
        host_ok && port.parse::<u16>().is_ok()
    });
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "SWITCHBOARD_ADDR={value}: expected HOST:PORT such as {DEFAULT_ADDR}"
        ))
    }
}

/// Logs to standard error through `tracing`, filtered by `RUST_LOG` (default `info`; for
/// example `RUST_LOG=info,switchboard::ws=debug`).
fn init_logging() {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => {
            EnvFilter::try_new(&directives).unwrap_or_else(|e| {
                eprintln!("RUST_LOG={directives}: {e}; logging at info instead");
                EnvFilter::new("info")
            })
        }
        _ => EnvFilter::new("info"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// `GET /client/switchboard.js`: the browser client (`client/` in the repository).
async fn client_js() -> impl switchboard::axum::response::IntoResponse {
    (
        [(
            switchboard::axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        include_str!("../client/switchboard.js"),
    )
}

/// `GET /` of an example without a page: a line saying what to connect to.
pub fn about(text: &'static str) -> MethodRouter<App> {
    get(move || async move { format!("{text}\n") })
}

#[cfg(test)]
mod tests {
    use super::check_address;

    #[test]
    fn addresses_are_host_and_port() {
        for good in [
            "127.0.0.1:8000",
            "localhost:0",
            "[::1]:8000",
            "0.0.0.0:65535",
        ] {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "nonsense",
            "http://127.0.0.1:8123",
            "127.0.0.1",
            "127.0.0.1:",
            ":8000",
            "127.0.0.1:99999",
            "::1:8000",
            "host:port",
        ] {
            let e = check_address(bad).unwrap_err();
            assert_eq!(
                e,
                format!("SWITCHBOARD_ADDR={bad}: expected HOST:PORT such as 127.0.0.1:8000")
            );
        }
    }
}
