//! What the Redis and NATS brokers share: their settings and their counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::envelope::Dispatched;
use super::{CLUSTER_DOWN, CLUSTER_UP, ClusterDown, ClusterUp, Inbox};

/// A cluster broker's settings (its builder sets them; read when the app is built).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The first part of every key, channel or subject: servers with the same prefix form one
    /// cluster.
    pub(crate) prefix: String,
    /// How long one broker operation may take before it counts as failed.
    pub(crate) timeout: Duration,
    /// Reconnection delays: from `backoff_min`, doubling up to `backoff_max`.
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    /// How long a server's membership (entries, or heartbeat) outlives its last refresh.
    pub(crate) membership_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            prefix: "switchboard".to_owned(),
            timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            membership_ttl: Duration::from_secs(30),
        }
    }
}

/// Locks a mutex, through a poisoned one (a broker's state stays usable after a panic
/// elsewhere).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A broker's counters (read by its `metrics()`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) publish_failures: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) own_skipped: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
    pub(crate) outages: AtomicU64,
}

impl Counters {
    /// Counts what became of a message from another server; `source` (the channel or subject
    /// it came on) names it in the log line of one that was dropped.
    pub(crate) fn count(&self, dispatched: Dispatched, source: &str) {
        match dispatched {
            Dispatched::Delivered => {
                self.received.fetch_add(1, Ordering::Relaxed);
            }
            Dispatched::Own => {
                self.own_skipped.fetch_add(1, Ordering::Relaxed);
            }
            Dispatched::EventDropped => {
                self.received.fetch_add(1, Ordering::Relaxed);
                self.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Dispatched::Malformed(why) => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(source, "dropped a cluster message: {why}");
            }
        }
    }
}

/// Reports on the app's bus that the broker (or, with `shard`, one shard of a Redis Cluster)
/// lost its connection: [`CLUSTER_DOWN`], its payload the typed [`ClusterDown`].
pub(crate) fn report_down(inbox: &Inbox, node: uuid::Uuid, error: &str, shard: Option<&str>) {
    let down = ClusterDown {
        node,
        error: error.to_owned(),
        shard: shard.map(str::to_owned),
    };
    inbox.report(CLUSTER_DOWN, serde_json::to_value(down).unwrap_or_default());
}

/// Reports that the broker (or one shard) is back, after `down_ms` milliseconds, with
/// `resubscribed` groups subscribed again: [`CLUSTER_UP`], its payload the typed [`ClusterUp`].
pub(crate) fn report_up(
    inbox: &Inbox,
    node: uuid::Uuid,
    down_ms: u128,
    resubscribed: usize,
    shard: Option<&str>,
) {
    let up = ClusterUp {
        node,
        down_ms: u64::try_from(down_ms).unwrap_or(u64::MAX),
        resubscribed,
        shard: shard.map(str::to_owned),
    };
    inbox.report(CLUSTER_UP, serde_json::to_value(up).unwrap_or_default());
}
