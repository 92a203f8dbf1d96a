//! The sizes of an app's internal tables, for tests that churn connections and check that
//! nothing is left behind.

use crate::App;

/// How big an app's internal tables are (feature `testing`). A test reads them before and after
/// churning connections: once every connection has ended, each must be back to where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Internals {
    /// Connections in the live table.
    pub connections: usize,
    /// Places taken under the connection cap (open connections, handshakes in progress).
    pub reserved: usize,
    /// Client addresses counted against `max_connections_per_address`.
    pub addresses: usize,
    /// Entries of the group table.
    pub groups: usize,
    /// Memberships, summed over the groups' rings.
    pub memberships: usize,
    /// Rings of frames alive (a group's, and each connection's own).
    pub rings: usize,
    /// Connections whose channel has an expiry.
    pub expiring: usize,
    /// Groups with a saved history.
    pub histories: usize,
    /// Event names the bus keeps state for (listeners, metrics, a disabled flag).
    pub event_names: usize,
    /// Entries of the bus's lock-free index.
    pub event_index: usize,
    /// Listeners registered (macro, run-time and connection-scoped).
    pub listeners: usize,
    /// Tasks of the app still running (connections, background emits).
    pub tasks: usize,
}

impl App {
    /// The sizes of this app's internal tables (feature `testing`): see [`Internals`].
    pub fn internals(&self) -> Internals {
        let (groups, memberships) = self.groups().sizes();
        let (event_names, event_index, listeners) = self.bus().sizes();
        let (reserved, addresses) = self.connections().reserved();
        Internals {
            connections: self.connections().len(),
            reserved,
            addresses,
            groups,
            memberships,
            rings: self.groups().rings_alive(),
            expiring: self.groups().expiring(),
            histories: self.groups().histories().len(),
            event_names,
            event_index,
            listeners,
            tasks: self.tasks().len(),
        }
    }
}
