//! Channel groups: a connection's [`Channel`], and the app's [`ChannelBox`] that adds channels to
//! groups and sends to them; recoverable groups ([`Position`], [`Joined`]) and presence
//! ([`presence`]: rosters, [`MemberInfo`], [`PresenceStats`], diffs).
//!
//! - `groups`: the group table (each group a ring its local members' writers read) and the
//!   broker calls that take groups beyond this process.
//! - `channel_box`: [`ChannelBox`], the public face of the table.
//! - `expiry`: channels that expire after a time without activity.
//! - `history`: the bounded history of groups.
//! - `recovery`: positions and replay for recoverable groups.
//! - `presence`: who is in a group, and the diffs of who joined and left.

mod channel_box;
mod expiry;
pub(crate) mod groups;
mod history;
pub mod presence;
mod recovery;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};
use tokio_tungstenite::tungstenite::Utf8Bytes;

pub use channel_box::{ChannelBox, GroupSend};
pub(crate) use expiry::sweep;
pub use history::HistoryEntry;
pub(crate) use history::HistoryLimits;
pub use presence::{Member, MemberInfo, PresenceJoined, PresenceLeft, PresencePage, PresenceStats};
pub(crate) use recovery::Patterns;
pub use recovery::{Joined, NotRecoverable, Position, Recovery};

pub use crate::conn::PayloadType;
use crate::conn::{Closing, Conn, ConnectionId, Frame, WsError, close_code};

/// What a send does to a member that has fallen more than its outbound queue's bound behind
/// (`Builder::outbound_queue_bytes`). Either way the others never wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumer {
    /// Close the connection with 1008 "slow consumer" (the default): it leaves its groups, and
    /// the send that found it too far behind counts it as dropped.
    #[default]
    Close,
    /// Keep the connection, and skip the oldest messages it has not received, down to the
    /// bound (as a ring buffer does: a member that comes back gets the newest). Every message a
    /// member skipped is counted in [`ChannelMetrics::dropped_for_slow_consumers`]. A message
    /// sent to one channel (`send_to`) whose queue is full is itself dropped, and counted.
    Drop,
}

/// A connection's channel: a cheap handle (clone it freely) to its outbound queue, with an id
/// and optional data. A connection has exactly one; [`Channel::new`] and
/// [`WebSocket::channel`](crate::WebSocket::channel) return it.
///
/// It serialises as its id, so a payload holding a `Channel` reaches JSON listeners as the id
/// and typed listeners as the live channel.
#[derive(Clone)]
pub struct Channel(Arc<Conn>);

impl PartialEq for Channel {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Channel {}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("id", &self.id()).finish()
    }
}

impl Serialize for Channel {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.id().serialize(serializer)
    }
}

/// A channel stands for its id wherever one is expected (`send_to`, `except`).
impl From<&Channel> for ConnectionId {
    fn from(channel: &Channel) -> Self {
        channel.id()
    }
}

impl From<Channel> for ConnectionId {
    fn from(channel: Channel) -> Self {
        channel.id()
    }
}

impl Channel {
    pub(crate) fn from_conn(conn: Arc<Conn>) -> Channel {
        Channel(conn)
    }

    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.0
    }

    /// The channel's id: its connection's id.
    pub fn id(&self) -> ConnectionId {
        self.0.id
    }

    /// Whether the connection is still open (no close requested).
    pub fn is_open(&self) -> bool {
        !self.0.is_closing()
    }

    /// How this channel receives JSON: group messages and `send_json` (default
    /// [`PayloadType::Json`]).
    pub fn payload_type(&self) -> PayloadType {
        self.0.payload_type()
    }

    /// Sets how this channel receives JSON.
    pub fn set_payload_type(&self, payload_type: PayloadType) {
        self.0.set_payload_type(payload_type);
    }

    /// Expires the channel after `ttl` without activity (a message from the client, or
    /// [`touch`](Self::touch)): it leaves its groups and its connection is closed with 1001
    /// "channel expired" (checked every `expiry_sweep_interval` while the app is served).
    /// `None` removes the expiry.
    pub fn set_ttl(&self, ttl: Option<Duration>) {
        self.0.set_ttl(ttl);
    }

    /// Counts as activity (postpones the expiry).
    pub fn touch(&self) {
        self.0.touch();
    }

    /// Attaches data to the channel (a user id, say), replacing what was there.
    pub fn set_data<T: Send + Sync + 'static>(&self, data: T) {
        self.0.set_data(Arc::new(data));
    }

    /// The data of type `T` attached to the channel, if any.
    pub fn data<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let data: Arc<dyn Any + Send + Sync> = self.0.data()?;
        data.downcast().ok()
    }

    /// The groups this channel is in.
    pub fn groups(&self) -> Vec<String> {
        self.0.group_names().iter().map(|g| g.to_string()).collect()
    }

    /// Sends `value` as compact JSON (as the payload type says: a text frame, or binary for
    /// `Bytes`), waiting only while the outbound queue is full.
    pub async fn send_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), WsError> {
        self.0.send(json_frame(value)?).await
    }

    /// Sends a text message.
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), WsError> {
        self.0.send(Frame::Text(Utf8Bytes::from(text.into()))).await
    }

    /// Closes the channel's connection with `code` and `reason` (after what is queued).
    pub fn close(&self, code: u16, reason: &str) {
        self.0.close(code, reason, Closing::Graceful);
    }
}

/// `value` as a JSON frame (sent as the channel's payload type says).
pub(crate) fn json_frame<T: Serialize + ?Sized>(value: &T) -> Result<Frame, WsError> {
    let text = serde_json::to_string(value).map_err(|e| {
        WsError::close(
            close_code::INTERNAL_ERROR,
            format!("cannot serialise the message: {e}"),
        )
        .with_source(e)
    })?;
    Ok(Frame::Json(Utf8Bytes::from(text)))
}

/// What adding a channel to a group did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddStatus {
    /// The channel joined; `group_created`: it is the group's first member (on this server).
    Added {
        /// Whether the group was created by this join.
        group_created: bool,
    },
    /// The channel was a member already.
    AlreadyMember,
}

/// What removing a channel from a group did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveStatus {
    /// The channel left; `group_removed`: it was the last member, so the group is gone.
    Removed {
        /// Whether the group went away with this member.
        group_removed: bool,
    },
    /// The group exists but the channel is not in it.
    NotAMember,
    /// There is no such group.
    NoSuchGroup,
}

/// What a group send (or a send to one channel) did. Every member on this server but the
/// excepted one is counted once: `delivered + dropped` is the number of members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendReport {
    /// Members (on this server) the message was queued for.
    pub delivered: usize,
    /// Members it was not queued for: slow consumers this send closed, or (a send to one
    /// channel) a queue that was full or a connection that was closing.
    pub dropped: usize,
    /// Of those, the slow consumers this send closed.
    pub slow_consumers_closed: usize,
    /// The id of the history entry, when saved (for a recoverable group, its offset).
    pub history_id: Option<u64>,
    /// For a recoverable group: the message's position in the group's stream (`None` in a
    /// cluster whose broker keeps streams: the position is given in Redis, and members get
    /// the message when the stream hands it back; `published` says whether it was taken).
    pub position: Option<Position>,
    /// With a cluster broker: whether it took the message for the other servers (`None`
    /// without one). `Some(false)`: it could not (Redis unreachable, or too far behind), see
    /// `publish_error`. The Redis broker publishes in the background, in order, so a failure
    /// after it took the message is counted and logged by the broker instead.
    pub published: Option<bool>,
    /// Why publishing failed.
    pub publish_error: Option<String>,
}

/// Counters of the channel layer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelMetrics {
    /// Groups with members on this server.
    pub groups: usize,
    /// Memberships on this server, summed over the groups.
    pub group_members: usize,
    /// `group_send` calls made on this server.
    pub group_sends: u64,
    /// Messages queued for local members, by group sends (from this server or another) and
    /// `send_to`: one per member reached.
    pub deliveries: u64,
    /// Messages not queued for a member because it was closed as a slow consumer, or was
    /// already closing: one per member missed.
    pub dropped_for_closed: u64,
    /// Connections closed because their queue was full.
    pub slow_consumers_closed: u64,
    /// Messages slow consumers never got (with [`SlowConsumer::Drop`]): each message counted
    /// once for every member that skipped it.
    pub dropped_for_slow_consumers: u64,
    /// Channels closed because they expired.
    pub expired: u64,
    /// Group sends the cluster broker refused (`SendReport::published == Some(false)`). A
    /// publish that fails after the broker took it is counted by the broker
    /// (`Redis::metrics`).
    pub publish_failures: u64,
}
