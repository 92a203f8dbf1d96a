use std::any::Any;
use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{App, Error, Events};

/// The id of one emit: unique within an app, increasing from one emit to the next in a thread
/// (a counter, not a random UUID; threads take ids in blocks, so ids from different threads
/// are not in emit order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub u64);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Serialises an erased payload (an `Option<T>`) to JSON.
type ToJson = fn(&(dyn Any + Send + Sync)) -> Result<Value, String>;

/// What an emit knows of its payload's type without being generic over it: its name (for
/// messages) and how to turn it into JSON.
#[derive(Clone, Copy)]
pub(crate) struct PayloadKind {
    type_name: &'static str,
    to_json: ToJson,
}

impl PayloadKind {
    pub(crate) fn of<T: Serialize + 'static>() -> Self {
        Self {
            type_name: std::any::type_name::<T>(),
            to_json: to_json::<T>,
        }
    }
}

fn to_json<T: Serialize + 'static>(payload: &(dyn Any + Send + Sync)) -> Result<Value, String> {
    match payload.downcast_ref::<Option<T>>() {
        Some(Some(value)) => serde_json::to_value(value)
            .map_err(|e| format!("cannot serialise the payload to JSON: {e}")),
        _ => Err("the payload was already taken by another listener".to_owned()),
    }
}

/// What a listener sees of the event being emitted: the app, the event's name, id and time, and
/// (through its parameters) the payload.
///
/// Context extractors ([`FromEventContext`]) are built from it.
pub struct EventContext<'a> {
    app: &'a App,
    name: &'a str,
    id: EventId,
    payload: &'a mut (dyn Any + Send + Sync),
    kind: PayloadKind,
    memo: &'a mut Option<Box<Memo>>,
}

/// What one emit computes at most once and shares between its listeners.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    json: Option<Value>,
    timestamp: Option<SystemTime>,
}

impl fmt::Debug for EventContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventContext")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("payload_type", &self.kind.type_name)
            .finish_non_exhaustive()
    }
}

impl<'a> EventContext<'a> {
    pub(crate) fn new(
        app: &'a App,
        name: &'a str,
        id: EventId,
        payload: &'a mut (dyn Any + Send + Sync),
        kind: PayloadKind,
        memo: &'a mut Option<Box<Memo>>,
    ) -> Self {
        Self {
            app,
            name,
            id,
            payload,
            kind,
            memo,
        }
    }

    /// The app the event is emitted in.
    pub fn app(&self) -> &App {
        self.app
    }

    /// The full event name (with its namespace, if any).
    pub fn name(&self) -> &str {
        self.name
    }

    /// The id of this emit.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// When the event was emitted (taken when a listener first asks for it).
    pub fn timestamp(&mut self) -> SystemTime {
        let memo = self.memo.get_or_insert_with(Box::default);
        *memo.timestamp.get_or_insert_with(SystemTime::now)
    }

    pub(crate) fn payload_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self.payload
    }

    pub(crate) fn payload_type_name(&self) -> &'static str {
        self.kind.type_name
    }

    /// The payload as JSON, serialised once per emit and shared by every listener that needs it.
    pub(crate) fn json(&mut self) -> Result<&Value, String> {
        if let Some(Some(value)) = self.payload.downcast_ref::<Option<Value>>() {
            return Ok(value);
        }
        let memo = self.memo.get_or_insert_with(Box::default);
        if memo.json.is_none() {
            memo.json = Some((self.kind.to_json)(&*self.payload)?);
        }
        Ok(memo.json.as_ref().expect("set above"))
    }
}

/// A listener parameter taken from the event's context rather than from its payload.
///
/// Implemented by [`App`], [`Events`], [`ChannelBox`](crate::ChannelBox), [`State<T>`](crate::State)
/// and [`EventMeta`]; implement it for your own types to give listeners what they need.
///
/// ```
/// use switchboard::{EventContext, FromEventContext, Error};
///
/// struct EventName(String);
///
/// impl FromEventContext for EventName {
///     fn from_event_context(cx: &mut EventContext<'_>) -> Result<Self, Error> {
///         Ok(EventName(cx.name().to_owned()))
///     }
/// }
/// ```
pub trait FromEventContext: Sized {
    /// Builds the parameter; an `Err` fails this listener (counted and reported, never a panic).
    fn from_event_context(cx: &mut EventContext<'_>) -> Result<Self, Error>;
}

impl FromEventContext for App {
    fn from_event_context(cx: &mut EventContext<'_>) -> Result<Self, Error> {
        Ok(cx.app.clone())
    }
}

impl FromEventContext for Events {
    fn from_event_context(cx: &mut EventContext<'_>) -> Result<Self, Error> {
        Ok(cx.app.events())
    }
}

/// The event's metadata, as a listener parameter: its full name, id and time (so a `chat.*`
/// or `**` listener can tell which event fired).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventMeta {
    /// The full event name (with its namespace, if any).
    pub name: String,
    /// The id of this emit.
    pub id: EventId,
    /// When the event was emitted.
    pub timestamp: SystemTime,
}

impl FromEventContext for EventMeta {
    fn from_event_context(cx: &mut EventContext<'_>) -> Result<Self, Error> {
        Ok(EventMeta {
            name: cx.name.to_owned(),
            id: cx.id,
            timestamp: cx.timestamp(),
        })
    }
}
