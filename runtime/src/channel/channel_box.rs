use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::groups::Groups;
use super::{AddStatus, Channel, ChannelMetrics, HistoryEntry, RemoveStatus, SendReport};
use super::{Joined, MemberInfo, Position, PresencePage, PresenceStats};
use crate::conn::ConnectionId;
use crate::{App, Error, ErrorKind};

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
        self.table().add(channel, group.as_ref(), None).await
    }

    /// Adds `channel` to a presence group (see
    /// [`Builder::presence_groups`](crate::Builder::presence_groups)) with what it tells the
    /// others: a user id and a small JSON value, listed by [`presence`](Self::presence) and
    /// carried by the join and leave diffs.
    ///
    /// ```no_run
    /// use switchboard::channel::MemberInfo;
    /// use switchboard::prelude::*;
    ///
    /// #[ws_route("/chat/{room}")]
    /// async fn chat(mut ws: WebSocket, room: String, channels: ChannelBox) -> Result<(), WsError> {
    ///     let name = ws.query_param("name").unwrap_or_else(|| "guest".to_owned());
    ///     ws.accept().await?;
    ///     let me = MemberInfo::user(&name).with_data(json!({ "name": name }))?;
    ///     channels.add_channel_to_group_as(&ws.channel(), format!("chat_{room}"), me).await?;
    ///     while ws.receive().await?.is_some() {}
    ///     Ok(())
    /// }
    /// ```
    ///
    /// Errors: the group keeps no presence, the info is larger than
    /// [`Builder::max_member_info`](crate::Builder::max_member_info), or as for
    /// [`add_channel_to_group`](Self::add_channel_to_group).
    pub async fn add_channel_to_group_as(
        &self,
        channel: &Channel,
        group: impl AsRef<str>,
        info: MemberInfo,
    ) -> Result<AddStatus, Error> {
        self.table().add(channel, group.as_ref(), Some(&info)).await
    }

    /// The first page of a presence group's roster: its members (on every server, in a
    /// cluster) with what they told the others and when they joined, at most
    /// [`Builder::presence_page_size`](crate::Builder::presence_page_size) of them; `next`
    /// says where the following page starts ([`presence_after`](Self::presence_after)).
    /// In a cluster the roster is written to Redis in the background: a join a moment ago
    /// may not be listed yet (its diff follows).
    pub async fn presence(&self, group: &str) -> Result<PresencePage, Error> {
        self.presence_page(group, None).await
    }

    /// The page of a presence group's roster after `cursor` (a [`PresencePage::next`]).
    pub async fn presence_after(&self, group: &str, cursor: &str) -> Result<PresencePage, Error> {
        self.presence_page(group, Some(cursor)).await
    }

    async fn presence_page(
        &self,
        group: &str,
        cursor: Option<&str>,
    ) -> Result<PresencePage, Error> {
        let presences = self.check_presence(group)?;
        let limit = presences.config.page;
        if let Some(answer) = self
            .app
            .broker()
            .cluster_presence(group, cursor, limit)
            .await
        {
            return answer;
        }
        let after = cursor
            .map(|cursor| {
                cursor.parse().map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidGroup,
                        format!("`{cursor}` is not a presence cursor (a page's `next`)"),
                    )
                })
            })
            .transpose()?;
        Ok(presences.page(group, after, limit))
    }

    /// How many are in a presence group (on every server, in a cluster): connections, and
    /// distinct users. Its cost does not grow with the group.
    pub async fn presence_stats(&self, group: &str) -> Result<PresenceStats, Error> {
        let presences = self.check_presence(group)?;
        if let Some(answer) = self.app.broker().cluster_presence_stats(group).await {
            return answer;
        }
        Ok(presences.stats(group))
    }

    fn check_presence(&self, group: &str) -> Result<&super::presence::Presences, Error> {
        Groups::check_name(group)?;
        let presences = &self.table().presences;
        if !presences.tracks(group) {
            return Err(Error::new(
                ErrorKind::InvalidGroup,
                format!(
                    "`{group}` keeps no presence: name it (or a prefix of it) in \
                     Builder::presence_groups"
                ),
            ));
        }
        Ok(presences)
    }

    /// Adds `channel` to a recoverable group (see
    /// [`Builder::recoverable_groups`](crate::Builder::recoverable_groups)) and, given the last
    /// position the client got, queues the messages it missed before any newer one: none
    /// missed, none twice, even while others keep sending to the group. The answer says what
    /// happened: [`Recovered`](super::Recovery::Recovered) with how many, or
    /// [`NotRecoverable`](super::Recovery::NotRecoverable) with why (the client must then re-sync), and the group's
    /// position at the join.
    ///
    /// Members of a recoverable group get each message in an envelope,
    /// `{"group":"..","epoch":"..","offset":N,"data":PAYLOAD}`; the client keeps the last
    /// `epoch:offset` of each group and hands it back on reconnect, by convention as the
    /// route's `since` query parameter, once per group (`?since=GROUP:EPOCH:OFFSET`, read by
    /// [`Position::from_query`]). Send the returned [`Joined`](super::Joined) to the client:
    /// it serialises as the join report the browser client reads.
    ///
    /// ```no_run
    /// use switchboard::channel::{Position, Recovery};
    /// use switchboard::prelude::*;
    ///
    /// #[ws_route("/chat/{room}")]
    /// async fn chat(mut ws: WebSocket, room: String, channels: ChannelBox) -> Result<(), WsError> {
    ///     let group = format!("chat_{room}");
    ///     // `?since=chat_lobby:EPOCH:OFFSET`, as the browser client sends it
    ///     let since = Position::from_query(&ws, &group)
    ///         .map_err(|e| WsError::close(4400, e.to_string()))?;
    ///     ws.accept().await?;
    ///     let joined = channels
    ///         .add_channel_to_group_from(&ws.channel(), &group, since.as_ref())
    ///         .await
    ///         .map_err(|e| WsError::close(1011, e.to_string()))?;
    ///     if let Recovery::NotRecoverable(why) = &joined.recovery {
    ///         tracing::info!("{group}: the client re-syncs ({why})");
    ///     }
    ///     // The join report the browser client reads: {"group", "position", "recovery", "reason"}
    ///     ws.send_json(&joined).await?;
    ///     while ws.receive().await?.is_some() {}
    ///     Ok(())
    /// }
    /// ```
    ///
    /// In a cluster whose broker keeps streams, the missed messages come from the group's
    /// stream and what this server delivered since; a server that lags the one the client
    /// left may hand it a message again later, which the client skips by its offset (the
    /// browser client does).
    ///
    /// Errors: the group is not recoverable, or as for
    /// [`add_channel_to_group`](Self::add_channel_to_group).
    pub async fn add_channel_to_group_from(
        &self,
        channel: &Channel,
        group: impl AsRef<str>,
        since: Option<&Position>,
    ) -> Result<Joined, Error> {
        // Boxed: the join with its stream read is not part of the caller's (the handler's)
        // state for the life of the connection.
        Box::pin(self.table().add_from(channel, group.as_ref(), since)).await
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
    /// consumer, see [`SlowConsumer`](super::SlowConsumer)). The sender is included unless excluded with
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

    /// Sends `payload` as JSON to one channel, by its id or the [`Channel`] itself (on any
    /// server, with a cluster broker).
    pub async fn send_to<T: Serialize + ?Sized>(
        &self,
        channel: impl Into<ConnectionId>,
        payload: &T,
    ) -> Result<SendReport, Error> {
        let payload = Utf8Bytes::from(serde_json::to_string(payload).map_err(Error::serialize)?);
        Ok(self.table().send_to(channel.into(), payload).await)
    }

    /// The groups with members on this server, with their member counts, sorted by name.
    pub fn groups(&self) -> Vec<(String, usize)> {
        self.table().list()
    }

    /// The members of `group` on this server.
    pub fn members(&self, group: &str) -> Vec<Channel> {
        self.table()
            .members(group)
            .into_iter()
            .map(Channel::from_conn)
            .collect()
    }

    /// Every group with members on any server, with its member count, sorted by name. With a
    /// cluster broker the answer comes from the membership the servers record in Redis: it is
    /// approximate (joins show up within a moment, a server that died keeps its members listed
    /// until their entries expire, see `Redis::membership_ttl`) and fails with an
    /// [`ErrorKind::Broker`](crate::ErrorKind::Broker) error when Redis does not answer within
    /// the broker's timeout. Without one, it is [`groups`](Self::groups).
    pub async fn cluster_groups(&self) -> Result<Vec<(String, usize)>, Error> {
        match self.app.broker().cluster_groups().await {
            Some(answer) => answer,
            None => Ok(self.groups()),
        }
    }

    /// The ids of the members of `group` on any server (approximate, like
    /// [`cluster_groups`](Self::cluster_groups)); without a cluster broker, this server's.
    pub async fn cluster_members(&self, group: &str) -> Result<Vec<ConnectionId>, Error> {
        Groups::check_name(group)?;
        match self.app.broker().cluster_members(group).await {
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
    /// Leaves `channel` out (broadcast-from: everyone but the sender): the [`Channel`], or
    /// its id.
    pub fn except(mut self, channel: impl Into<ConnectionId>) -> Self {
        self.except = Some(channel.into());
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
