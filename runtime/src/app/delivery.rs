//! What the broker delivers to: the app routes messages from other servers to its groups and
//! events from other servers to its bus.

use crate::App;
use crate::broker::{Deliver, Outgoing};
use crate::conn::ConnectionId;

use super::AppInner;

impl Deliver for AppInner {
    fn deliver_to_group(&self, group: &str, message: &Outgoing) -> usize {
        self.groups.deliver_remote(group, message)
    }

    fn deliver_positioned(
        &self,
        group: &str,
        message: &Outgoing,
        epoch: &str,
        offset: u64,
    ) -> usize {
        self.groups
            .deliver_positioned(group, message, epoch, offset)
    }

    fn deliver_to_channel(&self, channel: ConnectionId, message: &Outgoing) -> bool {
        self.groups.deliver_remote_to(channel, message)
    }

    fn deliver_event(&self, name: &str, payload: &[u8]) -> bool {
        match self.app() {
            Some(app) => self.cluster_events.deliver(&app, name, payload),
            None => false,
        }
    }

    fn deliver_presence(&self, group: &str, payload: &[u8]) -> bool {
        let presences = &self.groups.presences;
        match serde_json::from_slice::<crate::channel::presence::Diff>(payload) {
            Ok(diff) if diff.group == group && presences.tracks(group) => {
                presences.received(diff);
                true
            }
            _ => false,
        }
    }

    fn has_group(&self, group: &str) -> bool {
        self.groups.has_group(group)
    }

    fn is_recoverable(&self, group: &str) -> bool {
        self.groups.is_recoverable(group)
    }

    fn local_members(&self) -> Vec<(String, Vec<ConnectionId>)> {
        self.groups.member_ids()
    }

    fn local_presence(&self) -> Vec<(String, Vec<crate::channel::Member>)> {
        self.groups.presences.local_members()
    }

    fn report(&self, name: &'static str, detail: serde_json::Value) {
        let Some(app) = self.app() else {
            return;
        };
        if let Err(e) = app.events().spawn_emit(name, detail) {
            tracing::warn!(event = name, "could not report a broker event: {e}");
        }
    }
}

impl AppInner {
    /// A handle to this app, while it lives (the broker holds it weakly).
    fn app(&self) -> Option<App> {
        self.me.upgrade().map(|inner| App { inner })
    }
}
