//! The publisher task: publishes what `group_send`, `send_to` and `emit_cluster` queued, in
//! order, with everything that queued up meanwhile in one pipeline.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc::Receiver;

use super::{Publication, Shared};
use crate::broker::Inbox;

/// Publications per pipeline, at most.
const BATCH: usize = 256;

pub(super) async fn run(shared: Arc<Shared>, inbox: Inbox, mut queue: Receiver<Publication>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            () = inbox.closed() => {
                // The app is gone: publish what it queued last, then stop.
                queue.close();
                while let Ok(publication) = queue.try_recv() {
                    batch.push(publication);
                    if batch.len() == BATCH {
                        publish(&shared, &mut batch).await;
                    }
                }
                publish(&shared, &mut batch).await;
                return;
            }
            publication = queue.recv() => match publication {
                Some(publication) => publication,
                None => return,
            },
        };
        batch.push(first);
        while batch.len() < BATCH
            && let Ok(more) = queue.try_recv()
        {
            batch.push(more);
        }
        publish(&shared, &mut batch).await;
    }
}

/// Publishes `batch` (emptying it) in one pipeline; counts the outcome.
async fn publish(shared: &Shared, batch: &mut Vec<Publication>) {
    if batch.is_empty() {
        return;
    }
    let mut pipe = redis::pipe();
    let mut flushes = Vec::new();
    for publication in batch.drain(..) {
        match publication {
            Publication::Cmd(cmd) => {
                pipe.add_command(cmd).ignore();
            }
            Publication::Flush(done) => flushes.push(done),
        }
    }
    let count = pipe.len() as u64;
    let counters = &shared.counters;
    let published = if count == 0 {
        Ok(())
    } else {
        shared
            .pipeline("cannot publish to other servers", &pipe)
            .await
    };
    for done in flushes {
        let _ = done.send(());
    }
    match published {
        Ok(()) => {
            counters.published.fetch_add(count, Ordering::Relaxed);
        }
        Err(e) => {
            counters
                .publish_failures
                .fetch_add(count, Ordering::Relaxed);
            tracing::warn!("{count} messages were not published to other servers: {e}");
        }
    }
}
