//! Brokers: where a group lives beyond one process.
//!
//! The channel layer keeps the local members of every group itself, and talks to the broker
//! only to reach other servers: subscribe when a group gets its first local member, unsubscribe
//! after the last one, publish each `group_send`, and hand messages that come back from other
//! servers to the local members. [`Local`] (the default) is a single process: nothing to reach.
//! `Redis` (cargo feature `redis`) spans every server that shares one Redis.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::channel::{Member, PresencePage, PresenceStats};
use crate::conn::ConnectionId;

#[cfg(any(feature = "redis", feature = "nats"))]
mod common;
#[cfg(any(feature = "redis", feature = "nats"))]
mod envelope;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "redis")]
mod redis;
mod secret;

#[cfg(feature = "nats")]
pub use self::nats::{Nats, NatsMetrics};
#[cfg(feature = "redis")]
pub use self::redis::{Redis, RedisMetrics};

/// The event emitted (on every server that sees it) when the broker loses its connection:
/// payload [`ClusterDown`], `{"node": id, "error": message}`. Until the matching [`CLUSTER_UP`], group messages
/// reach local members only and publishes fail (`SendReport::published == Some(false)`).
pub const CLUSTER_DOWN: &str = "switchboard:cluster.down";

/// The event emitted when the broker is connected again and has resubscribed every group with
/// local members: payload [`ClusterUp`], `{"node": id, "down_ms": n, "resubscribed": groups}`. Messages
/// published during the outage are not replayed: tell clients to resync here.
pub const CLUSTER_UP: &str = "switchboard:cluster.up";

/// Payload of [`CLUSTER_DOWN`] (a typed event: `#[on(ClusterDown)]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ClusterDown {
    /// The server whose broker lost its connection.
    pub node: uuid::Uuid,
    /// Why (passwords left out).
    pub error: String,
    /// On a Redis Cluster, the one shard (`host:port`) that stopped answering: only the groups
    /// it holds reach this server's members only; the others keep crossing servers. `None`:
    /// the whole broker is unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
}

/// Payload of [`CLUSTER_UP`] (a typed event: `#[on(ClusterUp)]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ClusterUp {
    /// The server whose broker is connected again.
    pub node: uuid::Uuid,
    /// How long it was down, in milliseconds.
    pub down_ms: u64,
    /// How many groups it subscribed again.
    pub resubscribed: usize,
    /// On a Redis Cluster, the one shard (`host:port`) that answers again (`None`: the whole
    /// broker is back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
}

impl crate::Event for ClusterDown {
    const NAME: &'static str = CLUSTER_DOWN;
}

impl crate::Event for ClusterUp {
    const NAME: &'static str = CLUSTER_UP;
}

fn no_streams() -> Error {
    Error::new(crate::ErrorKind::Broker, "this broker keeps no streams")
}

/// The bounds of a recoverable group's cluster stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamLimits {
    /// Entries kept.
    pub max_entries: usize,
    /// How long the stream outlives its last message.
    pub max_age: std::time::Duration,
}

impl StreamLimits {
    /// Bounds with these values.
    pub fn new(max_entries: usize, max_age: std::time::Duration) -> Self {
        StreamLimits {
            max_entries,
            max_age,
        }
    }
}

/// What [`Broker::read_stream`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StreamRead {
    /// The stream's epoch.
    pub epoch: String,
    /// The offset of its last message (0: none yet).
    pub last: u64,
    /// The entries after the offset asked for, oldest first: offset and payload (JSON text).
    pub entries: Vec<(u64, Bytes)>,
}

impl StreamRead {
    /// A read with these values.
    pub fn new(epoch: String, last: u64, entries: Vec<(u64, Bytes)>) -> Self {
        StreamRead {
            epoch,
            last,
            entries,
        }
    }
}

/// What a broker counts, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerStats {
    /// Messages the broker took and then failed to publish (the server was unreachable or too
    /// slow), or refused because too many were waiting.
    pub publish_failures: u64,
    /// Messages waiting to be published.
    pub queue_depth: usize,
    /// Cluster events from other servers dropped because too many were waiting to run.
    pub events_dropped: u64,
}

impl BrokerStats {
    /// Counters with these values (for brokers outside this crate).
    pub fn new(publish_failures: u64, queue_depth: usize, events_dropped: u64) -> Self {
        BrokerStats {
            publish_failures,
            queue_depth,
            events_dropped,
        }
    }
}

/// The future a broker method returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A cluster-wide answer: `None` when the broker cannot give one (the channel layer then
/// answers for this server).
pub type ClusterAnswer<T> = Option<Result<T, Error>>;

/// A message for other servers: JSON text encoded once, and the channel it must skip.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The payload as sent to members (JSON text).
    pub payload: Bytes,
    /// A channel that must not receive it (`group_send(..).except(..)`).
    pub except: Option<ConnectionId>,
}

/// What a broker delivers to: the app it serves (which implements this). Brokers reach it
/// through an [`Inbox`].
pub(crate) trait Deliver: Send + Sync {
    /// A group message from another server, for this server's members: how many took it.
    fn deliver_to_group(&self, group: &str, message: &Outgoing) -> usize;
    /// A message of a recoverable group's cluster stream (from any server, this one too), with
    /// its position: how many members took it.
    fn deliver_positioned(
        &self,
        group: &str,
        message: &Outgoing,
        epoch: &str,
        offset: u64,
    ) -> usize;
    /// A message from another server for one channel, if it is connected here.
    fn deliver_to_channel(&self, channel: ConnectionId, message: &Outgoing) -> bool;
    /// An event emitted cluster-wide by another server; `false`: dropped.
    fn deliver_event(&self, name: &str, payload: &[u8]) -> bool;
    /// Another server's presence changes in `group` (JSON, as it published them).
    fn deliver_presence(&self, group: &str, payload: &[u8]) -> bool;
    /// Whether `group` has members on this server.
    fn has_group(&self, group: &str) -> bool;
    /// Whether `group` is recoverable (its messages carry positions).
    fn is_recoverable(&self, group: &str) -> bool;
    /// The groups with members on this server, with their members.
    fn local_members(&self) -> Vec<(String, Vec<ConnectionId>)>;
    /// The presence groups with members on this server, with their roster entries.
    fn local_presence(&self) -> Vec<(String, Vec<Member>)>;
    /// Reports a broker event on the app's bus.
    fn report(&self, name: &'static str, detail: serde_json::Value);
}

/// Where messages from other servers come in: the broker hands them to the app it was started
/// for. It holds the app weakly: once the app is gone, deliveries do nothing and
/// [`closed`](Inbox::closed) completes.
#[derive(Clone)]
pub struct Inbox {
    app: Weak<dyn Deliver>,
    closed: CancellationToken,
}

impl Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("closed", &self.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Inbox {
    pub(crate) fn new(app: Weak<dyn Deliver>, closed: CancellationToken) -> Self {
        Self { app, closed }
    }

    /// Delivers a message published to `group` by another server to this server's members.
    /// Returns how many members it was queued for.
    pub fn deliver_to_group(&self, group: &str, message: &Outgoing) -> usize {
        self.app
            .upgrade()
            .map_or(0, |app| app.deliver_to_group(group, message))
    }

    /// Delivers a message of a recoverable group's cluster stream, with its position, to this
    /// server's members (a message already delivered here is skipped). Returns how many
    /// members it was queued for.
    pub fn deliver_positioned(
        &self,
        group: &str,
        message: &Outgoing,
        epoch: &str,
        offset: u64,
    ) -> usize {
        self.app.upgrade().map_or(0, |app| {
            app.deliver_positioned(group, message, epoch, offset)
        })
    }

    /// Delivers a message sent by another server to `channel`, if it is connected here.
    /// Returns whether it was queued.
    pub fn deliver_to_channel(&self, channel: ConnectionId, message: &Outgoing) -> bool {
        self.app
            .upgrade()
            .is_some_and(|app| app.deliver_to_channel(channel, message))
    }

    /// Runs this server's listeners of an event emitted cluster-wide by another server
    /// (`payload` is its JSON). Events run one after another, in the order they arrive, in a
    /// task of the app's; returns `false` if the event was dropped because too many are
    /// waiting.
    pub fn deliver_event(&self, name: &str, payload: &[u8]) -> bool {
        self.app
            .upgrade()
            .is_some_and(|app| app.deliver_event(name, payload))
    }

    /// Delivers another server's presence changes in `group` (what it handed to
    /// [`Broker::publish_presence`]): emitted here as events and pushed to this server's
    /// members. Returns whether the app took them.
    pub fn deliver_presence(&self, group: &str, payload: &[u8]) -> bool {
        self.app
            .upgrade()
            .is_some_and(|app| app.deliver_presence(group, payload))
    }

    /// Whether `group` has members on this server.
    pub fn has_group(&self, group: &str) -> bool {
        self.app.upgrade().is_some_and(|app| app.has_group(group))
    }

    /// Whether `group` is recoverable: its messages carry positions (for a broker that keeps
    /// the streams, and subscribes to a recoverable group's stream apart from its messages).
    pub fn is_recoverable(&self, group: &str) -> bool {
        self.app
            .upgrade()
            .is_some_and(|app| app.is_recoverable(group))
    }

    /// The presence groups with members on this server, with their roster entries (for a
    /// broker that keeps the cluster's rosters).
    pub fn local_presence(&self) -> Vec<(String, Vec<Member>)> {
        self.app
            .upgrade()
            .map(|app| app.local_presence())
            .unwrap_or_default()
    }

    /// The groups with members on this server, with their members.
    pub fn local_members(&self) -> Vec<(String, Vec<ConnectionId>)> {
        self.app
            .upgrade()
            .map(|app| app.local_members())
            .unwrap_or_default()
    }

    /// Reports a broker event (such as [`CLUSTER_DOWN`]) on the app's bus.
    pub fn report(&self, name: &'static str, detail: serde_json::Value) {
        if let Some(app) = self.app.upgrade() {
            app.report(name, detail);
        }
    }

    /// Completes when the app is gone: a broker's background tasks end here.
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }
}

/// A broker: how groups reach other servers. Implemented by [`Local`] (one process) and, with
/// the `redis` feature, by `Redis`.
///
/// The channel layer calls `subscribe` when a group gets its first member on this server and
/// `unsubscribe` after its last one left (the two can race: before unsubscribing, check
/// [`Inbox::has_group`]), `publish` for every group send, and the membership notifications
/// for every join and leave.
pub trait Broker: Send + Sync + Debug + 'static {
    /// Whether messages cross to other servers; when `false` the channel layer calls nothing
    /// else.
    fn is_clustered(&self) -> bool;

    /// Gives the broker the app it serves: messages from other servers go to `inbox`. Called
    /// once, when the app is built (possibly outside a runtime: then start on first use, or
    /// in [`start`](Broker::start)).
    fn attach(&self, inbox: Inbox);

    /// What the broker is, for log lines and operators' pages (`local`, `redis
    /// redis://host:6379/`); never a secret.
    fn describe(&self) -> String {
        "local".to_owned()
    }

    /// Whether the broker can reach the other servers now (readiness checks ask): `true` for
    /// a broker with nothing to reach.
    fn is_up(&self) -> bool {
        true
    }

    /// Its counters, for metrics (zeros for a broker with nothing to count).
    fn stats(&self) -> BrokerStats {
        BrokerStats::default()
    }

    /// Whether this broker keeps the streams of recoverable groups for the whole cluster:
    /// positions are then assigned once per message across servers, and a client recovers
    /// on any server (`false`: each server keeps its own).
    fn keeps_streams(&self) -> bool {
        false
    }

    /// Appends a message to `group`'s cluster stream (bounded by `limits`) and publishes it
    /// to every server, this one included, with its position (delivered through
    /// [`Inbox::deliver_positioned`]).
    fn publish_positioned<'a>(
        &'a self,
        group: &'a str,
        message: &'a Outgoing,
        limits: StreamLimits,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let _ = (group, message, limits);
        Box::pin(std::future::ready(Err(no_streams())))
    }

    /// `group`'s cluster stream after `offset`: its epoch (made if it has none), its last
    /// offset, and the entries still kept.
    fn read_stream<'a>(
        &'a self,
        group: &'a str,
        after: u64,
        limits: StreamLimits,
    ) -> BoxFuture<'a, Result<StreamRead, Error>> {
        let _ = (group, after, limits);
        Box::pin(std::future::ready(Err(no_streams())))
    }

    /// Called when the app starts serving, inside the runtime: start background work that
    /// could not start in [`attach`](Broker::attach).
    fn start(&self) {}

    /// `group` got its first member on this server: receive its messages from now on. Returns
    /// once the subscription is in place, so a message sent right after is not missed.
    fn subscribe<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<(), Error>>;

    /// [`subscribe`](Broker::subscribe) for a recoverable group whose cluster stream this
    /// broker keeps: its stream's messages (with their positions) reach this server from now
    /// on, in the stream's order. Called again for a group already subscribed: nothing to do.
    fn subscribe_stream<'a>(
        &'a self,
        group: &'a str,
        limits: StreamLimits,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let _ = limits;
        self.subscribe(group)
    }

    /// The last member of `group` on this server left.
    fn unsubscribe<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<(), Error>>;

    /// Sends a group message to the other servers.
    fn publish<'a>(
        &'a self,
        group: &'a str,
        message: &'a Outgoing,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Sends a message to a channel that is not connected to this server.
    fn send_to<'a>(
        &'a self,
        channel: ConnectionId,
        message: &'a Outgoing,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Sends an event to the other servers, whose listeners of `name` run with `payload`
    /// (JSON).
    fn publish_event<'a>(
        &'a self,
        _name: &'a str,
        _payload: &'a [u8],
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// `channel` joined `group` on this server (for cluster-wide membership queries).
    fn member_joined(&self, _group: &str, _channel: ConnectionId) {}

    /// `channel` left `group` on this server.
    fn member_left(&self, _group: &str, _channel: ConnectionId) {}

    /// A member joined a presence group on this server (for the cluster's roster).
    fn presence_joined(&self, _group: &str, _member: &Member) {}

    /// A member of a presence group left on this server.
    fn presence_left(&self, _group: &str, _member: &Member) {}

    /// One page of `group`'s roster on every server: up to `limit` members after `cursor`
    /// (a previous page's `next`). `None`: this broker cannot answer (the channel layer
    /// answers with this server's).
    fn cluster_presence<'a>(
        &'a self,
        _group: &'a str,
        _cursor: Option<&'a str>,
        _limit: usize,
    ) -> BoxFuture<'a, ClusterAnswer<PresencePage>> {
        Box::pin(std::future::ready(None))
    }

    /// `group`'s presence counts on every server. `None`: this broker cannot answer.
    fn cluster_presence_stats<'a>(
        &'a self,
        _group: &'a str,
    ) -> BoxFuture<'a, ClusterAnswer<PresenceStats>> {
        Box::pin(std::future::ready(None))
    }

    /// Hands this server's presence changes in `group` of one window (JSON) to the other
    /// servers, which take them with [`Inbox::deliver_presence`].
    fn publish_presence(&self, _group: &str, _diff: &[u8]) {}

    /// Completes once what this server handed the broker so far (publications, membership
    /// and presence changes) has been written: a graceful shutdown waits for it (bounded),
    /// so the other servers hear of this server's last leaves.
    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    /// Every group with members on any server, with its member count, sorted by name.
    /// `None`: this broker cannot answer (the channel layer answers with this server's).
    fn cluster_groups(&self) -> BoxFuture<'_, ClusterAnswer<Vec<(String, usize)>>> {
        Box::pin(std::future::ready(None))
    }

    /// The members of `group` on every server. `None`: this broker cannot answer.
    fn cluster_members<'a>(
        &'a self,
        _group: &'a str,
    ) -> BoxFuture<'a, ClusterAnswer<Vec<ConnectionId>>> {
        Box::pin(std::future::ready(None))
    }
}

/// The in-process broker: groups live in this process only (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl Broker for Local {
    fn is_clustered(&self) -> bool {
        false
    }

    fn attach(&self, _inbox: Inbox) {}

    fn subscribe<'a>(&'a self, _group: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn unsubscribe<'a>(&'a self, _group: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn publish<'a>(
        &'a self,
        _group: &'a str,
        _message: &'a Outgoing,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn send_to<'a>(
        &'a self,
        _channel: ConnectionId,
        _message: &'a Outgoing,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Which broker a URL names, by its scheme (the first one, for a list of servers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Redis,
    Nats,
}

fn scheme(url: &str) -> Option<Scheme> {
    let first = url.split(',').next().unwrap_or("").trim();
    let (scheme, _) = first.split_once("://")?;
    match scheme {
        "redis" | "rediss" | "redis+unix" | "unix" | "redis+cluster" | "rediss+cluster" => {
            Some(Scheme::Redis)
        }
        "nats" | "tls" => Some(Scheme::Nats),
        _ => None,
    }
}

/// The broker the environment asks for, if any: `SWITCHBOARD_BROKER_URL` (the scheme picks
/// the broker: `redis://`, `rediss://`, `redis+unix://`, `redis+cluster://` (a Redis Cluster),
/// `nats://` or `tls://`, or a list of servers separated by commas), or `SWITCHBOARD_REDIS_URL` (a Redis URL, as before),
/// if set and not empty; with the CAs of the PEM file `SWITCHBOARD_REDIS_CA` for a `rediss://`
/// server a private CA signed.
pub(crate) fn from_env() -> Result<Option<Arc<dyn Broker>>, Error> {
    let read = |name: &'static str| -> Result<Option<(&'static str, String)>, Error> {
        let Some(value) = std::env::var_os(name).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let value = value.into_string().map_err(|_| {
            Error::new(
                crate::ErrorKind::Config,
                format!("{name} is not valid UTF-8"),
            )
        })?;
        Ok(Some((name, value)))
    };
    let (name, url) = match (
        read("SWITCHBOARD_BROKER_URL")?,
        read("SWITCHBOARD_REDIS_URL")?,
    ) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(Error::new(
                crate::ErrorKind::Config,
                "both SWITCHBOARD_BROKER_URL and SWITCHBOARD_REDIS_URL are set: keep one \
                 (SWITCHBOARD_BROKER_URL takes redis:// and nats:// URLs)",
            ));
        }
        (Some(found), None) | (None, Some(found)) => found,
    };
    let named = |e: Error| {
        Error::new(
            crate::ErrorKind::Config,
            format!("{name}={}: {e}", secret::redact(&url)),
        )
    };
    let scheme = if name == "SWITCHBOARD_REDIS_URL" {
        Scheme::Redis
    } else {
        scheme(&url).ok_or_else(|| {
            named(Error::new(
                crate::ErrorKind::Config,
                "unknown broker: the URL must start with redis://, rediss://, redis+unix://, \
                 redis+cluster://, nats:// or tls://",
            ))
        })?
    };
    match scheme {
        Scheme::Redis => {
            #[cfg(feature = "redis")]
            {
                let mut broker = Redis::new(&url).map_err(named)?;
                if let Some(path) =
                    std::env::var_os("SWITCHBOARD_REDIS_CA").filter(|v| !v.is_empty())
                {
                    let pem = std::fs::read(&path).map_err(|e| {
                        Error::new(
                            crate::ErrorKind::Config,
                            format!(
                                "SWITCHBOARD_REDIS_CA={}: cannot read the CA file: {e}",
                                std::path::Path::new(&path).display()
                            ),
                        )
                    })?;
                    broker = broker.tls_root_ca(pem).map_err(named)?;
                }
                Ok(Some(Arc::new(broker)))
            }
            #[cfg(not(feature = "redis"))]
            {
                Err(missing(name, &url, "redis"))
            }
        }
        Scheme::Nats => {
            #[cfg(feature = "nats")]
            {
                Ok(Some(Arc::new(Nats::new(&url).map_err(named)?)))
            }
            #[cfg(not(feature = "nats"))]
            {
                Err(missing(name, &url, "nats"))
            }
        }
    }
}

/// A broker URL for a broker this build left out.
#[cfg(not(all(feature = "redis", feature = "nats")))]
fn missing(name: &str, url: &str, feature: &str) -> Error {
    Error::new(
        crate::ErrorKind::Config,
        format!(
            "{name} is set ({}) but switchboard was built without its `{feature}` feature: \
             enable it, or unset the variable to stay in one process",
            secret::redact(url)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_picks_the_broker() {
        assert_eq!(scheme("redis://127.0.0.1:6379/"), Some(Scheme::Redis));
        assert_eq!(scheme("rediss://h/"), Some(Scheme::Redis));
        assert_eq!(scheme("redis+unix:///tmp/r.sock"), Some(Scheme::Redis));
        assert_eq!(scheme("redis+cluster://a:7000,b:7001"), Some(Scheme::Redis));
        assert_eq!(scheme("redis://a:7000,redis://b:7001"), Some(Scheme::Redis));
        assert_eq!(scheme("nats://a:4222,nats://b:4222"), Some(Scheme::Nats));
        assert_eq!(scheme(" tls://a:4222"), Some(Scheme::Nats));
        assert_eq!(scheme("http://x"), None);
        assert_eq!(scheme("127.0.0.1:6379"), None);
    }
}
