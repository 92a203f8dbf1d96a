//! The live connections of an app: for the connection cap, for shutdown (axum does not track
//! upgraded connections), and for reaching a connection by id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Conn, ConnectionId, lock};

type Live = HashMap<ConnectionId, Arc<Conn>, foldhash::fast::RandomState>;

/// Behind a plain lock (not on a per-message path), so a removed connection is dropped at once:
/// its socket closes when its last handle goes.
pub(crate) struct Connections {
    live: Mutex<Live>,
    /// Connections open or being opened (handshakes count from the request on).
    reserved: AtomicUsize,
    max: usize,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("live", &self.len())
            .field("max", &self.max)
            .finish()
    }
}

/// A place under the connection cap, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    table: Arc<Connections>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.reserved.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connections {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            live: Mutex::default(),
            reserved: AtomicUsize::new(0),
            max,
        })
    }

    /// A place under the cap, or `None` when the app is full.
    pub(crate) fn reserve(self: &Arc<Self>) -> Option<Slot> {
        if self.reserved.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.reserved.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot {
            table: self.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Live> {
        lock(&self.live)
    }

    pub(crate) fn insert(&self, conn: Arc<Conn>) {
        self.lock().insert(conn.id, conn);
    }

    pub(crate) fn get(&self, id: &ConnectionId) -> Option<Arc<Conn>> {
        self.lock().get(id).cloned()
    }

    /// Removes a connection that ended (and forgets its expiry).
    pub(crate) fn remove(&self, conn: &Conn) {
        conn.clear_ttl();
        let removed = self.lock().remove(&conn.id);
        drop(removed); // outside the lock
    }

    /// Places taken under the cap (open connections and handshakes in progress).
    #[cfg(feature = "testing")]
    pub(crate) fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Acquire)
    }

    /// Open connections.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Conn>> {
        self.lock().values().cloned().collect()
    }

    /// The open connections `select` picks (looked at under the lock: keep it cheap).
    pub(crate) fn filter(&self, mut select: impl FnMut(&Conn) -> bool) -> Vec<Arc<Conn>> {
        self.lock()
            .values()
            .filter(|conn| select(conn))
            .cloned()
            .collect()
    }
}
