//! The event bus: `emit`, `on`, `once`, namespaces, priorities and wildcards.

pub(crate) mod bus;
mod cluster;
mod context;
mod emit;
mod listener;
mod typed;

use std::borrow::Cow;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use context::{EventContext, EventId, EventMeta, FromEventContext};
pub use listener::{ClosureParam, IntoListener, IntoListenerResult, ListenerParam};
pub use typed::Event;

#[doc(hidden)]
pub use typed::{EventPayload, PayloadOf, assert_exact_event_name, check_payload};

#[doc(hidden)]
pub use listener::{ListenerCall, Outcome, Probe, extract, kind, probe};

pub(crate) use cluster::Incoming;
pub(crate) use listener::{Callable, panic_message};
pub(crate) use switchboard_syntax::event_name as name;

use self::bus::{Bus, Spec};
use crate::{App, Error, ErrorKind};

/// Names of the events Switchboard itself emits.
///
/// Listen to one with its constant, `#[on(names::WS_ERROR)]` (checked at compile time like a
/// string name). They live in the `switchboard` namespace, so
/// `#[on("**", namespace = "switchboard")]` sees them all.
pub mod names {
    /// A listener failed (returned `Err`, panicked, timed out, or could not take the payload).
    /// Payload: [`ListenerFailed`](crate::ListenerFailed). Failures of this event's own listeners
    /// are logged, never re-emitted.
    pub const LISTENER_ERROR: &str = super::bus::LISTENER_ERROR;

    /// A WebSocket connection was accepted. Payload: [`Connected`](crate::ws::Connected).
    pub const WS_CONNECTED: &str = "switchboard:ws.connected";

    /// A WebSocket connection ended. Payload: [`Disconnected`](crate::ws::Disconnected), with
    /// the close code.
    pub const WS_DISCONNECTED: &str = "switchboard:ws.disconnected";

    /// A WebSocket handler returned an error or panicked. Payload:
    /// [`HandlerFailed`](crate::ws::HandlerFailed), with the path, the client and the message:
    /// one `#[on(names::WS_ERROR)]` handles every handler failure.
    pub const WS_ERROR: &str = "switchboard:ws.error";

    /// A member joined a presence group (on this server or, in a cluster, another one).
    /// Payload: [`PresenceJoined`](crate::channel::PresenceJoined). Emitted at the end of the
    /// presence window ([`Builder::presence_window`](crate::Builder::presence_window)), in
    /// order with the leaves.
    pub const PRESENCE_JOIN: &str = "switchboard:presence.join";

    /// A member left a presence group, whichever way (it left, its connection ended, it
    /// expired, the server that held it stopped answering). Payload:
    /// [`PresenceLeft`](crate::channel::PresenceLeft).
    pub const PRESENCE_LEAVE: &str = "switchboard:presence.leave";
}

/// The priority of a listener: listeners run from `Highest` to `Lowest`, and in registration
/// order within a priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Runs last.
    Lowest,
    /// Runs after `Normal`.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Runs before `Normal`.
    High,
    /// Runs first.
    Highest,
}

/// What one `emit` did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmitReport {
    /// The id of this emit.
    pub event_id: EventId,
    /// Listeners that ran (failed ones included).
    pub listeners_executed: usize,
    /// Listeners that returned `Err`, panicked, timed out or could not take the payload.
    pub failed: usize,
    /// Of `failed`, those that ran past the listener timeout.
    pub timed_out: usize,
    /// A listener returned `ControlFlow::Break`: lower priorities did not run.
    pub stopped: bool,
    /// The event is disabled: nothing ran.
    pub disabled: bool,
    /// The name is not a valid event name (or is a wildcard pattern): why. Nothing ran.
    pub invalid_name: Option<String>,
    /// Time spent running listeners.
    pub elapsed: Duration,
}

impl EmitReport {
    pub(crate) fn new(event_id: EventId) -> Self {
        Self {
            event_id,
            listeners_executed: 0,
            failed: 0,
            timed_out: 0,
            stopped: false,
            disabled: false,
            invalid_name: None,
            elapsed: Duration::ZERO,
        }
    }
}

/// Whether `name` can be emitted (a valid name without wildcards); `Err` says why not.
pub(crate) fn check_emitted(name: &str) -> Result<(), String> {
    let problem = match self::name::check(name, self::name::Kind::Pattern) {
        Ok(false) => return Ok(()),
        Ok(true) => "an emitted name cannot contain wildcards".to_owned(),
        Err(e) => e.message(name),
    };
    Err(format!("invalid event name `{name}`: {problem}"))
}

/// What one [`Events::emit_cluster`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterEmitReport {
    /// What this server's listeners did.
    pub local: EmitReport,
    /// Whether the event was sent to the other servers (`None` without a cluster broker).
    pub published: Option<bool>,
    /// Why it was not.
    pub publish_error: Option<String>,
}

/// Counters of one event name (see [`Events::metrics`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventMetrics {
    /// Emits of this name.
    pub emits: u64,
    /// Listener runs, summed over emits.
    pub listeners_run: u64,
    /// Failed listener runs.
    pub failures: u64,
    /// Time spent running listeners, summed over emits.
    pub total_time: Duration,
    /// Whether the event is enabled.
    pub enabled: bool,
}

/// The payload of [`names::LISTENER_ERROR`]: one failed listener run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerFailed {
    /// The event whose listener failed.
    pub event: String,
    /// The id of that emit.
    pub event_id: EventId,
    /// The listener: `module::function (file:line)` for macro listeners.
    pub listener: String,
    /// `error`, `panic`, `payload` (the payload did not fit a parameter) or `timeout`.
    pub kind: String,
    /// What went wrong.
    pub message: String,
}

impl Event for ListenerFailed {
    const NAME: &'static str = names::LISTENER_ERROR;
}

/// Options of a run-time listener (see [`Events::on_with`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ListenOptions {
    priority: Priority,
    once: bool,
}

impl ListenOptions {
    /// Default options: `Normal` priority, runs on every emit.
    pub fn new() -> Self {
        Self::default()
    }

    /// The listener's priority (default `Normal`).
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Run at most once (default `false`).
    pub fn once(mut self) -> Self {
        self.once = true;
        self
    }
}

/// A view of an app's event bus, optionally inside a namespace.
///
/// Get it with [`App::events`]; it is also a listener parameter and an axum extractor. Cloning it
/// is cheap.
///
/// ```
/// # use switchboard::prelude::*;
/// # #[tokio::main] async fn main() -> Result<(), switchboard::Error> {
/// let app = App::builder().only_module("none").build()?;
/// let ws = app.events().namespace("websocket");
/// let handle = ws.on("message.received", |msg: Value| async move {
///     println!("{msg}");
/// })?;
/// let report = app.events().emit("websocket:message.received", json!({ "text": "hi" })).await;
/// assert_eq!(report.listeners_executed, 1);
/// handle.off();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Events {
    app: App,
    namespace: Option<Arc<str>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Events {
    pub(crate) fn new(app: App) -> Self {
        Self {
            app,
            namespace: None,
        }
    }

    fn bus(&self) -> &Bus {
        self.app.bus()
    }

    pub(crate) fn app(&self) -> &App {
        &self.app
    }

    fn full_name<'a>(&self, name: &'a str) -> Cow<'a, str> {
        match &self.namespace {
            Some(ns) => Cow::Owned(format!("{ns}:{name}")),
            None => Cow::Borrowed(name),
        }
    }

    /// A view whose names are prefixed with `namespace` and `:`; views nest
    /// (`namespace("user").namespace("auth")` + `login` is `user:auth:login`).
    pub fn namespace(&self, namespace: &str) -> Events {
        Events {
            app: self.app.clone(),
            namespace: Some(self.full_name(namespace).into()),
        }
    }

    /// This view's namespace, if any.
    pub fn namespace_name(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Runs every listener of `name` (exact and wildcard, by priority, then registration order),
    /// each awaited in turn in the calling task, and says what happened. A name that is not
    /// valid (or is a wildcard pattern) runs nothing, is logged, and is reported in
    /// [`EmitReport::invalid_name`].
    ///
    /// A listener whose payload type is `T` gets the value itself (a clone, or the value for the
    /// last listener); any other listener gets it through JSON, serialised once per emit.
    /// Emitting a name with no listener is cheap and runs nothing.
    pub fn emit<'a, T>(
        &'a self,
        name: &'a str,
        payload: T,
    ) -> impl Future<Output = EmitReport> + Send + 'a
    where
        T: Serialize + Send + Sync + 'static,
    {
        emit::emit(self.bus(), &self.app, self.full_name(name), payload, true)
    }

    /// Emits a typed event (see [`Event`]): its type names it, so no name is written and none
    /// can be mistyped. Through a [`namespace`](Self::namespace) view the view's namespace
    /// comes first, as for [`emit`](Self::emit). Costs what an `emit` by name costs.
    pub fn emit_event<E: Event>(&self, event: E) -> impl Future<Output = EmitReport> + Send + '_ {
        self.emit(E::NAME, event)
    }

    /// [`spawn_emit`](Self::spawn_emit) of a typed event.
    pub fn spawn_emit_event<E: Event>(&self, event: E) -> Result<(), Error> {
        self.spawn_emit(E::NAME, event)
    }

    /// Fire and forget: emits in a background task and returns at once.
    ///
    /// At most `max_background_emits` (see [`Builder`](crate::Builder)) run at a time; past that
    /// this returns an [`ErrorKind::Overloaded`] error instead of queueing without bound. Must be
    /// called inside a Tokio runtime.
    pub fn spawn_emit<T>(&self, name: &str, payload: T) -> Result<(), Error>
    where
        T: Serialize + Send + Sync + 'static,
    {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::new(
                ErrorKind::Config,
                "spawn_emit needs a running Tokio runtime",
            )
        })?;
        let permit = self
            .bus()
            .background()
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Error::new(
                    ErrorKind::Overloaded,
                    format!(
                        "too many background emits in flight (max_background_emits is {})",
                        self.bus().max_background_emits()
                    ),
                )
            })?;
        let events = self.clone();
        let name = self.full_name(name).into_owned();
        let task = self.app.tasks().track_future(async move {
            let _permit = permit;
            emit::emit(
                events.bus(),
                &events.app,
                Cow::Borrowed(&name),
                payload,
                true,
            )
            .await;
        });
        handle.spawn(task);
        Ok(())
    }

    /// Registers `listener` for `name` (a name or a wildcard pattern, inside this view's
    /// namespace) for the life of the app, as in Nexios; the returned handle can remove it
    /// ([`ListenerHandle::off`]), or tie it to a scope ([`ListenerHandle::drop_guard`]).
    ///
    /// A listener is an `async` closure whose parameters, in any order, are what `#[on]`
    /// listeners take: the payload (as the emitted type, any `DeserializeOwned + Clone` type or
    /// `serde_json::Value`), and context extractors such as [`EventMeta`], [`App`] or
    /// [`State<T>`](crate::State). Annotate their types:
    ///
    /// ```
    /// # use switchboard::prelude::*;
    /// # fn f(app: App) -> Result<(), switchboard::Error> {
    /// app.events().on("chat.*", |message: Value, meta: EventMeta| async move {
    ///     println!("{}: {message}", meta.name);
    /// })?;
    /// # Ok(()) }
    /// ```
    ///
    /// Take the app's handles (`App`, `Events`, `ChannelBox`) as parameters rather than
    /// capturing them: the listener lives in the app, and a closure that holds the app keeps
    /// it alive (and its broker's tasks running) until the listener is removed.
    ///
    /// Errors: an invalid name ([`ErrorKind::InvalidName`]), or `max_listeners` reached for this
    /// name ([`ErrorKind::ListenerLimit`]).
    pub fn on<Args>(
        &self,
        name: &str,
        listener: impl IntoListener<Args>,
    ) -> Result<ListenerHandle, Error> {
        self.on_with(name, ListenOptions::new(), listener)
    }

    /// Like [`on`](Self::on), but the listener runs at most once (even under concurrent emits).
    pub fn once<Args>(
        &self,
        name: &str,
        listener: impl IntoListener<Args>,
    ) -> Result<ListenerHandle, Error> {
        self.on_with(name, ListenOptions::new().once(), listener)
    }

    /// Like [`on`](Self::on), with options (priority, once).
    pub fn on_with<Args>(
        &self,
        name: &str,
        options: ListenOptions,
        listener: impl IntoListener<Args>,
    ) -> Result<ListenerHandle, Error> {
        self.add(name, options, listener, false)
    }

    pub(crate) fn add<Args>(
        &self,
        name: &str,
        options: ListenOptions,
        listener: impl IntoListener<Args>,
        scoped: bool,
    ) -> Result<ListenerHandle, Error> {
        let pattern = self.full_name(name).into_owned();
        let id = self.bus().add(Spec {
            pattern: pattern.clone(),
            priority: options.priority,
            once: options.once,
            scoped,
            call: listener.into_callable(),
            label: Cow::Owned(format!("closure on `{pattern}`")),
            seq: None,
        })?;
        Ok(ListenerHandle {
            bus: Arc::downgrade(self.app.bus_arc()),
            id,
            pattern: pattern.into_boxed_str(),
        })
    }

    /// Removes every listener registered under exactly `name` (macro listeners included);
    /// returns how many.
    pub fn remove_all_listeners(&self, name: &str) -> usize {
        self.bus().remove_all(&self.full_name(name))
    }

    /// Listeners registered under exactly `name` (a name or a pattern).
    pub fn listener_count(&self, name: &str) -> usize {
        self.bus().count(&self.full_name(name))
    }

    /// Whether emitting `name` would run at least one listener.
    pub fn has_listeners(&self, name: &str) -> bool {
        self.bus().has_listeners(&self.full_name(name))
    }

    /// Every name and pattern with at least one listener, sorted (full names, whatever this
    /// view's namespace).
    pub fn event_names(&self) -> Vec<String> {
        self.bus().names()
    }

    /// Disables `name`: emitting it runs nothing and reports `disabled`. Errors: `name` is not
    /// a valid event name (or is a pattern: events are disabled by name).
    pub fn disable(&self, name: &str) -> Result<(), Error> {
        self.set_enabled(name, false)
    }

    /// Enables `name` again. Errors as [`disable`](Self::disable).
    pub fn enable(&self, name: &str) -> Result<(), Error> {
        self.set_enabled(name, true)
    }

    fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), Error> {
        let full = self.full_name(name);
        check_emitted(&full).map_err(|problem| Error::new(ErrorKind::InvalidName, problem))?;
        self.bus().set_enabled(&full, enabled);
        Ok(())
    }

    /// Whether `name` is enabled (every name is, until disabled).
    pub fn is_enabled(&self, name: &str) -> bool {
        self.bus().is_enabled(&self.full_name(name))
    }

    /// The counters of `name`: kept for the life of the app once the name had a listener (a
    /// name only connection-scoped listeners used is forgotten when they go).
    pub fn metrics(&self, name: &str) -> Option<EventMetrics> {
        self.bus().metrics(&self.full_name(name))
    }

    /// The counters of every name that has listeners or was emitted, sorted by name.
    pub fn all_metrics(&self) -> Vec<(String, EventMetrics)> {
        self.bus().all_metrics()
    }
}

/// A run-time listener: it stays registered for the life of the app until
/// [`off`](Self::off) removes it, whether or not this handle is kept. For a listener that must
/// end with something (a task, a session), [`drop_guard`](Self::drop_guard) gives a guard that
/// removes it when dropped.
pub struct ListenerHandle {
    bus: Weak<Bus>,
    id: u64,
    pattern: Box<str>,
}

impl std::fmt::Debug for ListenerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerHandle")
            .field("id", &self.id)
            .field("pattern", &self.pattern)
            .finish()
    }
}

impl ListenerHandle {
    /// Removes the listener now; returns whether it was still registered (a `once` listener
    /// that ran is gone already).
    pub fn off(&self) -> bool {
        self.bus
            .upgrade()
            .is_some_and(|bus| bus.remove(self.id, &self.pattern))
    }

    /// A guard that removes the listener when it is dropped (like tokio-util's
    /// `CancellationToken::drop_guard`).
    pub fn drop_guard(self) -> ListenerGuard {
        ListenerGuard(self)
    }

    /// The name or pattern the listener is registered under.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

/// Removes its listener when dropped: see [`ListenerHandle::drop_guard`].
#[must_use = "dropping the guard removes the listener at once"]
#[derive(Debug)]
pub struct ListenerGuard(ListenerHandle);

impl ListenerGuard {
    /// The listener's handle.
    pub fn handle(&self) -> &ListenerHandle {
        &self.0
    }
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.0.off();
    }
}
