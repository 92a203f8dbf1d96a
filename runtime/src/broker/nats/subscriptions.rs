//! The subscriptions task: one NATS subscription per group with members here (and, for a
//! recoverable group, an ordered consumer of its stream), each read by a task of its own,
//! made and dropped in the order they were asked for.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::AbortHandle;

use super::{Control, Shared, lock};
use crate::broker::envelope::{Kind, decode};
use crate::broker::{Inbox, Outgoing, StreamLimits};

/// A reading task, stopped when dropped (which drops its NATS subscription: the client then
/// unsubscribes).
struct Task(AbortHandle);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Default)]
struct Subscription {
    core: Option<Task>,
    stream: Option<Task>,
}

pub(super) async fn run(
    shared: Arc<Shared>,
    inbox: Inbox,
    mut control: UnboundedReceiver<Control>,
) {
    let mut groups: HashMap<String, Subscription> = HashMap::new();
    while let Some(request) = control.recv().await {
        match request {
            Control::Subscribe {
                group,
                stream,
                done,
            } => {
                let result = subscribe(&shared, &inbox, &mut groups, &group, stream).await;
                let _ = done.send(result);
            }
            Control::Unsubscribe(group) => {
                // A member may have joined since the last one left: then the group stays.
                if !inbox.has_group(&group) {
                    groups.remove(&group);
                    lock(&shared.subscribed).remove(&group);
                }
            }
            Control::Resubscribe(done) => {
                for (group, _) in inbox.local_members() {
                    if !groups.contains_key(&group)
                        && let Err(e) = subscribe(&shared, &inbox, &mut groups, &group, None).await
                    {
                        tracing::warn!(group, "cannot subscribe to the group again: {e}");
                    }
                }
                let _ = done.send(groups.len());
            }
        }
    }
}

/// Subscribes to `group` unless it is already, and to its stream (given limits) unless it
/// is already; confirmed by a round trip to NATS.
async fn subscribe(
    shared: &Arc<Shared>,
    inbox: &Inbox,
    groups: &mut HashMap<String, Subscription>,
    group: &str,
    stream: Option<StreamLimits>,
) -> Result<(), String> {
    let client = shared.client("").map_err(|e| e.to_string())?.clone();
    let entry = groups.entry(group.to_owned()).or_default();
    if entry.core.is_none() {
        let subscriber = client
            .subscribe(shared.group_subject(group))
            .await
            .map_err(|e| e.to_string())?;
        let task = tokio::spawn(read_group(
            shared.clone(),
            inbox.clone(),
            group.to_owned(),
            subscriber,
        ));
        entry.core = Some(Task(task.abort_handle()));
        if let Err(e) = shared.confirm().await {
            groups.remove(group);
            return Err(e);
        }
        lock(&shared.subscribed).insert(group.to_owned());
    }
    if let Some(limits) = stream
        && entry_needs_stream(groups, group)
    {
        // Subscribed before the epoch is read: every message stored after the read comes.
        let subscriber = client
            .subscribe(shared.republish_subject(group))
            .await
            .map_err(|e| e.to_string())?;
        let task = tokio::spawn(read_stream(
            shared.clone(),
            inbox.clone(),
            group.to_owned(),
            limits,
            subscriber,
        ));
        if let Some(entry) = groups.get_mut(group) {
            entry.stream = Some(Task(task.abort_handle()));
        }
        let confirmed = match shared.confirm().await {
            Ok(()) => super::streams::epoch_of(shared, group, limits)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if let Err(e) = confirmed {
            if let Some(entry) = groups.get_mut(group) {
                entry.stream = None;
            }
            return Err(e);
        }
    }
    Ok(())
}

fn entry_needs_stream(groups: &HashMap<String, Subscription>, group: &str) -> bool {
    groups
        .get(group)
        .is_some_and(|entry| entry.stream.is_none())
}

async fn read_group(
    shared: Arc<Shared>,
    inbox: Inbox,
    group: String,
    mut subscriber: async_nats::Subscriber,
) {
    while let Some(message) = subscriber.next().await {
        super::connection::handle(&shared, &inbox, Some(&group), &message.payload);
    }
}

/// Delivers a recoverable group's stream as JetStream republishes it: in the stream's order,
/// each message with its sequence (`Nats-Sequence`) as the offset. A sequence that goes back
/// means the stream was made again (it was lost): its epoch is read again.
async fn read_stream(
    shared: Arc<Shared>,
    inbox: Inbox,
    group: String,
    limits: StreamLimits,
    mut subscriber: async_nats::Subscriber,
) {
    let counters = &shared.counters;
    let mut last = 0;
    while let Some(message) = subscriber.next().await {
        let offset = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(async_nats::header::NATS_SEQUENCE))
            .and_then(|value| value.as_str().parse::<u64>().ok());
        let Some(offset) = offset else {
            counters.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let known = lock(&shared.epochs).get(&group).cloned();
        let epoch = match known {
            Some(epoch) if offset > last => epoch,
            _ => match super::streams::epoch_of(&shared, &group, limits).await {
                Ok(epoch) => epoch,
                Err(e) => {
                    tracing::warn!(group, "cannot read the epoch of the group's stream: {e}");
                    continue;
                }
            },
        };
        last = offset;
        match decode(&message.payload) {
            Ok(envelope) => {
                let Kind::Group { except } = envelope.kind else {
                    counters.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                counters.received.fetch_add(1, Ordering::Relaxed);
                let outgoing = Outgoing {
                    payload: Bytes::copy_from_slice(envelope.payload),
                    except,
                };
                inbox.deliver_positioned(&group, &outgoing, &epoch, offset);
            }
            Err(why) => {
                counters.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(group, "dropped a message of the group's stream: {why}");
            }
        }
    }
}
