//! The subscriber task: one pub/sub connection, the subscriptions this server needs on it,
//! the messages that come in, and reconnection with backoff.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{Control, DOWN, Shared, UP, lock};
use crate::broker::Inbox;
use crate::broker::common::{report_down, report_up};
use crate::broker::envelope::dispatch;

/// Channels per `SUBSCRIBE` command when many are (re)subscribed at once.
const CHUNK: usize = 512;

/// How a connection ended.
enum Ended {
    /// The app is gone.
    Stopped,
    /// The connection failed (or could not be made); `was_up`: it had been working.
    Failed { error: String, was_up: bool },
}

fn failed(error: impl std::fmt::Display, was_up: bool) -> Ended {
    Ended::Failed {
        error: error.to_string(),
        was_up,
    }
}

pub(super) async fn run(
    shared: Arc<Shared>,
    inbox: Inbox,
    mut control: UnboundedReceiver<Control>,
) {
    let config = shared.config().clone();
    let mut backoff = config.backoff_min;
    let mut down_since: Option<Instant> = None;
    loop {
        let ended = tokio::select! {
            () = inbox.closed() => return,
            ended = connection(&shared, &inbox, &mut control, &mut down_since) => ended,
        };
        let Ended::Failed { error, was_up } = ended else {
            return;
        };
        // What the client library or the server said may quote a secret.
        let error = shared.scrub(&error);
        if was_up {
            backoff = config.backoff_min;
        }
        lock(&shared.subscribed).clear();
        *lock(&shared.last_error) = error.clone();
        if shared.state.swap(DOWN, Ordering::AcqRel) != DOWN {
            shared.counters.outages.fetch_add(1, Ordering::Relaxed);
            down_since = Some(Instant::now());
            tracing::warn!(
                url = %shared.url,
                "Redis connection lost: groups reach this server's members only until it is back: {error}"
            );
            report_down(&inbox, shared.node, &error, None);
        }
        // Whoever waits for this connection learns now that it is gone.
        while let Ok(request) = control.try_recv() {
            if let Control::Subscribe(_, done) = request {
                let _ = done.send(Err(error.clone()));
            }
        }
        tokio::select! {
            () = inbox.closed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
}

/// Connects, subscribes to what this server needs, then serves until the connection fails.
async fn connection(
    shared: &Shared,
    inbox: &Inbox,
    control: &mut UnboundedReceiver<Control>,
    down_since: &mut Option<Instant>,
) -> Ended {
    let timeout = shared.config().timeout;
    let pubsub = match tokio::time::timeout(timeout, shared.client().get_async_pubsub()).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(e)) => return failed(e, false),
        Err(_) => return failed(format!("no connection within {timeout:?}"), false),
    };
    let (mut sink, mut stream) = pubsub.split();

    // Every group with members here, and the channels every server listens to.
    let groups = local_groups(inbox);
    let mut channels = vec![shared.direct_channel(), shared.events_channel()];
    channels.extend(groups.iter().map(|group| shared.group_channel(group)));
    if let Err(e) = subscribe_channels(&mut sink, &channels, timeout).await {
        return failed(e, false);
    }
    lock(&shared.subscribed).extend(groups);

    // Publishes go through the other connection: it must work too before they are let through.
    if let Err(e) = ping(shared, timeout).await {
        return failed(e, false);
    }
    let was_down = shared.state.swap(UP, Ordering::AcqRel) == DOWN;
    // Joins refused while the state said "down" (after the list above was taken) are not
    // queued: subscribe their groups now. Later joins queue their own subscriptions.
    let missed: Vec<String> = local_groups(inbox)
        .into_iter()
        .filter(|group| !lock(&shared.subscribed).contains(group))
        .collect();
    let channels: Vec<String> = missed.iter().map(|g| shared.group_channel(g)).collect();
    if let Err(e) = subscribe_channels(&mut sink, &channels, timeout).await {
        return failed(e, true);
    }
    lock(&shared.subscribed).extend(missed);
    if was_down {
        back_up(shared, inbox, down_since.take());
    }
    serve(shared, inbox, control, &mut sink, &mut stream).await
}

/// The groups with members on this server.
fn local_groups(inbox: &Inbox) -> Vec<String> {
    inbox
        .local_members()
        .into_iter()
        .map(|(group, _)| group)
        .collect()
}

/// Subscribes to `channels`, a chunk per command, each confirmed.
async fn subscribe_channels(
    sink: &mut PubSubSink,
    channels: &[String],
    timeout: Duration,
) -> Result<(), String> {
    for chunk in channels.chunks(CHUNK) {
        confirm(timeout, sink.subscribe(chunk)).await?;
    }
    Ok(())
}

/// The connection is back after an outage: says so, and has the membership rewritten.
fn back_up(shared: &Shared, inbox: &Inbox, down_since: Option<Instant>) {
    let down_ms = down_since.map_or(0, |since| since.elapsed().as_millis());
    let resubscribed = lock(&shared.subscribed).len();
    tracing::warn!(url = %shared.url, down_ms, resubscribed, "Redis connection back");
    report_up(inbox, shared.node, down_ms, resubscribed, None);
    shared.refresh_now.notify_one();
}

/// Delivers what arrives and applies subscription requests, until the connection fails or
/// the broker stops.
async fn serve(
    shared: &Shared,
    inbox: &Inbox,
    control: &mut UnboundedReceiver<Control>,
    sink: &mut PubSubSink,
    stream: &mut PubSubStream,
) -> Ended {
    let group_prefix = shared.group_channel("");
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => handle(shared, inbox, &group_prefix, &message),
                None => return failed("the connection was closed", true),
            },
            request = control.recv() => {
                let Some(first) = request else { return Ended::Stopped };
                let mut batch = vec![first];
                while batch.len() < CHUNK
                    && let Ok(more) = control.try_recv()
                {
                    batch.push(more);
                }
                if let Err(e) = apply(shared, inbox, sink, batch).await {
                    return failed(e, true);
                }
            }
        }
    }
}

async fn ping(shared: &Shared, timeout: Duration) -> Result<(), String> {
    let mut connection = shared.commands().await.map_err(|e| e.to_string())?;
    // The first command after an outage may meet the old, broken connection (which it then
    // replaces): try twice.
    let mut last = String::new();
    for _ in 0..2 {
        match tokio::time::timeout(
            timeout,
            redis::cmd("PING").query_async::<String>(&mut connection),
        )
        .await
        {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("no answer to PING within {timeout:?}"),
        }
    }
    Err(last)
}

async fn confirm(
    timeout: Duration,
    request: impl Future<Output = redis::RedisResult<()>>,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("not confirmed within {timeout:?}")),
    }
}

/// Applies subscription requests in order (consecutive subscriptions in one command). An
/// error means the connection is no longer usable.
async fn apply(
    shared: &Shared,
    inbox: &Inbox,
    sink: &mut PubSubSink,
    batch: Vec<Control>,
) -> Result<(), String> {
    let timeout = shared.config().timeout;
    let mut waiting = Vec::new();
    for request in batch {
        match request {
            Control::Subscribe(group, done) => waiting.push((group, done)),
            Control::Unsubscribe(group) => {
                subscribe(shared, sink, &mut waiting, timeout).await?;
                // A member may have joined since the last one left: then the group stays.
                if inbox.has_group(&group) {
                    continue;
                }
                confirm(timeout, sink.unsubscribe(shared.group_channel(&group))).await?;
                lock(&shared.subscribed).remove(&group);
            }
        }
    }
    subscribe(shared, sink, &mut waiting, timeout).await
}

async fn subscribe(
    shared: &Shared,
    sink: &mut PubSubSink,
    waiting: &mut Vec<(String, tokio::sync::oneshot::Sender<Result<(), String>>)>,
    timeout: Duration,
) -> Result<(), String> {
    if waiting.is_empty() {
        return Ok(());
    }
    let channels: Vec<String> = waiting
        .iter()
        .map(|(group, _)| shared.group_channel(group))
        .collect();
    let result = confirm(timeout, sink.subscribe(&channels)).await;
    if result.is_ok() {
        lock(&shared.subscribed).extend(waiting.iter().map(|(group, _)| group.clone()));
    }
    for (_, done) in waiting.drain(..) {
        let _ = done.send(result.clone());
    }
    result
}

/// One message from Redis: skip this server's own, hand the others to the app.
fn handle(shared: &Shared, inbox: &Inbox, group_prefix: &str, message: &redis::Msg) {
    let channel = message.get_channel_name();
    let group = channel.strip_prefix(group_prefix);
    let dispatched = dispatch(inbox, shared.node, group, message.get_payload_bytes());
    shared.counters.count(dispatched, channel);
}
