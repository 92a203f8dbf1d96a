use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::routing::MethodRouter;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{App, AppInner, Summary, router};
use crate::broker::{self, Broker, Local};
use crate::channel::groups::{Groups, GroupsConfig};
use crate::channel::presence::PresenceConfig;
use crate::channel::{HistoryLimits, Patterns, SlowConsumer};
use crate::conn::{ConnConfig, Connections, Limits};
use crate::event::bus::{Bus, BusConfig, Spec};
use crate::event::{Callable, Incoming};
use crate::registry::{self, HttpRoute, ListenerRegistration, Routes};
use crate::ws::{InboundLimit, Origins, WsSettings};
use crate::{Error, ErrorKind};

/// The smallest `max_request_head`: a browser's WebSocket upgrade request alone takes several
/// hundred bytes.
const MIN_REQUEST_HEAD: usize = 1024;

/// Settings of an [`App`], the registrations it keeps, and the HTTP routes that join it.
///
/// Every setting has a default chosen to protect a server; each method says its own.
///
/// ```
/// use std::time::Duration;
/// use switchboard::App;
///
/// # fn main() -> Result<(), switchboard::Error> {
/// let app = App::builder()
///     .only_module(module_path!())
///     .max_message_size(16 * 1024)
///     .ping_interval(Duration::from_secs(10))
///     .allowed_origins(["https://chat.example.com"])
///     .max_listeners(10)
///     .build()?;
/// # let _ = app; Ok(()) }
/// ```
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct Builder {
    module: Option<String>,
    states: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    bus: BusConfig,
    max_message_size: usize,
    read_buffer_size: usize,
    write_buffer_size: usize,
    conn: ConnConfig,
    origins: Origins,
    limits: Limits,
    shutdown_timeout: Duration,
    drain_delay: Duration,
    admin: Option<(crate::ops::AdminAuth, String)>,
    admin_twice: bool,
    /// The first bad group pattern given (recoverable or presence groups).
    pattern_problem: Option<String>,
    export_metrics: Option<Duration>,
    handshake_timeout: Duration,
    request_head_timeout: Duration,
    max_request_head: usize,
    trusted_proxies: Vec<IpAddr>,
    inbound_limit: Option<InboundLimit>,
    route_limits: HashMap<String, InboundLimit>,
    http: Vec<HttpRoute>,
    fallback: Option<Router<App>>,
    broker: Option<Arc<dyn Broker>>,
    broker_from_env: bool,
    groups: GroupsConfig,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("module", &self.module)
            .field("bus", &self.bus)
            .field("max_message_size", &self.max_message_size)
            .field("max_request_head", &self.max_request_head)
            .field("conn", &self.conn)
            .field("origins", &self.origins)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The largest presence page (`Builder::presence_page_size`).
const MAX_PRESENCE_PAGE: usize = 5000;

impl Builder {
    pub(super) fn new() -> Self {
        Self {
            module: None,
            states: HashMap::new(),
            bus: BusConfig {
                max_listeners: 100,
                listener_timeout: None,
                max_background_emits: 1024,
                durations: false,
            },
            max_message_size: 64 * 1024,
            read_buffer_size: 512,
            write_buffer_size: 128 * 1024,
            conn: ConnConfig::new(),
            origins: Origins::Same,
            limits: Limits {
                max: 50_000,
                per_address: None,
                rate: None,
            },
            shutdown_timeout: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
            admin: None,
            admin_twice: false,
            pattern_problem: None,
            export_metrics: None,
            handshake_timeout: Duration::from_secs(10),
            request_head_timeout: Duration::from_secs(10),
            max_request_head: 16 * 1024,
            trusted_proxies: Vec::new(),
            inbound_limit: None,
            route_limits: HashMap::new(),
            http: Vec::new(),
            fallback: None,
            broker: None,
            broker_from_env: false,
            groups: GroupsConfig {
                slow_consumer: SlowConsumer::Close,
                max_per_connection: 128,
                history: HistoryLimits {
                    max_entries: 100,
                    max_bytes: 1024 * 1024,
                    max_age: Duration::from_secs(120),
                },
                sweep_interval: Duration::from_secs(1),
                recoverable: Patterns::default(),
                presence: PresenceConfig::default(),
            },
        }
    }

    /// Keeps only the routes and listeners registered in `module_path` or its submodules
    /// (default: all of them). Tests use it to hold many isolated apps in one binary:
    /// `App::builder().only_module(module_path!())`.
    pub fn only_module(mut self, module_path: impl Into<String>) -> Self {
        self.module = Some(module_path.into());
        self
    }

    /// Gives the app a value of type `T`, reachable through the [`State<T>`](crate::State)
    /// parameter of listeners, WebSocket handlers and HTTP handlers (cloned for each use: wrap
    /// large things in an `Arc`). One value per type; a second call for a type replaces the
    /// first.
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.states.insert(TypeId::of::<T>(), Box::new(value));
        self
    }

    /// The most listeners one event name (or pattern) may have (default 100). Registering one
    /// more is an error. Listeners tied to a connection do not count.
    pub fn max_listeners(mut self, max: usize) -> Self {
        self.bus.max_listeners = max;
        self
    }

    /// How long one `async` listener may run before it is abandoned and counted as failed
    /// (default: no limit). Needs a Tokio runtime with timers enabled.
    pub fn listener_timeout(mut self, limit: Duration) -> Self {
        self.bus.listener_timeout = Some(limit);
        self
    }

    /// How many [`spawn_emit`](crate::Events::spawn_emit)s may run at once (default 1024); past
    /// that, `spawn_emit` returns an error at once instead of queueing without bound.
    pub fn max_background_emits(mut self, max: usize) -> Self {
        self.bus.max_background_emits = max;
        self
    }

    /// The largest message (and frame) a client may send, in bytes (default 64 KiB). A larger
    /// one closes the connection with 1009.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// The read buffer each connection keeps, in bytes (default 512; tungstenite's own default,
    /// 128 KiB, is allocated in full by the first read of every connection): the most the
    /// WebSocket codec takes at a time. Below 16 KiB, the connection itself is still read up
    /// to 16 KiB at a time, into a buffer of the worker thread, and only what the codec has
    /// not taken yet is kept per connection: a larger buffer saves copies on large messages,
    /// not system calls.
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buffer_size = bytes;
        self
    }

    /// How many bytes of outgoing frames are gathered before a write (default 128 KiB, as
    /// tungstenite and axum): the writer feeds everything queued and flushes once, so bursts go
    /// out in few system calls. The buffer only grows when a connection has that much to send.
    pub fn write_buffer_size(mut self, bytes: usize) -> Self {
        self.write_buffer_size = bytes;
        self
    }

    /// The bound of each connection's outbound queue, in bytes (default 4 MiB: a burst of a
    /// few thousand small messages fits). A group send to a connection whose queue is full
    /// closes it (a slow consumer); the connection's own sends wait for room.
    pub fn outbound_queue_bytes(mut self, bytes: usize) -> Self {
        self.conn.max_queue_bytes = bytes;
        self
    }

    /// How often the server pings each connection (default 25 s). Pings and pong deadlines
    /// fall on a grid shared by all connections, so that those due together wake the server
    /// once: each comes up to 100 ms late (a ping at most a sixteenth of the interval, a pong
    /// deadline at most a sixteenth of the pong timeout, when that is less).
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.conn.ping_interval = Some(interval);
        self
    }

    /// How long a pong may take (default 20 s): a connection whose handler is waiting for a
    /// message and that answers nothing in that time is closed with 1011. A busy handler (one
    /// not reading) never gets its connection closed this way.
    pub fn pong_timeout(mut self, timeout: Duration) -> Self {
        self.conn.pong_timeout = timeout;
        self
    }

    /// Turns server pings off (they are on by default).
    pub fn disable_pings(mut self) -> Self {
        self.conn.ping_interval = None;
        self
    }

    /// How long a closing connection waits for the client's close frame before it is dropped
    /// (default 5 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.conn.close_timeout = timeout;
        self
    }

    /// Lets browsers on these origins connect, besides none other (the default is the same
    /// origin: a page of this server). Entries are origins such as `https://chat.example.com`;
    /// `https://*.example.com` allows every subdomain of `example.com`. A handshake whose
    /// `Origin` is not allowed is refused with 403 (and a log line saying why); a request
    /// without the header (a server, a CLI, a mobile app) is not affected.
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.origins = Origins::Listed(origins.into_iter().map(Into::into).collect());
        self
    }

    /// Lets pages of any origin connect. Only for apps that authenticate every connection
    /// without cookies (a token in the first message, say): a browser sends its cookies with
    /// a handshake from any site, which could then act as its user.
    pub fn allow_any_origin(mut self) -> Self {
        self.origins = Origins::Any;
        self
    }

    /// The most WebSocket connections open at once (default 50,000); handshakes past it are
    /// refused with 503.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.limits.max = max;
        self
    }

    /// The most WebSocket connections open at once from one client address (default: no
    /// limit); handshakes past it are refused with 429, before the handler runs. Behind a
    /// proxy, say which with [`trusted_proxies`](Self::trusted_proxies), or every client
    /// shares the proxy's address.
    pub fn max_connections_per_address(mut self, max: usize) -> Self {
        self.limits.per_address = Some(max);
        self
    }

    /// At most `rate` new WebSocket connections per second, with bursts of up to `burst`
    /// (default: no limit): a reconnect storm is spread out; handshakes past it are refused
    /// with 503 and `Retry-After: 1`, before the handler runs.
    pub fn max_new_connections_per_second(mut self, rate: u32, burst: u32) -> Self {
        self.limits.rate = Some((f64::from(rate), f64::from(burst.max(1))));
        self
    }

    /// The proxies in front of the app (default: none). A request from one of them is taken
    /// to come from the last address in its `X-Forwarded-For` header that is not itself one
    /// of them; from anywhere else, the header is ignored (a client could write anything in
    /// it).
    pub fn trusted_proxies<I: IntoIterator<Item = IpAddr>>(mut self, proxies: I) -> Self {
        self.trusted_proxies = proxies.into_iter().collect();
        self
    }

    /// How fast each client may send (default: no limit): see [`InboundLimit`]. A route of
    /// its own limit ([`route_inbound_limit`](Self::route_inbound_limit)) ignores this one.
    pub fn inbound_limit(mut self, limit: InboundLimit) -> Self {
        self.inbound_limit = Some(limit);
        self
    }

    /// How fast each client of the WebSocket route `template` (as written in its
    /// `#[ws_route]`, such as `"/chat/{room}"`) may send. A template no route has is an error
    /// when the app is built.
    pub fn route_inbound_limit(mut self, template: &str, limit: InboundLimit) -> Self {
        self.route_limits.insert(template.to_owned(), limit);
        self
    }

    /// How long a handler may take to accept or refuse a connection (default 10 s): past it,
    /// the client gets 503 and the handler is dropped.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long a client may take to send its request head once connected (default 10 s):
    /// past it, the TCP connection is closed (with [`App::serve`](crate::App::serve) and
    /// [`App::bind`](crate::App::bind); a server of your own sets its own).
    pub fn request_head_timeout(mut self, timeout: Duration) -> Self {
        self.request_head_timeout = timeout;
        self
    }

    /// The most groups one connection may be in at once (default 128, as Centrifugo's
    /// channel limit): past it, [`ChannelBox::add_channel_to_group`](crate::ChannelBox::add_channel_to_group)
    /// returns an error (kind [`Overloaded`](crate::ErrorKind::Overloaded)). Group names are
    /// at most 255 bytes.
    pub fn max_groups_per_connection(mut self, max: usize) -> Self {
        self.groups.max_per_connection = max;
        self
    }

    /// The largest request head a client may send, request line and headers together, in bytes
    /// (default 16 KiB, as Node.js): a larger one gets 431 before any handler runs. A
    /// WebSocket connection keeps its request's headers for its handler (see
    /// [`WebSocket::headers`](crate::ws::WebSocket::headers)) as long as it is open, so this
    /// also bounds what each connection holds. Enforced by [`App::serve`](crate::App::serve)
    /// and [`App::bind`](crate::App::bind) as the head is read, and by the WebSocket routes
    /// under a server of your own.
    pub fn max_request_head(mut self, bytes: usize) -> Self {
        self.max_request_head = bytes;
        self
    }

    /// How long a graceful shutdown waits for connections to close after sending them 1001
    /// (default 10 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Adds an HTTP route. Handlers can take [`App`], [`Events`](crate::Events),
    /// [`ChannelBox`](crate::ChannelBox), [`State<T>`](crate::State) and any axum extractor.
    ///
    /// A route may share the exact path of a WebSocket route (`POST /notifications` beside the
    /// `/notifications` WebSocket): there, GET is the WebSocket handshake and every other method
    /// goes to this route. Any other overlap (the same path twice, or patterns the router cannot
    /// tell apart) is an error when the app is built, not a panic.
    ///
    /// ```
    /// use axum::routing::post;
    /// use switchboard::prelude::*;
    ///
    /// async fn notify(app: App, axum::Json(body): axum::Json<Value>) {
    ///     app.events().emit("notification.created", body).await;
    /// }
    ///
    /// # fn main() -> Result<(), switchboard::Error> {
    /// let app = App::builder()
    ///     .only_module(module_path!())
    ///     .route("/notifications", post(notify))
    ///     .build()?;
    /// # let _ = app; Ok(()) }
    /// ```
    pub fn route(mut self, path: &str, method_router: MethodRouter<App>) -> Self {
        self.http.push(HttpRoute {
            path: path.to_owned(),
            method_router,
        });
        self
    }

    /// Serves `GET path` with 200 `ok` for as long as the process runs: a liveness check
    /// (`/healthz` by convention). Off by default.
    pub fn health_route(self, path: &str) -> Self {
        self.route(path, axum::routing::get(crate::ops::health))
    }

    /// Serves `GET path` with 200 and `{"ready": true, "connections": n}` while the app takes
    /// connections, and 503 with `{"ready": false, "reason": ..}` when it does not: before it
    /// is served, while it shuts down (see [`drain_delay`](Builder::drain_delay)), and while
    /// its broker cannot reach the other servers. A readiness check for load balancers
    /// (`/readyz` by convention). Off by default.
    pub fn ready_route(self, path: &str) -> Self {
        self.route(path, axum::routing::get(crate::ops::ready))
    }

    /// Serves `GET path` with the app's metrics in the Prometheus text format (`/metrics` by
    /// convention; no dependency, so no cargo feature): connections (open, opened by route, closed by
    /// code, refused by limit), messages and bytes in and out, groups, members, group sends,
    /// deliveries, drops by reason, slow consumers, emits and listener failures by event name
    /// (names the app registered; the rest as `(other)`), emit durations (a histogram), and
    /// the broker's state, failures and queue. Read when scraped: the message path pays no
    /// counter of its own for it. Off by default.
    pub fn metrics_route(mut self, path: &str) -> Self {
        self.bus.durations = true;
        self.route(path, crate::ops::prometheus_route())
    }

    /// Serves a live admin page at `GET path` (and its WebSocket at `path/ws`), for requests
    /// that carry `token` (`?token=..` in the URL, or `Authorization: Bearer ..`); others get
    /// 401. The page shows connections, messages per second in and out (a small live chart),
    /// groups with member counts (the largest, searchable), drops and slow-consumer closes,
    /// the broker's state, and listeners per event, updated every second. One page, no build
    /// step. Off by default.
    ///
    /// Serve it only behind TLS: the token travels with each request. One admin route per app.
    pub fn admin_route(self, path: &str, token: &str) -> Self {
        self.admin(path, crate::ops::AdminAuth::Token(token.into()))
    }

    /// [`admin_route`](Builder::admin_route) guarded by an extractor of your own instead of a
    /// token (a session cookie, a header your proxy sets): the page and its WebSocket are
    /// served when `E` accepts the request, 401 when it rejects it.
    ///
    /// ```
    /// use switchboard::App;
    /// use switchboard::axum::extract::FromRequestParts;
    /// use switchboard::axum::http::{StatusCode, request::Parts};
    ///
    /// /// Requests from the operators' proxy, which sets this header.
    /// struct Operator;
    ///
    /// impl FromRequestParts<App> for Operator {
    ///     type Rejection = StatusCode;
    ///     async fn from_request_parts(parts: &mut Parts, _: &App) -> Result<Self, StatusCode> {
    ///         match parts.headers.get("x-operator") {
    ///             Some(_) => Ok(Operator),
    ///             None => Err(StatusCode::UNAUTHORIZED),
    ///         }
    ///     }
    /// }
    ///
    /// let app = App::builder().admin_route_with::<Operator>("/admin").build();
    /// ```
    pub fn admin_route_with<E>(self, path: &str) -> Self
    where
        E: axum::extract::FromRequestParts<App> + Send + 'static,
    {
        self.admin(path, crate::ops::AdminAuth::extractor::<E>())
    }

    fn admin(mut self, path: &str, auth: crate::ops::AdminAuth) -> Self {
        self.admin_twice |= self.admin.is_some();
        let socket = format!("{}/ws", path.trim_end_matches('/'));
        self.admin = Some((auth, socket.clone()));
        self.route(path, crate::ops::admin_page())
            .route(&socket, crate::ops::admin_socket(&socket))
    }

    /// Hands the app's metrics to the `metrics` facade's global recorder every `every` while
    /// the app is served (cargo feature `metrics`; see [`App::record_metrics`]): for an
    /// exporter of your choice, installed before the app starts.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn export_metrics(mut self, every: Duration) -> Self {
        self.export_metrics = Some(every.max(Duration::from_millis(10)));
        self
    }

    /// At shutdown, how long [`App::serve`] goes on accepting (HTTP requests; new WebSocket
    /// handshakes get 503) with the readiness route answering 503, before it stops accepting
    /// and closes the connections: the time a load balancer needs to see the server is
    /// leaving (default 0: stop at once).
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// What a group send does to a member whose outbound queue is full (default
    /// [`SlowConsumer::Close`]: close it with 1008).
    pub fn slow_consumer(mut self, policy: SlowConsumer) -> Self {
        self.groups.slow_consumer = policy;
        self
    }

    /// The bounds of each group's history (default 100 entries and 1 MiB).
    pub fn history_limits(mut self, max_entries: usize, max_bytes: usize) -> Self {
        self.groups.history.max_entries = max_entries;
        self.groups.history.max_bytes = max_bytes;
        self
    }

    /// Makes the groups named `pattern` (a name, or a prefix ending in `*`: `"chat_*"`)
    /// recoverable: every message sent to them is saved in the group's history (bounded as
    /// [`history_limits`](Builder::history_limits) and
    /// [`history_max_age`](Builder::history_max_age) say) with a position, reaches members in
    /// an envelope `{"group":..,"epoch":..,"offset":..,"data":..}`, and a client that rejoins with its
    /// last position gets what it missed
    /// ([`ChannelBox::add_channel_to_group_from`](crate::ChannelBox::add_channel_to_group_from)).
    /// Call it once per pattern. Other groups keep bare payloads and pay nothing for this.
    ///
    /// With a broker that keeps streams (the Redis broker), positions are the cluster's: one
    /// stream per group in Redis assigns each message its offset once, every server delivers
    /// in the stream's order (the sender's members too, after the round trip to Redis), and a
    /// client recovers on any server. With a broker that keeps none, positions are each
    /// server's own.
    pub fn recoverable_groups(mut self, pattern: &str) -> Self {
        if let Err(problem) = self.groups.recoverable.add(pattern) {
            self.pattern_problem
                .get_or_insert(format!("recoverable_groups: {problem}"));
        }
        self
    }

    /// Makes the groups named `pattern` (a name, or a prefix ending in `*`) keep presence: a
    /// roster of their members ([`ChannelBox::presence`](crate::ChannelBox::presence), one
    /// page at a time, and [`presence_stats`](crate::ChannelBox::presence_stats), at
    /// constant cost), each with what it told the others when it joined
    /// ([`ChannelBox::add_channel_to_group_as`](crate::ChannelBox::add_channel_to_group_as)),
    /// and joins and leaves emitted as [`names::PRESENCE_JOIN`](crate::event::names::PRESENCE_JOIN)
    /// and [`names::PRESENCE_LEAVE`](crate::event::names::PRESENCE_LEAVE). Call it once per
    /// pattern. Other groups pay nothing for it.
    ///
    /// With the Redis broker the roster spans the cluster: each server writes its members to
    /// Redis and rewrites them every third of `Redis::membership_ttl`, so the members of a
    /// server that stops without a goodbye leave the roster (and their leaves are emitted and
    /// pushed) within that TTL and a third, plus a window, in the groups that have members
    /// on a live server (at the next query in the others); the changes of every server reach
    /// every server that has members in the group.
    pub fn presence_groups(mut self, pattern: &str) -> Self {
        if let Err(problem) = self.groups.presence.tracked.add(pattern) {
            self.pattern_problem
                .get_or_insert(format!("presence_groups: {problem}"));
        }
        self
    }

    /// Makes the members of the presence groups named `pattern` get, at the end of each
    /// presence window with changes, one message with the window's joins and leaves:
    /// `{"presence":{"group":..,"joins":[MEMBER..],"leaves":[MEMBER..]}}`, or, past
    /// [`presence_max_diff`](Builder::presence_max_diff) changes,
    /// `{"presence":{"group":..,"reset":true,"connections":N,"users":M}}` (see the
    /// [`presence` module](crate::channel::presence)). The groups must also be named in
    /// [`presence_groups`](Builder::presence_groups).
    pub fn presence_diffs(mut self, pattern: &str) -> Self {
        if let Err(problem) = self.groups.presence.pushed.add(pattern) {
            self.pattern_problem
                .get_or_insert(format!("presence_diffs: {problem}"));
        }
        self
    }

    /// How long joins and leaves are collected before they go out as events and one diff
    /// per group (default 200 ms): a reconnect storm of thousands of clients is a few
    /// messages to each member, not thousands.
    pub fn presence_window(mut self, window: Duration) -> Self {
        self.groups.presence.window = window;
        self
    }

    /// The most joins and leaves one diff message carries (default 100); a window with more
    /// sends the counts instead, and clients that show the roster fetch it again.
    pub fn presence_max_diff(mut self, changes: usize) -> Self {
        self.groups.presence.max_diff = changes;
        self
    }

    /// The most members one page of [`ChannelBox::presence`](crate::ChannelBox::presence)
    /// lists (default 1000, at most 5000).
    pub fn presence_page_size(mut self, members: usize) -> Self {
        self.groups.presence.page = members;
        self
    }

    /// The most bytes of member info (user id and JSON value) a presence member may carry
    /// (default 1024).
    pub fn max_member_info(mut self, bytes: usize) -> Self {
        self.groups.presence.max_info = bytes;
        self
    }

    /// How long a saved message stays in its group's history (default 2 minutes, Socket.IO's
    /// recovery window). A group whose entries all aged out is forgotten, so the histories of
    /// groups that are gone do not accumulate.
    pub fn history_max_age(mut self, age: Duration) -> Self {
        self.groups.history.max_age = age;
        self
    }

    /// How often expired channels are looked for (default 1 s).
    pub fn expiry_sweep_interval(mut self, interval: Duration) -> Self {
        self.groups.sweep_interval = interval;
        self
    }

    /// Where groups live (default [`Local`]: this process only).
    pub fn broker(mut self, broker: impl Broker) -> Self {
        self.broker = Some(Arc::new(broker));
        self
    }

    /// Takes the broker from the environment when [`build`](Self::build) runs: the broker
    /// `SWITCHBOARD_BROKER_URL` names when that variable is set and not empty (its scheme picks
    /// it: `redis://`, `rediss://` or `redis+unix://` for Redis, `redis+cluster://` (or
    /// `redis://` URLs separated by commas) for a Redis Cluster, `nats://` or `tls://`, or a
    /// list of NATS servers separated by commas, for NATS), or the Redis at
    /// `SWITCHBOARD_REDIS_URL` (both set is an error); else what [`broker`](Self::broker)
    /// chose, else [`Local`]. A URL for a broker whose feature (`redis`, `nats`) this build
    /// left out is an error. The environment is read only when asked for, so a test's app is
    /// never redirected by a variable it did not expect.
    pub fn broker_from_env(mut self) -> Self {
        self.broker_from_env = true;
        self
    }

    /// Serves `router` for every request no route of the app matches (its own routes and
    /// fallback included). Prefer [`route`](Self::route), which is checked for conflicts.
    pub fn fallback_router(mut self, router: Router<App>) -> Self {
        self.fallback = Some(match self.fallback.take() {
            Some(existing) => existing.merge(router),
            None => router,
        });
        self
    }

    /// Collects the registrations, checks them, and assembles the app.
    ///
    /// Errors name every conflicting registration with its source location.
    pub fn build(self) -> Result<App, Error> {
        self.check()?;
        let listeners = registry::listeners(self.module.as_deref())?;
        let routes = registry::routes(self.module.as_deref(), self.http)?;
        let bus = bus(self.bus, &listeners)?;
        let tungstenite = WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size)
            .write_buffer_size(self.write_buffer_size)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size));
        let conns = Arc::new(self.conn);
        let from_env = match self.broker_from_env {
            true => broker::from_env()?,
            false => None,
        };
        let broker = from_env.or(self.broker).unwrap_or_else(|| Arc::new(Local));
        let route_limits = check_route_limits(self.route_limits, &routes)?;
        let connections = Connections::new(self.limits);
        let groups = Groups::new(
            broker.clone(),
            self.groups,
            conns.clone(),
            connections.clone(),
        );
        let summary = Summary {
            ws_routes: routes.ws.len(),
            http_routes: routes.http.len() + routes.shared.len(),
            listeners: listeners.len(),
        };
        let inner = Arc::new_cyclic(|me| AppInner {
            summary,
            export_metrics: self.export_metrics,
            admin: self
                .admin
                .map(|(auth, socket)| crate::ops::Admin::new(auth, socket)),
            me: me.clone(),
            bus: Arc::new(bus),
            groups: Arc::new(groups),
            broker,
            connections,
            cluster_events: Incoming::default(),
            states: self.states,
            tasks: TaskTracker::new(),
            ws: WsSettings {
                tungstenite,
                conn: conns,
                origins: self.origins,
                shutdown_timeout: self.shutdown_timeout,
                drain_delay: self.drain_delay,
                handshake_timeout: self.handshake_timeout,
                request_head_timeout: self.request_head_timeout,
                max_request_head: self.max_request_head,
                trusted_proxies: self.trusted_proxies,
                inbound_limit: self.inbound_limit,
                route_limits,
            },
            router: router::assemble(routes),
            fallback: self.fallback,
            shutdown: CancellationToken::new(),
            started: OnceLock::new(),
            closed: CancellationToken::new(),
        });
        let weak = Arc::downgrade(&inner);
        let weak: std::sync::Weak<dyn crate::broker::Deliver> = weak;
        inner
            .broker
            .attach(broker::Inbox::new(weak, inner.closed.clone()));
        Ok(App { inner })
    }

    fn check(&self) -> Result<(), Error> {
        if let Some(problem) = &self.pattern_problem {
            return Err(Error::new(ErrorKind::Config, problem.clone()));
        }
        let presence = &self.groups.presence;
        if !presence.pushed.is_empty() && presence.tracked.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                "presence_diffs names groups, but presence_groups names none: diffs are of presence groups",
            ));
        }
        let problem = if self.admin_twice {
            "admin_route is given twice: an app has one admin page"
        } else if self.bus.max_background_emits == 0 {
            "max_background_emits must be at least 1"
        } else if self.max_message_size == 0 {
            "max_message_size must be at least 1"
        } else if self.read_buffer_size == 0 {
            "read_buffer_size must be at least 1"
        } else if self.conn.max_queue_bytes == 0 {
            "outbound_queue_bytes must be at least 1"
        } else if self.groups.presence.window.is_zero() {
            "presence_window must be more than zero"
        } else if self.groups.presence.page == 0 || self.groups.presence.page > MAX_PRESENCE_PAGE {
            "presence_page_size must be between 1 and 5000"
        } else if self.groups.sweep_interval.is_zero() {
            "expiry_sweep_interval must be more than zero"
        } else if self.groups.history.max_entries == 0 {
            "history_limits needs room for at least one entry"
        } else if self.groups.history.max_age.is_zero() {
            "history_max_age must be more than zero"
        } else if self.conn.ping_interval == Some(Duration::ZERO) {
            "ping_interval must be more than zero (use disable_pings to turn pings off)"
        } else if self.limits.per_address == Some(0) {
            "max_connections_per_address must be at least 1"
        } else if self.limits.rate.is_some_and(|(rate, _)| rate <= 0.0) {
            "max_new_connections_per_second must be at least 1"
        } else if self.handshake_timeout.is_zero() {
            "handshake_timeout must be more than zero"
        } else if self.request_head_timeout.is_zero() {
            "request_head_timeout must be more than zero"
        } else if self.groups.max_per_connection == 0 {
            "max_groups_per_connection must be at least 1"
        } else if self.max_request_head < MIN_REQUEST_HEAD {
            "max_request_head must be at least 1024 bytes"
        } else if let Some(problem) = self
            .inbound_limit
            .iter()
            .chain(self.route_limits.values())
            .find_map(InboundLimit::problem)
        {
            problem
        } else {
            return Ok(());
        };
        Err(Error::new(ErrorKind::Config, problem))
    }
}

/// The event bus with the listeners the macros registered.
fn bus(config: BusConfig, listeners: &[&'static ListenerRegistration]) -> Result<Bus, Error> {
    let bus = Bus::new(config, listeners.len() as u64);
    for (seq, r) in listeners.iter().enumerate() {
        bus.add(Spec {
            pattern: r.full_name(),
            priority: r.priority,
            once: r.once,
            scoped: false,
            call: Callable::Static(r.call),
            label: Cow::Owned(r.label()),
            seq: Some(seq as u64),
        })
        .map_err(|e| {
            Error::new(
                ErrorKind::Registration,
                format!("listener {}: {e}", r.label()),
            )
        })?;
    }
    Ok(bus)
}

/// The route limits, each for a WebSocket route the app has.
fn check_route_limits(
    limits: HashMap<String, InboundLimit>,
    routes: &Routes,
) -> Result<HashMap<String, InboundLimit>, Error> {
    let unknown: Vec<&str> = limits
        .keys()
        .filter(|template| !routes.ws.iter().any(|r| r.route.path == template.as_str()))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        return Ok(limits);
    }
    let known: Vec<&str> = routes.ws.iter().map(|r| r.route.path).collect();
    Err(Error::new(
        ErrorKind::Config,
        format!(
            "route_inbound_limit for {}: no such WebSocket route (the routes are {})",
            unknown.join(", "),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ),
    ))
}
