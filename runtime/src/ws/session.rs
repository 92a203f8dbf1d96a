//! The life of an accepted connection: the upgrade, the writer, the handler to its end, and
//! the close handshake.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::CatchUnwind;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

use super::handler::HandlerFailure;
use super::lifecycle;
use super::socket::Handshake;
use crate::App;
use crate::conn::{Closing, Conn, Slot, Socket, close_code, write_loop};
use crate::event::panic_message;

/// A handler's future, with its panics caught.
pub(super) type Handler =
    CatchUnwind<AssertUnwindSafe<Pin<Box<dyn Future<Output = Result<(), HandlerFailure>> + Send>>>>;

/// An accepted connection, from the 101 on.
pub(super) struct Session {
    /// The route's template (`/chat/{room}`), for metrics.
    pub(super) route: &'static str,
    pub(super) path: String,
    pub(super) app: App,
    pub(super) conn: Arc<Conn>,
    pub(super) client: Option<SocketAddr>,
    /// Until the socket is handed to the handler.
    pub(super) handshake: Option<Arc<Handshake>>,
    /// Until the upgrade completes.
    pub(super) on_upgrade: Option<OnUpgrade>,
    pub(super) handler: Handler,
    /// The connection's place under the cap, held until the session ends.
    pub(super) _slot: Slot,
}

/// Leaves the app's table (and the connection's groups) however the connection ends.
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

/// How opening the connection went.
enum Opened {
    Live(Live),
    /// The upgrade failed (the client went away first).
    Failed,
    /// The handler no longer waits in `accept()` for the socket.
    Abandoned,
}

/// What an open connection holds until it closes.
struct Live {
    socket: Arc<Socket>,
    writer: JoinHandle<()>,
    _registered: Registered,
    /// Not the admin page's own socket: lifecycle events and metrics apply.
    app_route: bool,
}

impl Session {
    /// The connection's task. Its future is what every connection holds for its life, so the
    /// opening and the closing run in boxes of their own (allocated while they run), and the
    /// session is used in place rather than taken apart into locals (which would hold it
    /// twice): what stays while the handler runs is the session and [`drive`]'s state.
    pub(super) fn run(self) -> impl Future<Output = ()> + Send {
        // Not an `async fn run(mut self)`: that binds `self` anew inside the future, which then
        // holds it twice. The block captures it once and uses it in place.
        let mut session = self;
        async move {
            let live = match Box::pin(session.open()).await {
                Opened::Live(live) => live,
                Opened::Failed => {
                    // The handler's `accept()` returns an error.
                    session.handshake = None;
                    let _ = (&mut session.handler).await;
                    return;
                }
                Opened::Abandoned => return,
            };
            let ended = drive(&session.conn, &mut session.handler).await;
            Box::pin(session.finish(live, ended)).await;
        }
    }

    /// Upgrades, registers the connection, starts its writer and hands the socket to the
    /// handler's `accept()`.
    async fn open(&mut self) -> Opened {
        let (app, conn) = (&self.app, &self.conn);
        let Some(on_upgrade) = self.on_upgrade.take() else {
            return Opened::Failed;
        };
        let Some(socket) = open(app, conn, &self.path, on_upgrade).await else {
            return Opened::Failed;
        };
        app.connections().insert(conn.clone());
        let registered = Registered {
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
        let Some(handshake) = self.handshake.take() else {
            return Opened::Abandoned;
        };
        if handshake.deliver(socket.clone()).is_err() {
            return Opened::Abandoned;
        }
        drop(handshake);
        tracing::debug!("connection opened");
        // The admin page's own socket is the framework's, not the app's: no lifecycle events,
        // not counted by route or close code.
        let app_route = !app.admin().is_some_and(|admin| admin.serves(self.route));
        if app_route {
            conn.config.counters.opened(self.route);
            lifecycle::connected(app, conn, &self.path, self.client).await;
        }
        Opened::Live(Live {
            socket,
            writer,
            _registered: registered,
            app_route,
        })
    }

    /// After the handler: the close handshake, then the connection leaves (its lifecycle event
    /// and metrics).
    async fn finish(&mut self, live: Live, ended: <Handler as Future>::Output) {
        let (app, conn, path) = (&self.app, &self.conn, self.path.as_str());
        let Live {
            socket,
            writer,
            _registered,
            app_route,
        } = live;
        let (code, reason) = match failure(conn, path, self.client, ended) {
            None => (close_code::NORMAL, String::new()),
            Some(failure) => {
                let (message, code) = (&failure.message, failure.code);
                if app_route {
                    lifecycle::handler_failed(app, conn, path, self.client, message, code).await;
                }
                (failure.code, failure.reason)
            }
        };
        conn.close(code, &reason, Closing::Graceful);
        finish_close(conn, &socket, writer).await;
        conn.kill();
        let (code, reason, by_client) = match (conn.closed_by_peer(), conn.closed_with()) {
            (Some((code, reason)), _) => (code, reason, true),
            (None, Some((code, reason))) => (code, reason, false),
            (None, None) => (code, reason, false),
        };
        tracing::debug!(code, reason, by_client, "connection closed");
        if app_route {
            conn.config.counters.closed(code, by_client);
            lifecycle::disconnected(app, conn, path, code, &reason, by_client).await;
        }
    }
}

/// Completes the upgrade: the socket, or `None` when the client went away first.
async fn open(
    app: &App,
    conn: &Arc<Conn>,
    path: &str,
    on_upgrade: OnUpgrade,
) -> Option<Arc<Socket>> {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(path, "upgrade failed: {e}");
            return None;
        }
    };
    // Boxed: the stream under construction is not part of every connection's task.
    Some(
        Box::pin(Socket::server(
            TokioIo::new(upgraded),
            app.ws().tungstenite,
            conn.clone(),
        ))
        .await,
    )
}

/// How the handler failed, if it did (logged here, at most a few lines a second): an error,
/// or a panic (1011).
fn failure(
    conn: &Conn,
    path: &str,
    client: Option<SocketAddr>,
    ended: <Handler as Future>::Output,
) -> Option<HandlerFailure> {
    let (failure, panicked) = match ended {
        Ok(Ok(())) => return None,
        Ok(Err(failure)) => (failure, false),
        Err(panic) => (
            HandlerFailure::internal(format!("panicked: {}", panic_message(&*panic))),
            true,
        ),
    };
    if let Some(skipped) = conn.config.logs.handler_failures.allow() {
        let peer = client.map(tracing::field::display);
        if panicked {
            tracing::error!(
                path,
                id = %conn.id,
                peer,
                code = failure.code,
                skipped,
                "handler failed: {}",
                failure.message
            );
        } else {
            tracing::warn!(
                path,
                id = %conn.id,
                peer,
                code = failure.code,
                skipped,
                "handler failed: {}",
                failure.message
            );
        }
    }
    Some(failure)
}

/// Runs the handler to its end; once a close is requested, the connection gets
/// `close_timeout` to finish before it is killed (a killed connection reads as closed, so the
/// handler's receive loop ends). The deadline's timer exists only once a close is requested.
async fn drive(conn: &Conn, handler: &mut Handler) -> <Handler as Future>::Output {
    let close_requested = conn.close_requested();
    tokio::pin!(close_requested);
    let mut deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
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
        while let Some(Ok(_)) = poll_fn(|cx| socket.poll_closing(cx)).await {}
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
