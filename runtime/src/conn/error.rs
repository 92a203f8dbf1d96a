use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

/// WebSocket close codes (RFC 6455 section 7.4), and the ones Switchboard uses.
pub mod close_code {
    /// The purpose of the connection was fulfilled (a handler that returned `Ok`).
    pub const NORMAL: u16 = 1000;
    /// The server is going down (graceful shutdown), or a channel expired.
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A frame of a type the handler does not accept (binary where JSON text was required).
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// No close code was given by the peer (never sent on the wire).
    pub const NO_STATUS: u16 = 1005;
    /// The connection ended without a close frame (never sent on the wire).
    pub const ABNORMAL: u16 = 1006;
    /// Data not consistent with the message type (invalid JSON, invalid UTF-8).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A policy was violated: used for slow consumers whose outbound queue is full.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A message over the size limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The handler failed (returned an error without a close code, or panicked), or the peer
    /// stopped answering pings.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The server is overloaded; try again later. Refusing a handshake with it answers 503.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// A WebSocket error: a close code and a reason, which is also how the connection is closed
/// when a handler returns it (directly, or anywhere in the `source()` chain of its error, so it
/// survives `anyhow` and `?` through other error types).
///
/// ```
/// use switchboard::ws::{WsError, close_code};
///
/// let refused = WsError::close(4003, "not a member of this room");
/// assert_eq!(refused.code(), 4003);
/// assert_eq!(refused.to_string(), "websocket closed with 4003: not a member of this room");
/// ```
pub struct WsError {
    code: u16,
    reason: Cow<'static, str>,
    kind: Kind,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Close the connection with this code.
    Close,
    /// The connection is already closed.
    Closed,
    /// The handshake has not been accepted yet.
    NotAccepted,
}

impl WsError {
    /// An error that closes the connection with `code` and `reason` (like Nexios'
    /// `WebSocketException`). Codes 1000-2999 are defined by the protocol; 3000-3999 are for
    /// libraries and frameworks; 4000-4999 are the application's own.
    pub fn close(code: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            reason: reason.into(),
            kind: Kind::Close,
            source: None,
        }
    }

    pub(crate) fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub(crate) fn closed() -> Self {
        Self {
            code: close_code::ABNORMAL,
            reason: Cow::Borrowed("the connection is closed"),
            kind: Kind::Closed,
            source: None,
        }
    }

    pub(crate) fn not_accepted() -> Self {
        Self {
            code: close_code::INTERNAL_ERROR,
            reason: Cow::Borrowed("the handshake is not accepted: call `accept()` first"),
            kind: Kind::NotAccepted,
            source: None,
        }
    }

    /// The close code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The close reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Whether this error says the connection was already closed (sending after a close, or
    /// after the peer went away).
    pub fn is_closed(&self) -> bool {
        self.kind == Kind::Closed
    }

    /// Finds a `WsError` in `error` or its `source()` chain.
    pub fn find<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a WsError> {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(ws) = e.downcast_ref::<WsError>() {
                return Some(ws);
            }
            current = e.source();
        }
        None
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Close => write!(f, "websocket closed with {}: {}", self.code, self.reason),
            Kind::Closed | Kind::NotAccepted => f.write_str(&self.reason),
        }
    }
}

impl fmt::Debug for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsError")
            .field("code", &self.code)
            .field("reason", &self.reason)
            .field("kind", &self.kind)
            .finish()
    }
}

/// A framework error in a handler closes the connection with 1011 "internal error" (so `?`
/// works on, say, `add_channel_to_group`).
impl From<crate::Error> for WsError {
    fn from(error: crate::Error) -> Self {
        WsError::close(close_code::INTERNAL_ERROR, "internal error").with_source(error)
    }
}

impl StdError for WsError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(WsError);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer")
        }
    }

    impl StdError for Outer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn found_in_the_source_chain() {
        let outer = Outer(WsError::close(4001, "nope"));
        let found = WsError::find(&outer).unwrap();
        assert_eq!((found.code(), found.reason()), (4001, "nope"));
        let boxed: Box<dyn StdError + Send + Sync> = Box::new(WsError::close(4002, "x"));
        assert_eq!(WsError::find(&*boxed).unwrap().code(), 4002);
        assert!(WsError::find(&std::fmt::Error).is_none());
    }
}
