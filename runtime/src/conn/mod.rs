//! The connection core: one connection's shared state, what is queued for it and the task that
//! writes it. The WebSocket API (`ws`) and channel groups (`channel`) both sit above it; it
//! knows neither.
//!
//! Everything sent to a client (by its handler, a group, or the framework) goes through rings
//! of frames bounded by bytes ([`ring`], [`outbound`]). The writer ([`writer`]) takes
//! everything queued at once, feeds it to the socket under one lock and flushes once. A close
//! request goes through a separate lane ([`close`]): it is accepted even when the queue is
//! full, and the connection is killed if the close cannot complete in time.
//!
//! - [`id`]: connection ids; [`frame`]: outgoing frames, encoded once and shared.
//! - [`ring`]: the rings writers pull from, one per group; [`own`]: each connection's own queue.
//! - [`outbound`]: a connection's queue and rings, and the backpressure on its reader.
//! - [`close`]: the close lane, and how the client ended the connection.
//! - [`inbound`]: what the reader shares with the writer and keep-alive ([`keepalive`]).
//! - [`attributes`]: what the connection's channel carries (payload type, expiry, data).
//! - [`socket`]: the socket the reader and the writer share; [`writer`]: the writer task.
//! - [`table`]: an app's live connections; [`config`]: what they share.
//! - [`error`]: close codes and [`WsError`].

mod attributes;
mod bucket;
mod close;
mod config;
mod error;
mod frame;
mod id;
mod inbound;
mod keepalive;
mod outbound;
mod own;
pub(crate) mod ring;
mod socket;
mod table;
mod traffic;
mod writer;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::task::AtomicWaker;

pub use attributes::PayloadType;
pub(crate) use bucket::TokenBucket;
pub(crate) use close::Closing;
pub(crate) use config::{ConnConfig, ConnCounters};
pub use error::{WsError, close_code};
pub(crate) use frame::{Frame, Offer};
pub use id::ConnectionId;
pub(crate) use socket::{Read, Socket};
pub(crate) use table::{Connections, Limits, Refused, Slot};
pub(crate) use traffic::{Traffic, TrafficCounts};
pub(crate) use writer::write_loop;

/// The state a connection shares between its handler, its writer, its channel and the app.
pub(crate) struct Conn {
    pub(crate) id: ConnectionId,
    pub(crate) config: Arc<ConnConfig>,
    writer: AtomicWaker,
    reader: AtomicWaker,
    outbound: outbound::Outbound,
    close: close::CloseLane,
    inbound: inbound::Inbound,
    /// Server pings: the writer sends them, the reader's pong moves the next one on (set when
    /// the writer starts).
    keepalive: Mutex<Option<keepalive::Keepalive>>,
    attributes: attributes::Attributes,
    /// Messages and bytes in and out.
    pub(crate) traffic: Traffic,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Conn {
    pub(crate) fn new(config: Arc<ConnConfig>) -> Arc<Self> {
        Arc::new(Self {
            id: ConnectionId::new(),
            writer: AtomicWaker::new(),
            reader: AtomicWaker::new(),
            outbound: outbound::Outbound::new(),
            close: close::CloseLane::default(),
            inbound: inbound::Inbound::default(),
            keepalive: Mutex::new(None),
            attributes: attributes::Attributes::default(),
            traffic: Traffic::default(),
            config,
        })
    }
}

/// Locks, ignoring poisoning: every critical section here leaves its data consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
