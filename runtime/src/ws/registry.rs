//! The live connections of an app: for the connection cap, for shutdown (axum does not track
//! upgraded connections), and for reaching a connection by id.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::connection::{Conn, ConnectionId};
use crate::App;

pub(crate) struct Connections {
    live: papaya::HashMap<ConnectionId, Arc<Conn>, foldhash::fast::RandomState>,
    /// Connections open or being opened (handshakes count from the request on).
    reserved: AtomicUsize,
    max: usize,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("live", &self.live.len())
            .field("max", &self.max)
            .finish()
    }
}

/// A place under the connection cap, given back when dropped.
pub(crate) struct Slot {
    app: App,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.app
            .connections()
            .reserved
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connections {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            live: papaya::HashMap::with_hasher(foldhash::fast::RandomState::default()),
            reserved: AtomicUsize::new(0),
            max,
        }
    }

    /// A place under the cap, or `None` when the app is full.
    pub(crate) fn reserve(&self, app: &App) -> Option<Slot> {
        if self.reserved.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.reserved.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot { app: app.clone() })
    }

    pub(crate) fn insert(&self, conn: Arc<Conn>) {
        self.live.pin().insert(conn.id, conn);
    }

    pub(crate) fn remove(&self, conn: &Conn) {
        self.live.pin().remove(&conn.id);
    }

    /// Open connections.
    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Conn>> {
        self.live.pin().values().cloned().collect()
    }
}
