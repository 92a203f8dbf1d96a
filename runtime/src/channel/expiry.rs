//! Channel expiry: a channel with a TTL ([`Channel::set_ttl`](super::Channel::set_ttl)) that
//! stays idle past it leaves its groups and its connection is closed with 1001. One sweeper per
//! served app looks at the open connections every `expiry_sweep_interval`, and only while some
//! channel has an expiry; nothing is kept per channel beyond its connection. The same sweeper
//! drops history entries past their age.

use std::sync::Weak;
use std::sync::atomic::Ordering;

use super::groups::Groups;
use crate::conn::{Closing, close_code};

impl Groups {
    /// Closes and removes the channels idle past their expiry; returns how many.
    pub(crate) fn sweep_once(&self) -> usize {
        if self.conns.expiring.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let expired = self.connections.filter(|conn| conn.is_expired());
        for conn in &expired {
            // Expires once: the connection is closing from now on.
            conn.clear_ttl();
            self.leave_all(conn);
            conn.close(close_code::GOING_AWAY, "channel expired", Closing::Graceful);
            self.counters.expired.fetch_add(1, Ordering::Relaxed);
        }
        expired.len()
    }
}

/// The sweeper of one app: ends when the app is gone.
pub(crate) async fn sweep(groups: Weak<Groups>) {
    let Some(interval) = groups.upgrade().map(|g| g.config.sweep_interval) else {
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(groups) = groups.upgrade() else {
            return;
        };
        groups.sweep_once();
        if !groups.histories().is_empty() {
            groups
                .histories()
                .prune(|group| groups.keeps_history(group));
        }
    }
}
