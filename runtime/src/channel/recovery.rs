//! Recoverable groups: each message gets a position in its group's stream (the history's epoch
//! and an offset that grows by one per message), travels to members in a small envelope, and
//! a client that comes back with its last position gets what it missed, then the live
//! messages, with no gap and no duplicate.
//!
//! The envelope, one JSON text per message (the payload encoded once, as for any group send):
//!
//! ```json
//! {"epoch":"3f9c2a71b0de","offset":42,"data":{"room":"lobby","text":"hi"}}
//! ```

use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::AddStatus;
use crate::{Error, ErrorKind};

/// A position in a recoverable group's stream: the last message a client got.
///
/// Its text form, `EPOCH:OFFSET` (as `Display` writes it and `FromStr` reads it), is the
/// convention for handing it back on reconnect: the `since` query parameter of the route
/// (see [`Position::from_query`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The stream's epoch: it changes when the group's history is lost (all of it aged out,
    /// flushed, or the process restarted).
    pub epoch: String,
    /// The offset of the message: 1 for the first of the epoch, one more for each next one.
    pub offset: u64,
}

impl Position {
    /// The position in the query parameter `since` of a WebSocket route's request
    /// (`/chat/lobby?since=3f9c2a71b0de:42`), if there is one. A value that is not a position
    /// is an error (tell the client, do not guess).
    pub fn from_query(ws: &crate::WebSocket) -> Result<Option<Position>, Error> {
        ws.query_param("since")
            .filter(|value| !value.is_empty())
            .map(|value| value.parse())
            .transpose()
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

impl FromStr for Position {
    type Err = Error;

    fn from_str(text: &str) -> Result<Position, Error> {
        let invalid = || {
            Error::new(
                ErrorKind::InvalidGroup,
                format!("`{text}` is not a stream position: expected EPOCH:OFFSET"),
            )
        };
        let (epoch, offset) = text.rsplit_once(':').ok_or_else(invalid)?;
        let valid_epoch = !epoch.is_empty()
            && epoch.len() <= 64
            && epoch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid_epoch {
            return Err(invalid());
        }
        Ok(Position {
            epoch: epoch.to_owned(),
            offset: offset.parse().map_err(|_| invalid())?,
        })
    }
}

/// What a join with a position found (see
/// [`ChannelBox::add_channel_to_group_from`](crate::ChannelBox::add_channel_to_group_from)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Joined {
    /// Whether the channel was added.
    pub status: AddStatus,
    /// The group's position when the channel joined: what the client has once it read the
    /// recovered messages.
    pub position: Position,
    /// What happened to the missed messages.
    pub recovery: Recovery,
}

/// What happened to the messages a client missed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recovery {
    /// No position was given: the channel gets the messages from now on.
    Fresh,
    /// The missed messages (this many, none of them twice) were queued before any newer one.
    Recovered(usize),
    /// They cannot be recovered: the client must re-sync (load the state afresh). The channel
    /// is a member all the same and gets the messages from now on.
    NotRecoverable(NotRecoverable),
}

/// Why missed messages cannot be recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotRecoverable {
    /// The position is of another epoch (the history was lost since).
    EpochChanged,
    /// Some of the missed messages are no longer in the history (bounded by count, bytes
    /// and age).
    TooFarBehind,
    /// The position is ahead of the stream (it was not given by this group).
    Ahead,
    /// The channel was already a member: it missed nothing.
    AlreadyMember,
    /// The channel's outbound queue could not hold the missed messages.
    QueueFull,
}

impl fmt::Display for NotRecoverable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotRecoverable::EpochChanged => "the group's history was lost since (new epoch)",
            NotRecoverable::TooFarBehind => "missed messages are no longer in the history",
            NotRecoverable::Ahead => "the position is ahead of the group's stream",
            NotRecoverable::AlreadyMember => "already a member",
            NotRecoverable::QueueFull => "the outbound queue cannot hold the missed messages",
        })
    }
}

/// The envelope of one message: `{"epoch":..,"offset":..,"data":PAYLOAD}`, built from the
/// payload's JSON text without parsing it again.
pub(crate) fn envelope(epoch: &str, offset: u64, payload: &str) -> Utf8Bytes {
    let mut text = String::with_capacity(payload.len() + epoch.len() + 40);
    text.push_str("{\"epoch\":\"");
    text.push_str(epoch);
    text.push_str("\",\"offset\":");
    let _ = write!(text, "{offset}");
    text.push_str(",\"data\":");
    text.push_str(payload);
    text.push('}');
    Utf8Bytes::from(text)
}

/// Group-name patterns: `name` exactly, or `prefix*`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Patterns(Vec<String>);

impl Patterns {
    pub(crate) fn add(&mut self, pattern: &str) -> Result<(), String> {
        let stem = pattern.strip_suffix('*').unwrap_or(pattern);
        if stem.contains('*') || pattern.is_empty() {
            return Err(format!(
                "recoverable group pattern `{pattern}`: a group name, or a prefix ending in one `*`"
            ));
        }
        self.0.push(pattern.to_owned());
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn matches(&self, group: &str) -> bool {
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => group.starts_with(prefix),
            None => group == p,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_and_write_epoch_colon_offset() {
        let p: Position = "3f9c2a71b0de:42".parse().unwrap();
        assert_eq!(p.epoch, "3f9c2a71b0de");
        assert_eq!(p.offset, 42);
        assert_eq!(p.to_string(), "3f9c2a71b0de:42");
        for bad in ["", "42", ":42", "e:", "e:-1", "e:x", "e f:1", "e\":1"] {
            let e = bad.parse::<Position>().unwrap_err();
            assert!(
                e.to_string().contains("expected EPOCH:OFFSET"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_envelope_is_json_around_the_payload() {
        let text = envelope("ab12", 7, r#"{"text":"hi"}"#);
        let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"epoch": "ab12", "offset": 7, "data": {"text": "hi"}})
        );
    }

    #[test]
    fn patterns_match_names_and_prefixes() {
        let mut p = Patterns::default();
        p.add("chat_*").unwrap();
        p.add("news").unwrap();
        assert!(p.matches("chat_lobby") && p.matches("chat_") && p.matches("news"));
        assert!(!p.matches("newsroom") && !p.matches("cha"));
        assert!(p.add("a*b*").is_err() && p.add("").is_err());
    }
}
