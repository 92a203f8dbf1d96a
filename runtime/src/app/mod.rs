//! The application: what the registrations add up to, and the handle everything else hangs on.

mod builder;
pub(crate) mod registry;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::task::TaskTracker;

pub use builder::Builder;

use crate::Events;
use crate::event::bus::Bus;

/// A Switchboard application: its event bus, its channel groups and its WebSocket routes.
///
/// Build it with [`App::from_registry`] (everything the macros registered in this binary) or
/// [`App::builder`]. It is a cheap handle (clone it freely) and all its state is its own: two
/// apps in one process share nothing.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

struct AppInner {
    bus: Arc<Bus>,
    states: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    tasks: TaskTracker,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("bus", &self.inner.bus)
            .finish_non_exhaustive()
    }
}

impl App {
    /// An app with every route and listener the macros registered in this binary, and default
    /// settings. Equivalent to `App::builder().build()`.
    pub fn from_registry() -> Result<App, crate::Error> {
        Self::builder().build()
    }

    /// A builder, to choose settings, give state, or keep only the registrations of one module.
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
}
