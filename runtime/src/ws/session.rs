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
    pub(super) handshake: Arc<Handshake>,
    pub(super) on_upgrade: OnUpgrade,
    pub(super) handler: Handler,
    pub(super) slot: Slot,
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

impl Session {
    pub(super) async fn run(self) {
        let Session {
            route,
            path,
            app,
            conn,
            client,
            handshake,
            on_upgrade,
            mut handler,
            slot,
        } = self;
        let Some(socket) = open(&app, &conn, &path, on_upgrade).await else {
            drop(handshake); // the handler's `accept()` returns an error
            let _ = handler.await;
            return;
        };
        let _slot = slot;
        app.connections().insert(conn.clone());
        let _registered = Registered {
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
        if handshake.deliver(socket.clone()).is_err() {
            return;
        }
        drop(handshake);
        tracing::debug!("connection opened");
        // The admin page's own socket is the framework's, not the app's: no lifecycle events,
        // not counted by route or close code.
        let app_route = !app.admin().is_some_and(|admin| admin.serves(route));
        if app_route {
            conn.config.counters.opened(route);
            lifecycle::connected(&app, &conn, &path, client).await;
        }
        let ended = drive(&conn, &mut handler).await;
        let (code, reason) = match failure(&conn, &path, client, ended) {
            None => (close_code::NORMAL, String::new()),
            Some(failure) => {
                let (message, code) = (&failure.message, failure.code);
                if app_route {
                    lifecycle::handler_failed(&app, &conn, &path, client, message, code).await;
                }
                (failure.code, failure.reason)
            }
        };
        conn.close(code, &reason, Closing::Graceful);
        Box::pin(finish_close(&conn, &socket, writer)).await;
        conn.kill();
        let (code, reason, by_client) = match (conn.closed_by_peer(), conn.closed_with()) {
            (Some((code, reason)), _) => (code, reason, true),
            (None, Some((code, reason))) => (code, reason, false),
            (None, None) => (code, reason, false),
        };
        tracing::debug!(code, reason, by_client, "connection closed");
        if app_route {
            conn.config.counters.closed(code, by_client);
            lifecycle::disconnected(&app, &conn, &path, code, &reason, by_client).await;
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
