//! What a cluster broker counts, shared by the Redis and NATS brokers.

use std::sync::atomic::{AtomicU64, Ordering};

use super::envelope::Dispatched;

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
