use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WireError};
use tokio_tungstenite::tungstenite::{Message as WireMessage, Utf8Bytes};

use super::head::Head;
use super::limits::{Admit, Limiter};
use crate::channel::{Channel, json_frame};
use crate::conn::{
    Closing, Conn, ConnCounters, ConnectionId, Frame, Read, Socket, WsError, close_code,
};
use crate::event::{IntoListener, ListenOptions, ListenerGuard};
use crate::{App, Error};

/// A message received from the client (pings, pongs and close frames are handled for you).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Bytes),
}

/// How the client ended the connection: its close code and reason (1006 when it went away
/// without a close frame, 1005 when its close frame had no code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientClose {
    /// The close code.
    pub code: u16,
    /// The reason (may be empty).
    pub reason: String,
}

/// The decision a handler makes before the upgrade response is sent.
#[derive(Debug)]
pub(crate) enum Decision {
    Accept {
        protocol: Option<HeaderValue>,
        headers: HeaderMap,
    },
    Refuse {
        code: u16,
        reason: String,
    },
}

/// Shared between a pending `WebSocket` and the HTTP handler that drives it: the decision, and
/// the channel through which the upgraded socket reaches the handler.
#[derive(Debug, Default)]
pub(crate) struct Handshake {
    decision: Mutex<Option<Decision>>,
    decided: std::sync::atomic::AtomicBool,
    socket: Mutex<Option<oneshot::Sender<Arc<Socket>>>>,
}

impl Handshake {
    fn decide(&self, decision: Decision) -> Result<(), WsError> {
        if self.decided.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Err(WsError::close(
                close_code::INTERNAL_ERROR,
                "the handshake was already accepted or refused",
            ));
        }
        *self.decision.lock().unwrap_or_else(PoisonError::into_inner) = Some(decision);
        Ok(())
    }

    pub(crate) fn is_decided(&self) -> bool {
        self.decided.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn take_decision(&self) -> Option<Decision> {
        self.decision
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Hands the upgraded socket to the waiting `accept()`.
    pub(crate) fn deliver(&self, socket: Arc<Socket>) -> Result<(), Arc<Socket>> {
        match self
            .socket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            Some(sender) => sender.send(socket),
            None => Err(socket),
        }
    }
}

enum State {
    Pending(Arc<Handshake>),
    Open(Arc<Socket>),
    Closed,
}

/// A WebSocket connection, as its handler sees it.
///
/// The handler runs before the upgrade response is sent: it calls [`accept`](Self::accept) to
/// open the connection (choosing a subprotocol and response headers), or
/// [`close`](Self::close) to refuse it (HTTP 403, or 503 for code 1013). Then it receives and
/// sends; every send goes through the connection's bounded outbound queue, written by a task
/// the framework owns. The connection leaves its groups and its connection-scoped listeners
/// when the handler ends, however it ends.
pub struct WebSocket {
    conn: Arc<Conn>,
    state: State,
    head: Box<Head>,
    app: App,
    /// Listeners registered with [`on`](Self::on): removed with the connection.
    listeners: Vec<ListenerGuard>,
    /// The route's inbound limit, when it has one.
    limiter: Option<Box<Limiter>>,
    /// While the client is not read for the pongs it does not take: when it is closed.
    pong_stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Pending(_) => "pending",
            State::Open(_) => "open",
            State::Closed => "closed",
        };
        f.debug_struct("WebSocket")
            .field("id", &self.conn.id)
            .field("path", &self.head.path)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl WebSocket {
    /// This connection's channel (the same one every time).
    pub fn channel(&self) -> Channel {
        Channel::from_conn(self.conn.clone())
    }

    pub(crate) fn pending(
        conn: Arc<Conn>,
        head: Head,
        app: App,
        limiter: Option<Limiter>,
    ) -> (Self, Arc<Handshake>) {
        let handshake = Arc::new(Handshake::default());
        let ws = Self {
            conn,
            state: State::Pending(handshake.clone()),
            head: Box::new(head),
            app,
            listeners: Vec::new(),
            limiter: limiter.map(Box::new),
            pong_stall: None,
        };
        (ws, handshake)
    }

    /// This connection's id (also its channel's id).
    pub fn id(&self) -> ConnectionId {
        self.conn.id
    }

    /// The app serving this connection.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Accepts the connection: `ws.accept().await?`, or with options,
    /// `ws.accept().subprotocol("chat").header("x-server", "1").await?`.
    ///
    /// The upgrade response is sent only now, with what was chosen. Errors: the handshake was
    /// already decided, the subprotocol was not offered by the client, or the client went away.
    pub fn accept(&mut self) -> Accept<'_> {
        Accept {
            ws: self,
            protocol: None,
            headers: HeaderMap::new(),
            error: None,
        }
    }

    /// The subprotocols the client offered, in its order.
    pub fn subprotocols(&self) -> impl Iterator<Item = &str> {
        self.head
            .headers()
            .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
    }

    async fn finish_accept(
        &mut self,
        protocol: Option<String>,
        headers: HeaderMap,
    ) -> Result<(), WsError> {
        let handshake = match &self.state {
            State::Pending(handshake) => handshake.clone(),
            State::Open(_) => {
                return Err(WsError::close(
                    close_code::INTERNAL_ERROR,
                    "the connection is already accepted",
                ));
            }
            State::Closed => return Err(WsError::closed()),
        };
        let protocol =
            match protocol {
                Some(p) if !self.subprotocols().any(|offered| offered == p) => {
                    return Err(WsError::close(
                        close_code::INTERNAL_ERROR,
                        format!("subprotocol `{p}` was not offered by the client"),
                    ));
                }
                Some(p) => Some(HeaderValue::from_str(&p).map_err(|_| {
                    WsError::close(close_code::INTERNAL_ERROR, "invalid subprotocol")
                })?),
                None => None,
            };
        let (sender, receiver) = oneshot::channel();
        *handshake
            .socket
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(sender);
        handshake.decide(Decision::Accept { protocol, headers })?;
        match receiver.await {
            Ok(socket) => {
                self.state = State::Open(socket);
                Ok(())
            }
            Err(_) => {
                self.state = State::Closed;
                Err(WsError::closed())
            }
        }
    }

    /// Closes the connection with `code` and `reason`.
    ///
    /// Before `accept`, this refuses the handshake: the client gets HTTP 403 (503 for 1013,
    /// "try again later"), with the reason as the body. After it, the close frame is queued
    /// behind what was already sent.
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<(), WsError> {
        match &self.state {
            State::Pending(handshake) => {
                let handshake = handshake.clone();
                handshake.decide(Decision::Refuse {
                    code,
                    reason: reason.to_owned(),
                })?;
                self.state = State::Closed;
            }
            State::Open(_) => {
                self.conn.close(code, reason, Closing::Graceful);
            }
            State::Closed => {}
        }
        Ok(())
    }

    /// The next message; `Ok(None)` once the connection is closed (by the client, by a close,
    /// or because the client went away: see [`client_close`](Self::client_close)).
    ///
    /// Errors close codes: 1009 for a message over the size limit, 1007 for invalid UTF-8,
    /// 1002 for a protocol error; and an error before `accept`.
    pub async fn receive(&mut self) -> Result<Option<Message>, WsError> {
        match self.next_wire().await? {
            Some(WireMessage::Text(text)) => Ok(Some(Message::Text(text.as_str().to_owned()))),
            Some(WireMessage::Binary(bytes)) => Ok(Some(Message::Binary(bytes))),
            Some(_) => unreachable!("next_wire yields data frames only"),
            None => Ok(None),
        }
    }

    /// The next text message; a binary frame is an error with code 1003.
    pub async fn receive_text(&mut self) -> Result<Option<String>, WsError> {
        match self.next_wire().await? {
            Some(WireMessage::Text(text)) => Ok(Some(text.as_str().to_owned())),
            Some(_) => Err(WsError::close(
                close_code::UNSUPPORTED_DATA,
                "expected a text frame, got a binary frame",
            )),
            None => Ok(None),
        }
    }

    /// The next binary message; a text frame is an error with code 1003.
    pub async fn receive_bytes(&mut self) -> Result<Option<Bytes>, WsError> {
        match self.next_wire().await? {
            Some(WireMessage::Binary(bytes)) => Ok(Some(bytes)),
            Some(_) => Err(WsError::close(
                close_code::UNSUPPORTED_DATA,
                "expected a binary frame, got a text frame",
            )),
            None => Ok(None),
        }
    }

    /// The next message, as JSON text parsed into `T`: invalid JSON (or JSON that does not fit
    /// `T`) is an error with code 1007, a binary frame one with code 1003.
    pub async fn receive_json<T: DeserializeOwned>(&mut self) -> Result<Option<T>, WsError> {
        match self.next_wire().await? {
            Some(WireMessage::Text(text)) => {
                serde_json::from_str(text.as_str()).map(Some).map_err(|e| {
                    WsError::close(close_code::INVALID_PAYLOAD, format!("invalid JSON: {e}"))
                        .with_source(e)
                })
            }
            Some(_) => Err(WsError::close(
                close_code::UNSUPPORTED_DATA,
                "expected JSON in a text frame, got a binary frame",
            )),
            None => Ok(None),
        }
    }

    /// The next data frame from the wire, or `None` once closed.
    async fn next_wire(&mut self) -> Result<Option<WireMessage>, WsError> {
        std::future::poll_fn(|cx| self.poll_wire(cx)).await
    }

    fn poll_wire(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<WireMessage>, WsError>> {
        let socket = match &self.state {
            State::Open(socket) => socket,
            State::Pending(_) => return Poll::Ready(Err(WsError::not_accepted())),
            State::Closed => return Poll::Ready(Ok(None)),
        };
        loop {
            if self.conn.is_killed() {
                return Poll::Ready(Ok(None));
            }
            self.conn.register_reader(cx.waker());
            if self.conn.should_pause_reading() {
                // The client sends faster than it takes what it is sent: stop reading it until
                // its writer catches up (the writer wakes this reader).
                return Poll::Pending;
            }
            if let Some(limiter) = &mut self.limiter
                && limiter.poll_ready(cx).is_pending()
            {
                // Past its inbound limit: not read until it is within it again.
                return Poll::Pending;
            }
            let item = match socket.poll_next(cx) {
                Read::Message(item) => item,
                Read::Pending => {
                    self.conn.set_read_pending(true);
                    return Poll::Pending;
                }
                Read::Paused { new } => return self.pong_paused(cx, new),
            };
            if self.pong_stall.is_some() {
                self.pong_stall = None;
            }
            self.conn.set_read_pending(false);
            self.conn.frame_read();
            match item {
                Some(Ok(message @ (WireMessage::Text(_) | WireMessage::Binary(_)))) => {
                    self.conn.traffic.received(message.len());
                    self.conn.touch_if_expiring();
                    if self.limiter.is_some() {
                        let len = message.len();
                        return Poll::Ready(self.limited(len, message));
                    }
                    return Poll::Ready(Ok(Some(message)));
                }
                // The socket recorded how the client ended the stream (its close, or the
                // connection lost) before the writer could see it.
                Some(Ok(WireMessage::Close(_))) | None => return Poll::Ready(Ok(None)),
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Poll::Ready(self.read_error(error)),
            }
        }
    }

    /// The client sends pings and does not read the pongs: it is not read until they are out,
    /// and closed (1008) if it takes none of them within `pong_timeout`.
    fn pong_paused(
        &mut self,
        cx: &mut Context<'_>,
        new: bool,
    ) -> Poll<Result<Option<WireMessage>, WsError>> {
        let counters = &self.conn.config.counters;
        if new {
            ConnCounters::count(&counters.pong_backlog_pauses);
            tracing::debug!(id = %self.conn.id, "client paused: it does not read its pongs");
        }
        self.conn.wake_writer();
        let timeout = self.conn.config.pong_timeout;
        let stall = self
            .pong_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stall.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.pong_stall = None;
        ConnCounters::count(&counters.pong_backlog_closes);
        tracing::debug!(id = %self.conn.id, "client closed: it took no pongs within pong_timeout");
        let reason = "pongs not read";
        self.conn
            .close(close_code::POLICY_VIOLATION, reason, Closing::Abort);
        self.state = State::Closed;
        Poll::Ready(Err(WsError::close(close_code::POLICY_VIOLATION, reason)))
    }

    /// A message counted against the inbound limit: delivered (the next read waits when the
    /// client is past its limit), or, with the `Close` action, refused and the connection
    /// closed with 1008.
    fn limited(
        &mut self,
        len: usize,
        message: WireMessage,
    ) -> Result<Option<WireMessage>, WsError> {
        let Some(limiter) = &mut self.limiter else {
            return Ok(Some(message));
        };
        let counters = &self.conn.config.counters;
        match limiter.admit(len) {
            Admit::Within => Ok(Some(message)),
            Admit::Paused => {
                ConnCounters::count(&counters.rate_limit_pauses);
                if let Some(skipped) = self.conn.config.logs.rate_limits.allow() {
                    tracing::warn!(
                        id = %self.conn.id,
                        skipped,
                        "client paused: past its inbound limit"
                    );
                }
                Ok(Some(message))
            }
            Admit::Close => {
                ConnCounters::count(&counters.rate_limit_closes);
                if let Some(skipped) = self.conn.config.logs.rate_limits.allow() {
                    tracing::warn!(
                        id = %self.conn.id,
                        code = close_code::POLICY_VIOLATION,
                        skipped,
                        "client closed: past its inbound limit"
                    );
                }
                let reason = "rate limit exceeded";
                self.conn
                    .close(close_code::POLICY_VIOLATION, reason, Closing::Graceful);
                self.state = State::Closed;
                Err(WsError::close(close_code::POLICY_VIOLATION, reason))
            }
        }
    }

    fn read_error(&mut self, error: WireError) -> Result<Option<WireMessage>, WsError> {
        let (code, reason) = match &error {
            // (The socket recorded a lost connection.)
            WireError::ConnectionClosed | WireError::AlreadyClosed | WireError::Io(_) => {
                return Ok(None);
            }
            WireError::Capacity(CapacityError::MessageTooLong { size, max_size }) => (
                close_code::MESSAGE_TOO_BIG,
                format!("message too big: {size} bytes, the limit is {max_size}"),
            ),
            WireError::Utf8(_) => (
                close_code::INVALID_PAYLOAD,
                "invalid UTF-8 in a text frame".to_owned(),
            ),
            WireError::Protocol(e) => (close_code::PROTOCOL_ERROR, format!("protocol error: {e}")),
            other => (close_code::INTERNAL_ERROR, format!("read error: {other}")),
        };
        // The read side cannot continue after an error: later reads see a closed connection.
        self.conn.set_read_failed();
        self.state = State::Closed;
        Err(WsError::close(code, reason).with_source(error))
    }

    /// Sends a text message (queued; waits only while the outbound queue is full).
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), WsError> {
        self.send_frame(Frame::Text(Utf8Bytes::from(text.into())))
            .await
    }

    /// Sends a binary message.
    pub async fn send_bytes(&self, bytes: impl Into<Bytes>) -> Result<(), WsError> {
        self.send_frame(Frame::Binary(bytes.into())).await
    }

    /// Sends `value` as compact JSON (non-ASCII characters are not escaped), in a text frame,
    /// or a binary one when the channel's payload type is
    /// [`Bytes`](crate::PayloadType::Bytes): the same as [`Channel::send_json`].
    pub async fn send_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), WsError> {
        self.send_frame(json_frame(value)?).await
    }

    /// Sends a message.
    pub async fn send(&self, message: Message) -> Result<(), WsError> {
        match message {
            Message::Text(text) => self.send_text(text).await,
            Message::Binary(bytes) => self.send_bytes(bytes).await,
        }
    }

    async fn send_frame(&self, frame: Frame) -> Result<(), WsError> {
        match self.state {
            State::Pending(_) => Err(WsError::not_accepted()),
            _ => self.conn.send(frame).await,
        }
    }

    /// The request path.
    pub fn path(&self) -> &str {
        &self.head.path
    }

    /// The value of path parameter `name` (percent-decoded).
    pub fn path_param(&self, name: &str) -> Option<&str> {
        self.head
            .params
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every path parameter, in path order.
    pub fn path_params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.head.params.iter().map(|(n, v)| (&**n, v.as_str()))
    }

    /// The raw query string, if any (use the `Query<T>` extractor to deserialise it).
    pub fn query(&self) -> Option<&str> {
        self.head.query.as_deref()
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.head.query.as_deref()?.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// Every value of the query parameter `name`, in order (`?since=a&since=b`).
    pub fn query_params(&self, name: &str) -> Vec<String> {
        let query = self.head.query.as_deref().unwrap_or_default();
        form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .collect()
    }

    /// The request headers, all of them, as the client sent them. The connection keeps them
    /// for its whole life in one compact buffer (bounded through
    /// [`max_request_head`](crate::Builder::max_request_head)), made a `HeaderMap` on the
    /// first call.
    pub fn headers(&self) -> &HeaderMap {
        self.head.headers()
    }

    /// The peer's address, when the app is served with connection info (as
    /// [`App::serve`](crate::App::serve) does).
    pub fn client(&self) -> Option<SocketAddr> {
        self.head.client
    }

    /// How the client ended the connection, once a receive returned `None`.
    pub fn client_close(&self) -> Option<ClientClose> {
        self.conn
            .peer_close()
            .map(|(code, reason)| ClientClose { code, reason })
    }

    /// Registers a listener for the life of this connection (it is removed when the connection
    /// ends, and does not count against `max_listeners`).
    pub fn on<Args>(&mut self, name: &str, listener: impl IntoListener<Args>) -> Result<(), Error> {
        self.on_with(name, ListenOptions::new(), listener)
    }

    /// Like [`on`](Self::on), with options (priority, once).
    pub fn on_with<Args>(
        &mut self,
        name: &str,
        options: ListenOptions,
        listener: impl IntoListener<Args>,
    ) -> Result<(), Error> {
        let handle = self.app.events().add(name, options, listener, true)?;
        self.listeners.push(handle.drop_guard());
        Ok(())
    }
}

/// Incoming messages until the connection closes; an error ends the stream after it is yielded.
impl Stream for WebSocket {
    type Item = Result<Message, WsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.poll_wire(cx).map(|result| match result {
            Ok(Some(WireMessage::Text(text))) => Some(Ok(Message::Text(text.as_str().to_owned()))),
            Ok(Some(WireMessage::Binary(bytes))) => Some(Ok(Message::Binary(bytes))),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
    }
}

/// The options of [`WebSocket::accept`]; `.await` it to accept.
#[must_use = "accepting happens when this is awaited"]
#[derive(Debug)]
pub struct Accept<'a> {
    ws: &'a mut WebSocket,
    protocol: Option<String>,
    headers: HeaderMap,
    error: Option<WsError>,
}

impl Accept<'_> {
    /// Chooses one of the subprotocols the client offered.
    pub fn subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Adds a header to the upgrade response.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            _ => {
                self.error = Some(WsError::close(
                    close_code::INTERNAL_ERROR,
                    format!("invalid response header `{name}`"),
                ));
            }
        }
        self
    }
}

impl<'a> IntoFuture for Accept<'a> {
    type Output = Result<(), WsError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<(), WsError>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            if let Some(error) = self.error {
                return Err(error);
            }
            self.ws.finish_accept(self.protocol, self.headers).await
        })
    }
}

impl Channel {
    /// The channel of `ws`'s connection (as in Nexios' `Channel(websocket=ws)`).
    pub fn new(ws: &WebSocket) -> Channel {
        ws.channel()
    }
}
