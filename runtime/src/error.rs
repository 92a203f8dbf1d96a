use std::fmt;

/// The error type of Switchboard's fallible operations (building an app, registering listeners,
/// serving, sending to groups).
///
/// It displays as a lowercase message without a final period; [`Error::kind`] says what kind of
/// failure it is, and [`std::error::Error::source`] gives the underlying error where there is one.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// What kind of failure an [`Error`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Two registrations conflict, or one is invalid (found when the app is built).
    Registration,
    /// A builder setting is invalid.
    Config,
    /// An event name, namespace or pattern is not valid.
    InvalidName,
    /// `max_listeners` for an event is reached.
    ListenerLimit,
    /// A group name is not valid.
    InvalidGroup,
    /// A bounded resource is exhausted (for example, too many background emits).
    Overloaded,
    /// A payload could not be serialised.
    Serialize,
    /// The cluster broker failed.
    Broker,
    /// Binding or serving failed.
    Io,
    /// An error of the application's own (see [`Error::other`]).
    Other,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// An error of your own, with its message: for instance from a
    /// [`FromEventContext`](crate::FromEventContext) extractor that cannot build its value (the
    /// listener then fails with this message).
    ///
    /// ```
    /// use switchboard::{Error, ErrorKind};
    ///
    /// let e = Error::other("no user in this session");
    /// assert_eq!(e.kind(), ErrorKind::Other);
    /// assert_eq!(e.to_string(), "no user in this session");
    /// ```
    pub fn other(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Other, message.to_string())
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub(crate) fn serialize(e: serde_json::Error) -> Self {
        Self::new(
            ErrorKind::Serialize,
            format!("cannot serialise the payload: {e}"),
        )
        .with_source(e)
    }

    pub(crate) fn io(what: &str, e: std::io::Error) -> Self {
        Self::new(ErrorKind::Io, format!("{what}: {e}")).with_source(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
