//! The bytes a cluster message travels in: who sent it (so a server skips its own), what it
//! is, and the payload as members receive it.
//!
//! ```text
//! version (1) | kind (1: G group, P positioned, D direct, E event) | node id (16)
//!   | kind's fields | payload
//!   G: except flag (1) [+ channel id (16)]
//!   P: except flag (1) [+ channel id (16)] + epoch length (1) + epoch
//!      + offset length (1) + offset (decimal digits)
//!   D: channel id (16)
//!   E: name length (2, big endian) + name (UTF-8)
//!   R: nothing (the payload is a presence diff of the group the Redis channel names)
//! ```
//!
//! A positioned message (to a recoverable group) gets its epoch and offset in Redis, from the
//! script that appends it to the group's stream: the script writes those fields between the
//! header this side encodes ([`positioned_header`]) and the payload.

use uuid::Uuid;

use crate::conn::ConnectionId;

const VERSION: u8 = 1;

/// A decoded cluster message, borrowing from the received bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    /// The server that published it.
    pub(crate) node: Uuid,
    pub(crate) kind: Kind<'a>,
    /// JSON text.
    pub(crate) payload: &'a [u8],
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    /// A group message; the group is the Redis channel's name.
    Group { except: Option<ConnectionId> },
    /// A message of a recoverable group, with its position in the group's cluster stream.
    Positioned {
        except: Option<ConnectionId>,
        epoch: &'a str,
        offset: u64,
    },
    /// A message for one channel.
    Direct { channel: ConnectionId },
    /// A cluster-wide event.
    Event { name: &'a str },
    /// A presence diff; the group is the Redis channel's name.
    Presence,
}

impl Kind<'_> {
    fn encoded_len(&self) -> usize {
        match self {
            Kind::Group { except: None } => 1,
            Kind::Group { except: Some(_) } => 17,
            Kind::Positioned { except, epoch, .. } => {
                1 + 16 * usize::from(except.is_some()) + 1 + epoch.len() + 1 + 20
            }
            Kind::Direct { .. } => 16,
            Kind::Event { name } => 2 + name.len(),
            Kind::Presence => 0,
        }
    }
}

impl Envelope<'_> {
    /// The message's bytes. Event names longer than 65535 bytes are refused by the caller.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(18 + self.kind.encoded_len() + self.payload.len());
        out.push(VERSION);
        out.push(match self.kind {
            Kind::Group { .. } => b'G',
            Kind::Positioned { .. } => b'P',
            Kind::Direct { .. } => b'D',
            Kind::Event { .. } => b'E',
            Kind::Presence => b'R',
        });
        out.extend_from_slice(self.node.as_bytes());
        match &self.kind {
            Kind::Group { except: None } => out.push(0),
            Kind::Group {
                except: Some(channel),
            } => {
                out.push(1);
                out.extend_from_slice(channel.as_uuid().as_bytes());
            }
            Kind::Positioned {
                except,
                epoch,
                offset,
            } => {
                push_except(&mut out, *except);
                let offset = offset.to_string();
                out.push(u8::try_from(epoch.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(&epoch.as_bytes()[..epoch.len().min(255)]);
                out.push(offset.len() as u8);
                out.extend_from_slice(offset.as_bytes());
            }
            Kind::Direct { channel } => out.extend_from_slice(channel.as_uuid().as_bytes()),
            Kind::Event { name } => {
                let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&name.as_bytes()[..usize::from(len)]);
            }
            Kind::Presence => {}
        }
        out.extend_from_slice(self.payload);
        out
    }
}

fn push_except(out: &mut Vec<u8>, except: Option<ConnectionId>) {
    match except {
        None => out.push(0),
        Some(channel) => {
            out.push(1);
            out.extend_from_slice(channel.as_uuid().as_bytes());
        }
    }
}

/// The bytes before the epoch of a positioned message (what the stream script is given).
#[cfg(feature = "redis")]
pub(crate) fn positioned_header(node: uuid::Uuid, except: Option<ConnectionId>) -> Vec<u8> {
    let mut out = Vec::with_capacity(35);
    out.push(VERSION);
    out.push(b'P');
    out.extend_from_slice(node.as_bytes());
    push_except(&mut out, except);
    out
}

/// Reads a message; `Err` says what is wrong with it.
pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope<'_>, &'static str> {
    let mut input = Reader(bytes);
    if input.take(1)? != [VERSION] {
        return Err("unknown envelope version");
    }
    let kind = input.take(1)?[0];
    let node = input.uuid()?;
    let kind = match kind {
        b'G' => match input.take(1)?[0] {
            0 => Kind::Group { except: None },
            1 => Kind::Group {
                except: Some(ConnectionId::from_uuid(input.uuid()?)),
            },
            _ => return Err("bad except flag"),
        },
        b'P' => {
            let except = match input.take(1)?[0] {
                0 => None,
                1 => Some(ConnectionId::from_uuid(input.uuid()?)),
                _ => return Err("bad except flag"),
            };
            let len = usize::from(input.take(1)?[0]);
            let epoch = std::str::from_utf8(input.take(len)?).map_err(|_| "epoch not UTF-8")?;
            let len = usize::from(input.take(1)?[0]);
            let offset = std::str::from_utf8(input.take(len)?)
                .ok()
                .and_then(|digits| digits.parse().ok())
                .ok_or("bad offset")?;
            Kind::Positioned {
                except,
                epoch,
                offset,
            }
        }
        b'D' => Kind::Direct {
            channel: ConnectionId::from_uuid(input.uuid()?),
        },
        b'E' => {
            let len = input.take(2)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let name = std::str::from_utf8(input.take(len)?).map_err(|_| "event name not UTF-8")?;
            Kind::Event { name }
        }
        b'R' => Kind::Presence,
        _ => return Err("unknown message kind"),
    };
    Ok(Envelope {
        node,
        kind,
        payload: input.0,
    })
}

/// What became of a message from another server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Dispatched {
    /// Handed to the app.
    Delivered,
    /// This server's own publication, come back: skipped (its members got it directly).
    Own,
    /// A cluster event the app dropped: too many were waiting to run.
    EventDropped,
    /// Unreadable, or a group message outside a group's channel: dropped, with why.
    Malformed(&'static str),
}

/// Hands one message from the broker to the app: `group` is the group whose channel (subject)
/// it came on, if any. Skips this server's own publications, except positioned ones (every
/// server, the sender's too, delivers a recoverable group's messages in the stream's order).
pub(crate) fn dispatch(
    inbox: &super::Inbox,
    node: Uuid,
    group: Option<&str>,
    bytes: &[u8],
) -> Dispatched {
    let envelope = match decode(bytes) {
        Ok(envelope) => envelope,
        Err(why) => return Dispatched::Malformed(why),
    };
    if envelope.node == node && !matches!(envelope.kind, Kind::Positioned { .. }) {
        return Dispatched::Own;
    }
    let outgoing = |except| super::Outgoing {
        payload: bytes::Bytes::copy_from_slice(envelope.payload),
        except,
    };
    let in_group = || group.ok_or("a group message outside a group's channel");
    match envelope.kind {
        Kind::Group { except } => match in_group() {
            Ok(group) => {
                inbox.deliver_to_group(group, &outgoing(except));
            }
            Err(why) => return Dispatched::Malformed(why),
        },
        Kind::Positioned {
            except,
            epoch,
            offset,
        } => match in_group() {
            Ok(group) => {
                inbox.deliver_positioned(group, &outgoing(except), epoch, offset);
            }
            Err(why) => return Dispatched::Malformed(why),
        },
        Kind::Direct { channel } => {
            inbox.deliver_to_channel(channel, &outgoing(None));
        }
        Kind::Event { name } => {
            if !inbox.deliver_event(name, envelope.payload) {
                return Dispatched::EventDropped;
            }
        }
        Kind::Presence => match in_group() {
            Ok(group) => {
                inbox.deliver_presence(group, envelope.payload);
            }
            Err(why) => return Dispatched::Malformed(why),
        },
    }
    Dispatched::Delivered
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated message");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn uuid(&mut self) -> Result<Uuid, &'static str> {
        let bytes = self.take(16)?;
        Uuid::from_slice(bytes).map_err(|_| "bad id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(kind: Kind<'_>) {
        let node = Uuid::new_v4();
        let envelope = Envelope {
            node,
            kind,
            payload: br#"{"a":1}"#,
        };
        let bytes = envelope.encode();
        assert_eq!(decode(&bytes), Ok(envelope));
    }

    #[test]
    fn every_kind_round_trips() {
        round_trip(Kind::Group { except: None });
        round_trip(Kind::Group {
            except: Some(ConnectionId::from_uuid(Uuid::new_v4())),
        });
        round_trip(Kind::Positioned {
            except: None,
            epoch: "3f9c2a71b0de",
            offset: 42,
        });
        round_trip(Kind::Positioned {
            except: Some(ConnectionId::from_uuid(Uuid::new_v4())),
            epoch: "e",
            offset: u64::MAX,
        });
        round_trip(Kind::Direct {
            channel: ConnectionId::from_uuid(Uuid::new_v4()),
        });
        round_trip(Kind::Event {
            name: "room.message",
        });
    }

    #[test]
    fn damaged_messages_are_errors() {
        let bytes = Envelope {
            node: Uuid::new_v4(),
            kind: Kind::Event { name: "e" },
            payload: b"{}",
        }
        .encode();
        for cut in 0..21 {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong_version = bytes.clone();
        wrong_version[0] = 9;
        assert_eq!(decode(&wrong_version), Err("unknown envelope version"));
        let mut wrong_kind = bytes;
        wrong_kind[1] = b'X';
        assert_eq!(decode(&wrong_kind), Err("unknown message kind"));
        assert!(decode(b"").is_err());
    }
}
