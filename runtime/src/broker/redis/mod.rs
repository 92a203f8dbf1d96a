//! The Redis broker: groups and events across every server that shares one Redis, or one
//! Redis Cluster (`cluster.rs` says what changes there).
//!
//! - Group messages: one `PUBLISH` per `group_send` on `{prefix}:g:{group}`, handed to a
//!   publisher task that publishes in order, pipelining what queued up (so a sender never
//!   waits for Redis, and a burst costs few round trips); a server is
//!   subscribed to exactly the groups it has members in (the first local member waits for the
//!   subscription, the last one's leave drops it). Messages carry the sender's node id, so a
//!   server skips its own publications (its members got the message directly).
//! - `send_to` a channel on another server and cluster-wide events: `{prefix}:direct` and
//!   `{prefix}:events`, to which every server subscribes.
//! - Membership for cluster-wide `groups()`/`members()`: sorted sets `{prefix}:members:{group}`
//!   of channel ids scored by an expiry time that live servers push forward; a dead server's
//!   members drop out when it passes. Approximate by design.
//! - Faults: Redis pub/sub delivers at most once. While Redis is unreachable, local delivery
//!   goes on, publishes fail at once (counted, and reported in `SendReport`), and the broker
//!   reconnects with backoff, resubscribes every group that still has local members, and emits
//!   [`CLUSTER_DOWN`](super::CLUSTER_DOWN) / [`CLUSTER_UP`](super::CLUSTER_UP).

mod cluster;
mod membership;
mod presence;
mod publisher;
mod subscriber;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use self::cluster::Commands;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::common::{Config, Counters, lock};
use super::envelope::{Envelope, Kind};
use super::secret::{Secrets, redact};
use super::{BoxFuture, Broker, ClusterAnswer, Inbox, Outgoing};
use crate::channel::{Member, PresencePage, PresenceStats};
use crate::conn::ConnectionId;
use crate::{Error, ErrorKind};

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// The Redis broker (cargo feature `redis`): `App::builder().broker(Redis::new(url)?)`, or
/// `App::builder().broker_from_env()` with `SWITCHBOARD_REDIS_URL` set.
///
/// Settings are read when the app is built. Clones share the connection and the counters
/// (keep one to read [`metrics`](Redis::metrics)).
///
/// ```no_run
/// # fn main() -> Result<(), switchboard::Error> {
/// use std::time::Duration;
/// use switchboard::App;
/// use switchboard::broker::Redis;
///
/// let broker = Redis::new("redis://127.0.0.1:6379/")?.prefix("chat");
/// let app = App::builder().broker(broker.clone()).build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Redis {
    config: Config,
    shared: Arc<Shared>,
}

/// What the broker has done so far (since it was created).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisMetrics {
    /// Whether the broker is connected (subscribed and able to publish).
    pub connected: bool,
    /// Groups this server is subscribed to.
    pub subscribed_groups: usize,
    /// Messages published (group messages, direct messages and events).
    pub published: u64,
    /// Publishes that failed (Redis unreachable or too slow).
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
}

/// A request to the subscriber task.
#[derive(Debug)]
enum Control {
    Subscribe(String, oneshot::Sender<Result<(), String>>),
    Unsubscribe(String),
}

/// A message waiting for the publisher task: a `PUBLISH`, or (a recoverable group's message)
/// the script that appends it to the group's stream and publishes it with its position; or a
/// flush, answered once everything queued before it was written.
#[derive(Debug)]
enum Publication {
    Cmd(redis::Cmd),
    Flush(oneshot::Sender<()>),
}

/// Appends a message to a recoverable group's stream and publishes it, in one step: the
/// stream's epoch (made if it has none; a new epoch empties the stream), the next offset,
/// `XADD` with that offset as the id (bounded by count), the expiry of both keys pushed to
/// the age bound, and the `PUBLISH` of the envelope with the position written in.
///
/// KEYS: stream, meta. ARGV: header, payload, max entries, max age (ms), channel, new epoch,
/// the publish command (`PUBLISH`, or `SPUBLISH` on a cluster).
const APPEND: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[6]
  redis.call('HSET', KEYS[2], 'epoch', epoch)
  redis.call('DEL', KEYS[1])
end
local offset = redis.call('HINCRBY', KEYS[2], 'offset', 1)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], '0-' .. offset, 'p', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local o = tostring(offset)
redis.call(ARGV[7], ARGV[5], ARGV[1] .. string.char(#epoch) .. epoch .. string.char(#o) .. o .. ARGV[2])
return offset
";

/// Reads a recoverable group's stream after an offset, making its epoch if it has none.
/// KEYS: stream, meta. ARGV: after + 1 (or 0: no entries), max age (ms), new epoch.
const READ: &str = r"
redis.call('HSETNX', KEYS[2], 'epoch', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local last = tonumber(redis.call('HGET', KEYS[2], 'offset') or '0')
local entries = {}
if ARGV[1] ~= '0' then
  entries = redis.call('XRANGE', KEYS[1], '0-' .. ARGV[1], '+')
end
return {epoch, last, entries}
";

/// A new epoch: 12 hex digits.
fn new_epoch() -> String {
    Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Publications waiting for Redis, at most: past that, publishing fails at once (Redis is too
/// slow for the load) instead of queueing without bound.
const PUBLISH_QUEUE: usize = 16 * 1024;

/// A request to the membership task: a change, or a flush (answered once every change queued
/// before it was written).
#[derive(Debug)]
enum Membership {
    Op(MemberOp),
    Flush(oneshot::Sender<()>),
}

/// A membership change for the registry in Redis.
#[derive(Debug)]
struct MemberOp {
    group: String,
    channel: ConnectionId,
    joined: bool,
    /// A presence group's roster entry, written beside the membership.
    presence: Option<Presence>,
}

/// A change to a presence group's roster in Redis.
#[derive(Debug)]
enum Presence {
    Joined { json: String, user_key: String },
    Left { user_key: String },
}

/// How to reach Redis: the address and credentials from the URL (and the builder), and the
/// TLS settings, from which the client is made.
struct Connect {
    info: redis::ConnectionInfo,
    /// PEM: the CAs to trust instead of the platform's (`None`: the platform's trust store).
    root_ca: Option<Vec<u8>>,
    /// PEM: the client certificate chain and key, for servers that ask for one.
    client_cert: Option<(Vec<u8>, Vec<u8>)>,
    client: redis::Client,
    /// A Redis Cluster's nodes (from `redis+cluster://` or a list of URLs), else `None`.
    cluster: Option<Vec<redis::ConnectionInfo>>,
}

impl Connect {
    /// Makes the client again from the settings.
    fn rebuild(&mut self) -> redis::RedisResult<()> {
        self.client = if self.root_ca.is_some() || self.client_cert.is_some() {
            redis::Client::build_with_tls(
                self.info.clone(),
                redis::TlsCertificates {
                    client_tls: self.client_cert.clone().map(|(client_cert, client_key)| {
                        redis::ClientTlsConfig {
                            client_cert,
                            client_key,
                        }
                    }),
                    root_cert: self.root_ca.clone(),
                },
            )?
        } else {
            redis::Client::open(self.info.clone())?
        };
        Ok(())
    }
}

/// The state every clone and every task shares.
struct Shared {
    connect: Mutex<Connect>,
    /// The URL without its password, for messages.
    url: String,
    /// The passwords, scrubbed from any text printed.
    secrets: Mutex<Secrets>,
    node: Uuid,
    /// The settings of the clone given to the app (set when it is attached).
    config: OnceLock<Config>,
    /// The settings at creation, until then.
    initial_config: Config,
    inbox: OnceLock<Inbox>,
    started: OnceLock<()>,
    commands: tokio::sync::OnceCell<Commands>,
    /// On a cluster: which shard holds which slots, and the shards that do not answer.
    shards: Mutex<cluster::Shards>,
    control: mpsc::UnboundedSender<Control>,
    control_rx: Mutex<Option<mpsc::UnboundedReceiver<Control>>>,
    members: mpsc::UnboundedSender<Membership>,
    members_rx: Mutex<Option<mpsc::UnboundedReceiver<Membership>>>,
    publications: mpsc::Sender<Publication>,
    publications_rx: Mutex<Option<mpsc::Receiver<Publication>>>,
    /// Pushed when the connection is back, so the registry is rewritten at once.
    refresh_now: tokio::sync::Notify,
    state: AtomicU8,
    last_error: Mutex<String>,
    subscribed: Mutex<BTreeSet<String>>,
    counters: Counters,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.shared.url)
            .field("node", &self.shared.node)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A broker for the Redis at `url`. Nothing connects until the app starts.
    ///
    /// - `redis://[[user]:password@]host[:port][/db]`: plain TCP.
    /// - `rediss://[[user]:password@]host[:port][/db]`: TLS, the server's certificate checked
    ///   against the platform's trust store (or the CAs given to
    ///   [`tls_root_ca`](Redis::tls_root_ca)). There is no way to turn the check off: the
    ///   `#insecure` suffix is refused.
    /// - `redis+unix:///path/to/socket[?db=N&user=U&pass=P]`: a Unix socket.
    /// - `redis+cluster://[[user]:password@]host:port[,host:port..]` (or `rediss+cluster://`
    ///   for TLS), or `redis://` URLs separated by commas: a Redis Cluster (Redis 7 or later),
    ///   reached through the nodes given (the others are found). Group messages use sharded
    ///   pub/sub, every key of a group is in one slot, and a shard that dies stops only its
    ///   own groups (see the crate's README, "Redis Cluster").
    ///
    /// The password can also be given apart from the URL, with [`password`](Redis::password).
    /// It never appears in `Debug` output, errors or logs: URLs are printed with `***` in its
    /// place.
    pub fn new(url: &str) -> Result<Redis, Error> {
        let mut secrets = Secrets::default();
        let invalid = |detail: String| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "invalid Redis URL `{}`: {detail}; expected redis://HOST[:PORT][/DB], \
                     rediss://HOST[:PORT][/DB] (TLS), redis+unix:///PATH, or a Redis Cluster: \
                     redis+cluster://HOST:PORT[,HOST:PORT..] or redis:// URLs separated by commas",
                    redact(url)
                ),
            )
        };
        let nodes = cluster_nodes(url).map_err(&invalid)?;
        let mut cluster = None;
        if let Some(nodes) = &nodes {
            let mut infos = Vec::with_capacity(nodes.len());
            for node in nodes {
                let info = redis::IntoConnectionInfo::into_connection_info(node.as_str())
                    .map_err(|e| invalid(e.to_string()).with_source(e))?;
                if !matches!(
                    info.addr(),
                    redis::ConnectionAddr::Tcp(..) | redis::ConnectionAddr::TcpTls { .. }
                ) {
                    return Err(invalid(
                        "a cluster's nodes are host:port addresses".to_owned(),
                    ));
                }
                infos.push(info);
            }
            cluster = Some(infos);
        }
        let first = nodes
            .as_ref()
            .and_then(|n| n.first())
            .map_or(url, String::as_str);
        let info = redis::IntoConnectionInfo::into_connection_info(first)
            .map_err(|e| invalid(e.to_string()).with_source(e))?;
        if let Some(password) = info.redis_settings().password() {
            secrets.add(password);
        }
        if let redis::ConnectionAddr::TcpTls { insecure, .. } = info.addr() {
            if *insecure {
                return Err(invalid(
                    "`#insecure` would turn off the check of the server's certificate: give the \
                     CA that signed it to `Redis::tls_root_ca` instead"
                        .to_owned(),
                ));
            }
            install_crypto_provider();
        }
        let client = redis::Client::open(info.clone())
            .map_err(|e| invalid(secrets.scrub(&e.to_string())).with_source(e))?;
        let (control, control_rx) = mpsc::unbounded_channel();
        let (members, members_rx) = mpsc::unbounded_channel();
        let (publications, publications_rx) = mpsc::channel(PUBLISH_QUEUE);
        let config = Config::default();
        Ok(Redis {
            config: config.clone(),
            shared: Arc::new(Shared {
                connect: Mutex::new(Connect {
                    info,
                    root_ca: None,
                    client_cert: None,
                    client,
                    cluster,
                }),
                url: redact(url),
                secrets: Mutex::new(secrets),
                node: Uuid::new_v4(),
                config: OnceLock::new(),
                initial_config: config,
                inbox: OnceLock::new(),
                started: OnceLock::new(),
                commands: tokio::sync::OnceCell::new(),
                shards: Mutex::new(cluster::Shards::default()),
                control,
                control_rx: Mutex::new(Some(control_rx)),
                members,
                members_rx: Mutex::new(Some(members_rx)),
                publications,
                publications_rx: Mutex::new(Some(publications_rx)),
                refresh_now: tokio::sync::Notify::new(),
                state: AtomicU8::new(CONNECTING),
                last_error: Mutex::new(String::new()),
                subscribed: Mutex::new(BTreeSet::new()),
                counters: Counters::default(),
            }),
        })
    }

    /// The password to authenticate with (`AUTH`), in place of one in the URL: for an ACL
    /// user (Redis 6 and later) together with [`user`](Redis::user), or alone for a server
    /// with `requirepass`. A wrong one is reported as the connection's error (a join fails with
    /// it, and the broker retries with backoff), never as a hang.
    pub fn password(self, password: &str) -> Self {
        lock(&self.shared.secrets).add(password);
        self.change_connection(|info| {
            let settings = info.redis_settings().clone().set_password(password);
            info.set_redis_settings(settings)
        });
        self
    }

    /// The ACL user to authenticate as (Redis 6 and later), with [`password`](Redis::password),
    /// in place of one in the URL.
    pub fn user(self, user: &str) -> Self {
        self.change_connection(|info| {
            let settings = info.redis_settings().clone().set_username(user);
            info.set_redis_settings(settings)
        });
        self
    }

    /// Trusts the certificate authorities in `pem` (one or more PEM certificates) for a
    /// `rediss://` server, instead of the platform's trust store: for a server whose
    /// certificate a private CA signed.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use switchboard::broker::Redis;
    ///
    /// let broker = Redis::new("rediss://cache.internal:6380/")?
    ///     .user("chat")
    ///     .password(&std::env::var("REDIS_PASSWORD")?)
    ///     .tls_root_ca(std::fs::read("/etc/chat/redis-ca.pem")?)?;
    /// # Ok(()) }
    /// ```
    ///
    /// Errors when the URL is not `rediss://` or `pem` holds no certificate.
    pub fn tls_root_ca(self, pem: impl Into<Vec<u8>>) -> Result<Self, Error> {
        self.require_tls()?;
        let pem = pem.into();
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("cannot read the Redis CA certificates (PEM): {e}"),
                )
            })?;
        if certificates.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                "no certificate in the PEM given as the Redis CA (it should hold one or more \
                 `-----BEGIN CERTIFICATE-----` blocks)",
            ));
        }
        self.change_tls(|connect| connect.root_ca = Some(pem))?;
        Ok(self)
    }

    /// A client certificate (PEM chain) and its private key (PEM), for a `rediss://` server
    /// that asks clients for one (`tls-auth-clients yes`).
    ///
    /// Errors when the URL is not `rediss://` or the PEM cannot be read.
    pub fn tls_client_cert(
        self,
        chain: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Result<Self, Error> {
        let pair = (chain.into(), key.into());
        self.change_tls(|connect| connect.client_cert = Some(pair))?;
        Ok(self)
    }

    fn change_connection(&self, change: impl Fn(redis::ConnectionInfo) -> redis::ConnectionInfo) {
        let mut connect = lock(&self.shared.connect);
        connect.info = change(connect.info.clone());
        if let Some(nodes) = connect.cluster.take() {
            connect.cluster = Some(nodes.into_iter().map(&change).collect());
        }
        // The address was valid when the client was first made: only credentials changed.
        if let Err(e) = connect.rebuild() {
            tracing::error!(
                url = %self.shared.url,
                "cannot apply the Redis credentials: {}",
                self.shared.scrub(&e.to_string())
            );
        }
    }

    fn require_tls(&self) -> Result<(), Error> {
        let connect = lock(&self.shared.connect);
        if matches!(connect.info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Config,
            format!(
                "TLS settings need a `rediss://` URL, not `{}`",
                self.shared.url
            ),
        ))
    }

    fn change_tls(&self, change: impl FnOnce(&mut Connect)) -> Result<(), Error> {
        self.require_tls()?;
        let mut connect = lock(&self.shared.connect);
        let before = (connect.root_ca.clone(), connect.client_cert.clone());
        change(&mut connect);
        connect.rebuild().map_err(|e| {
            (connect.root_ca, connect.client_cert) = before;
            Error::new(
                ErrorKind::Config,
                format!(
                    "invalid TLS settings for Redis: {}",
                    self.shared.scrub(&e.to_string())
                ),
            )
        })
    }

    /// The prefix of every Redis key and channel name (default `switchboard`): servers with
    /// the same prefix form one cluster.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }

    /// How long one Redis operation (publish, subscribe, query) may take before it counts as
    /// failed (default 2 s): `group_send` never waits longer on Redis.
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

    /// How long a server's entries in the cluster-wide membership outlive its last refresh
    /// (default 30 s; refreshed every third of it): the members of a server that died vanish
    /// from [`cluster_members`](crate::ChannelBox::cluster_members) after at most this long.
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

    /// The groups this server is subscribed to in Redis, sorted.
    pub fn subscribed_groups(&self) -> Vec<String> {
        lock(&self.shared.subscribed).iter().cloned().collect()
    }

    /// The broker's counters.
    pub fn metrics(&self) -> RedisMetrics {
        let c = &self.shared.counters;
        RedisMetrics {
            connected: self.is_connected(),
            subscribed_groups: lock(&self.shared.subscribed).len(),
            published: c.published.load(Ordering::Relaxed),
            publish_failures: c.publish_failures.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            own_skipped: c.own_skipped.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            events_dropped: c.events_dropped.load(Ordering::Relaxed),
            outages: c.outages.load(Ordering::Relaxed),
        }
    }
}

/// A Redis Cluster's node URLs, if `url` names one: `redis+cluster://[AUTH@]HOST:PORT,..`
/// (`rediss+cluster://` for TLS; the credentials of the first apply to every node), or
/// `redis://` URLs separated by commas. `None`: one Redis.
fn cluster_nodes(url: &str) -> Result<Option<Vec<String>>, String> {
    let cluster_scheme = [
        ("redis+cluster://", "redis://"),
        ("rediss+cluster://", "rediss://"),
    ]
    .into_iter()
    .find_map(|(scheme, plain)| Some((url.strip_prefix(scheme)?, plain)));
    if let Some((rest, plain)) = cluster_scheme {
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), rest),
        };
        let nodes: Vec<String> = hosts
            .trim_end_matches('/')
            .split(',')
            .map(|host| format!("{plain}{auth}{}", host.trim()))
            .collect();
        if hosts.split(',').any(|host| host.trim().is_empty()) {
            return Err("an empty node address".to_owned());
        }
        return Ok(Some(nodes));
    }
    if url.contains(',') {
        let nodes: Vec<String> = url.split(',').map(|node| node.trim().to_owned()).collect();
        if nodes
            .iter()
            .any(|node| !(node.starts_with("redis://") || node.starts_with("rediss://")))
        {
            return Err("each node of a list must be a redis:// or rediss:// URL".to_owned());
        }
        return Ok(Some(nodes));
    }
    Ok(None)
}

/// Now, in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A duration in whole milliseconds, at least 1 (for `PEXPIRE`).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Makes ring rustls's crypto provider for this process, unless one is already chosen (rustls
/// cannot pick one itself when the program links two).
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing the race to another thread that installed one is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

impl Shared {
    fn config(&self) -> &Config {
        self.config.get().unwrap_or(&self.initial_config)
    }

    /// Whether this broker talks to a Redis Cluster.
    fn is_cluster(&self) -> bool {
        lock(&self.connect).cluster.is_some()
    }

    /// A group's name in its keys and channel: as it is for one Redis, the group as the hash
    /// tag on a cluster (every key of a group in one slot).
    fn key_group<'a>(&self, group: &'a str) -> std::borrow::Cow<'a, str> {
        if self.is_cluster() {
            std::borrow::Cow::Owned(cluster::tag(group))
        } else {
            std::borrow::Cow::Borrowed(group)
        }
    }

    fn group_channel(&self, group: &str) -> String {
        format!("{}:g:{}", self.config().prefix, self.key_group(group))
    }

    /// The command that publishes to a group's channel: sharded pub/sub on a cluster.
    fn group_publish(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    fn direct_channel(&self) -> String {
        format!("{}:direct", self.config().prefix)
    }

    fn events_channel(&self) -> String {
        format!("{}:events", self.config().prefix)
    }

    /// The client to connect with.
    fn client(&self) -> redis::Client {
        lock(&self.connect).client.clone()
    }

    /// `text` (from the Redis client or server) with the passwords hidden.
    fn scrub(&self, text: &str) -> String {
        lock(&self.secrets).scrub(text)
    }

    fn broker_error(&self, what: &str, detail: impl std::fmt::Display) -> Error {
        let detail = self.scrub(&detail.to_string());
        Error::new(
            ErrorKind::Broker,
            format!("{what} (Redis at {}): {detail}", self.url),
        )
    }

    /// Fails at once while Redis is known to be unreachable.
    fn check_up(&self, what: &str) -> Result<(), Error> {
        if self.state.load(Ordering::Acquire) == DOWN {
            let error = lock(&self.last_error).clone();
            return Err(self.broker_error(what, format!("Redis is unreachable ({error})")));
        }
        Ok(())
    }

    /// The connection for commands (publish, membership), made on first use.
    async fn commands(&self) -> Result<Commands, Error> {
        let config = self.config();
        self.commands
            .get_or_try_init(|| async {
                if self.is_cluster() {
                    let client = self.cluster_client(None)?;
                    let connection =
                        tokio::time::timeout(config.timeout, client.get_async_connection())
                            .await
                            .map_err(|_| {
                                redis::RedisError::from(std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    format!(
                                        "no connection to the cluster within {:?}",
                                        config.timeout
                                    ),
                                ))
                            })??;
                    return Ok(Commands::Cluster(connection));
                }
                let settings = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.timeout))
                    .set_response_timeout(Some(config.timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(config.backoff_min)
                    .set_max_delay(config.backoff_max);
                ConnectionManager::new_lazy_with_config(self.client(), settings)
                    .map(Commands::Single)
            })
            .await
            .cloned()
            .map_err(|e| self.broker_error("cannot create the Redis connection", e))
    }

    /// Waits for a Redis request, at most the broker's timeout.
    async fn timed<T>(
        &self,
        what: &str,
        request: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Error> {
        let timeout = self.config().timeout;
        match tokio::time::timeout(timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.broker_error(what, e)),
            Err(_) => Err(self.broker_error(what, format!("no answer within {timeout:?}"))),
        }
    }

    /// Runs one command (failing at once while Redis is unreachable).
    async fn query<T: redis::FromRedisValue>(
        &self,
        what: &str,
        command: &redis::Cmd,
    ) -> Result<T, Error> {
        self.check_up(what)?;
        let mut connection = self.commands().await?;
        self.timed(what, command.query_async(&mut connection)).await
    }

    /// Runs a pipeline and returns its (not ignored) results. On a cluster it is split by
    /// slot (no command of such a pipeline may be ignored: every answer is returned).
    async fn pipeline_query<T: redis::FromRedisValue>(
        &self,
        what: &str,
        pipe: &redis::Pipeline,
    ) -> Result<T, Error> {
        self.check_up(what)?;
        let mut connection = self.commands().await?;
        let Commands::Cluster(cluster) = &connection else {
            return self.timed(what, pipe.query_async(&mut connection)).await;
        };
        let mut answers: Vec<Option<redis::Value>> = vec![None; pipe.len()];
        for (indices, part) in self.run_split(what, cluster, pipe).await {
            for (at, value) in indices.into_iter().zip(part?) {
                answers[at] = Some(value);
            }
        }
        let answers = redis::Value::Array(
            answers
                .into_iter()
                .map(|a| a.unwrap_or(redis::Value::Nil))
                .collect(),
        );
        redis::FromRedisValue::from_redis_value(answers).map_err(|e| self.broker_error(what, e))
    }

    /// Runs a pipeline whose results are all ignored.
    async fn pipeline(&self, what: &str, pipe: &redis::Pipeline) -> Result<(), Error> {
        self.check_up(what)?;
        let mut connection = self.commands().await?;
        let Commands::Cluster(cluster) = &connection else {
            return self
                .timed(what, pipe.query_async::<()>(&mut connection))
                .await;
        };
        let mut failed = None;
        for (_, part) in self.run_split(what, cluster, pipe).await {
            if let Err(e) = part {
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    fn stream_key(&self, group: &str) -> String {
        format!("{}:s:{}", self.config().prefix, self.key_group(group))
    }

    fn stream_meta_key(&self, group: &str) -> String {
        format!("{}:sm:{}", self.config().prefix, self.key_group(group))
    }

    /// Hands an envelope for `channel` to the publisher task (which publishes in order,
    /// pipelined); fails at once, counted, when Redis is unreachable or the queue is full.
    fn publish(&self, what: &str, channel: String, envelope: Envelope<'_>) -> Result<(), Error> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(envelope.encode());
        self.enqueue(what, cmd)
    }

    /// Publishes to a group's channel (sharded on a cluster).
    fn publish_group(&self, what: &str, group: &str, envelope: Envelope<'_>) -> Result<(), Error> {
        let mut cmd = redis::cmd(self.group_publish());
        cmd.arg(self.group_channel(group)).arg(envelope.encode());
        self.enqueue(what, cmd)
    }

    /// Hands a presence diff of `group` (JSON) to the other servers with members in it.
    fn publish_presence_diff(&self, group: &str, diff: &[u8]) {
        let envelope = Envelope {
            node: self.node,
            kind: Kind::Presence,
            payload: diff,
        };
        // Counted as a publish failure when it cannot go: presence diffs are best effort.
        let _ = self.publish_group(
            "cannot send presence changes to other servers",
            group,
            envelope,
        );
    }

    /// Queues a command for the publisher task (see [`publish`](Self::publish)).
    fn enqueue(&self, what: &str, cmd: redis::Cmd) -> Result<(), Error> {
        let checked = self.check_up(what).and_then(|()| {
            if self.is_cluster() {
                self.check_shard(what, &cmd)
            } else {
                Ok(())
            }
        });
        let queued = checked.and_then(|()| {
            self.publications
                .try_send(Publication::Cmd(cmd))
                .map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => self.broker_error(
                        what,
                        format!("{PUBLISH_QUEUE} messages are already waiting for Redis"),
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
        let members = lock(&self.members_rx).take();
        let publications = lock(&self.publications_rx).take();
        if let (Some(control), Some(members), Some(publications)) = (control, members, publications)
        {
            if self.is_cluster() {
                runtime.spawn(cluster::run(self.clone(), inbox.clone(), control));
            } else {
                runtime.spawn(subscriber::run(self.clone(), inbox.clone(), control));
            }
            runtime.spawn(membership::run(self.clone(), inbox.clone(), members));
            runtime.spawn(publisher::run(self.clone(), inbox.clone(), publications));
        }
    }
}

impl Broker for Redis {
    fn is_clustered(&self) -> bool {
        true
    }

    fn attach(&self, inbox: Inbox) {
        if self.shared.inbox.set(inbox).is_err() {
            tracing::warn!("this Redis broker already serves an app: use one broker per app");
            return;
        }
        let _ = self.shared.config.set(self.config.clone());
        self.shared.start();
    }

    fn start(&self) {
        self.shared.start();
    }

    fn describe(&self) -> String {
        if self.shared.is_cluster() {
            format!("redis cluster {}", self.shared.url)
        } else {
            format!("redis {}", self.shared.url)
        }
    }

    fn keeps_streams(&self) -> bool {
        true
    }

    fn publish_positioned<'a>(
        &'a self,
        group: &'a str,
        message: &'a Outgoing,
        limits: super::StreamLimits,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let shared = &self.shared;
            shared.start();
            let header = super::envelope::positioned_header(shared.node, message.except);
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(APPEND)
                .arg(2)
                .arg(shared.stream_key(group))
                .arg(shared.stream_meta_key(group))
                .arg(header)
                .arg(&message.payload[..])
                .arg(limits.max_entries)
                .arg(millis(limits.max_age))
                .arg(shared.group_channel(group))
                .arg(new_epoch())
                .arg(shared.group_publish());
            shared.enqueue("cannot append to the group's stream", cmd)
        })
    }

    fn read_stream<'a>(
        &'a self,
        group: &'a str,
        after: u64,
        limits: super::StreamLimits,
    ) -> BoxFuture<'a, Result<super::StreamRead, Error>> {
        Box::pin(async move {
            let shared = &self.shared;
            shared.start();
            let what = "cannot read the group's stream";
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(READ)
                .arg(2)
                .arg(shared.stream_key(group))
                .arg(shared.stream_meta_key(group))
                .arg(after.checked_add(1).unwrap_or(0))
                .arg(millis(limits.max_age))
                .arg(new_epoch());
            type Entries = Vec<(String, Vec<Vec<u8>>)>;
            let (epoch, last, entries): (String, u64, Entries) = shared.query(what, &cmd).await?;
            let entries = entries
                .into_iter()
                .filter_map(|(id, fields)| {
                    let offset = id.strip_prefix("0-")?.parse().ok()?;
                    let payload = fields.into_iter().nth(1)?;
                    Some((offset, Bytes::from(payload)))
                })
                .collect();
            Ok(super::StreamRead::new(epoch, last, entries))
        })
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

    fn subscribe<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let shared = &self.shared;
            shared.start();
            let what = "cannot subscribe to the group";
            shared.check_up(what)?;
            let (done, confirmed) = oneshot::channel();
            if shared
                .control
                .send(Control::Subscribe(group.to_owned(), done))
                .is_err()
            {
                return Err(shared.broker_error(what, "the broker has stopped"));
            }
            match tokio::time::timeout(shared.config().timeout, confirmed).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(e))) => Err(shared.broker_error(what, e)),
                Ok(Err(_)) => Err(shared.broker_error(what, "the connection was lost")),
                Err(_) => Err(shared.broker_error(
                    what,
                    format!("not confirmed within {:?}", shared.config().timeout),
                )),
            }
        })
    }

    fn unsubscribe<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        // The subscriber checks, in order with the subscriptions, that the group is still
        // empty here (a new member may have joined since).
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
        Box::pin(async move {
            let shared = &self.shared;
            shared.start();
            let envelope = Envelope {
                node: shared.node,
                kind: Kind::Group {
                    except: message.except,
                },
                payload: &message.payload,
            };
            shared.publish_group("cannot publish to other servers", group, envelope)
        })
    }

    fn send_to<'a>(
        &'a self,
        channel: ConnectionId,
        message: &'a Outgoing,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let shared = &self.shared;
            shared.start();
            let envelope = Envelope {
                node: shared.node,
                kind: Kind::Direct { channel },
                payload: &message.payload,
            };
            shared.publish(
                "cannot send to other servers",
                shared.direct_channel(),
                envelope,
            )
        })
    }

    fn publish_event<'a>(
        &'a self,
        name: &'a str,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let shared = &self.shared;
            shared.start();
            if name.len() > usize::from(u16::MAX) {
                return Err(Error::new(
                    ErrorKind::InvalidName,
                    "an event name sent to the cluster must be at most 65535 bytes",
                ));
            }
            let envelope = Envelope {
                node: shared.node,
                kind: Kind::Event { name },
                payload,
            };
            shared.publish(
                "cannot send the event to other servers",
                shared.events_channel(),
                envelope,
            )
        })
    }

    fn member_joined(&self, group: &str, channel: ConnectionId) {
        let _ = self.shared.members.send(Membership::Op(MemberOp {
            group: group.to_owned(),
            channel,
            joined: true,
            presence: None,
        }));
    }

    fn member_left(&self, group: &str, channel: ConnectionId) {
        let _ = self.shared.members.send(Membership::Op(MemberOp {
            group: group.to_owned(),
            channel,
            joined: false,
            presence: None,
        }));
    }

    fn presence_joined(&self, group: &str, member: &Member) {
        let Ok(json) = serde_json::to_string(member) else {
            return;
        };
        let _ = self.shared.members.send(Membership::Op(MemberOp {
            group: group.to_owned(),
            channel: member.channel,
            joined: true,
            presence: Some(Presence::Joined {
                json,
                user_key: member.user_key(),
            }),
        }));
    }

    fn presence_left(&self, group: &str, member: &Member) {
        let _ = self.shared.members.send(Membership::Op(MemberOp {
            group: group.to_owned(),
            channel: member.channel,
            joined: false,
            presence: Some(Presence::Left {
                user_key: member.user_key(),
            }),
        }));
    }

    fn cluster_presence<'a>(
        &'a self,
        group: &'a str,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, ClusterAnswer<PresencePage>> {
        Box::pin(async move {
            let inbox = self.shared.inbox.get()?;
            Some(self.shared.presence_page(inbox, group, cursor, limit).await)
        })
    }

    fn cluster_presence_stats<'a>(
        &'a self,
        group: &'a str,
    ) -> BoxFuture<'a, ClusterAnswer<PresenceStats>> {
        Box::pin(async move {
            let inbox = self.shared.inbox.get()?;
            Some(self.shared.presence_stats(inbox, group).await)
        })
    }

    fn publish_presence(&self, group: &str, diff: &[u8]) {
        self.shared.publish_presence_diff(group, diff);
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let (written, done) = oneshot::channel();
            if self.shared.members.send(Membership::Flush(written)).is_ok() {
                let _ = done.await;
            }
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
        Box::pin(async move { Some(membership::groups(&self.shared).await) })
    }

    fn cluster_members<'a>(
        &'a self,
        group: &'a str,
    ) -> BoxFuture<'a, ClusterAnswer<Vec<ConnectionId>>> {
        Box::pin(async move { Some(membership::members(&self.shared, group).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_debug_and_errors() {
        let broker = Redis::new("redis://app:hunter22@127.0.0.1:1/0")
            .unwrap()
            .password("another-secret");
        let printed = format!("{broker:?} {:#?}", broker);
        assert!(
            printed.contains("redis://app:***@127.0.0.1:1/0"),
            "{printed}"
        );
        assert!(!printed.contains("hunter22") && !printed.contains("another-secret"));
        let error = broker
            .shared
            .broker_error("cannot connect", "server said: bad password another-secret");
        assert!(!error.to_string().contains("another-secret"), "{error}");

        let unix = Redis::new("redis+unix:///tmp/none.sock?pass=hunter22").unwrap();
        assert!(!format!("{unix:?}").contains("hunter22"));
        let bad = Redis::new("redis://:hunter22@[::1").unwrap_err();
        assert!(!bad.to_string().contains("hunter22"), "{bad}");
    }

    #[test]
    fn tls_settings_are_checked_when_given() {
        let no_tls = Redis::new("redis://127.0.0.1:1").unwrap();
        let e = no_tls.tls_root_ca("-").unwrap_err();
        assert!(e.to_string().contains("need a `rediss://` URL"), "{e}");

        // (A valid CA is accepted in the cluster tests, which make one.)
        let tls = Redis::new("rediss://127.0.0.1:1").unwrap();
        let e = tls.clone().tls_root_ca("not a certificate").unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        let e = tls.tls_client_cert("no chain", "no key").unwrap_err();
        assert!(e.to_string().contains("invalid TLS settings"), "{e}");

        let e = Redis::new("rediss://127.0.0.1:1/#insecure").unwrap_err();
        assert!(e.to_string().contains("`#insecure`"), "{e}");
    }

    #[test]
    fn a_bad_url_is_an_error() {
        let e = Redis::new("http://nope").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("invalid Redis URL"), "{e}");
    }
}
