//! What the Redis and NATS brokers share: their settings and their counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::envelope::Dispatched;

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
