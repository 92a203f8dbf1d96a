//! Recoverable groups: each message gets a position in its group's stream (the history's epoch
//! and an offset that grows by one per message), travels to members in a small envelope, and
//! a client that comes back with its last position gets what it missed, then the live
//! messages, with no gap and no duplicate.
//!
//! The envelope, one JSON text per message (the payload encoded once, as for any group send):
//!
//! ```json
//! {"group":"chat_lobby","epoch":"3f9c2a71b0de","offset":42,"data":{"room":"lobby","text":"hi"}}
//! ```
//!
//! A client hands its positions back on reconnect in the `since` query parameter, once per
//! group: `?since=GROUP:EPOCH:OFFSET` (`?since=chat_lobby:3f9c2a71b0de:42&since=news:a01:7`),
//! or `?since=EPOCH:OFFSET` for a route that joins one group. The browser client
//! (`client/switchboard.js`) does this for every recoverable group its socket is in.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::AddStatus;
use crate::{Error, ErrorKind};

/// A position in a recoverable group's stream: the last message a client got.
///
/// Its text form is `EPOCH:OFFSET` (as `Display` writes it and `FromStr` reads it). A client
/// hands it back on reconnect in the route's `since` query parameter, prefixed with the group
/// (`GROUP:EPOCH:OFFSET`) when its socket is in several (see [`Position::from_query`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The stream's epoch: it changes when the group's history is lost (all of it aged out,
    /// flushed, or the process restarted).
    pub epoch: String,
    /// The offset of the message: 1 for the first of the epoch, one more for each next one.
    pub offset: u64,
}

impl Position {
    /// The client's position in `group`, from the `since` query parameters of a WebSocket
    /// route's request: the one for this group (`?since=chat_lobby:3f9c2a71b0de:42`, one
    /// parameter per group), else one without a group (`?since=3f9c2a71b0de:42`), else
    /// `None`. A value that is not a position is an error (tell the client, do not guess).
    pub fn from_query(ws: &crate::WebSocket, group: &str) -> Result<Option<Position>, Error> {
        let mut any_group = None;
        for value in ws.query_params("since") {
            if value.is_empty() {
                continue;
            }
            match parse_since(&value)? {
                (Some(named), position) if named == group => return Ok(Some(position)),
                (None, position) => any_group = any_group.or(Some(position)),
                (Some(_), _) => {}
            }
        }
        Ok(any_group)
    }

    fn from_parts(epoch: &str, offset: &str) -> Option<Position> {
        let valid_epoch = !epoch.is_empty()
            && epoch.len() <= 64
            && epoch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        Some(Position {
            epoch: valid_epoch.then(|| epoch.to_owned())?,
            offset: offset.parse().ok()?,
        })
    }
}

/// One `since` value: `GROUP:EPOCH:OFFSET` or `EPOCH:OFFSET` (an epoch has no `:`, a group
/// name may).
fn parse_since(text: &str) -> Result<(Option<&str>, Position), Error> {
    let mut parts = text.rsplitn(3, ':');
    let (offset, epoch, group) = (parts.next(), parts.next(), parts.next());
    epoch
        .filter(|_| group != Some(""))
        .and_then(|epoch| Position::from_parts(epoch, offset?))
        .map(|position| (group, position))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidGroup,
                format!(
                    "`{text}` is not a stream position: expected EPOCH:OFFSET or GROUP:EPOCH:OFFSET"
                ),
            )
        })
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

impl FromStr for Position {
    type Err = Error;

    fn from_str(text: &str) -> Result<Position, Error> {
        text.rsplit_once(':')
            .and_then(|(epoch, offset)| Position::from_parts(epoch, offset))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidGroup,
                    format!("`{text}` is not a stream position: expected EPOCH:OFFSET"),
                )
            })
    }
}

/// What a join with a position found (see
/// [`ChannelBox::add_channel_to_group_from`](crate::ChannelBox::add_channel_to_group_from)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Joined {
    /// The group joined.
    pub group: String,
    /// Whether the channel was added.
    pub status: AddStatus,
    /// The group's position when the channel joined: what the client has once it read the
    /// recovered messages.
    pub position: Position,
    /// What happened to the missed messages.
    pub recovery: Recovery,
}

/// The join report the browser client reads (send it to the client after the join):
/// `{"group":"chat_lobby","position":"EPOCH:OFFSET","recovery":"fresh"|"recovered"|"not_recoverable","reason":null|"..."}`.
impl Serialize for Joined {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let (recovery, reason) = match &self.recovery {
            Recovery::Fresh => ("fresh", None),
            Recovery::Recovered(_) => ("recovered", None),
            Recovery::NotRecoverable(why) => ("not_recoverable", Some(why.to_string())),
        };
        let mut report = serializer.serialize_struct("Joined", 4)?;
        report.serialize_field("group", &self.group)?;
        report.serialize_field("position", &self.position.to_string())?;
        report.serialize_field("recovery", recovery)?;
        report.serialize_field("reason", &reason)?;
        report.end()
    }
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

/// The envelope of one message: `{"group":..,"epoch":..,"offset":..,"data":PAYLOAD}`, built
/// from the payload's JSON text without parsing it again.
pub(crate) fn envelope(group: &str, epoch: &str, offset: u64, payload: &str) -> Utf8Bytes {
    let mut text = String::with_capacity(payload.len() + group.len() + epoch.len() + 50);
    text.push_str("{\"group\":");
    push_json_string(&mut text, group);
    text.push_str(",\"epoch\":\"");
    text.push_str(epoch);
    text.push_str("\",\"offset\":");
    let _ = write!(text, "{offset}");
    text.push_str(",\"data\":");
    text.push_str(payload);
    text.push('}');
    Utf8Bytes::from(text)
}

/// Appends `value` as a JSON string (quoted and escaped).
fn push_json_string(text: &mut String, value: &str) {
    if value
        .bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f)
    {
        text.push('"');
        text.push_str(value);
        text.push('"');
    } else {
        text.push_str(&serde_json::Value::from(value).to_string());
    }
}

/// Group-name patterns: `name` exactly, or `prefix*`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Patterns(Vec<String>);

impl Patterns {
    pub(crate) fn add(&mut self, pattern: &str) -> Result<(), String> {
        let stem = pattern.strip_suffix('*').unwrap_or(pattern);
        if stem.contains('*') || pattern.is_empty() {
            return Err(format!(
                "group pattern `{pattern}`: a group name, or a prefix ending in one `*`"
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
    fn since_values_name_their_group_or_none() {
        let at = |epoch: &str, offset| Position {
            epoch: epoch.to_owned(),
            offset,
        };
        assert_eq!(parse_since("ab:3").unwrap(), (None, at("ab", 3)));
        assert_eq!(
            parse_since("lobby:ab:3").unwrap(),
            (Some("lobby"), at("ab", 3))
        );
        assert_eq!(
            parse_since("chat:lobby:ab:3").unwrap(),
            (Some("chat:lobby"), at("ab", 3))
        );
        for bad in ["3", ":ab:3", "g:ab:x", "g::3", "g:a b:3", "ab:"] {
            let e = parse_since(bad).unwrap_err();
            assert!(e.to_string().contains("GROUP:EPOCH:OFFSET"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_envelope_is_json_around_the_payload() {
        let text = envelope("room", "ab12", 7, r#"{"text":"hi"}"#);
        let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"group": "room", "epoch": "ab12", "offset": 7, "data": {"text": "hi"}})
        );
        for group in ["a\"b", "back\\slash", "tab\there", "é", "\u{7f}"] {
            let text = envelope(group, "ab12", 7, "null");
            let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            assert_eq!(value["group"], group);
        }
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
