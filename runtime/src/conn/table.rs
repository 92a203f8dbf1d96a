//! The live connections of an app: for the connection cap, for shutdown (axum does not track
//! upgraded connections), and for reaching a connection by id.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::bucket::TokenBucket;
use super::{Conn, ConnectionId, TrafficCounts, lock};

type Live = HashMap<ConnectionId, Arc<Conn>, foldhash::fast::RandomState>;

/// Behind a plain lock (not on a per-message path), so a removed connection is dropped at once:
/// its socket closes when its last handle goes.
pub(crate) struct Connections {
    live: Mutex<Live>,
    /// The traffic of the connections that were removed (changed under `live`'s lock, so a
    /// total never counts a connection twice or misses it).
    retired: Mutex<TrafficCounts>,
    /// Connections open or being opened (handshakes count from the request on).
    reserved: AtomicUsize,
    limits: Limits,
    /// Connections open or being opened, by client address (only with a per-address limit;
    /// an address leaves with its last connection).
    per_address: Mutex<HashMap<IpAddr, usize>>,
    /// New connections per second, with a burst (only with a rate).
    new_connections: Option<Mutex<TokenBucket>>,
}

/// The limits on opening connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Open at once.
    pub(crate) max: usize,
    /// Open at once from one client address.
    pub(crate) per_address: Option<usize>,
    /// New connections per second, and the burst above it.
    pub(crate) rate: Option<(f64, f64)>,
}

/// Why a place under the limits was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The app holds as many connections as it may.
    Full,
    /// This client address holds as many as it may.
    PerAddress,
    /// Too many new connections per second.
    Rate,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("live", &self.len())
            .field("limits", &self.limits)
            .finish()
    }
}

/// A place under the limits, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    table: Arc<Connections>,
    /// The client address it counts against (with a per-address limit).
    address: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.reserved.fetch_sub(1, Ordering::AcqRel);
        if let Some(address) = self.address {
            let mut per_address = lock(&self.table.per_address);
            if let Some(count) = per_address.get_mut(&address) {
                *count -= 1;
                if *count == 0 {
                    per_address.remove(&address);
                }
            }
        }
    }
}

impl Connections {
    pub(crate) fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            live: Mutex::default(),
            retired: Mutex::default(),
            reserved: AtomicUsize::new(0),
            limits,
            per_address: Mutex::default(),
            new_connections: limits
                .rate
                .map(|(rate, burst)| Mutex::new(TokenBucket::new(rate, burst))),
        })
    }

    /// A place under the limits for a connection from `address`, or why not.
    pub(crate) fn reserve(self: &Arc<Self>, address: Option<IpAddr>) -> Result<Slot, Refused> {
        if self.reserved.fetch_add(1, Ordering::AcqRel) >= self.limits.max {
            self.reserved.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Full);
        }
        // From here on the slot gives its place back when dropped.
        let mut slot = Slot {
            table: self.clone(),
            address: None,
        };
        if let (Some(max), Some(address)) = (self.limits.per_address, address) {
            let mut per_address = lock(&self.per_address);
            let count = per_address.entry(address).or_insert(0);
            if *count >= max {
                if *count == 0 {
                    per_address.remove(&address);
                }
                return Err(Refused::PerAddress);
            }
            *count += 1;
            slot.address = Some(address);
        }
        if let Some(bucket) = &self.new_connections
            && !lock(bucket).try_spend(1.0)
        {
            return Err(Refused::Rate);
        }
        Ok(slot)
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
        let mut live = self.lock();
        let removed = live.remove(&conn.id);
        if removed.is_some() {
            *lock(&self.retired) += conn.traffic.counts();
        }
        drop(live);
        drop(removed); // outside the lock
    }

    /// What every connection of the app received and was sent, open or closed.
    pub(crate) fn traffic(&self) -> TrafficCounts {
        let live = self.lock();
        let mut total = *lock(&self.retired);
        for conn in live.values() {
            total += conn.traffic.counts();
        }
        total
    }

    /// Places taken under the cap (open connections and handshakes in progress), and client
    /// addresses counted.
    #[cfg(feature = "testing")]
    pub(crate) fn reserved(&self) -> (usize, usize) {
        (
            self.reserved.load(Ordering::Acquire),
            lock(&self.per_address).len(),
        )
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
