//! Test helpers: start an app on a loopback port, and drive it with real WebSocket and HTTP
//! clients (enable the `testing` feature).
//!
//! Helpers that wait give up after [`TIMEOUT`] and panic with a message saying what did not
//! arrive: a hung test fails instead of hanging. Assert on what arrives, never on how long it
//! took.
//!
//! ```no_run
//! use switchboard::prelude::*;
//! use switchboard::testing::TestServer;
//!
//! #[ws_route("/echo")]
//! async fn echo(mut ws: WebSocket) -> Result<(), WsError> {
//!     ws.accept().await?;
//!     while let Some(text) = ws.receive_text().await? {
//!         ws.send_text(text).await?;
//!     }
//!     Ok(())
//! }
//!
//! # async fn test() {
//! let app = App::builder().only_module(module_path!()).build().unwrap();
//! let server = TestServer::start(app).await;
//! let mut client = server.connect("/echo").await;
//! client.send_text("hi").await;
//! assert_eq!(client.recv_text().await, "hi");
//! server.shutdown().await;
//! # }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WireMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{App, Error, Shutdown};

mod internals;
#[cfg(unix)]
mod nats_server;
#[cfg(unix)]
mod redis_cluster;
#[cfg(unix)]
mod redis_server;
mod servers;
pub use internals::Internals;
#[cfg(unix)]
pub use nats_server::NatsServer;
#[cfg(unix)]
pub use redis_cluster::RedisCluster;
#[cfg(unix)]
pub use redis_server::{RedisServer, RedisServerOptions};
pub use servers::in_ci;

/// How long a helper waits for something before it panics.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// An app served on `127.0.0.1` at a free port, without signal handlers. It derefs to a
/// [`Remote`] for its clients.
#[derive(Debug)]
pub struct TestServer {
    remote: Remote,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), Error>>,
}

impl std::ops::Deref for TestServer {
    type Target = Remote;

    fn deref(&self) -> &Remote {
        &self.remote
    }
}

/// A server at an address (a [`TestServer`], or any other process): WebSocket and HTTP
/// clients for it.
#[derive(Debug, Clone)]
pub struct Remote {
    addr: SocketAddr,
}

impl TestServer {
    /// Serves `app` on a free loopback port.
    pub async fn start(app: App) -> TestServer {
        let server = app
            .bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port")
            .without_signals();
        let addr = server.local_addr();
        let shutdown = server.shutdown_handle();
        let task = tokio::spawn(server.run());
        TestServer {
            remote: Remote { addr },
            shutdown,
            task,
        }
    }

    /// Triggers a graceful shutdown and waits for the server to finish it.
    ///
    /// Every open connection is sent 1001 and given the app's close timeout (default 5 s) to
    /// answer. A [`TestClient`] the test still holds and does not read cannot answer, so the
    /// server waits the whole close timeout for it: drop clients you are done with before
    /// shutting down (or read their close with [`TestClient::expect_close`]), or build the
    /// test's app with a short `close_timeout`.
    pub async fn shutdown(self) {
        self.shutdown.trigger();
        self.task
            .await
            .expect("the server task")
            .expect("the server ran without error");
    }

    /// The shutdown handle of the served app.
    pub fn shutdown_handle(&self) -> &Shutdown {
        &self.shutdown
    }
}

impl Remote {
    /// A server listening at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Connects a WebSocket client to `path`; panics if the handshake is refused.
    pub async fn connect(&self, path: &str) -> TestClient {
        match self.client(path).connect().await {
            Ok(client) => client,
            Err(refused) => panic!(
                "connecting to {path} was refused: {} {}",
                refused.status, refused.body
            ),
        }
    }

    /// A WebSocket handshake to `path` with headers or subprotocols of your choice.
    pub fn client(&self, path: &str) -> ClientRequest {
        ClientRequest {
            addr: self.addr,
            url: self.ws_url(path),
            headers: Vec::new(),
            receive_buffer: None,
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> HttpResponse {
        self.http(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json<T: Serialize + ?Sized>(&self, path: &str, body: &T) -> HttpResponse {
        let body = serde_json::to_vec(body).expect("serialisable body");
        self.http(Method::POST, path, Some(body)).await
    }

    /// One HTTP/1.1 request on a fresh connection.
    pub async fn http(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> HttpResponse {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.addr.to_string());
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("a valid request");
        let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
            .await
            .expect("the response within the timeout")
            .expect("a response");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("the body").to_bytes();
        HttpResponse {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// An HTTP response: status, headers, body as text.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, as (lossy) UTF-8.
    pub body: String,
}

impl HttpResponse {
    /// The body parsed as JSON; panics if it is not.
    pub fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is not the expected JSON ({e}): {}", self.body))
    }
}

/// A refused WebSocket handshake: the HTTP status and body.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, as (lossy) UTF-8.
    pub body: String,
}

/// A WebSocket handshake being prepared.
#[derive(Debug)]
#[must_use = "nothing connects until `.connect()` is awaited"]
pub struct ClientRequest {
    addr: SocketAddr,
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    receive_buffer: Option<u32>,
}

impl ClientRequest {
    /// Adds a request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
            HeaderValue::from_str(value).expect("a valid header value"),
        ));
        self
    }

    /// Offers subprotocols (`Sec-WebSocket-Protocol`).
    pub fn subprotocols(self, protocols: &[&str]) -> Self {
        let value = protocols.join(", ");
        self.header("sec-websocket-protocol", &value)
    }

    /// Asks the kernel for a small receive buffer (`SO_RCVBUF`), so a client that stops
    /// reading backs the server up after little data.
    pub fn receive_buffer(mut self, bytes: u32) -> Self {
        self.receive_buffer = Some(bytes);
        self
    }

    /// Performs the handshake: the client, or the refusal's status and body.
    pub async fn connect(self) -> Result<TestClient, Refused> {
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .expect("a valid WebSocket URL");
        for (name, value) in self.headers {
            request.headers_mut().append(name, value);
        }
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        if let Some(bytes) = self.receive_buffer {
            socket
                .set_recv_buffer_size(bytes)
                .expect("set the receive buffer");
        }
        let stream = socket.connect(self.addr).await.expect("connect");
        let connect = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream));
        match tokio::time::timeout(TIMEOUT, connect)
            .await
            .expect("the handshake within the timeout")
        {
            Ok((ws, response)) => Ok(TestClient {
                ws,
                headers: response.headers().clone(),
            }),
            Err(tungstenite::Error::Http(response)) => Err(Refused {
                status: response.status(),
                headers: response.headers().clone(),
                body: response
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            }),
            Err(other) => panic!("the WebSocket handshake failed: {other}"),
        }
    }
}

/// What a [`TestClient`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A close frame: code and reason (1005 when the frame had no code).
    Close(u16, String),
    /// The connection ended without a close frame.
    Ended,
}

/// A real WebSocket client (tokio-tungstenite) connected to a [`TestServer`].
#[derive(Debug)]
pub struct TestClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    headers: HeaderMap,
}

impl TestClient {
    /// The headers of the server's upgrade response.
    pub fn response_headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The subprotocol the server chose, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.headers
            .get(http::header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
    }

    /// The underlying tokio-tungstenite stream (to split it and send while receiving).
    pub fn into_stream(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.send(WireMessage::Text(text.into().into())).await;
    }

    /// Sends `value` as JSON text.
    pub async fn send_json<T: Serialize + ?Sized>(&mut self, value: &T) {
        let text = serde_json::to_string(value).expect("serialisable");
        self.send_text(text).await;
    }

    /// Sends a binary message.
    pub async fn send_bytes(&mut self, bytes: impl Into<Vec<u8>>) {
        self.send(WireMessage::Binary(bytes.into().into())).await;
    }

    /// Sends a raw message (pings, fragments of your own making).
    pub async fn send(&mut self, message: WireMessage) {
        self.ws.send(message).await.expect("send to the server");
    }

    /// Sends a close frame with `code` and `reason`.
    pub async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: code.into(),
            reason: reason.into(),
        };
        self.ws
            .send(WireMessage::Close(Some(frame)))
            .await
            .expect("send the close frame");
    }

    /// The next message or close (pings and pongs are skipped); panics after [`TIMEOUT`].
    pub async fn recv(&mut self) -> Received {
        match self.recv_within(TIMEOUT).await {
            Some(received) => received,
            None => panic!("nothing received within {TIMEOUT:?}"),
        }
    }

    /// Like [`recv`](Self::recv), but `None` if nothing arrives within `limit` (to check that
    /// nothing is sent).
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Received> {
        let next = async {
            loop {
                let received = match self.ws.next().await {
                    Some(Ok(WireMessage::Text(text))) => Received::Text(text.as_str().to_owned()),
                    Some(Ok(WireMessage::Binary(bytes))) => Received::Binary(bytes.to_vec()),
                    Some(Ok(WireMessage::Close(Some(frame)))) => {
                        Received::Close(frame.code.into(), frame.reason.as_str().to_owned())
                    }
                    Some(Ok(WireMessage::Close(None))) => Received::Close(1005, String::new()),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => Received::Ended,
                };
                if let Received::Close(..) = received {
                    // Send the close reply tungstenite queued, as a client that keeps polling
                    // would.
                    let _ = self.ws.flush().await;
                }
                return received;
            }
        };
        tokio::time::timeout(limit, next).await.ok()
    }

    /// The next text message; panics on anything else.
    pub async fn recv_text(&mut self) -> String {
        match self.recv().await {
            Received::Text(text) => text,
            other => panic!("expected a text message, received {other:?}"),
        }
    }

    /// The next text message, parsed as JSON; panics on anything else.
    pub async fn recv_json<T: DeserializeOwned>(&mut self) -> T {
        let text = self.recv_text().await;
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("expected JSON ({e}), received {text}"))
    }

    /// Reads until the server's close frame and returns its code and reason; panics if a data
    /// message or the end of the connection comes first.
    pub async fn expect_close(&mut self) -> (u16, String) {
        match self.recv().await {
            Received::Close(code, reason) => (code, reason),
            other => panic!("expected a close frame, received {other:?}"),
        }
    }

    /// Reads (and drops) messages until the server's close frame; returns its code and reason,
    /// or `None` if the connection ended without one.
    pub async fn skip_to_close(&mut self) -> Option<(u16, String)> {
        loop {
            match self.recv().await {
                Received::Close(code, reason) => return Some((code, reason)),
                Received::Ended => return None,
                _ => {}
            }
        }
    }
}
