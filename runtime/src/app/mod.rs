//! The application: what the registrations add up to, and the handle everything else hangs on.

mod builder;
mod delivery;
mod router;
mod serve;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use axum::Router;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use builder::Builder;
pub use serve::{Server, Shutdown};

use crate::Events;
use crate::broker::Broker;
use crate::channel::groups::Groups;
use crate::conn::Connections;
use crate::event::Incoming;
use crate::event::bus::Bus;
use crate::ws::WsSettings;

/// A Switchboard application: its event bus, its channel groups and its WebSocket routes.
///
/// Build it with [`App::from_registry`] (everything the macros registered in this binary) or
/// [`App::builder`]; run it with [`serve`](App::serve), or hand it to an axum app with
/// [`into_router`](App::into_router). It is a cheap handle (clone it freely), and all its state
/// is its own: two apps in one process share nothing.
///
/// `App` is also a listener parameter and an axum extractor, so HTTP handlers can emit events
/// and send to groups.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

struct AppInner {
    /// This app, weakly (for the parts that are handed `&AppInner`).
    me: Weak<AppInner>,
    /// What it was built with, for the start-up log line.
    summary: Summary,
    /// The admin page's settings, when it has one.
    admin: Option<crate::ops::Admin>,
    /// How often the metrics go to the `metrics` facade (`Builder::export_metrics`).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    export_metrics: Option<std::time::Duration>,
    bus: Arc<Bus>,
    groups: Arc<Groups>,
    broker: Arc<dyn Broker>,
    connections: Arc<Connections>,
    /// Events other servers emitted cluster-wide, waiting to run here.
    cluster_events: Incoming,
    states: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    tasks: TaskTracker,
    ws: WsSettings,
    router: Router<App>,
    fallback: Option<Router<App>>,
    shutdown: CancellationToken,
    /// Background work started once, when the app is first served.
    started: OnceLock<()>,
    /// Cancelled when the app is dropped: the broker's tasks end.
    closed: CancellationToken,
}

impl Drop for AppInner {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("bus", &self.inner.bus)
            .field("connections", &self.inner.connections)
            .finish_non_exhaustive()
    }
}

impl App {
    /// An app with every route and listener the macros registered in this binary, and default
    /// settings. Equivalent to `App::builder().build()`.
    pub fn from_registry() -> Result<App, crate::Error> {
        Self::builder().build()
    }

    /// A builder, to choose settings, give state, add HTTP routes, or keep only the
    /// registrations of one module.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// The event bus.
    pub fn events(&self) -> Events {
        Events::new(self.clone())
    }

    /// The state of type `T` given to [`Builder::state`], if any.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.inner
            .states
            .get(&TypeId::of::<T>())
            .and_then(|s| s.downcast_ref())
    }

    /// Open WebSocket connections.
    pub fn connection_count(&self) -> usize {
        self.inner.connections.len()
    }

    pub(crate) fn groups(&self) -> &Arc<Groups> {
        &self.inner.groups
    }

    pub(crate) fn downgrade(&self) -> WeakApp {
        WeakApp(Arc::downgrade(&self.inner))
    }

    pub(crate) fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    pub(crate) fn bus_arc(&self) -> &Arc<Bus> {
        &self.inner.bus
    }

    /// Tasks the app started (background emits, connections): waited for at shutdown.
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    pub(crate) fn ws(&self) -> &WsSettings {
        &self.inner.ws
    }

    pub(crate) fn connections(&self) -> &Arc<Connections> {
        &self.inner.connections
    }

    pub(crate) fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    pub(crate) fn summary(&self) -> Summary {
        self.inner.summary
    }

    pub(crate) fn admin(&self) -> Option<&crate::ops::Admin> {
        self.inner.admin.as_ref()
    }

    /// Starts the app's background work once, inside the runtime that serves it: the broker's
    /// tasks and the channel expiry sweeper.
    pub(crate) fn start(&self) {
        if self.inner.started.set(()).is_err() {
            return;
        }
        self.inner.broker.start();
        tokio::spawn(crate::channel::sweep(Arc::downgrade(&self.inner.groups)));
        if !self.inner.groups.presences.config.tracked.is_empty() {
            tokio::spawn(crate::channel::presence::dispatch(
                self.downgrade(),
                self.inner.closed.clone(),
            ));
        }
        #[cfg(feature = "metrics")]
        if let Some(every) = self.inner.export_metrics {
            tokio::spawn(crate::ops::export_metrics(self.downgrade(), every));
        }
    }

    /// Whether the app has been served (bound or turned into a router).
    pub(crate) fn is_started(&self) -> bool {
        self.inner.started.get().is_some()
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// The app's routes, with its state.
    pub(crate) fn router(&self) -> Router {
        let mut router = self.inner.router.clone();
        if let Some(fallback) = &self.inner.fallback {
            router = router.fallback_service(fallback.clone().with_state(self.clone()));
        }
        router.with_state(self.clone())
    }
}

/// What an app was built with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) ws_routes: usize,
    pub(crate) http_routes: usize,
    /// Listeners the macros registered (run-time ones come later).
    pub(crate) listeners: usize,
}

/// An app that does not keep itself alive (held by parts the app owns).
#[derive(Clone)]
pub(crate) struct WeakApp(Weak<AppInner>);

impl WeakApp {
    pub(crate) fn upgrade(&self) -> Option<App> {
        self.0.upgrade().map(|inner| App { inner })
    }
}

impl std::fmt::Debug for WeakApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WeakApp")
    }
}
