//! Recoverable groups' streams in JetStream: one stream per group, whose sequence is the
//! message's offset and whose creation time is the epoch (a stream made again, after it was
//! lost, is a new epoch). JetStream republishes every message it stores, in the stream's
//! order and with its sequence in a header, on `{prefix}.p.{group}`: the servers with members
//! subscribe to that subject, so live delivery is core NATS (it never depends on how much
//! history the stream keeps) and positions are assigned once, by the stream.

use async_nats::jetstream::stream::{self, DiscardPolicy, Republish, StorageType};
use bytes::Bytes;

use super::{Shared, lock};
use crate::Error;
use crate::broker::envelope::{Kind, decode};
use crate::broker::{StreamLimits, StreamRead};

/// The streams a server remembers having made sure of, at most.
const KNOWN_STREAMS: usize = 100_000;

/// The group's stream, made (or brought to these settings) unless this server did so before.
/// (Not refused while the broker says it is down: the resubscription after an outage runs
/// before it says it is up again.)
async fn stream(
    shared: &Shared,
    group: &str,
    limits: StreamLimits,
) -> Result<stream::Stream, Error> {
    let what = "cannot open the group's stream";
    let jetstream = shared
        .jetstream
        .get()
        .ok_or_else(|| shared.broker_error(what, "the broker has not started yet"))?;
    let name = shared.stream_name(group);
    if !lock(&shared.streams).contains(group) {
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![shared.stream_subject(group)],
            max_messages: i64::try_from(limits.max_entries).unwrap_or(i64::MAX),
            max_age: limits.max_age,
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            republish: Some(Republish {
                source: shared.stream_subject(group),
                destination: shared.republish_subject(group),
                headers_only: false,
            }),
            ..Default::default()
        };
        shared
            .timed(what, jetstream.create_or_update_stream(config))
            .await?;
        let mut known = lock(&shared.streams);
        // A server that only sends to recoverable groups (no members: nothing is forgotten
        // on unsubscribing) remembers at most this many; past it, each is made sure of again.
        if known.len() >= KNOWN_STREAMS {
            known.clear();
        }
        known.insert(group.to_owned());
    }
    shared.timed(what, jetstream.get_stream(name)).await
}

/// Makes the group's stream unless it is known to exist.
pub(super) async fn ensure(
    shared: &Shared,
    group: &str,
    limits: StreamLimits,
) -> Result<(), Error> {
    if lock(&shared.streams).contains(group) {
        return Ok(());
    }
    stream(shared, group, limits).await.map(drop)
}

/// The epoch of a stream: its creation time, in nanoseconds, as 12 hex digits.
fn epoch(info: &stream::Info) -> String {
    let nanos = info.created.unix_timestamp_nanos();
    format!("{:012x}", nanos.rem_euclid(1 << 48))
}

/// The group's stream's epoch and last sequence (the stream made if it does not exist); the
/// epoch is remembered for the messages republished from it.
pub(super) async fn epoch_of(
    shared: &Shared,
    group: &str,
    limits: StreamLimits,
) -> Result<(String, u64), Error> {
    let mut stream = stream(shared, group, limits).await?;
    let info = shared
        .timed("cannot read the group's stream", stream.info())
        .await?;
    let epoch = epoch(info);
    let last = info.state.last_sequence;
    lock(&shared.epochs).insert(group.to_owned(), epoch.clone());
    Ok((epoch, last))
}

/// The stored messages of the group's stream in `range` (the envelopes as published) that
/// it still holds.
pub(super) async fn messages(
    shared: &Shared,
    group: &str,
    range: std::ops::Range<u64>,
    limits: StreamLimits,
) -> Result<Vec<(u64, Bytes)>, Error> {
    let what = "cannot read the group's stream";
    let mut stream = stream(shared, group, limits).await?;
    let first = shared
        .timed(what, stream.info())
        .await?
        .state
        .first_sequence;
    let mut found = Vec::new();
    for sequence in range.start.max(first)..range.end {
        match shared.timed(what, stream.get_raw_message(sequence)).await {
            Ok(message) => found.push((sequence, message.payload)),
            Err(e) if e.to_string().contains("no message found") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

/// Reads the group's stream after `after` (`u64::MAX`: no entries, only where it stands).
pub(super) async fn read(
    shared: &Shared,
    group: &str,
    after: u64,
    limits: StreamLimits,
) -> Result<StreamRead, Error> {
    let what = "cannot read the group's stream";
    shared.check_up(what)?;
    let mut stream = stream(shared, group, limits).await?;
    let info = shared.timed(what, stream.info()).await?.clone();
    lock(&shared.epochs).insert(group.to_owned(), epoch(&info));
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut entries = Vec::new();
    if let Some(start) = after.checked_add(1) {
        for sequence in start.max(first)..=last {
            let message = match shared.timed(what, stream.get_raw_message(sequence)).await {
                Ok(message) => message,
                // Aged out or trimmed since the info was read: recovery finds it missing.
                Err(e) if e.to_string().contains("no message found") => continue,
                Err(e) => return Err(e),
            };
            if let Ok(envelope) = decode(&message.payload)
                && let Kind::Group { .. } = envelope.kind
            {
                entries.push((sequence, Bytes::copy_from_slice(envelope.payload)));
            }
        }
    }
    Ok(StreamRead::new(epoch(&info), last, entries))
}
