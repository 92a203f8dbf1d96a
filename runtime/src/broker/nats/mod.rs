//! The NATS broker: groups and events across every server connected to one NATS (a server or
//! a NATS cluster), with the same semantics as the Redis broker.
//!
//! - Group messages: one core NATS publish per `group_send` on `{prefix}.g.{group}` (the group
//!   name escaped into one subject token), handed to a publisher task so a sender never waits
//!   for NATS. A server subscribes to exactly the groups it has members in; the subscription
//!   is confirmed (a round trip to NATS) before the first member's join returns. Servers
//!   connect with `no_echo`, so NATS never sends a server its own publications back; the
//!   sender's node id in every message is checked as well.
//! - `send_to` a channel on another server and cluster-wide events: `{prefix}.d` and
//!   `{prefix}.e`, to which every server subscribes.
//! - Cluster membership and presence: scatter-gather. Every server publishes a heartbeat on
//!   `{prefix}.hb` every third of `membership_ttl`, keeps the table of the servers it heard
//!   from within the TTL, and answers queries on `{prefix}.q` from its own state. A query asks
//!   every server and waits for as many answers as there are live servers, at most the
//!   broker's timeout: a dead server stops answering, and drops out of the table once its
//!   heartbeat is a TTL old. Nothing is stored in NATS, so nothing goes stale when a server
//!   dies; the cost is a round trip to every server per query (see the README's broker
//!   section). When a server's heartbeat expires, every server announces the leaves of the
//!   presence members it knew of that server.
//! - Recoverable groups: one JetStream stream per group (`{prefix}-{group}`, subject
//!   `{prefix}.s.{group}`, bounded by count and age, file storage). The stream's sequence is
//!   the offset and its creation time the epoch; JetStream republishes each stored message,
//!   in the stream's order with its sequence, on `{prefix}.p.{group}`, to which every server
//!   with members subscribes: every server (the sender's too) delivers in the stream's order,
//!   and live delivery never waits for (or depends on) the stored history.
//! - Faults: core NATS delivers at most once. While NATS is unreachable local delivery goes
//!   on (not for a recoverable group: its messages reach every member through the stream),
//!   publishes fail at once (counted, and reported in `SendReport`), the client reconnects
//!   with backoff and resubscribes, and the broker emits [`CLUSTER_DOWN`](super::CLUSTER_DOWN)
//!   / [`CLUSTER_UP`](super::CLUSTER_UP). Unlike a Redis `PUBLISH`, a NATS publish has no
//!   answer: a message written in the instant before the connection broke is lost without
//!   being counted.

mod connection;
mod gather;
mod streams;
mod subscriptions;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::common::{Config, Counters, lock};
use super::envelope::{Envelope, Kind};
use super::secret::{Secrets, redact};
use super::{BoxFuture, Broker, ClusterAnswer, Inbox, Outgoing, StreamLimits, StreamRead};
use crate::channel::{Member, PresencePage, PresenceStats};
use crate::conn::ConnectionId;
use crate::{Error, ErrorKind};

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Publications waiting for NATS, at most: past that, publishing fails at once.
const PUBLISH_QUEUE: usize = 16 * 1024;

/// The NATS broker (cargo feature `nats`): `App::builder().broker(Nats::new(url)?)`, or
/// `App::builder().broker_from_env()` with `SWITCHBOARD_BROKER_URL=nats://...`.
///
/// Settings are read when the app is built. Clones share the connection and the counters
/// (keep one to read [`metrics`](Nats::metrics)).
///
/// ```no_run
/// # fn main() -> Result<(), switchboard::Error> {
/// use switchboard::App;
/// use switchboard::broker::Nats;
///
/// let broker = Nats::new("nats://127.0.0.1:4222")?.prefix("chat");
/// let app = App::builder().broker(broker.clone()).build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Nats {
    config: Config,
    shared: Arc<Shared>,
}

/// What the broker has done so far (since it was created).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsMetrics {
    /// Whether the broker is connected (subscribed and able to publish).
    pub connected: bool,
    /// Groups this server is subscribed to.
    pub subscribed_groups: usize,
    /// Other servers heard from within the membership TTL.
    pub servers: usize,
    /// Messages published (group messages, direct messages and events).
    pub published: u64,
    /// Publishes that failed (NATS unreachable, too slow, or a stream append refused).
    pub publish_failures: u64,
    /// Messages received from other servers.
    pub received: u64,
    /// Messages of this server's own that came back and were skipped.
    pub own_skipped: u64,
    /// Messages that could not be read (and were dropped).
    pub malformed: u64,
    /// Cluster events dropped because too many were waiting to run.
    pub events_dropped: u64,
    /// Times the connection was lost.
    pub outages: u64,
    /// Recoverable groups' streams this server remembers (made sure of, or read): bounded,
    /// and forgotten when the group's last member here leaves.
    pub streams: usize,
}

/// A request to the subscriptions task, applied in order.
#[derive(Debug)]
enum Control {
    /// Subscribe to a group (and, with limits, to its stream); answered once confirmed.
    Subscribe {
        group: String,
        stream: Option<StreamLimits>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Unsubscribe, unless the group has members here again.
    Unsubscribe(String),
    /// The connection is back: subscribe what is missing, then say how many groups are
    /// subscribed.
    Resubscribe(oneshot::Sender<usize>),
}

/// A message waiting for the publisher task, or a flush.
#[derive(Debug)]
enum Publication {
    Core { subject: String, bytes: Bytes },
    Stream { subject: String, bytes: Bytes },
    Flush(oneshot::Sender<()>),
}

/// Another server's presence members, per group.
type RemoteGroups = HashMap<String, HashMap<ConnectionId, Member>>;

/// The state every clone and every task shares.
struct Shared {
    /// The servers to connect to (with credentials), as given.
    addrs: Vec<async_nats::ServerAddr>,
    /// The URLs without their passwords, for messages.
    url: String,
    secrets: Secrets,
    node: Uuid,
    config: OnceLock<Config>,
    initial_config: Config,
    inbox: OnceLock<Inbox>,
    started: OnceLock<()>,
    client: OnceLock<async_nats::Client>,
    jetstream: OnceLock<async_nats::jetstream::Context>,
    control: mpsc::UnboundedSender<Control>,
    control_rx: Mutex<Option<mpsc::UnboundedReceiver<Control>>>,
    publications: mpsc::Sender<Publication>,
    publications_rx: Mutex<Option<mpsc::Receiver<Publication>>>,
    state: AtomicU8,
    last_error: Mutex<String>,
    subscribed: Mutex<BTreeSet<String>>,
    /// The other servers, and when each was last heard from.
    peers: Mutex<HashMap<Uuid, Instant>>,
    /// The presence members other servers announced, per server and group: announced as
    /// leaves here when their server's heartbeat expires.
    remote_presence: Mutex<HashMap<Uuid, RemoteGroups>>,
    /// The recoverable groups' streams known to exist (with this server's settings).
    streams: Mutex<BTreeSet<String>>,
    /// The epochs of the recoverable groups' streams this server reads.
    epochs: Mutex<HashMap<String, String>>,
    /// The bounds of the recoverable groups' streams (the app's history limits), once known:
    /// for the groups subscribed again after an outage.
    stream_limits: Mutex<Option<StreamLimits>>,
    counters: Counters,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats")
            .field("url", &self.shared.url)
            .field("node", &self.shared.node)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Nats {
    /// A broker for the NATS at `url`. Nothing connects until the app starts.
    ///
    /// - `nats://[user:password@]host[:port]`: plain TCP (port 4222 by default).
    /// - `tls://[user:password@]host[:port]`: TLS, the server's certificate checked against
    ///   the platform's trust store.
    /// - Several servers of one NATS cluster, separated by commas
    ///   (`nats://a:4222,nats://b:4222`): the client connects to one and moves to another
    ///   when it fails.
    ///
    /// Passwords never appear in `Debug` output, errors or logs.
    pub fn new(url: &str) -> Result<Nats, Error> {
        let mut secrets = Secrets::default();
        let invalid = |detail: String| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "invalid NATS URL `{}`: {detail}; expected nats://HOST[:PORT] or \
                     tls://HOST[:PORT], several separated by commas",
                    redact(url)
                ),
            )
        };
        let mut addrs = Vec::new();
        for part in url.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(invalid("an empty server address".to_owned()));
            }
            if !(part.starts_with("nats://") || part.starts_with("tls://")) {
                return Err(invalid(format!(
                    "`{}` is not a nats:// or tls:// address",
                    redact(part)
                )));
            }
            let addr: async_nats::ServerAddr = part
                .parse()
                .map_err(|e: std::io::Error| invalid(e.to_string()))?;
            if let Some(password) = addr.password() {
                secrets.add(password);
            }
            addrs.push(addr);
        }
        let (control, control_rx) = mpsc::unbounded_channel();
        let (publications, publications_rx) = mpsc::channel(PUBLISH_QUEUE);
        let config = Config::default();
        Ok(Nats {
            config: config.clone(),
            shared: Arc::new(Shared {
                addrs,
                url: url
                    .split(',')
                    .map(|part| redact(part.trim()))
                    .collect::<Vec<_>>()
                    .join(","),
                secrets,
                node: Uuid::new_v4(),
                config: OnceLock::new(),
                initial_config: config,
                inbox: OnceLock::new(),
                started: OnceLock::new(),
                client: OnceLock::new(),
                jetstream: OnceLock::new(),
                control,
                control_rx: Mutex::new(Some(control_rx)),
                publications,
                publications_rx: Mutex::new(Some(publications_rx)),
                state: AtomicU8::new(CONNECTING),
                last_error: Mutex::new(String::new()),
                subscribed: Mutex::new(BTreeSet::new()),
                peers: Mutex::new(HashMap::new()),
                remote_presence: Mutex::new(HashMap::new()),
                streams: Mutex::new(BTreeSet::new()),
                epochs: Mutex::new(HashMap::new()),
                stream_limits: Mutex::new(None),
                counters: Counters::default(),
            }),
        })
    }

    /// The first token of every subject (default `switchboard`): servers with the same prefix
    /// form one cluster.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }

    /// How long one NATS operation (subscribe, stream append, query) may take before it
    /// counts as failed (default 2 s); a cluster-wide query waits at most this long for the
    /// other servers' answers.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// The delays between reconnection attempts: from `min`, doubling up to `max` (default
    /// 100 ms to 5 s).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.backoff_min = min;
        self.config.backoff_max = max.max(min);
        self
    }

    /// How long a server counts as alive after its last heartbeat (default 30 s; sent every
    /// third of it): a dead server's members vanish from cluster-wide queries at once (it
    /// stops answering), and its presence members are announced as leaves after at most this
    /// long.
    pub fn membership_ttl(mut self, ttl: Duration) -> Self {
        self.config.membership_ttl = ttl.max(Duration::from_millis(30));
        self
    }

    /// This server's id in the cluster (in every message it publishes).
    pub fn node_id(&self) -> Uuid {
        self.shared.node
    }

    /// Whether the broker is connected (subscribed and able to publish).
    pub fn is_connected(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) == UP
    }

    /// The groups this server is subscribed to in NATS, sorted.
    pub fn subscribed_groups(&self) -> Vec<String> {
        lock(&self.shared.subscribed).iter().cloned().collect()
    }

    /// The broker's counters.
    pub fn metrics(&self) -> NatsMetrics {
        let c = &self.shared.counters;
        NatsMetrics {
            connected: self.is_connected(),
            subscribed_groups: lock(&self.shared.subscribed).len(),
            servers: self.shared.live_peers().len(),
            published: c.published.load(Ordering::Relaxed),
            publish_failures: c.publish_failures.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            own_skipped: c.own_skipped.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            events_dropped: c.events_dropped.load(Ordering::Relaxed),
            outages: c.outages.load(Ordering::Relaxed),
            streams: lock(&self.shared.streams).len(),
        }
    }
}

/// `text` as one subject token (and a valid stream name): ASCII letters, digits, `_` and `-`
/// stay, every other byte is `~` and two hex digits.
fn token(text: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "~{byte:02X}");
        }
    }
    out
}

impl Shared {
    fn config(&self) -> &Config {
        self.config.get().unwrap_or(&self.initial_config)
    }

    fn subject(&self, kind: &str) -> String {
        format!("{}.{kind}", token(&self.config().prefix))
    }

    fn group_subject(&self, group: &str) -> String {
        format!("{}.g.{}", token(&self.config().prefix), token(group))
    }

    fn stream_subject(&self, group: &str) -> String {
        format!("{}.s.{}", token(&self.config().prefix), token(group))
    }

    fn republish_subject(&self, group: &str) -> String {
        format!("{}.p.{}", token(&self.config().prefix), token(group))
    }

    fn stream_name(&self, group: &str) -> String {
        format!("{}-{}", token(&self.config().prefix), token(group))
    }

    fn scrub(&self, text: &str) -> String {
        self.secrets.scrub(text)
    }

    fn broker_error(&self, what: &str, detail: impl std::fmt::Display) -> Error {
        let detail = self.scrub(&detail.to_string());
        Error::new(
            ErrorKind::Broker,
            format!("{what} (NATS at {}): {detail}", self.url),
        )
    }

    /// Fails at once while NATS is known to be unreachable.
    fn check_up(&self, what: &str) -> Result<(), Error> {
        if self.state.load(Ordering::Acquire) == DOWN {
            let error = lock(&self.last_error).clone();
            return Err(self.broker_error(what, format!("NATS is unreachable ({error})")));
        }
        Ok(())
    }

    /// The client, once the broker has started.
    fn client(&self, what: &str) -> Result<&async_nats::Client, Error> {
        self.client
            .get()
            .ok_or_else(|| self.broker_error(what, "the broker has not started yet"))
    }

    /// Waits until NATS has taken every command sent before (subscriptions above all): a
    /// request it answers itself, "no responders" (nobody listens on this server's ping
    /// subject). (`Client::flush` only writes the commands out.) In a cluster of NATS servers,
    /// the one this server is connected to has them; the others learn of subscriptions
    /// shortly after.
    async fn confirm(&self) -> Result<(), String> {
        let timeout = self.config().timeout;
        let client = self.client("").map_err(|e| e.to_string())?;
        let ping = format!("{}.ping.{}", token(&self.config().prefix), self.node);
        match tokio::time::timeout(timeout, client.request(ping, Bytes::new())).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
            Ok(Err(e)) => Err(self.scrub(&e.to_string())),
            Err(_) => Err(format!("not confirmed within {timeout:?}")),
        }
    }

    /// The servers heard from within the TTL.
    fn live_peers(&self) -> Vec<Uuid> {
        let ttl = self.config().membership_ttl;
        lock(&self.peers)
            .iter()
            .filter(|(_, seen)| seen.elapsed() < ttl)
            .map(|(node, _)| *node)
            .collect()
    }

    /// Waits for a NATS request, at most the broker's timeout.
    async fn timed<T, E: std::fmt::Display>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, E>>,
    ) -> Result<T, Error> {
        let timeout = self.config().timeout;
        match tokio::time::timeout(timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.broker_error(what, e)),
            Err(_) => Err(self.broker_error(what, format!("no answer within {timeout:?}"))),
        }
    }

    /// Queues a publication for the publisher task; fails at once, counted, when NATS is
    /// unreachable or the queue is full.
    fn enqueue(&self, what: &str, publication: Publication) -> Result<(), Error> {
        let queued = self.check_up(what).and_then(|()| {
            self.publications
                .try_send(publication)
                .map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => self.broker_error(
                        what,
                        format!("{PUBLISH_QUEUE} messages are already waiting for NATS"),
                    ),
                    mpsc::error::TrySendError::Closed(_) => {
                        self.broker_error(what, "the broker has stopped")
                    }
                })
        });
        if queued.is_err() {
            self.counters
                .publish_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    fn publish(&self, what: &str, subject: String, envelope: Envelope<'_>) -> Result<(), Error> {
        let bytes = Bytes::from(envelope.encode());
        self.enqueue(what, Publication::Core { subject, bytes })
    }

    /// Hands a presence diff of `group` (JSON) to the other servers with members in it.
    fn publish_presence_diff(&self, group: &str, diff: &[u8]) {
        let envelope = Envelope {
            node: self.node,
            kind: Kind::Presence,
            payload: diff,
        };
        // Counted as a publish failure when it cannot go: presence diffs are best effort.
        let _ = self.publish(
            "cannot send presence changes to other servers",
            self.group_subject(group),
            envelope,
        );
    }

    /// Starts the background tasks once, inside a runtime.
    fn start(self: &Arc<Self>) {
        let Some(inbox) = self.inbox.get() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.started.set(()).is_err() {
            return;
        }
        let control = lock(&self.control_rx).take();
        let publications = lock(&self.publications_rx).take();
        if let (Some(control), Some(publications)) = (control, publications) {
            runtime.spawn(connection::run(
                self.clone(),
                inbox.clone(),
                control,
                publications,
            ));
        }
    }
}

impl Broker for Nats {
    fn is_clustered(&self) -> bool {
        true
    }

    fn attach(&self, inbox: Inbox) {
        if self.shared.inbox.set(inbox).is_err() {
            tracing::warn!("this NATS broker already serves an app: use one broker per app");
            return;
        }
        let _ = self.shared.config.set(self.config.clone());
        self.shared.start();
    }

    fn start(&self) {
        self.shared.start();
    }

    fn describe(&self) -> String {
        format!("nats {}", self.shared.url)
    }

    fn is_up(&self) -> bool {
        self.is_connected()
    }

    fn stats(&self) -> super::BrokerStats {
        let c = &self.shared.counters;
        let publications = &self.shared.publications;
        super::BrokerStats::new(
            c.publish_failures.load(Ordering::Relaxed),
            publications.max_capacity() - publications.capacity(),
            c.events_dropped.load(Ordering::Relaxed),
        )
    }

    fn keeps_streams(&self) -> bool {
        true
    }

    fn publish_positioned<'a>(
        &'a self,
        group: &'a str,
        message: &'a Outgoing,
        limits: StreamLimits,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let shared = &self.shared;
            shared.start();
            *lock(&shared.stream_limits) = Some(limits);
            let what = "cannot append to the group's stream";
            shared.check_up(what)?;
            if let Err(e) = streams::ensure(shared, group, limits).await {
                shared
                    .counters
                    .publish_failures
                    .fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
            let envelope = Envelope {
                node: shared.node,
                kind: Kind::Group {
                    except: message.except,
                },
                payload: &message.payload,
            };
            let publication = Publication::Stream {
                subject: shared.stream_subject(group),
                bytes: Bytes::from(envelope.encode()),
            };
            shared.enqueue(what, publication)
        })
    }

    fn read_stream<'a>(
        &'a self,
        group: &'a str,
        after: u64,
        limits: StreamLimits,
    ) -> BoxFuture<'a, Result<StreamRead, Error>> {
        Box::pin(async move {
            self.shared.start();
            streams::read(&self.shared, group, after, limits).await
        })
    }

    fn subscribe<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.shared.subscribe(group, None))
    }

    fn subscribe_stream<'a>(
        &'a self,
        group: &'a str,
        limits: StreamLimits,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.shared.subscribe(group, Some(limits)))
    }

    fn unsubscribe<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        // The subscriptions task checks, in order with the subscriptions, that the group is
        // still empty here (a new member may have joined since).
        let _ = self
            .shared
            .control
            .send(Control::Unsubscribe(group.to_owned()));
        Box::pin(std::future::ready(Ok(())))
    }

    fn publish<'a>(
        &'a self,
        group: &'a str,
        message: &'a Outgoing,
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.shared.start();
        let envelope = Envelope {
            node: self.shared.node,
            kind: Kind::Group {
                except: message.except,
            },
            payload: &message.payload,
        };
        let result = self.shared.publish(
            "cannot publish to other servers",
            self.shared.group_subject(group),
            envelope,
        );
        Box::pin(std::future::ready(result))
    }

    fn send_to<'a>(
        &'a self,
        channel: ConnectionId,
        message: &'a Outgoing,
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.shared.start();
        let envelope = Envelope {
            node: self.shared.node,
            kind: Kind::Direct { channel },
            payload: &message.payload,
        };
        let result = self.shared.publish(
            "cannot send to other servers",
            self.shared.subject("d"),
            envelope,
        );
        Box::pin(std::future::ready(result))
    }

    fn publish_event<'a>(
        &'a self,
        name: &'a str,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.shared.start();
        if name.len() > usize::from(u16::MAX) {
            return Box::pin(std::future::ready(Err(Error::new(
                ErrorKind::InvalidName,
                "an event name sent to the cluster must be at most 65535 bytes",
            ))));
        }
        let envelope = Envelope {
            node: self.shared.node,
            kind: Kind::Event { name },
            payload,
        };
        let result = self.shared.publish(
            "cannot send the event to other servers",
            self.shared.subject("e"),
            envelope,
        );
        Box::pin(std::future::ready(result))
    }

    fn cluster_presence<'a>(
        &'a self,
        group: &'a str,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, ClusterAnswer<PresencePage>> {
        Box::pin(async move {
            let inbox = self.shared.inbox.get()?;
            Some(gather::presence_page(&self.shared, inbox, group, cursor, limit).await)
        })
    }

    fn cluster_presence_stats<'a>(
        &'a self,
        group: &'a str,
    ) -> BoxFuture<'a, ClusterAnswer<PresenceStats>> {
        Box::pin(async move {
            let inbox = self.shared.inbox.get()?;
            Some(gather::presence_stats(&self.shared, inbox, group).await)
        })
    }

    fn publish_presence(&self, group: &str, diff: &[u8]) {
        self.shared.publish_presence_diff(group, diff);
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let (written, done) = oneshot::channel();
            if self
                .shared
                .publications
                .send(Publication::Flush(written))
                .await
                .is_ok()
            {
                let _ = done.await;
            }
        })
    }

    fn cluster_groups(&self) -> BoxFuture<'_, ClusterAnswer<Vec<(String, usize)>>> {
        Box::pin(async move {
            let inbox = self.shared.inbox.get()?;
            Some(gather::groups(&self.shared, inbox).await)
        })
    }

    fn cluster_members<'a>(
        &'a self,
        group: &'a str,
    ) -> BoxFuture<'a, ClusterAnswer<Vec<ConnectionId>>> {
        Box::pin(async move {
            let inbox = self.shared.inbox.get()?;
            Some(gather::members(&self.shared, inbox, group).await)
        })
    }
}

impl Shared {
    /// Subscribes to `group` (and its stream, given limits) through the subscriptions task,
    /// and waits for the confirmation.
    async fn subscribe(
        self: &Arc<Self>,
        group: &str,
        stream: Option<StreamLimits>,
    ) -> Result<(), Error> {
        self.start();
        if let Some(limits) = stream {
            *lock(&self.stream_limits) = Some(limits);
        }
        let what = "cannot subscribe to the group";
        self.check_up(what)?;
        let (done, confirmed) = oneshot::channel();
        let request = Control::Subscribe {
            group: group.to_owned(),
            stream,
            done,
        };
        if self.control.send(request).is_err() {
            return Err(self.broker_error(what, "the broker has stopped"));
        }
        // A stream subscription takes a few round trips (the stream, its consumer).
        let timeout = self.config().timeout * 2;
        match tokio::time::timeout(timeout, confirmed).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(self.broker_error(what, e)),
            Ok(Err(_)) => Err(self.broker_error(what, "the connection was lost")),
            Err(_) => Err(self.broker_error(what, format!("not confirmed within {timeout:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_become_one_subject_token() {
        assert_eq!(token("chat_lobby-2"), "chat_lobby-2");
        assert_eq!(token("a.b *>~ é"), "a~2Eb~20~2A~3E~7E~20~C3~A9");
        // Different names, different tokens (`~` itself is escaped).
        assert_ne!(token("~41"), token("A"));
    }

    #[test]
    fn urls_are_checked_and_passwords_kept_out_of_messages() {
        let broker = Nats::new("nats://app:hunter22@127.0.0.1:4222,nats://127.0.0.1:4223").unwrap();
        let printed = format!("{broker:?} {}", broker.describe());
        assert!(!printed.contains("hunter22"), "{printed}");
        assert!(printed.contains("127.0.0.1:4223"), "{printed}");
        let error = broker
            .shared
            .broker_error("cannot connect", "authorization violation for hunter22");
        assert!(!error.to_string().contains("hunter22"), "{error}");

        for bad in [
            "",
            "redis://127.0.0.1",
            "nats://a:1,,nats://b:2",
            "http://x",
        ] {
            let e = Nats::new(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config);
            assert!(e.to_string().contains("invalid NATS URL"), "{e}");
        }
        let e = Nats::new("nats://:hunter22@[::1").unwrap_err();
        assert!(!e.to_string().contains("hunter22"), "{e}");
    }
}
