//! The group table of an app: each group is a ring of frames its local members' writers read
//! (a send encodes the message once and appends it, whatever the number of members), and the
//! broker calls that take groups beyond this process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::history::{GroupHistory, Histories, HistoryLimits, lock_history};
use super::presence::{Member, MemberInfo, PresenceConfig, Presences};
use super::recovery::{Joined, NotRecoverable, Position, Recovery, envelope};

/// The longest group name, in bytes (as Centrifugo's channel names).
pub(crate) const MAX_GROUP_NAME: usize = 255;
use super::{AddStatus, Channel, ChannelMetrics, Patterns, RemoveStatus, SendReport, SlowConsumer};
use crate::broker::{Broker, Outgoing};
use crate::conn::ring::Ring;
use crate::conn::{
    Closing, Conn, ConnConfig, ConnectionId, Connections, Frame, Offer, close_code, lock,
};
use crate::{Error, ErrorKind};

/// One group: the ring its local members read, and its broker subscription.
#[derive(Debug)]
pub(crate) struct Group {
    ring: Arc<Ring>,
    /// The broker subscription, made once by the first member (others wait for it).
    subscribed: tokio::sync::OnceCell<()>,
}

impl Group {
    fn new(conns: &Arc<ConnConfig>) -> Self {
        Self {
            ring: Ring::new(conns),
            subscribed: tokio::sync::OnceCell::new(),
        }
    }
}

/// Settings of the channel layer.
#[derive(Debug, Clone)]
pub(crate) struct GroupsConfig {
    pub(crate) slow_consumer: SlowConsumer,
    /// The most groups one connection may be in.
    pub(crate) max_per_connection: usize,
    pub(crate) history: HistoryLimits,
    pub(crate) sweep_interval: Duration,
    /// The groups whose messages carry positions and can be recovered.
    pub(crate) recoverable: Patterns,
    pub(crate) presence: PresenceConfig,
}

/// Counters of the channel layer.
#[derive(Debug, Default)]
pub(super) struct Counters {
    sends: AtomicU64,
    deliveries: AtomicU64,
    dropped_closed: AtomicU64,
    slow_closed: AtomicU64,
    dropped: AtomicU64,
    pub(super) expired: AtomicU64,
    publish_failures: AtomicU64,
}

pub(crate) struct Groups {
    table: papaya::HashMap<Arc<str>, Arc<Group>, foldhash::fast::RandomState>,
    /// The connections' settings: the lag bound, and the sequence numbers frames get.
    pub(super) conns: Arc<ConnConfig>,
    /// The app's live connections (to reach a channel by id).
    pub(super) connections: Arc<Connections>,
    /// Joins and leaves: so a group is never removed while a member is being added.
    structure: Mutex<()>,
    histories: Histories,
    /// The rosters of presence groups.
    pub(crate) presences: Arc<Presences>,
    broker: Arc<dyn Broker>,
    pub(super) config: GroupsConfig,
    pub(super) counters: Counters,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups")
            .field("groups", &self.table.len())
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

impl Groups {
    pub(crate) fn new(
        broker: Arc<dyn Broker>,
        config: GroupsConfig,
        conns: Arc<ConnConfig>,
        connections: Arc<Connections>,
    ) -> Self {
        Self {
            table: papaya::HashMap::with_hasher(foldhash::fast::RandomState::default()),
            conns,
            connections,
            structure: Mutex::new(()),
            histories: Histories::new(config.history),
            presences: Arc::new(Presences::new(config.presence.clone())),
            broker,
            config,
            counters: Counters::default(),
        }
    }

    pub(crate) fn histories(&self) -> &Histories {
        &self.histories
    }

    pub(crate) fn check_name(group: &str) -> Result<(), Error> {
        if group.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidGroup,
                "a group name cannot be empty",
            ));
        }
        if group.len() > MAX_GROUP_NAME {
            return Err(Error::new(
                ErrorKind::InvalidGroup,
                format!(
                    "a group name is at most {MAX_GROUP_NAME} bytes; this one has {}",
                    group.len()
                ),
            ));
        }
        Ok(())
    }

    /// Adds a channel to a group (with what it tells the others, in a presence group);
    /// subscribes this server to the group on its first member.
    pub(crate) async fn add(
        &self,
        channel: &Channel,
        group: &str,
        info: Option<&MemberInfo>,
    ) -> Result<AddStatus, Error> {
        Self::check_name(group)?;
        if let Some(info) = info {
            if !self.presences.tracks(group) {
                return Err(Error::new(
                    ErrorKind::InvalidGroup,
                    format!(
                        "`{group}` keeps no presence: name it (or a prefix of it) in \
                         Builder::presence_groups to join it with member info"
                    ),
                ));
            }
            info.check(self.presences.config.max_info)?;
        }
        let conn = channel.conn();
        Self::check_open(conn, group)?;
        let (status, entry) = self.add_member(conn, group, info)?;
        self.subscribe(&entry, group).await?;
        Ok(status)
    }

    fn check_open(conn: &Conn, group: &str) -> Result<(), Error> {
        if conn.is_killed() {
            return Err(Error::new(
                ErrorKind::InvalidGroup,
                format!("channel {} is closed: it cannot join `{group}`", conn.id),
            ));
        }
        Ok(())
    }

    /// Whether the history of `group` stays without entries: a recoverable group with members
    /// here keeps its epoch, so the positions its members hold stay valid.
    pub(crate) fn keeps_history(&self, group: &str) -> bool {
        self.is_recoverable(group)
            && self
                .table
                .pin()
                .get(group)
                .is_some_and(|g| g.ring.member_count() > 0)
    }

    /// Whether `group` is recoverable (its messages carry positions).
    pub(crate) fn is_recoverable(&self, group: &str) -> bool {
        !self.config.recoverable.is_empty() && self.config.recoverable.matches(group)
    }

    /// Adds a channel to a recoverable group and, given the client's last position, queues
    /// the messages it missed before any newer one: under the group's history lock, which
    /// every send to the group also holds while it saves and fans out, so no message falls
    /// between the replay and the live ones, and none is in both.
    pub(crate) async fn add_from(
        &self,
        channel: &Channel,
        group: &str,
        since: Option<&Position>,
    ) -> Result<Joined, Error> {
        Self::check_name(group)?;
        if !self.is_recoverable(group) {
            return Err(Error::new(
                ErrorKind::InvalidGroup,
                format!(
                    "`{group}` is not a recoverable group: name it (or a prefix of it) in \
                     Builder::recoverable_groups"
                ),
            ));
        }
        let conn = channel.conn();
        Self::check_open(conn, group)?;
        if self.broker.keeps_streams() {
            return self.add_from_stream(conn, group, since).await;
        }
        let history = self.histories.of(group);
        let (joined, entry) = {
            let history = lock_history(&history);
            let position = Position {
                epoch: history.epoch().to_string(),
                offset: history.last_id(),
            };
            self.join_at(conn, group, since, position, |since| {
                self.replay(conn, group, &history, since)
            })?
        };
        self.subscribe(&entry, group).await?;
        Ok(joined)
    }

    /// What both recovering joins do under the group's lock: adds the member and, given a
    /// position and a channel that was not a member yet, recovers with `replay`.
    fn join_at(
        &self,
        conn: &Arc<Conn>,
        group: &str,
        since: Option<&Position>,
        position: Position,
        replay: impl FnOnce(&Position) -> Recovery,
    ) -> Result<(Joined, Arc<Group>), Error> {
        let (status, entry) = self.add_member(conn, group, None)?;
        let recovery = match since {
            None => Recovery::Fresh,
            Some(_) if status == AddStatus::AlreadyMember => {
                Recovery::NotRecoverable(NotRecoverable::AlreadyMember)
            }
            Some(since) => replay(since),
        };
        let joined = Joined {
            group: group.to_owned(),
            status,
            position,
            recovery,
        };
        Ok((joined, entry))
    }

    /// [`add_from`](Self::add_from) with the cluster's stream: this server subscribes first (so
    /// every message after the read below reaches it), reads the stream after `since`, then,
    /// under the group's lock that deliveries take too, joins and queues the missed messages:
    /// from the stream up to what it held, then from what this server delivered since.
    async fn add_from_stream(
        &self,
        conn: &Arc<Conn>,
        group: &str,
        since: Option<&Position>,
    ) -> Result<Joined, Error> {
        let limits = self.stream_limits();
        self.broker.subscribe_stream(group, limits).await?;
        let after = since.map_or(u64::MAX, |p| p.offset);
        let read = self.broker.read_stream(group, after, limits).await?;
        let history = self.histories.of(group);
        let (joined, entry) = {
            let mut history = lock_history(&history);
            if **history.epoch() != *read.epoch {
                // Nothing of this epoch was delivered here: the stream's read covers it all.
                history.reset(&read.epoch, read.last);
            } else if !self.has_group(group) {
                // Without members here, this server was not subscribed for a while: what it
                // delivered may stop short of the read, and messages up to the read may still
                // be on their way. The read covers them: skip them when they come.
                history.advance_to(read.last);
            }
            let delivered = history.last_id();
            let position = Position {
                epoch: read.epoch.clone(),
                offset: delivered,
            };
            self.join_at(conn, group, since, position, |since| {
                if since.epoch != read.epoch {
                    Recovery::NotRecoverable(NotRecoverable::EpochChanged)
                } else if since.offset > read.last.max(delivered) {
                    Recovery::NotRecoverable(NotRecoverable::Ahead)
                } else {
                    self.replay_stream(conn, group, &history, since.offset, &read)
                }
            })?
        };
        self.subscribe(&entry, group).await?;
        Ok(joined)
    }

    /// The missed messages after `since` up to what this server delivered: from the stream's
    /// read, then from the local history for what came after the read.
    fn replay_stream(
        &self,
        conn: &Conn,
        group: &str,
        history: &GroupHistory,
        since: u64,
        read: &crate::broker::StreamRead,
    ) -> Recovery {
        let delivered = history.last_id();
        let from_stream: Vec<(u64, &str)> = read
            .entries
            .iter()
            .filter(|(offset, _)| *offset > since && *offset <= delivered)
            .filter_map(|(offset, payload)| Some((*offset, std::str::from_utf8(payload).ok()?)))
            .collect();
        let read_to = from_stream.last().map_or(since, |(offset, _)| *offset);
        let max_age = self.histories.limits().max_age;
        let from_here = history.between(read_to, delivered, max_age);
        let missed: Vec<(u64, &str)> = from_stream
            .into_iter()
            .chain(from_here.iter().map(|e| (e.id, e.text())))
            .collect();
        let complete = missed
            .iter()
            .enumerate()
            .all(|(i, (offset, _))| *offset == since + 1 + i as u64)
            && missed.last().map_or(since, |(offset, _)| *offset) >= delivered.max(since);
        if !complete {
            return Recovery::NotRecoverable(NotRecoverable::TooFarBehind);
        }
        queue_missed(conn, group, history.epoch(), &missed)
    }

    fn stream_limits(&self) -> crate::broker::StreamLimits {
        let limits = self.histories.limits();
        crate::broker::StreamLimits::new(limits.max_entries, limits.max_age)
    }

    /// A message of a recoverable group's cluster stream: saved here with its position (one
    /// already delivered is skipped) and fanned out, under the group's lock.
    pub(crate) fn deliver_positioned(
        &self,
        group: &str,
        message: &Outgoing,
        epoch: &str,
        offset: u64,
    ) -> usize {
        let Ok(payload) = Utf8Bytes::try_from(message.payload.clone()) else {
            return 0;
        };
        let history = self.histories.of(group);
        let mut history = lock_history(&history);
        if **history.epoch() != *epoch {
            history.reset(epoch, offset.saturating_sub(1));
        }
        if offset <= history.last_id() {
            return 0;
        }
        history.save_at(self.histories.limits(), offset, payload.clone());
        let Some(entry) = self.table.pin().get(group).cloned() else {
            return 0;
        };
        let mut report = SendReport::default();
        let enveloped = envelope(group, epoch, offset, payload.as_str());
        self.fan_out(&entry, enveloped, message.except, &mut report);
        report.delivered
    }

    /// Queues for `conn` the messages after `since`, if they can all be had.
    fn replay(
        &self,
        conn: &Conn,
        group: &str,
        history: &GroupHistory,
        since: &Position,
    ) -> Recovery {
        if *since.epoch != **history.epoch() {
            return Recovery::NotRecoverable(NotRecoverable::EpochChanged);
        }
        if since.offset > history.last_id() {
            return Recovery::NotRecoverable(NotRecoverable::Ahead);
        }
        let Some(missed) = history.after(since.offset, self.histories.limits().max_age) else {
            return Recovery::NotRecoverable(NotRecoverable::TooFarBehind);
        };
        let missed: Vec<(u64, &str)> = missed.iter().map(|e| (e.id, e.text())).collect();
        queue_missed(conn, group, history.epoch(), &missed)
    }

    /// Subscribes this server to the group through the broker, once per group.
    async fn subscribe(&self, entry: &Group, group: &str) -> Result<(), Error> {
        if self.broker.is_clustered() {
            // On failure the member stays (local delivery goes on); the caller learns the
            // group is not reachable from other servers yet.
            // Boxed: this future is part of the caller's (the handler's) state otherwise.
            Box::pin(
                entry
                    .subscribed
                    .get_or_try_init(|| self.broker_subscribe(group)),
            )
            .await?;
        }
        Ok(())
    }

    /// The broker's subscription to `group`: to its cluster stream too for a recoverable group
    /// whose stream the broker keeps.
    async fn broker_subscribe(&self, group: &str) -> Result<(), Error> {
        if self.is_recoverable(group) && self.broker.keeps_streams() {
            self.broker
                .subscribe_stream(group, self.stream_limits())
                .await
        } else {
            self.broker.subscribe(group).await
        }
    }

    /// The synchronous part of a join: the group, created if needed, and the status.
    fn add_member(
        &self,
        conn: &Arc<Conn>,
        group: &str,
        info: Option<&MemberInfo>,
    ) -> Result<(AddStatus, Arc<Group>), Error> {
        let _structure = lock(&self.structure);
        let guard = self.table.pin();
        let existing = guard.get(group);
        let member = existing.is_some_and(|entry| conn.is_in(&entry.ring));
        let max = self.config.max_per_connection;
        if !member && conn.group_count() >= max {
            // Checked before the group is made: a refused join leaves nothing behind.
            return Err(Error::new(
                ErrorKind::Overloaded,
                format!(
                    "channel {} is in {max} groups, the most a connection may join \
                     (Builder::max_groups_per_connection): it cannot join `{group}`",
                    conn.id
                ),
            ));
        }
        let (entry, created) = match existing {
            Some(entry) => (entry.clone(), false),
            None => {
                let entry = Arc::new(Group::new(&self.conns));
                guard.insert(group.into(), entry.clone());
                (entry, true)
            }
        };
        let name: Arc<str> = group.into();
        let status = if conn.join(&entry.ring, name.clone()) {
            self.broker.member_joined(group, conn.id);
            if self.presences.tracks(group) {
                let member = self.presences.join(&name, Member::new(conn.id, info));
                self.broker.presence_joined(group, &member);
            }
            AddStatus::Added {
                group_created: created,
            }
        } else {
            AddStatus::AlreadyMember
        };
        Ok((status, entry))
    }

    /// Removes a channel from a group; the group goes away with its last member.
    pub(crate) async fn remove(&self, channel: &Conn, group: &str) -> Result<RemoveStatus, Error> {
        Self::check_name(group)?;
        let (status, emptied) = self.remove_member(channel, group);
        if emptied {
            self.unsubscribe(group).await;
        }
        Ok(status)
    }

    /// The synchronous part of a removal: `(status, whether the group is now gone)`.
    fn remove_member(&self, channel: &Conn, group: &str) -> (RemoveStatus, bool) {
        let _structure = lock(&self.structure);
        let guard = self.table.pin();
        let Some(entry) = guard.get(group) else {
            return (RemoveStatus::NoSuchGroup, false);
        };
        let Some(left) = channel.leave(&entry.ring) else {
            return (RemoveStatus::NotAMember, false);
        };
        self.member_left(group, channel.id);
        let emptied = left == 0;
        if emptied {
            guard.remove(group);
        }
        (
            RemoveStatus::Removed {
                group_removed: emptied,
            },
            emptied,
        )
    }

    /// A member left `group` here, whichever way: the broker and the roster hear of it.
    fn member_left(&self, group: &str, channel: ConnectionId) {
        self.broker.member_left(group, channel);
        if self.presences.tracks(group)
            && let Some(member) = self.presences.leave(group, channel)
        {
            self.broker.presence_left(group, &member);
        }
    }

    /// Pushes a message to the members of `group` on this server only.
    pub(crate) fn push_local(&self, group: &str, message: String) -> usize {
        let Some(entry) = self.table.pin().get(group).cloned() else {
            return 0;
        };
        let mut report = SendReport::default();
        self.fan_out(&entry, Utf8Bytes::from(message), None, &mut report);
        self.count_fan_out(&report);
        report.delivered
    }

    async fn unsubscribe(&self, group: &str) {
        if self.broker.is_clustered()
            && let Err(e) = self.broker.unsubscribe(group).await
        {
            tracing::warn!(group, "broker unsubscribe failed: {e}");
        }
    }

    /// Takes a channel out of every group it is in (its connection ended, or it expired).
    pub(crate) fn leave_all(&self, channel: &Conn) {
        let subs = channel.leave_all();
        let mut emptied = Vec::new();
        {
            let _structure = lock(&self.structure);
            let guard = self.table.pin();
            for sub in subs {
                let left = sub.ring.unsubscribe(&sub);
                let Some(name) = &sub.group else { continue };
                self.member_left(name, channel.id);
                if left > 0 {
                    continue;
                }
                if guard
                    .get(&**name)
                    .is_some_and(|entry| Arc::ptr_eq(&entry.ring, &sub.ring))
                {
                    guard.remove(&**name);
                    emptied.push(name.clone());
                }
            }
        }
        if !emptied.is_empty() && self.broker.is_clustered() {
            self.unsubscribe_later(emptied);
        }
    }

    /// Unsubscribes from groups that emptied, in the background.
    fn unsubscribe_later(&self, groups: Vec<Arc<str>>) {
        let broker = self.broker.clone();
        let unsubscribe = async move {
            for group in groups {
                if let Err(e) = broker.unsubscribe(&group).await {
                    tracing::warn!(group = &*group, "broker unsubscribe failed: {e}");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(unsubscribe);
            }
            Err(_) => tracing::warn!("no runtime to unsubscribe emptied groups"),
        }
    }

    /// Removes every group (channels stay connected); returns how many there were.
    pub(crate) async fn flush(&self) -> usize {
        let names: Vec<Arc<str>> = {
            let _structure = lock(&self.structure);
            let guard = self.table.pin();
            let names: Vec<Arc<str>> = guard.keys().cloned().collect();
            for name in &names {
                if let Some(entry) = guard.remove(name) {
                    for sub in entry.ring.members() {
                        if let Some(conn) = sub.conn.upgrade() {
                            conn.leave(&entry.ring);
                            self.member_left(name, conn.id);
                        }
                    }
                }
            }
            names
        };
        for name in &names {
            self.unsubscribe(name).await;
        }
        names.len()
    }

    /// Sends `payload` (JSON text) to the local members of `group`, then to other servers.
    pub(crate) async fn send(
        &self,
        group: &str,
        payload: Utf8Bytes,
        except: Option<ConnectionId>,
        save_history: bool,
    ) -> SendReport {
        let mut report = SendReport::default();
        self.counters.sends.fetch_add(1, Ordering::Relaxed);
        if self.is_recoverable(group) && self.broker.keeps_streams() {
            // Every server, this one too, delivers it when the stream hands it back with its
            // position.
            let message = Outgoing {
                payload: Bytes::from(payload),
                except,
            };
            let published = self
                .broker
                .publish_positioned(group, &message, self.stream_limits())
                .await;
            if published.is_err() {
                self.counters
                    .publish_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
            record_publish(&mut report, published);
            return report;
        }
        if self.is_recoverable(group) {
            self.send_recoverable(group, &payload, except, &mut report);
        } else {
            if let Some(entry) = self.table.pin().get(group).cloned() {
                self.fan_out(&entry, payload.clone(), except, &mut report);
            }
            if save_history {
                report.history_id = Some(self.histories.save(group, payload.clone()));
            }
        }
        if self.broker.is_clustered() {
            let message = Outgoing {
                payload: Bytes::from(payload),
                except,
            };
            let published = self.broker.publish(group, &message).await;
            if let Err(e) = &published {
                self.counters
                    .publish_failures
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(skipped) = self.conns.logs.publish_failures.allow() {
                    tracing::warn!(group, skipped, "publishing to the cluster failed: {e}");
                }
            }
            record_publish(&mut report, published);
        }
        report
    }

    /// A message to a recoverable group: saved with the next offset and fanned out in its
    /// envelope, both under the group's history lock (see [`add_from`](Self::add_from)).
    fn send_recoverable(
        &self,
        group: &str,
        payload: &Utf8Bytes,
        except: Option<ConnectionId>,
        report: &mut SendReport,
    ) {
        let history = self.histories.of(group);
        let mut history = lock_history(&history);
        let offset = history.save(self.histories.limits(), payload.clone());
        let enveloped = envelope(group, history.epoch(), offset, payload.as_str());
        if let Some(entry) = self.table.pin().get(group).cloned() {
            self.fan_out(&entry, enveloped, except, report);
        }
        report.history_id = Some(offset);
        report.position = Some(Position {
            epoch: history.epoch().to_string(),
            offset,
        });
    }

    /// Sends `payload` (JSON text) to one channel: here if it is connected here, else through
    /// the broker.
    pub(crate) async fn send_to(&self, channel: ConnectionId, payload: Utf8Bytes) -> SendReport {
        let mut report = SendReport::default();
        if let Some(conn) = self.connections.get(&channel) {
            self.offer_one(&conn, &payload, &mut report);
            self.count_fan_out(&report);
            return report;
        }
        if self.broker.is_clustered() {
            let message = Outgoing {
                payload: Bytes::from(payload),
                except: None,
            };
            let published = self.broker.send_to(channel, &message).await;
            record_publish(&mut report, published);
        }
        report
    }

    /// Appends the frame to the group's ring (once, whatever the number of members) and deals
    /// with the members it left too far behind. Every member but the excepted one is counted
    /// once: delivered, or dropped (a slow consumer closed by this send).
    fn fan_out(
        &self,
        group: &Group,
        payload: Utf8Bytes,
        except: Option<ConnectionId>,
        report: &mut SendReport,
    ) {
        let skip = self.config.slow_consumer == SlowConsumer::Drop;
        let pushed = group.ring.push(Frame::Json(payload), except, skip);
        let excepted = except.is_some_and(|except| {
            self.connections
                .get(&except)
                .is_some_and(|c| c.is_in(&group.ring))
        });
        let mut members = pushed.members - usize::from(excepted);
        for laggard in pushed.laggards {
            if skip {
                // It stays, skipping its oldest backlog, and gets this message.
                self.count_missed(laggard.skipped);
                continue;
            }
            if Some(laggard.conn.id) != except {
                // Not queued for it: it is closed, and is no longer a member.
                members -= 1;
                report.dropped += 1;
            }
            self.slow_consumer(&laggard.conn, report);
        }
        report.delivered += members;
        self.count_fan_out(report);
    }

    /// Adds what one send did here to the app's counters: once per send, not per member.
    #[inline]
    fn count_fan_out(&self, report: &SendReport) {
        if report.delivered > 0 {
            self.counters
                .deliveries
                .fetch_add(report.delivered as u64, Ordering::Relaxed);
        }
        if report.dropped > 0 {
            self.counters
                .dropped_closed
                .fetch_add(report.dropped as u64, Ordering::Relaxed);
        }
    }

    /// Closes a slow consumer (the `Close` policy) and counts it.
    fn slow_consumer(&self, conn: &Conn, report: &mut SendReport) {
        if conn.close(
            close_code::POLICY_VIOLATION,
            "slow consumer: outbound queue full",
            Closing::Abort,
        ) {
            report.slow_consumers_closed += 1;
            self.counters.slow_closed.fetch_add(1, Ordering::Relaxed);
            if let Some(skipped) = conn.config.logs.slow_consumers.allow() {
                tracing::warn!(
                    id = %conn.id,
                    code = close_code::POLICY_VIOLATION,
                    skipped,
                    "slow consumer closed: its outbound queue is full"
                );
            }
        }
        // It no longer reads this group; its other groups drop it when it closes.
    }

    /// Counts messages a slow consumer will never get (the `Drop` policy).
    fn count_missed(&self, messages: u64) {
        if messages > 0 {
            self.counters.dropped.fetch_add(messages, Ordering::Relaxed);
        }
    }

    /// A group message published by another server: local members only.
    pub(crate) fn deliver_remote(&self, group: &str, message: &Outgoing) -> usize {
        let Some(entry) = self.table.pin().get(group).cloned() else {
            return 0;
        };
        let Ok(payload) = Utf8Bytes::try_from(message.payload.clone()) else {
            tracing::warn!(group, "dropped a cluster message that is not UTF-8");
            return 0;
        };
        let mut report = SendReport::default();
        if self.is_recoverable(group) {
            // Positions are this server's own (a client recovers on the server it left; on
            // another one its epoch is unknown and it re-syncs).
            self.send_recoverable(group, &payload, message.except, &mut report);
        } else {
            self.fan_out(&entry, payload, message.except, &mut report);
        }
        report.delivered
    }

    /// A message for one channel sent by another server.
    pub(crate) fn deliver_remote_to(&self, channel: ConnectionId, message: &Outgoing) -> bool {
        let Some(conn) = self.connections.get(&channel) else {
            return false;
        };
        let Ok(payload) = Utf8Bytes::try_from(message.payload.clone()) else {
            return false;
        };
        let mut report = SendReport::default();
        self.offer_one(&conn, &payload, &mut report);
        self.count_fan_out(&report);
        report.delivered == 1
    }

    /// Offers a JSON text payload to one channel (as its payload type says), never waiting. A
    /// full queue is a slow consumer: closed, or (the `Drop` policy) this message is dropped
    /// for it.
    fn offer_one(&self, conn: &Conn, payload: &Utf8Bytes, report: &mut SendReport) {
        match conn.offer(&Frame::Json(payload.clone())) {
            Offer::Queued => report.delivered += 1,
            Offer::Closed => report.dropped += 1,
            Offer::Full => {
                report.dropped += 1;
                match self.config.slow_consumer {
                    SlowConsumer::Close => self.slow_consumer(conn, report),
                    SlowConsumer::Drop => self.count_missed(1),
                }
            }
        }
    }

    /// Whether `group` has members here.
    pub(crate) fn has_group(&self, group: &str) -> bool {
        self.table
            .pin()
            .get(group)
            .is_some_and(|entry| entry.ring.member_count() > 0)
    }

    /// Every group with members here, with their ids.
    pub(crate) fn member_ids(&self) -> Vec<(String, Vec<ConnectionId>)> {
        self.table
            .pin()
            .iter()
            .map(|(name, group)| {
                let ids = group
                    .ring
                    .members()
                    .iter()
                    .filter_map(|sub| sub.conn.upgrade())
                    .map(|conn| conn.id)
                    .collect::<Vec<_>>();
                (name.to_string(), ids)
            })
            .filter(|(_, ids)| !ids.is_empty())
            .collect()
    }

    /// Groups and their local member counts, sorted by name.
    pub(crate) fn list(&self) -> Vec<(String, usize)> {
        let mut groups: Vec<(String, usize)> = self
            .table
            .pin()
            .iter()
            .map(|(name, group)| (name.to_string(), group.ring.member_count()))
            .filter(|(_, n)| *n > 0)
            .collect();
        groups.sort();
        groups
    }

    /// The local members of `group`.
    pub(crate) fn members(&self, group: &str) -> Vec<Arc<Conn>> {
        let Some(group) = self.table.pin().get(group).cloned() else {
            return Vec::new();
        };
        group
            .ring
            .members()
            .iter()
            .filter_map(|sub| sub.conn.upgrade())
            .collect()
    }

    /// Entries of the group table, and memberships summed over its rings.
    #[cfg(feature = "testing")]
    pub(crate) fn sizes(&self) -> (usize, usize) {
        let table = self.table.pin();
        let members = table.values().map(|g| g.ring.member_count()).sum();
        (table.len(), members)
    }

    /// Rings alive (those of groups, and of connections).
    #[cfg(feature = "testing")]
    pub(crate) fn rings_alive(&self) -> usize {
        self.conns.rings.load(Ordering::Relaxed)
    }

    /// Connections with an expiry.
    #[cfg(feature = "testing")]
    pub(crate) fn expiring(&self) -> usize {
        self.conns.expiring.load(Ordering::Relaxed)
    }

    pub(crate) fn metrics(&self) -> ChannelMetrics {
        let table = self.table.pin();
        ChannelMetrics {
            groups: table.len(),
            group_members: table.values().map(|g| g.ring.member_count()).sum(),
            group_sends: self.counters.sends.load(Ordering::Relaxed),
            deliveries: self.counters.deliveries.load(Ordering::Relaxed),
            dropped_for_closed: self.counters.dropped_closed.load(Ordering::Relaxed),
            slow_consumers_closed: self.counters.slow_closed.load(Ordering::Relaxed),
            dropped_for_slow_consumers: self.counters.dropped.load(Ordering::Relaxed),
            expired: self.counters.expired.load(Ordering::Relaxed),
            publish_failures: self.counters.publish_failures.load(Ordering::Relaxed),
        }
    }
}

/// Queues the missed messages (offset, payload) for `conn`, each in its envelope, before any
/// newer one (the caller holds the group's lock).
fn queue_missed(conn: &Conn, group: &str, epoch: &str, missed: &[(u64, &str)]) -> Recovery {
    for (offset, payload) in missed {
        let frame = Frame::Json(envelope(group, epoch, *offset, payload));
        if conn.offer(&frame) != Offer::Queued {
            return Recovery::NotRecoverable(NotRecoverable::QueueFull);
        }
    }
    Recovery::Recovered(missed.len())
}

/// Records in `report` whether the broker took a message.
fn record_publish(report: &mut SendReport, published: Result<(), Error>) {
    match published {
        Ok(()) => report.published = Some(true),
        Err(e) => {
            report.published = Some(false);
            report.publish_error = Some(e.to_string());
        }
    }
}
