//! Serving an app: binding, signals, and a graceful shutdown that also covers the WebSocket
//! connections axum does not track once upgraded.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use super::App;
use crate::Error;
use crate::conn::{Closing, close_code};

impl App {
    /// Binds `addr` and serves the app until SIGINT or SIGTERM (or [`Shutdown::trigger`]), then
    /// shuts down gracefully.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), switchboard::Error> {
    /// switchboard::App::from_registry()?.serve("127.0.0.1:8000").await
    /// # }
    /// ```
    pub async fn serve(self, addr: impl ToSocketAddrs) -> Result<(), Error> {
        self.bind(addr).await?.await
    }

    /// Binds `addr` without serving yet: the [`Server`] tells the bound address (useful with
    /// port 0) and is run by awaiting it.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> Result<Server, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io("cannot listen on this address", e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the bound address", e))?;
        self.start();
        Ok(Server {
            listener,
            local_addr,
            app: self,
            signals: true,
        })
    }

    /// The app as an axum `Router`, to serve inside an existing axum application, and the
    /// handle that shuts its WebSocket connections down (axum's own graceful shutdown does not
    /// reach upgraded connections).
    ///
    /// Serve the router with connection info
    /// (`into_make_service_with_connect_info::<SocketAddr>()`) for
    /// [`WebSocket::client`](crate::ws::WebSocket::client) to know the peer.
    pub fn into_router(self) -> (Router, Shutdown) {
        self.start();
        (self.router(), self.shutdown_handle())
    }

    /// A handle that shuts the app down.
    pub fn shutdown_handle(&self) -> Shutdown {
        Shutdown { app: self.clone() }
    }

    /// Closes every open WebSocket connection with `code` and `reason`, after what is already
    /// queued for it. Returns how many were asked to close.
    pub fn close_all_connections(&self, code: u16, reason: &str) -> usize {
        self.connections()
            .all()
            .iter()
            .filter(|conn| conn.close(code, reason, Closing::Graceful))
            .count()
    }
}

/// A bound server; await it (or call [`run`](Server::run)) to serve.
#[must_use = "a server does nothing until it is awaited"]
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    app: App,
    signals: bool,
}

impl Server {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that shuts the server down.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.app.shutdown_handle()
    }

    /// Do not install SIGINT/SIGTERM handlers: only [`Shutdown::trigger`] stops the server
    /// (tests, or a program that handles signals itself).
    pub fn without_signals(mut self) -> Self {
        self.signals = false;
        self
    }

    /// Serves until shutdown is triggered, then stops accepting, sends 1001 to every
    /// WebSocket connection, and waits for them (at most the shutdown timeout).
    pub async fn run(self) -> Result<(), Error> {
        let Server {
            listener,
            app,
            signals,
            local_addr: self_addr,
        } = self;
        let token = app.shutdown_token().clone();
        if signals {
            tokio::spawn(watch_signals(token.clone()));
        }
        let router = app.router();
        let summary = app.summary();
        tracing::info!(
            address = %self_addr,
            ws_routes = summary.ws_routes,
            http_routes = summary.http_routes,
            listeners = summary.listeners,
            broker = %app.broker().describe(),
            "listening"
        );
        let head = HeadLimits {
            timeout: app.ws().request_head_timeout,
            max_bytes: app.ws().max_request_head,
        };
        // Once shutdown starts: accept on for the drain delay (readiness answers 503 and new
        // WebSocket handshakes are refused), then stop.
        let drain = app.ws().drain_delay;
        // Cancelled once accepting stops: HTTP connections then finish their request and end.
        let stopped = CancellationToken::new();
        let mut draining: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = token.cancelled(), if draining.is_none() => {
                    if drain.is_zero() {
                        break;
                    }
                    tracing::info!(?drain, "shutdown: draining (not ready) before closing");
                    draining = Some(Box::pin(tokio::time::sleep(drain)));
                    continue;
                }
                () = async { draining.as_mut().expect("draining").await }, if draining.is_some() => break,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    // Small frames go out at once; the writer batches what is queued anyway.
                    let _ = tcp.set_nodelay(true);
                    let connection =
                        serve_connection(tcp, peer, router.clone(), stopped.clone(), head);
                    app.tasks().spawn(connection);
                }
                Err(e) => {
                    // Out of file descriptors, say: wait a moment rather than spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(listener);
        stopped.cancel();
        tracing::info!(address = %self_addr, "shutdown: stopped accepting");
        let shutdown = app.shutdown_handle();
        shutdown.close_connections();
        shutdown.wait().await;
        tracing::info!(address = %self_addr, "shutdown complete");
        Ok(())
    }
}

/// hyper's default bound on its read buffer (8 KiB + 100 x 4 KiB), which also bounds a head.
const HYPER_MAX_BUF: usize = 8192 + 4096 * 100;

/// What a client's request head may take: time, and bytes.
#[derive(Clone, Copy)]
struct HeadLimits {
    timeout: Duration,
    max_bytes: usize,
}

/// Serves one TCP connection: HTTP/1.1 requests (each with the peer's address, as axum's
/// `ConnectInfo`), upgrades, and bounds on the time and size of its request heads (a connection
/// that never sends one is closed, a head too large gets 431). At shutdown, a request in
/// progress is finished first.
async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    token: CancellationToken,
    head: HeadLimits,
) {
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move { router.call(request.map(Body::new)).await }
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(head.timeout)
        .max_header_size(head.max_bytes);
    if head.max_bytes > HYPER_MAX_BUF {
        // hyper's read buffer would end a larger head first.
        http.max_buf_size(head.max_bytes + 8192);
    }
    let connection = http
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(%peer, "HTTP connection ended: {e}");
            }
        }
        () = token.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

impl IntoFuture for Server {
    type Output = Result<(), Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

async fn watch_signals(token: CancellationToken) {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
        () = token.cancelled() => return,
    }
    token.cancel();
}

/// Shuts an app down: stop accepting, close every WebSocket connection with 1001 (through the
/// close lane, which a full outbound queue cannot block), and wait for them.
#[derive(Debug, Clone)]
pub struct Shutdown {
    app: App,
}

impl Shutdown {
    /// Starts the shutdown (a served app stops accepting and closes its connections); returns
    /// at once.
    pub fn trigger(&self) {
        self.app.shutdown_token().cancel();
    }

    /// Whether the shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.app.shutdown_token().is_cancelled()
    }

    /// Starts the shutdown, closes every WebSocket connection with 1001, and waits until they
    /// and the app's other tasks are done, at most the shutdown timeout (after which what is
    /// left is dropped). For apps served through [`App::into_router`].
    pub async fn graceful(&self) {
        self.trigger();
        self.close_connections();
        self.wait().await;
    }

    fn close_connections(&self) {
        let closed = self
            .app
            .close_all_connections(close_code::GOING_AWAY, "server shutting down");
        tracing::info!(
            connections = closed,
            "shutdown: closing WebSocket connections (1001)"
        );
    }

    async fn wait(&self) {
        let tasks = self.app.tasks();
        tasks.close();
        let limit = self.app.ws().shutdown_timeout;
        if tokio::time::timeout(limit, tasks.wait()).await.is_err() {
            let left = self.app.connections().all();
            tracing::warn!(
                connections = left.len(),
                "shutdown timeout: dropping what is left"
            );
            for conn in left {
                conn.kill();
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), tasks.wait()).await;
        }
        // The connections' last leaves reach the other servers before this one goes.
        self.app.flush_presence();
        let _ = tokio::time::timeout(limit, self.app.broker().flush()).await;
    }
}
