//! The subscriptions task: one NATS subscription per group with members here (and, for a
//! recoverable group, a second one to what its stream republishes), each read by a task of its own,
//! made and dropped in the order they were asked for.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;
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
    // After a resubscription that could not do everything (JetStream may need a moment after
    // a restart), it is tried again every timeout until it can.
    let mut repair = tokio::time::interval(shared.config().timeout.max(Duration::from_millis(50)));
    repair.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut incomplete = false;
    loop {
        let request = tokio::select! {
            request = control.recv() => match request {
                Some(request) => request,
                None => return,
            },
            _ = repair.tick(), if incomplete => {
                if shared.state.load(Ordering::Acquire) == super::UP {
                    incomplete = !resubscribe(&shared, &inbox, &mut groups).await;
                }
                continue;
            }
        };
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
                    // What this server remembered of the group's stream goes with it.
                    lock(&shared.epochs).remove(&group);
                    lock(&shared.streams).remove(&group);
                }
            }
            Control::Resubscribe(done) => {
                incomplete = !resubscribe(&shared, &inbox, &mut groups).await;
                let _ = done.send(groups.len());
            }
        }
    }
}

/// Subscribes the groups with members here that this server is not subscribed to (those
/// joined while NATS was unreachable), a recoverable one to its stream too. Whether it did
/// them all.
async fn resubscribe(
    shared: &Arc<Shared>,
    inbox: &Inbox,
    groups: &mut HashMap<String, Subscription>,
) -> bool {
    let limits = *lock(&shared.stream_limits);
    let mut complete = true;
    for (group, _) in inbox.local_members() {
        let stream = limits.filter(|_| inbox.is_recoverable(&group));
        let missing = groups
            .get(&group)
            .is_none_or(|entry| stream.is_some() && entry.stream.is_none());
        if missing && let Err(e) = subscribe(shared, inbox, groups, &group, stream).await {
            tracing::warn!(group, "cannot subscribe to the group again: {e}");
            complete = false;
        }
    }
    complete
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
        // Subscribed before the stream is read: every message stored after the read comes.
        let subscriber = client
            .subscribe(shared.republish_subject(group))
            .await
            .map_err(|e| e.to_string())?;
        let (start_tx, start) = oneshot::channel();
        let task = tokio::spawn(read_stream(
            shared.clone(),
            inbox.clone(),
            group.to_owned(),
            limits,
            subscriber,
            start,
        ));
        if let Some(entry) = groups.get_mut(group) {
            entry.stream = Some(Task(task.abort_handle()));
        }
        let confirmed = match shared.confirm().await {
            Ok(()) => super::streams::epoch_of(shared, group, limits)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match confirmed {
            Ok((_, last)) => {
                let _ = start_tx.send(last);
            }
            Err(e) => {
                if let Some(entry) = groups.get_mut(group) {
                    entry.stream = None;
                }
                return Err(e);
            }
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

/// How long a message republished ahead of its turn waits for the ones before it (JetStream
/// can republish two publishers' messages out of order) before those are read from the stream.
const GAP_WAIT: Duration = Duration::from_millis(50);

/// Delivers a recoverable group's stream as JetStream republishes it, in the stream's order:
/// each message's sequence (`Nats-Sequence`) is its offset, counted from the stream's last
/// sequence when the subscription was made (`start`). A message that comes ahead of its turn
/// waits for the ones before it ([`GAP_WAIT`]); those still missing then are read from the
/// stream (or skipped if it no longer holds them). A sequence that starts again from 1 means
/// the stream was made again (it was lost): a new epoch.
async fn read_stream(
    shared: Arc<Shared>,
    inbox: Inbox,
    group: String,
    limits: StreamLimits,
    mut subscriber: async_nats::Subscriber,
    start: oneshot::Receiver<u64>,
) {
    let Ok(start) = start.await else { return };
    let counters = &shared.counters;
    let mut next = start + 1;
    let mut waiting: BTreeMap<u64, Bytes> = BTreeMap::new();
    let mut gap_since: Option<tokio::time::Instant> = None;
    loop {
        let deadline = gap_since.map(|since| since + GAP_WAIT);
        tokio::select! {
            message = subscriber.next() => {
                let Some(message) = message else { return };
                let header = |name| {
                    message
                        .headers
                        .as_ref()
                        .and_then(|headers| headers.get(name))
                        .and_then(|value| value.as_str().parse::<u64>().ok())
                };
                let Some(offset) = header(async_nats::header::NATS_SEQUENCE) else {
                    counters.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                if offset < next {
                    if header(async_nats::header::NATS_LAST_SEQUENCE) != Some(0) || offset != 1 {
                        // Already delivered (or covered by a read of the stream).
                        continue;
                    }
                    // A new stream: its epoch, and everything from its first message.
                    if let Err(e) = super::streams::epoch_of(&shared, &group, limits).await {
                        tracing::warn!(group, "cannot read the epoch of the group's new stream: {e}");
                    }
                    waiting.clear();
                    next = 1;
                }
                waiting.insert(offset, message.payload);
            }
            () = sleep_until(deadline) => {
                // The ones before the first waiting message did not come: read them.
                let first = waiting.keys().next().copied().unwrap_or(next);
                match super::streams::messages(&shared, &group, next..first, limits).await {
                    Ok(found) => waiting.extend(found),
                    Err(e) => {
                        tracing::warn!(
                            group,
                            next,
                            first,
                            "messages of the group's stream are missing here: {e}"
                        );
                    }
                }
                // What is still missing is skipped (its members see the gap in the offsets).
                if let Some(&first) = waiting.keys().next() {
                    next = first;
                }
                gap_since = None;
            }
        }
        let epoch = lock(&shared.epochs).get(&group).cloned();
        let Some(epoch) = epoch else { continue };
        while let Some(payload) = waiting.remove(&next) {
            deliver(&shared, &inbox, &group, &epoch, next, &payload);
            next += 1;
        }
        if waiting.is_empty() {
            gap_since = None;
        } else if gap_since.is_none() {
            gap_since = Some(tokio::time::Instant::now());
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn deliver(shared: &Shared, inbox: &Inbox, group: &str, epoch: &str, offset: u64, payload: &[u8]) {
    let counters = &shared.counters;
    match decode(payload) {
        Ok(envelope) => {
            let Kind::Group { except } = envelope.kind else {
                counters.malformed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            counters.received.fetch_add(1, Ordering::Relaxed);
            let outgoing = Outgoing {
                payload: Bytes::copy_from_slice(envelope.payload),
                except,
            };
            inbox.deliver_positioned(group, &outgoing, epoch, offset);
        }
        Err(why) => {
            counters.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(group, "dropped a message of the group's stream: {why}");
        }
    }
}
