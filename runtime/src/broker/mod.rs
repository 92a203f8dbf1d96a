//! Brokers: where a group lives beyond one process.
//!
//! The channel layer keeps the local members of every group itself, and talks to the broker
//! only to reach other servers: subscribe when a group gets its first local member, unsubscribe
//! after the last one, publish each `group_send`, and hand messages that come back from other
//! servers to the local members. [`Local`] (the default) is a single process: nothing to reach.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use bytes::Bytes;

use crate::Error;
use crate::channel::groups::Groups;
use crate::ws::ConnectionId;

/// The future a broker method returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A message for other servers: JSON text encoded once, and the channel it must skip.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The payload as sent to members (JSON text).
    pub payload: Bytes,
    /// A channel that must not receive it (`group_send(..).except(..)`).
    pub except: Option<ConnectionId>,
}

/// Where group messages from other servers come in: the broker hands them to the local members
/// of the app it was started for.
#[derive(Debug, Clone)]
pub struct Inbox {
    groups: Weak<Groups>,
}

impl Inbox {
    pub(crate) fn new(groups: &Arc<Groups>) -> Self {
        Self {
            groups: Arc::downgrade(groups),
        }
    }

    /// Delivers a message published to `group` by another server to this server's members.
    /// Returns how many members it was queued for.
    pub fn deliver_to_group(&self, group: &str, message: &Outgoing) -> usize {
        self.groups
            .upgrade()
            .map_or(0, |groups| groups.deliver_remote(group, message))
    }

    /// Delivers a message sent by another server to `channel`, if it is connected here.
    /// Returns whether it was queued.
    pub fn deliver_to_channel(&self, channel: ConnectionId, message: &Outgoing) -> bool {
        self.groups
            .upgrade()
            .is_some_and(|groups| groups.deliver_remote_to(channel, message))
    }

    /// Reports a broker event (outage, recovery) on the app's bus.
    pub fn report(&self, name: &'static str, detail: serde_json::Value) {
        if let Some(groups) = self.groups.upgrade() {
            groups.report(name, detail);
        }
    }
}

/// A broker: how groups reach other servers. Implemented by [`Local`] (one process).
pub trait Broker: Send + Sync + Debug + 'static {
    /// Whether messages cross to other servers; when `false` the channel layer never calls
    /// `publish`.
    fn is_clustered(&self) -> bool;

    /// Gives the broker the app it serves: messages from other servers go to `inbox`. Called
    /// once, when the app is built (possibly outside a runtime: connect on first use).
    fn attach(&self, inbox: Inbox);

    /// `group` got its first member on this server: receive its messages from now on. Returns
    /// once the subscription is in place, so a message sent right after is not missed.
    fn subscribe<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<(), Error>>;

    /// The last member of `group` on this server left.
    fn unsubscribe<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<(), Error>>;

    /// Sends a group message to the other servers.
    fn publish<'a>(
        &'a self,
        group: &'a str,
        message: &'a Outgoing,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Sends a message to a channel that is not connected to this server.
    fn send_to<'a>(
        &'a self,
        channel: ConnectionId,
        message: &'a Outgoing,
    ) -> BoxFuture<'a, Result<(), Error>>;
}

/// The in-process broker: groups live in this process only (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl Broker for Local {
    fn is_clustered(&self) -> bool {
        false
    }

    fn attach(&self, _inbox: Inbox) {}

    fn subscribe<'a>(&'a self, _group: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn unsubscribe<'a>(&'a self, _group: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn publish<'a>(
        &'a self,
        _group: &'a str,
        _message: &'a Outgoing,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn send_to<'a>(
        &'a self,
        _channel: ConnectionId,
        _message: &'a Outgoing,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(std::future::ready(Ok(())))
    }
}
