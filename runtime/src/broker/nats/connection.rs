//! The connection: the client and what it reports (down, up), the subjects every server
//! listens to (direct messages, events, heartbeats, queries), heartbeats and the servers heard
//! from, and the publisher task.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::Event;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::{Control, DOWN, PUBLISH_QUEUE, Publication, Shared, UP, lock};
use crate::broker::Inbox;
use crate::broker::common::{report_down, report_up};
use crate::broker::envelope::{Kind, decode, dispatch};
use crate::channel::Member;

/// A heartbeat: the server is alive (`1`), or leaving (`0`), after its node id.
const ALIVE: u8 = 1;
const LEAVING: u8 = 0;

/// The delay before reconnection attempt `attempts`: from `min`, doubling, at most `max`.
fn backoff(min: Duration, max: Duration, attempts: usize) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
    min.saturating_mul(2u32.saturating_pow(doublings.min(20)))
        .min(max)
}

pub(super) async fn run(
    shared: Arc<Shared>,
    inbox: Inbox,
    control: mpsc::UnboundedReceiver<Control>,
    publications: mpsc::Receiver<Publication>,
) {
    let config = shared.config().clone();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (min, max) = (config.backoff_min, config.backoff_max);
    let options = async_nats::ConnectOptions::new()
        .name(format!("switchboard {}", shared.node))
        .no_echo()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(config.timeout)
        .request_timeout(Some(config.timeout))
        .client_capacity(PUBLISH_QUEUE)
        .reconnect_delay_callback(move |attempts| backoff(min, max, attempts))
        .event_callback(move |event| {
            let _ = events_tx.send(event);
            std::future::ready(())
        });
    let client = match options.connect(shared.addrs.clone()).await {
        Ok(client) => client,
        Err(e) => {
            // Only settings can fail here: the connection itself is retried in the background.
            let error = shared.scrub(&e.to_string());
            mark_down(&shared, &inbox, &error, &mut None);
            return;
        }
    };
    let jetstream = async_nats::jetstream::ContextBuilder::new()
        .timeout(config.timeout)
        .build(client.clone());
    let _ = shared.client.set(client.clone());
    let _ = shared.jetstream.set(jetstream);

    // The subjects every server listens to (sent when the connection is made).
    let mut tasks = JoinSet::new();
    for (kind, reader) in [("d", Reader::Messages), ("e", Reader::Messages)] {
        match client.subscribe(shared.subject(kind)).await {
            Ok(subscriber) => {
                tasks.spawn(read(shared.clone(), inbox.clone(), subscriber, reader));
            }
            Err(e) => tracing::error!("cannot subscribe to NATS: {e}"),
        }
    }
    match client.subscribe(shared.subject("hb")).await {
        Ok(subscriber) => {
            tasks.spawn(read(
                shared.clone(),
                inbox.clone(),
                subscriber,
                Reader::Heartbeats,
            ));
        }
        Err(e) => tracing::error!("cannot subscribe to NATS heartbeats: {e}"),
    }
    match client.subscribe(shared.subject("q")).await {
        Ok(subscriber) => {
            tasks.spawn(read(
                shared.clone(),
                inbox.clone(),
                subscriber,
                Reader::Queries,
            ));
        }
        Err(e) => tracing::error!("cannot subscribe to NATS queries: {e}"),
    }
    tasks.spawn(super::subscriptions::run(
        shared.clone(),
        inbox.clone(),
        control,
    ));
    tasks.spawn(publisher(shared.clone(), publications));
    tasks.spawn(heartbeats(shared.clone(), inbox.clone()));

    let mut down_since: Option<Instant> = None;
    loop {
        let event = tokio::select! {
            () = inbox.closed() => break,
            event = events.recv() => event,
        };
        let Some(event) = event else { break };
        match event {
            Event::Connected => connected(&shared, &inbox, &mut down_since).await,
            Event::Disconnected => {
                mark_down(&shared, &inbox, "the connection was lost", &mut down_since);
            }
            Event::ClientError(e) => {
                let error = shared.scrub(&e.to_string());
                if shared.state.load(Ordering::Acquire) == UP {
                    tracing::warn!(url = %shared.url, "NATS client: {error}");
                } else {
                    // Still connecting, or reconnecting: why it does not work.
                    mark_down(&shared, &inbox, &error, &mut down_since);
                }
            }
            Event::ServerError(e) => {
                let error = shared.scrub(&e.to_string());
                tracing::warn!(url = %shared.url, "NATS server: {error}");
                *lock(&shared.last_error) = error;
            }
            Event::SlowConsumer(sid) => {
                tracing::warn!(
                    url = %shared.url,
                    sid,
                    "NATS dropped messages for a subscription that fell behind"
                );
            }
            Event::LameDuckMode | Event::Draining | Event::Closed => {
                tracing::info!(url = %shared.url, "NATS: {event}");
            }
        }
    }
    // The app is gone: tell the others at once (a best effort), then stop.
    if shared.state.load(Ordering::Acquire) == UP {
        let _ = client
            .publish(shared.subject("hb"), heartbeat(shared.node, LEAVING))
            .await;
        let _ = tokio::time::timeout(config.timeout, client.flush()).await;
    }
    tasks.abort_all();
}

/// The connection is lost (or could not be made): says so once per outage.
fn mark_down(shared: &Shared, inbox: &Inbox, error: &str, down_since: &mut Option<Instant>) {
    *lock(&shared.last_error) = error.to_owned();
    let before = shared.state.swap(DOWN, Ordering::AcqRel);
    if before == DOWN {
        return;
    }
    if before == UP {
        shared.counters.outages.fetch_add(1, Ordering::Relaxed);
    }
    *down_since = Some(Instant::now());
    tracing::warn!(
        url = %shared.url,
        "NATS connection lost: groups reach this server's members only until it is back: {error}"
    );
    report_down(inbox, shared.node, error, None);
}

/// The connection is made (again): subscribes the groups that joined while it was down (the
/// client itself resubscribes the others), confirms, and says so.
async fn connected(shared: &Arc<Shared>, inbox: &Inbox, down_since: &mut Option<Instant>) {
    let timeout = shared.config().timeout;
    let (done, count) = oneshot::channel();
    let resubscribed = if shared.control.send(Control::Resubscribe(done)).is_ok() {
        tokio::time::timeout(timeout * 2, count)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0)
    } else {
        0
    };
    if let Err(e) = shared.confirm().await {
        tracing::warn!(url = %shared.url, "NATS subscriptions not confirmed: {e}");
    }
    if let Some(client) = shared.client.get() {
        let _ = client
            .publish(shared.subject("hb"), heartbeat(shared.node, ALIVE))
            .await;
    }
    let before = shared.state.swap(UP, Ordering::AcqRel);
    if before == UP {
        return;
    }
    let down = down_since.take().map(|since| since.elapsed());
    if before == DOWN {
        let down_ms = down.map_or(0, |d| d.as_millis());
        tracing::warn!(url = %shared.url, down_ms, resubscribed, "NATS connection back");
        report_up(inbox, shared.node, down_ms, resubscribed, None);
    }
    // Down longer than the TTL: the others have announced this server's presence members as
    // gone. Announce them again.
    if down.is_some_and(|d| d >= shared.config().membership_ttl) {
        reannounce_presence(shared, inbox);
    }
}

fn reannounce_presence(shared: &Shared, inbox: &Inbox) {
    for (group, members) in inbox.local_presence() {
        for chunk in members.chunks(1000) {
            let changes: Vec<(bool, &Member)> = chunk.iter().map(|m| (true, m)).collect();
            let diff = serde_json::json!({ "group": group, "changes": changes }).to_string();
            shared.publish_presence_diff(&group, diff.as_bytes());
        }
    }
}

fn heartbeat(node: Uuid, flag: u8) -> Bytes {
    let mut bytes = Vec::with_capacity(17);
    bytes.extend_from_slice(node.as_bytes());
    bytes.push(flag);
    Bytes::from(bytes)
}

/// Sends this server's heartbeat every third of the TTL, and announces the presence members
/// of servers whose heartbeat expired as gone.
async fn heartbeats(shared: Arc<Shared>, inbox: Inbox) {
    let ttl = shared.config().membership_ttl;
    let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if shared.state.load(Ordering::Acquire) == UP
            && let Some(client) = shared.client.get()
        {
            let _ = client
                .publish(shared.subject("hb"), heartbeat(shared.node, ALIVE))
                .await;
        }
        expire(&shared, &inbox);
    }
}

/// Forgets the servers not heard from within the TTL, announcing their presence members (as
/// this server knew them) as leaves to this server's members.
fn expire(shared: &Shared, inbox: &Inbox) {
    let ttl = shared.config().membership_ttl;
    let expired: Vec<Uuid> = {
        let mut peers = lock(&shared.peers);
        let expired = peers
            .iter()
            .filter(|(_, seen)| seen.elapsed() >= ttl)
            .map(|(node, _)| *node)
            .collect::<Vec<_>>();
        for node in &expired {
            peers.remove(node);
        }
        expired
    };
    for node in expired {
        let Some(groups) = lock(&shared.remote_presence).remove(&node) else {
            continue;
        };
        tracing::info!(%node, "a server's heartbeat expired: its presence members leave");
        for (group, members) in groups {
            let members: Vec<&Member> = members.values().collect();
            for chunk in members.chunks(1000) {
                let changes: Vec<(bool, &Member)> = chunk.iter().map(|m| (false, *m)).collect();
                let diff = serde_json::json!({ "group": group, "changes": changes }).to_string();
                inbox.deliver_presence(&group, diff.as_bytes());
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Reader {
    Messages,
    Heartbeats,
    Queries,
}

async fn read(
    shared: Arc<Shared>,
    inbox: Inbox,
    mut subscriber: async_nats::Subscriber,
    reader: Reader,
) {
    while let Some(message) = subscriber.next().await {
        match reader {
            Reader::Messages => handle(&shared, &inbox, None, &message.payload),
            Reader::Heartbeats => heard(&shared, &message.payload).await,
            Reader::Queries => super::gather::answer(&shared, &inbox, message).await,
        }
    }
}

/// A heartbeat from another server. A server heard of for the first time gets this server's
/// heartbeat at once, so a server that just started learns of the others without waiting
/// for their next beat.
async fn heard(shared: &Shared, payload: &[u8]) {
    let Some((id, flag)) = payload.split_first_chunk::<16>() else {
        shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let node = Uuid::from_bytes(*id);
    if node == shared.node {
        return;
    }
    if flag == [LEAVING] {
        // A graceful shutdown: its leaves were published before.
        lock(&shared.peers).remove(&node);
        lock(&shared.remote_presence).remove(&node);
    } else if lock(&shared.peers).insert(node, Instant::now()).is_none()
        && shared.state.load(Ordering::Acquire) == UP
        && let Some(client) = shared.client.get()
    {
        let _ = client
            .publish(shared.subject("hb"), heartbeat(shared.node, ALIVE))
            .await;
    }
}

/// One message from NATS (on a group's subject when `group` is given): presence changes are
/// remembered per server, then everything is handed to the app.
pub(super) fn handle(shared: &Shared, inbox: &Inbox, group: Option<&str>, payload: &[u8]) {
    if let (Some(group), Ok(envelope)) = (group, decode(payload))
        && matches!(envelope.kind, Kind::Presence)
        && envelope.node != shared.node
    {
        remember_presence(shared, envelope.node, group, envelope.payload);
    }
    let dispatched = dispatch(inbox, shared.node, group, payload);
    shared
        .counters
        .count(dispatched, group.unwrap_or("(direct or event)"));
}

/// Keeps another server's presence members of `group`, to announce them as leaves should
/// that server die.
fn remember_presence(shared: &Shared, node: Uuid, group: &str, diff: &[u8]) {
    #[derive(serde::Deserialize)]
    struct Diff {
        changes: Vec<(bool, Member)>,
    }
    let Ok(diff) = serde_json::from_slice::<Diff>(diff) else {
        return;
    };
    lock(&shared.peers).entry(node).or_insert_with(Instant::now);
    let mut remote = lock(&shared.remote_presence);
    let members = remote
        .entry(node)
        .or_default()
        .entry(group.to_owned())
        .or_default();
    for (joined, member) in diff.changes {
        if joined {
            members.insert(member.channel, member);
        } else {
            members.remove(&member.channel);
        }
    }
    if members.is_empty()
        && let Some(groups) = remote.get_mut(&node)
    {
        groups.remove(group);
    }
}

/// Publishes in order what the broker was handed. Core publishes go to the client's queue
/// (it writes them in batches); stream appends wait for JetStream's acknowledgement in the
/// background, and a flush waits for all of them.
async fn publisher(shared: Arc<Shared>, mut publications: mpsc::Receiver<Publication>) {
    let (Some(client), Some(jetstream)) = (shared.client.get(), shared.jetstream.get()) else {
        return;
    };
    let mut acks: JoinSet<()> = JoinSet::new();
    while let Some(publication) = publications.recv().await {
        while acks.try_join_next().is_some() {}
        let counters = &shared.counters;
        match publication {
            Publication::Core { subject, bytes } => match client.publish(subject, bytes).await {
                Ok(()) => {
                    counters.published.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    counters.publish_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("cannot publish to NATS: {e}");
                }
            },
            Publication::Stream { subject, bytes } => {
                match jetstream.publish(subject.clone(), bytes).await {
                    Ok(ack) => {
                        let shared = shared.clone();
                        acks.spawn(async move {
                            let counters = &shared.counters;
                            match ack.await {
                                Ok(_) => {
                                    counters.published.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    counters.publish_failures.fetch_add(1, Ordering::Relaxed);
                                    // The stream may be gone (a NATS without storage was
                                    // restarted): make it again on the next append.
                                    lock(&shared.streams).clear();
                                    tracing::warn!(
                                        subject,
                                        "a recoverable group's message was not stored: {}",
                                        shared.scrub(&e.to_string())
                                    );
                                }
                            }
                        });
                    }
                    Err(e) => {
                        counters.publish_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(subject, "cannot append to the group's stream: {e}");
                    }
                }
            }
            Publication::Flush(done) => {
                while acks.join_next().await.is_some() {}
                let _ = tokio::time::timeout(shared.config().timeout, client.flush()).await;
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnection_delays_double_up_to_the_maximum() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let delays: Vec<u128> = (1..=8).map(|n| backoff(min, max, n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff(min, max, usize::MAX), max);
    }
}
