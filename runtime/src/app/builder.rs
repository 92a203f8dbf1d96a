use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::{App, AppInner, registry};
use crate::event::Callable;
use crate::event::bus::{Bus, BusConfig, Spec};
use crate::{Error, ErrorKind};

/// Settings of an [`App`], and the registrations it keeps.
///
/// Every setting has a default chosen to protect a server; each method says its own.
///
/// ```
/// use std::time::Duration;
/// use switchboard::App;
///
/// # fn main() -> Result<(), switchboard::Error> {
/// let app = App::builder()
///     .only_module(module_path!())
///     .max_listeners(10)
///     .listener_timeout(Duration::from_secs(5))
///     .build()?;
/// # let _ = app; Ok(()) }
/// ```
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct Builder {
    module: Option<String>,
    states: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    bus: BusConfig,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("module", &self.module)
            .field("bus", &self.bus)
            .finish_non_exhaustive()
    }
}

impl Builder {
    pub(super) fn new() -> Self {
        Self {
            module: None,
            states: HashMap::new(),
            bus: BusConfig {
                max_listeners: 100,
                listener_timeout: None,
                max_background_emits: 1024,
            },
        }
    }

    /// Keeps only the routes and listeners registered in `module_path` or its submodules
    /// (default: all of them). Tests use it to hold many isolated apps in one binary:
    /// `App::builder().only_module(module_path!())`.
    pub fn only_module(mut self, module_path: impl Into<String>) -> Self {
        self.module = Some(module_path.into());
        self
    }

    /// Gives the app a value of type `T`, reachable through the [`State<T>`](crate::State)
    /// parameter of listeners and WebSocket handlers (cloned for each use: wrap large things
    /// in an `Arc`). One value per type; a second call for the same type replaces the first.
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.states.insert(TypeId::of::<T>(), Box::new(value));
        self
    }

    /// The most listeners one event name (or pattern) may have (default 100). Registering one
    /// more is an error. Listeners tied to a connection do not count.
    pub fn max_listeners(mut self, max: usize) -> Self {
        self.bus.max_listeners = max;
        self
    }

    /// How long one `async` listener may run before it is abandoned and counted as failed
    /// (default: no limit). Needs a Tokio runtime with timers enabled.
    pub fn listener_timeout(mut self, limit: Duration) -> Self {
        self.bus.listener_timeout = Some(limit);
        self
    }

    /// How many [`spawn_emit`](crate::Events::spawn_emit)s may run at once (default 1024); past
    /// that, `spawn_emit` returns an error at once instead of queueing without bound.
    pub fn max_background_emits(mut self, max: usize) -> Self {
        self.bus.max_background_emits = max;
        self
    }

    /// Collects the registrations, checks them, and assembles the app.
    ///
    /// Errors name every conflicting registration with its source location.
    pub fn build(self) -> Result<App, Error> {
        if self.bus.max_background_emits == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                "max_background_emits must be at least 1",
            ));
        }
        let listeners = registry::listeners(self.module.as_deref())?;
        let bus = Bus::new(self.bus, listeners.len() as u64);
        for (seq, r) in listeners.iter().enumerate() {
            bus.add(Spec {
                pattern: r.full_name(),
                priority: r.priority,
                once: r.once,
                scoped: false,
                call: Callable::Static(r.call),
                label: Cow::Owned(r.label()),
                seq: Some(seq as u64),
            })
            .map_err(|e| {
                Error::new(
                    ErrorKind::Registration,
                    format!("listener {}: {e}", r.label()),
                )
            })?;
        }
        Ok(App {
            inner: Arc::new(AppInner {
                bus: Arc::new(bus),
                states: self.states,
                tasks: TaskTracker::new(),
            }),
        })
    }
}
