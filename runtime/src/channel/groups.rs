//! The group table of an app: each group is a ring of frames its local members' writers read
//! (a send encodes the message once and appends it, whatever the number of members), and the
//! broker calls that take groups beyond this process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::history::{Histories, HistoryLimits};
use super::{AddStatus, Channel, RemoveStatus, SendReport, SlowConsumer};
use crate::broker::{Broker, Inbox, Outgoing};
use crate::ws::close_code;
use crate::ws::connection::{Closing, Conn, ConnConfig, Frame, Offer};
use crate::ws::outbox::Ring;
use crate::{App, Error, ErrorKind};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One group: the ring its local members read, and its broker subscription.
#[derive(Debug)]
pub(crate) struct Group {
    ring: Arc<Ring>,
    /// The broker subscription, made once by the first member (others wait for it).
    subscribed: tokio::sync::OnceCell<()>,
}

impl Group {
    fn new() -> Self {
        Self {
            ring: Ring::new(),
            subscribed: tokio::sync::OnceCell::new(),
        }
    }
}

/// Settings of the channel layer.
#[derive(Debug, Clone)]
pub(crate) struct GroupsConfig {
    pub(crate) slow_consumer: SlowConsumer,
    pub(crate) history: HistoryLimits,
    pub(crate) sweep_interval: Duration,
}

/// Counters of the channel layer.
#[derive(Debug, Default)]
struct Counters {
    slow_closed: AtomicU64,
    dropped: AtomicU64,
    expired: AtomicU64,
    publish_failures: AtomicU64,
}

pub(crate) struct Groups {
    table: papaya::HashMap<Arc<str>, Arc<Group>, foldhash::fast::RandomState>,
    /// The connections' settings: the lag bound, and the sequence numbers frames get.
    conns: Arc<ConnConfig>,
    /// Joins and leaves: so a group is never removed while a member is being added.
    structure: Mutex<()>,
    histories: Histories,
    pub(crate) broker: Arc<dyn Broker>,
    config: GroupsConfig,
    counters: Counters,
    /// The app, for its connections and its bus (weak: the app owns this table).
    app: OnceLock<crate::app::WeakApp>,
    /// Channels with an expiry, checked by the sweeper.
    expiring: Mutex<HashMap<crate::ws::ConnectionId, Weak<Conn>>>,
    sweeper: OnceLock<()>,
    /// Events emitted cluster-wide by other servers, run in order by one task.
    cluster_events: OnceLock<tokio::sync::mpsc::Sender<(String, serde_json::Value)>>,
    /// Cancelled when this table (the app) goes away: the broker's tasks end.
    closed: tokio_util::sync::CancellationToken,
}

impl Drop for Groups {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

/// Cluster events from other servers waiting to run, at most.
const CLUSTER_EVENT_QUEUE: usize = 1024;

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
    ) -> Self {
        Self {
            table: papaya::HashMap::with_hasher(foldhash::fast::RandomState::default()),
            conns,
            structure: Mutex::new(()),
            histories: Histories::new(config.history),
            broker,
            config,
            counters: Counters::default(),
            app: OnceLock::new(),
            expiring: Mutex::default(),
            sweeper: OnceLock::new(),
            cluster_events: OnceLock::new(),
            closed: tokio_util::sync::CancellationToken::new(),
        }
    }

    pub(crate) fn closed_token(&self) -> tokio_util::sync::CancellationToken {
        self.closed.clone()
    }

    pub(crate) fn attach(&self, app: crate::app::WeakApp) {
        let _ = self.app.set(app);
    }

    pub(crate) fn inbox(self: &Arc<Self>) -> Inbox {
        Inbox::new(self)
    }

    fn app(&self) -> Option<App> {
        self.app.get().and_then(crate::app::WeakApp::upgrade)
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
        Ok(())
    }

    /// Adds a channel to a group; subscribes this server to the group on its first member.
    pub(crate) async fn add(&self, channel: &Channel, group: &str) -> Result<AddStatus, Error> {
        Self::check_name(group)?;
        if channel.conn().is_killed() {
            return Err(Error::new(
                ErrorKind::InvalidGroup,
                format!(
                    "channel {} is closed: it cannot join `{group}`",
                    channel.id()
                ),
            ));
        }
        let (status, entry) = {
            let _structure = lock(&self.structure);
            let guard = self.table.pin();
            let (entry, created) = match guard.get(group) {
                Some(entry) => (entry.clone(), false),
                None => {
                    let entry = Arc::new(Group::new());
                    guard.insert(group.into(), entry.clone());
                    (entry, true)
                }
            };
            let status = if channel.conn().join(&entry.ring, group.into()) {
                self.broker.member_joined(group, channel.id());
                AddStatus::Added {
                    group_created: created,
                }
            } else {
                AddStatus::AlreadyMember
            };
            (status, entry)
        };
        if self.broker.is_clustered() {
            // On failure the member stays (local delivery goes on); the caller learns the
            // group is not reachable from other servers yet.
            // Boxed: this future is part of the caller's (the handler's) state otherwise.
            Box::pin(
                entry
                    .subscribed
                    .get_or_try_init(|| self.broker.subscribe(group)),
            )
            .await?;
        }
        Ok(status)
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
        self.broker.member_left(group, channel.id);
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
                self.broker.member_left(name, channel.id);
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
        lock(&self.expiring).remove(&channel.id);
        if !emptied.is_empty() && self.broker.is_clustered() {
            let broker = self.broker.clone();
            let unsubscribe = async move {
                for group in emptied {
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
                            self.broker.member_left(name, conn.id);
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
        except: Option<crate::ws::ConnectionId>,
        save_history: bool,
    ) -> SendReport {
        let mut report = SendReport::default();
        if let Some(entry) = self.table.pin().get(group).cloned() {
            self.fan_out(&entry, payload.clone(), except, &mut report);
        }
        if save_history {
            report.history_id = Some(self.histories.save(group, payload.clone()));
        }
        if self.broker.is_clustered() {
            let message = Outgoing {
                payload: Bytes::from(payload),
                except,
            };
            match self.broker.publish(group, &message).await {
                Ok(()) => report.published = Some(true),
                Err(e) => {
                    self.counters
                        .publish_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(group, "publishing to the cluster failed: {e}");
                    report.published = Some(false);
                    report.publish_error = Some(e.to_string());
                }
            }
        }
        report
    }

    /// Appends the frame to the group's ring (once, whatever the number of members) and deals
    /// with the members it left too far behind.
    fn fan_out(
        &self,
        group: &Group,
        payload: Utf8Bytes,
        except: Option<crate::ws::ConnectionId>,
        report: &mut SendReport,
    ) {
        let skip = self.config.slow_consumer == SlowConsumer::Drop;
        let pushed = group.ring.push(
            Frame::Json(payload),
            except,
            &self.conns.sequence,
            self.conns.max_queue_bytes,
            skip,
        );
        report.delivered = pushed.members;
        if let Some(except) = except
            && self
                .app()
                .and_then(|app| app.connections().get(&except))
                .is_some_and(|c| c.is_in(&group.ring))
        {
            report.delivered -= 1;
        }
        for conn in pushed.laggards {
            report.dropped += 1;
            self.slow_consumer(&conn, report);
        }
    }

    fn slow_consumer(&self, conn: &Conn, report: &mut SendReport) {
        match self.config.slow_consumer {
            SlowConsumer::Close => {
                if conn.close(
                    close_code::POLICY_VIOLATION,
                    "slow consumer: outbound queue full",
                    Closing::Abort,
                ) {
                    report.slow_consumers_closed += 1;
                    self.counters.slow_closed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(channel = %conn.id, "slow consumer closed");
                }
                // It no longer reads this group; its other groups drop it when it closes.
            }
            SlowConsumer::Drop => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
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
        self.fan_out(&entry, payload, message.except, &mut report);
        report.delivered
    }

    /// A message for one channel sent by another server.
    pub(crate) fn deliver_remote_to(
        &self,
        channel: crate::ws::ConnectionId,
        message: &Outgoing,
    ) -> bool {
        let Some(app) = self.app() else {
            return false;
        };
        let Some(conn) = app.connections().get(&channel) else {
            return false;
        };
        let Ok(payload) = Utf8Bytes::try_from(message.payload.clone()) else {
            return false;
        };
        let mut report = SendReport::default();
        self.offer_one(&Channel::from_conn(conn), &payload, &mut report);
        report.delivered == 1
    }

    /// Offers a JSON text payload to one channel (as its payload type says), never waiting.
    pub(crate) fn offer_one(
        &self,
        channel: &Channel,
        payload: &Utf8Bytes,
        report: &mut SendReport,
    ) {
        match channel.conn().offer(&Frame::Json(payload.clone())) {
            Offer::Queued => report.delivered += 1,
            Offer::Closed => report.dropped += 1,
            Offer::Full => {
                report.dropped += 1;
                self.slow_consumer(channel.conn(), report);
            }
        }
    }

    /// An event emitted cluster-wide by another server: queued for the task that runs them in
    /// order (started with the first). `false`: dropped, the queue is full.
    pub(crate) fn deliver_event(&self, name: &str, payload: &[u8]) -> bool {
        let payload: serde_json::Value = match serde_json::from_slice(payload) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::warn!(
                    event = name,
                    "dropped a cluster event whose payload is not JSON: {e}"
                );
                return false;
            }
        };
        let Some(app) = self.app() else {
            return false;
        };
        let queue = self.cluster_events.get_or_init(|| {
            let (queue, mut events) =
                tokio::sync::mpsc::channel::<(String, serde_json::Value)>(CLUSTER_EVENT_QUEUE);
            let weak = app.downgrade();
            let runner = async move {
                while let Some((name, payload)) = events.recv().await {
                    let Some(app) = crate::app::WeakApp::upgrade(&weak) else {
                        return;
                    };
                    let _: crate::EmitReport = app.events().emit(name.as_str(), payload).await;
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(runner);
                }
                Err(_) => tracing::warn!("cluster events need a Tokio runtime"),
            }
            queue
        });
        match queue.try_send((name.to_owned(), payload)) {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!(
                    event = name,
                    "dropped a cluster event: {CLUSTER_EVENT_QUEUE} are waiting to run"
                );
                false
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
    pub(crate) fn member_ids(&self) -> Vec<(String, Vec<crate::ws::ConnectionId>)> {
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

    /// Emits a broker event on the app's bus (in the background).
    pub(crate) fn report(&self, name: &'static str, detail: serde_json::Value) {
        let Some(app) = self.app() else {
            return;
        };
        if let Err(e) = app.events().spawn_emit(name, detail) {
            tracing::warn!(event = name, "could not report a broker event: {e}");
        }
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
    pub(crate) fn members(&self, group: &str) -> Vec<Channel> {
        let Some(group) = self.table.pin().get(group).cloned() else {
            return Vec::new();
        };
        group
            .ring
            .members()
            .iter()
            .filter_map(|sub| sub.conn.upgrade())
            .map(Channel::from_conn)
            .collect()
    }

    pub(crate) fn metrics(&self) -> super::ChannelMetrics {
        super::ChannelMetrics {
            groups: self.table.len(),
            slow_consumers_closed: self.counters.slow_closed.load(Ordering::Relaxed),
            dropped_for_slow_consumers: self.counters.dropped.load(Ordering::Relaxed),
            expired: self.counters.expired.load(Ordering::Relaxed),
            publish_failures: self.counters.publish_failures.load(Ordering::Relaxed),
        }
    }

    /// Starts watching a channel's expiry (the sweeper starts with the first one).
    pub(crate) fn expire(self: &Arc<Self>, conn: &Arc<Conn>) {
        lock(&self.expiring).insert(conn.id, Arc::downgrade(conn));
        if self.sweeper.set(()).is_ok() {
            let groups = Arc::downgrade(self);
            let interval = self.config.sweep_interval;
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                tracing::warn!("channel expiry needs a Tokio runtime");
                return;
            };
            handle.spawn(sweep(groups, interval));
        }
    }

    /// Closes and removes the channels idle past their expiry; returns how many.
    fn sweep_once(&self) -> usize {
        let expired: Vec<Arc<Conn>> = {
            let mut expiring = lock(&self.expiring);
            expiring.retain(|_, conn| conn.strong_count() > 0);
            expiring
                .values()
                .filter_map(Weak::upgrade)
                .filter(|conn| conn.channel.is_expired())
                .collect()
        };
        for conn in &expired {
            self.leave_all(conn);
            conn.close(close_code::GOING_AWAY, "channel expired", Closing::Graceful);
            self.counters.expired.fetch_add(1, Ordering::Relaxed);
        }
        expired.len()
    }
}

async fn sweep(groups: Weak<Groups>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(groups) = groups.upgrade() else {
            return;
        };
        groups.sweep_once();
    }
}
