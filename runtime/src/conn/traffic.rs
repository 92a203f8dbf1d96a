//! What each connection received and was sent: counted on the connection itself (its reader
//! per message, its writer once per batch written), so no counter is shared between
//! connections on the message path; the app's totals are summed when asked.

use std::sync::atomic::{AtomicU64, Ordering};

/// One connection's counters.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    received: AtomicU64,
    received_bytes: AtomicU64,
    sent: AtomicU64,
    sent_bytes: AtomicU64,
}

/// Counts of messages and their payload bytes, in and out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TrafficCounts {
    pub(crate) received: u64,
    pub(crate) received_bytes: u64,
    pub(crate) sent: u64,
    pub(crate) sent_bytes: u64,
}

impl Traffic {
    /// A data message read from the client.
    #[inline]
    pub(crate) fn received(&self, bytes: usize) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Data messages handed to the socket in one batch.
    #[inline]
    pub(crate) fn sent(&self, messages: u64, bytes: u64) {
        if messages > 0 {
            self.sent.fetch_add(messages, Ordering::Relaxed);
            self.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub(crate) fn counts(&self) -> TrafficCounts {
        TrafficCounts {
            received: self.received.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
        }
    }
}

impl std::ops::AddAssign for TrafficCounts {
    fn add_assign(&mut self, other: Self) {
        self.received += other.received;
        self.received_bytes += other.received_bytes;
        self.sent += other.sent;
        self.sent_bytes += other.sent_bytes;
    }
}
