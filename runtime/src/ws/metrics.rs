//! What the protections of an app's connections did.

use std::sync::atomic::Ordering;

use crate::App;

/// Counters of the protections of an app's WebSocket connections (see
/// [`App::connection_metrics`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionMetrics {
    /// Open connections.
    pub open: usize,
    /// Handshakes refused because the app held `max_connections` (503).
    pub refused_full: u64,
    /// Handshakes refused because the client's address held `max_connections_per_address`
    /// (429).
    pub refused_per_address: u64,
    /// Handshakes refused because of `max_new_connections_per_second` (503).
    pub refused_rate: u64,
    /// Handlers that neither accepted nor refused within `handshake_timeout` (503).
    pub handshake_timeouts: u64,
    /// Times a client was paused for sending past its inbound limit.
    pub rate_limit_pauses: u64,
    /// Connections closed (1008) for sending past their inbound limit.
    pub rate_limit_closes: u64,
    /// Times a client was not read because it sent pings without reading the pongs (it is
    /// read again once they are written).
    pub pong_backlog_pauses: u64,
    /// Connections closed (1008) for taking none of their pongs within
    /// [`pong_timeout`](crate::Builder::pong_timeout) while paused.
    pub pong_backlog_closes: u64,
}

impl App {
    /// What the protections of this app's connections did.
    pub fn connection_metrics(&self) -> ConnectionMetrics {
        let c = &self.ws().conn.counters;
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        ConnectionMetrics {
            open: self.connection_count(),
            refused_full: load(&c.refused_full),
            refused_per_address: load(&c.refused_per_address),
            refused_rate: load(&c.refused_rate),
            handshake_timeouts: load(&c.handshake_timeouts),
            rate_limit_pauses: load(&c.rate_limit_pauses),
            rate_limit_closes: load(&c.rate_limit_closes),
            pong_backlog_pauses: load(&c.pong_backlog_pauses),
            pong_backlog_closes: load(&c.pong_backlog_closes),
        }
    }
}
