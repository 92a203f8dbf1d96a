//! Channel groups: a connection's [`Channel`], and the app's [`ChannelBox`] that adds channels to
//! groups and sends to them.

pub(crate) mod groups;
mod history;

use std::any::Any;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use serde::{Serialize, Serializer};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

pub use history::HistoryEntry;
pub(crate) use history::HistoryLimits;

use self::groups::Groups;
use crate::event::{EventContext, FromEventContext};
use crate::ws::connection::{Closing, Conn, ConnectionId};
use crate::ws::{WebSocket, WsError};
use crate::{App, Error};

/// How members of a group receive its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadType {
    /// JSON in text frames (the default).
    #[default]
    Json,
    /// Text frames (group messages are JSON text, so the same bytes as `Json`).
    Text,
    /// Binary frames holding the JSON bytes.
    Bytes,
}

impl PayloadType {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => PayloadType::Text,
            2 => PayloadType::Bytes,
            _ => PayloadType::Json,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            PayloadType::Json => 0,
            PayloadType::Text => 1,
            PayloadType::Bytes => 2,
        }
    }
}

/// What a group send does to a member whose outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumer {
    /// Close the connection with 1008 "slow consumer" (the default): it leaves its groups and
    /// the others never wait for it.
    #[default]
    Close,
    /// Drop the message for that member only, and count it.
    Drop,
}

/// The channel part of a connection's shared state (its groups are the rings it reads).
pub(crate) struct ChannelState {
    payload_type: AtomicU8,
    /// Expiry in milliseconds since the last activity (0: none).
    ttl_ms: AtomicU64,
    /// The last activity, in milliseconds since `epoch`.
    active_ms: AtomicU64,
    epoch: Instant,
    data: Mutex<Option<Arc<dyn Any + Send + Sync>>>,
    /// The app's groups, to register an expiry with.
    groups_table: Weak<Groups>,
}

impl std::fmt::Debug for ChannelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelState").finish_non_exhaustive()
    }
}

impl ChannelState {
    pub(crate) fn new(groups: &Arc<Groups>) -> Self {
        Self {
            payload_type: AtomicU8::new(0),
            ttl_ms: AtomicU64::new(0),
            active_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            data: Mutex::default(),
            groups_table: Arc::downgrade(groups),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records activity, when an expiry is set (a clock read otherwise saved).
    pub(crate) fn touch_if_expiring(&self) {
        if self.ttl_ms.load(Ordering::Relaxed) != 0 {
            self.active_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// Whether group messages go out in binary frames.
    pub(crate) fn sends_binary(&self) -> bool {
        self.payload_type.load(Ordering::Relaxed) == PayloadType::Bytes.as_u8()
    }

    pub(crate) fn is_expired(&self) -> bool {
        let ttl = self.ttl_ms.load(Ordering::Relaxed);
        ttl != 0
            && self
                .now_ms()
                .saturating_sub(self.active_ms.load(Ordering::Relaxed))
                > ttl
    }
}

/// A connection's channel: a cheap handle (clone it freely) to its outbound queue, with an id
/// and optional data. A connection has exactly one; [`Channel::new`] and [`WebSocket::channel`]
/// return it.
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

impl Channel {
    /// The channel of `ws`'s connection (as in Nexios' `Channel(websocket=ws)`).
    pub fn new(ws: &WebSocket) -> Channel {
        ws.channel()
    }

    pub(crate) fn from_conn(conn: Arc<Conn>) -> Channel {
        Channel(conn)
    }

    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.0
    }

    pub(crate) fn state(&self) -> &ChannelState {
        &self.0.channel
    }

    /// The channel's id: its connection's id.
    pub fn id(&self) -> ConnectionId {
        self.0.id
    }

    /// Whether the connection is still open (no close requested).
    pub fn is_open(&self) -> bool {
        !self.0.is_closing()
    }

    /// How this channel receives group messages (default [`PayloadType::Json`]).
    pub fn payload_type(&self) -> PayloadType {
        PayloadType::from_u8(self.state().payload_type.load(Ordering::Relaxed))
    }

    /// Sets how this channel receives group messages.
    pub fn set_payload_type(&self, payload_type: PayloadType) {
        self.state()
            .payload_type
            .store(payload_type.as_u8(), Ordering::Relaxed);
    }

    /// Expires the channel after `ttl` without activity (a message from the client, or
    /// [`touch`](Self::touch)): it leaves its groups and its connection is closed with 1001
    /// "channel expired". `None` removes the expiry. Must be called inside a Tokio runtime.
    pub fn set_ttl(&self, ttl: Option<Duration>) {
        let state = self.state();
        let ms = ttl.map_or(0, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        state.active_ms.store(state.now_ms(), Ordering::Relaxed);
        state.ttl_ms.store(ms, Ordering::Relaxed);
        if ms != 0
            && let Some(groups) = state.groups_table.upgrade()
        {
            groups.expire(&self.0);
        }
    }

    /// Counts as activity (postpones the expiry).
    pub fn touch(&self) {
        let state = self.state();
        state.active_ms.store(state.now_ms(), Ordering::Relaxed);
    }

    /// Attaches data to the channel (a user id, say), replacing what was there.
    pub fn set_data<T: Send + Sync + 'static>(&self, data: T) {
        *self
            .state()
            .data
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(data));
    }

    /// The data of type `T` attached to the channel, if any.
    pub fn data<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let data = self
            .state()
            .data
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        data.downcast().ok()
    }

    /// The groups this channel is in.
    pub fn groups(&self) -> Vec<String> {
        self.0.group_names().iter().map(|g| g.to_string()).collect()
    }

    /// Sends `value` as JSON (as the payload type says: a text frame, or binary for `Bytes`),
    /// waiting only while the outbound queue is full.
    pub async fn send_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), WsError> {
        let text = serde_json::to_string(value).map_err(|e| {
            WsError::close(
                crate::ws::close_code::INTERNAL_ERROR,
                format!("cannot serialise the message: {e}"),
            )
        })?;
        // A channel whose payload type is bytes gets it in a binary frame (the writer decides).
        self.0
            .send(crate::ws::connection::Frame::Json(Utf8Bytes::from(text)))
            .await
    }

    /// Sends a text message.
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), WsError> {
        self.0
            .send(crate::ws::connection::Frame::Text(Utf8Bytes::from(
                text.into(),
            )))
            .await
    }

    /// Closes the channel's connection with `code` and `reason` (after what is queued).
    pub fn close(&self, code: u16, reason: &str) {
        self.0.close(code, reason, Closing::Graceful);
    }
}

impl WebSocket {
    /// This connection's channel (the same one every time).
    pub fn channel(&self) -> Channel {
        Channel(self.conn().clone())
    }
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

/// What a group send (or a send to one channel) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendReport {
    /// Members (on this server) the message was queued for.
    pub delivered: usize,
    /// Members it was not queued for: their queue was full, or they were closing.
    pub dropped: usize,
    /// Of those, the slow consumers this send closed.
    pub slow_consumers_closed: usize,
    /// The id of the history entry, when saved.
    pub history_id: Option<u64>,
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
    /// Connections closed because their queue was full.
    pub slow_consumers_closed: u64,
    /// Messages dropped for slow consumers (with [`SlowConsumer::Drop`]).
    pub dropped_for_slow_consumers: u64,
    /// Channels closed because they expired.
    pub expired: u64,
    /// Group sends the cluster broker refused (`SendReport::published == Some(false)`). A
    /// publish that fails after the broker took it is counted by the broker
    /// (`Redis::metrics`).
    pub publish_failures: u64,
}

/// An app's channel groups (Nexios' `ChannelBox`): get it with [`App::channels`]; it is also a
/// listener parameter and an axum extractor. Cloning it is cheap.
///
/// ```no_run
/// use switchboard::prelude::*;
///
/// #[ws_route("/chat/{room}")]
/// async fn chat(mut ws: WebSocket, room: String, app: App) -> Result<(), WsError> {
///     ws.accept().await?;
///     let channel = Channel::new(&ws);
///     app.channels().add_channel_to_group(&channel, format!("chat_{room}")).await.ok();
///     while let Some(message) = ws.receive_json::<Value>().await? {
///         let _ = app.channels().group_send(format!("chat_{room}"), &message).await;
///     }
///     Ok(()) // the channel leaves its groups when the connection ends
/// }
/// # fn main() {}
/// ```
#[derive(Clone)]
pub struct ChannelBox {
    app: App,
}

impl std::fmt::Debug for ChannelBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelBox").finish_non_exhaustive()
    }
}

impl App {
    /// The app's channel groups.
    pub fn channels(&self) -> ChannelBox {
        ChannelBox { app: self.clone() }
    }
}

impl ChannelBox {
    fn table(&self) -> &Arc<Groups> {
        self.app.groups()
    }

    /// Adds `channel` to `group`. With a cluster broker, returns once this server receives
    /// the group's messages. Errors: an empty group name, a closed channel, or a broker that
    /// cannot subscribe (the channel is a member locally all the same).
    pub async fn add_channel_to_group(
        &self,
        channel: &Channel,
        group: impl AsRef<str>,
    ) -> Result<AddStatus, Error> {
        self.table().add(channel, group.as_ref()).await
    }

    /// Removes `channel` from `group`; a group without members disappears.
    pub async fn remove_channel_from_group(
        &self,
        channel: &Channel,
        group: impl AsRef<str>,
    ) -> Result<RemoveStatus, Error> {
        self.table().remove(channel.conn(), group.as_ref()).await
    }

    /// Sends `payload` to every member of `group`: encoded once as JSON, offered to each
    /// member's queue without waiting on any of them (a member whose queue is full is a slow
    /// consumer, see [`SlowConsumer`]). The sender is included unless excluded with
    /// [`except`](GroupSend::except).
    pub fn group_send<'a, G, T>(&self, group: G, payload: &'a T) -> GroupSend<'a, G, T>
    where
        G: AsRef<str> + Send + 'a,
        T: Serialize + Sync + ?Sized,
    {
        GroupSend {
            channels: self.clone(),
            group,
            payload,
            except: None,
            save_history: false,
        }
    }

    /// Sends `payload` as JSON to one channel by id (on any server, with a cluster broker).
    pub async fn send_to<T: Serialize + ?Sized>(
        &self,
        channel: ConnectionId,
        payload: &T,
    ) -> Result<SendReport, Error> {
        let payload = Utf8Bytes::from(serde_json::to_string(payload).map_err(Error::serialize)?);
        let mut report = SendReport::default();
        if let Some(conn) = self.app.connections().get(&channel) {
            self.table()
                .offer_one(&Channel::from_conn(conn), &payload, &mut report);
            return Ok(report);
        }
        let broker = &self.table().broker;
        if broker.is_clustered() {
            let message = crate::broker::Outgoing {
                payload: bytes::Bytes::from(payload),
                except: None,
            };
            match broker.send_to(channel, &message).await {
                Ok(()) => report.published = Some(true),
                Err(e) => {
                    report.published = Some(false);
                    report.publish_error = Some(e.to_string());
                }
            }
        }
        Ok(report)
    }

    /// The groups with members on this server, with their member counts, sorted by name.
    pub fn groups(&self) -> Vec<(String, usize)> {
        self.table().list()
    }

    /// The members of `group` on this server.
    pub fn members(&self, group: &str) -> Vec<Channel> {
        self.table().members(group)
    }

    /// Every group with members on any server, with its member count, sorted by name. With a
    /// cluster broker the answer comes from the membership the servers record in Redis: it is
    /// approximate (joins show up within a moment, a server that died keeps its members listed
    /// until their entries expire, see `Redis::membership_ttl`) and fails with an
    /// [`ErrorKind::Broker`](crate::ErrorKind::Broker) error when Redis does not answer within
    /// the broker's timeout. Without one, it is [`groups`](Self::groups).
    pub async fn cluster_groups(&self) -> Result<Vec<(String, usize)>, Error> {
        match self.table().broker.cluster_groups().await {
            Some(answer) => answer,
            None => Ok(self.groups()),
        }
    }

    /// The ids of the members of `group` on any server (approximate, like
    /// [`cluster_groups`](Self::cluster_groups)); without a cluster broker, this server's.
    pub async fn cluster_members(&self, group: &str) -> Result<Vec<ConnectionId>, Error> {
        Groups::check_name(group)?;
        match self.table().broker.cluster_members(group).await {
            Some(answer) => answer,
            None => Ok(self.members(group).iter().map(Channel::id).collect()),
        }
    }

    /// Removes every group (channels stay connected); returns how many there were.
    pub async fn flush_groups(&self) -> usize {
        self.table().flush().await
    }

    /// The saved history of `group` (sends with [`save_history`](GroupSend::save_history)),
    /// oldest first.
    pub fn history(&self, group: &str) -> Vec<HistoryEntry> {
        self.table().histories().get(group)
    }

    /// Forgets the history of `group`; returns how many entries it had.
    pub fn flush_history(&self, group: &str) -> usize {
        self.table().histories().flush(group)
    }

    /// Closes every connection of the app with `code` and `reason`; returns how many.
    pub fn close_all_connections(&self, code: u16, reason: &str) -> usize {
        self.app.close_all_connections(code, reason)
    }

    /// The channel layer's counters.
    pub fn metrics(&self) -> ChannelMetrics {
        self.table().metrics()
    }
}

/// A group send being prepared: `.except(&channel)`, `.save_history()`, then `.await` it.
#[must_use = "nothing is sent until this is awaited"]
pub struct GroupSend<'a, G, T: ?Sized> {
    channels: ChannelBox,
    group: G,
    payload: &'a T,
    except: Option<ConnectionId>,
    save_history: bool,
}

impl<G, T: ?Sized> std::fmt::Debug for GroupSend<'_, G, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSend")
            .field("except", &self.except)
            .field("save_history", &self.save_history)
            .finish_non_exhaustive()
    }
}

impl<G, T: ?Sized> GroupSend<'_, G, T> {
    /// Leaves `channel` out (broadcast-from: everyone but the sender).
    pub fn except(mut self, channel: &Channel) -> Self {
        self.except = Some(channel.id());
        self
    }

    /// Saves the message in the group's history.
    pub fn save_history(mut self) -> Self {
        self.save_history = true;
        self
    }
}

impl<'a, G, T> IntoFuture for GroupSend<'a, G, T>
where
    G: AsRef<str> + Send + 'a,
    T: Serialize + Sync + ?Sized,
{
    type Output = Result<SendReport, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<SendReport, Error>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        // Encoded once, before the future: the payload need not be `Send`.
        let encoded = serde_json::to_string(self.payload).map_err(Error::serialize);
        let GroupSend {
            channels,
            group,
            except,
            save_history,
            ..
        } = self;
        Box::pin(async move {
            let group = group.as_ref();
            Groups::check_name(group)?;
            let payload = Utf8Bytes::from(encoded?);
            Ok(channels
                .table()
                .send(group, payload, except, save_history)
                .await)
        })
    }
}

impl FromEventContext for ChannelBox {
    fn from_event_context(cx: &mut EventContext<'_>) -> Result<Self, Error> {
        Ok(cx.app().channels())
    }
}
