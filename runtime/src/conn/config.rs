use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::lock;
use crate::log::LogLimit;

/// What every connection of an app shares: its settings, the counter that orders everything
/// the connections are sent, and the clock their activity is measured on.
#[derive(Debug)]
pub(crate) struct ConnConfig {
    pub(crate) max_queue_bytes: usize,
    /// `None`: no server pings.
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) pong_timeout: Duration,
    pub(crate) close_timeout: Duration,
    /// Sequence numbers of outgoing frames (rings of one app share it).
    pub(crate) sequence: AtomicU64,
    /// Activity times are milliseconds since this instant.
    pub(crate) epoch: Instant,
    /// Open connections whose channel has an expiry: the sweeper looks only while some do.
    pub(crate) expiring: AtomicUsize,
    /// Rings alive (for the churn tests: nothing may outlive its connection or group).
    pub(crate) rings: AtomicUsize,
    /// What the protections of connections did.
    pub(crate) counters: ConnCounters,
    /// Bounds on the log lines clients can cause.
    pub(crate) logs: ConnLogs,
}

/// Log lines that clients could cause by the thousand, each bounded.
#[derive(Debug, Default)]
pub(crate) struct ConnLogs {
    pub(crate) handler_failures: LogLimit,
    pub(crate) rate_limits: LogLimit,
    pub(crate) slow_consumers: LogLimit,
    /// Handshakes refused by a limit or the origin check.
    pub(crate) refusals: LogLimit,
    /// Group sends the broker refused.
    pub(crate) publish_failures: LogLimit,
}

/// What the protections of an app's connections did (see `App::connection_metrics`).
#[derive(Debug, Default)]
pub(crate) struct ConnCounters {
    /// Handshakes refused: the connection cap.
    pub(crate) refused_full: AtomicU64,
    /// Handshakes refused: too many connections from one address.
    pub(crate) refused_per_address: AtomicU64,
    /// Handshakes refused: too many new connections per second.
    pub(crate) refused_rate: AtomicU64,
    /// Handlers that neither accepted nor refused in time.
    pub(crate) handshake_timeouts: AtomicU64,
    /// Times a client was paused for sending past its inbound limit.
    pub(crate) rate_limit_pauses: AtomicU64,
    /// Connections closed for sending past their inbound limit.
    pub(crate) rate_limit_closes: AtomicU64,
    /// Times a client was not read because it did not take the pongs to its pings.
    pub(crate) pong_backlog_pauses: AtomicU64,
    /// Connections closed for taking none of their pongs within `pong_timeout`.
    pub(crate) pong_backlog_closes: AtomicU64,
    /// Connections opened, by route template (counted once per connection).
    pub(crate) opened: Mutex<BTreeMap<&'static str, u64>>,
    /// Connections closed, by close code (counted once per connection).
    pub(crate) closed: Mutex<BTreeMap<CloseLabel, u64>>,
}

/// The label a close is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum CloseLabel {
    Code(u16),
    /// A client's code of this class (3 or 4: `3xxx`, `4xxx`).
    Class(u8),
    /// A client's code outside every range above.
    Other,
}

impl std::fmt::Display for CloseLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseLabel::Code(code) => write!(f, "{code}"),
            CloseLabel::Class(class) => write!(f, "{class}xxx"),
            CloseLabel::Other => f.write_str("other"),
        }
    }
}

impl ConnCounters {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection opened on the route with this template.
    pub(crate) fn opened(&self, route: &'static str) {
        *lock(&self.opened).entry(route).or_default() += 1;
    }

    /// A connection closed with `code`; `by_client`: the client chose it. A code the client
    /// chose outside those RFC 6455 defines counts as its class (`3xxx`, `4xxx`), so clients
    /// cannot grow the number of series; codes the server chose (the app's own) count as
    /// themselves.
    pub(crate) fn closed(&self, code: u16, by_client: bool) {
        let label = match code {
            1000..=1015 => CloseLabel::Code(code),
            3000..=3999 if by_client => CloseLabel::Class(3),
            4000..=4999 if by_client => CloseLabel::Class(4),
            _ if by_client => CloseLabel::Other,
            _ => CloseLabel::Code(code),
        };
        *lock(&self.closed).entry(label).or_default() += 1;
    }
}

impl ConnConfig {
    /// The default settings (see `Builder`).
    pub(crate) fn new() -> Self {
        Self {
            max_queue_bytes: 4 * 1024 * 1024,
            ping_interval: Some(Duration::from_secs(25)),
            pong_timeout: Duration::from_secs(20),
            close_timeout: Duration::from_secs(5),
            sequence: AtomicU64::new(0),
            epoch: Instant::now(),
            expiring: AtomicUsize::new(0),
            rings: AtomicUsize::new(0),
            counters: ConnCounters::default(),
            logs: ConnLogs::default(),
        }
    }

    /// Milliseconds since the app's epoch.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
