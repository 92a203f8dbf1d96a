//! Recoverable groups' streams in JetStream: one stream per group, whose sequence is the
//! message's offset and whose creation time is the epoch (a stream made again, after it was
//! lost, is a new epoch).

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::push::{Ordered, OrderedConfig};
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use bytes::Bytes;

use super::{Shared, lock};
use crate::Error;
use crate::broker::envelope::{Kind, decode};
use crate::broker::{StreamLimits, StreamRead};

/// The group's stream, made if it does not exist.
async fn stream(
    shared: &Shared,
    group: &str,
    limits: StreamLimits,
) -> Result<stream::Stream, Error> {
    let what = "cannot open the group's stream";
    shared.check_up(what)?;
    let jetstream = shared
        .jetstream
        .get()
        .ok_or_else(|| shared.broker_error(what, "the broker has not started yet"))?;
    let config = stream::Config {
        name: shared.stream_name(group),
        subjects: vec![shared.stream_subject(group)],
        max_messages: i64::try_from(limits.max_entries).unwrap_or(i64::MAX),
        max_age: limits.max_age,
        discard: DiscardPolicy::Old,
        storage: StorageType::File,
        ..Default::default()
    };
    let stream = shared
        .timed(what, jetstream.get_or_create_stream(config))
        .await?;
    lock(&shared.streams).insert(group.to_owned());
    Ok(stream)
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

/// Reads the group's stream after `after` (`u64::MAX`: no entries, only where it stands).
pub(super) async fn read(
    shared: &Shared,
    group: &str,
    after: u64,
    limits: StreamLimits,
) -> Result<StreamRead, Error> {
    let what = "cannot read the group's stream";
    let mut stream = stream(shared, group, limits).await?;
    let info = shared.timed(what, stream.info()).await?.clone();
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

/// An ordered consumer of the group's new messages (made before the caller reads the
/// stream, so nothing falls between), and the stream's epoch.
pub(super) async fn consume(
    shared: &Shared,
    group: &str,
    limits: StreamLimits,
) -> Result<(String, Ordered), Error> {
    let what = "cannot follow the group's stream";
    let mut stream = stream(shared, group, limits).await?;
    let epoch = epoch(shared.timed(what, stream.info()).await?);
    let client = shared.client(what)?;
    let consumer = shared
        .timed(
            what,
            stream.create_consumer(OrderedConfig {
                deliver_subject: client.new_inbox(),
                filter_subject: shared.stream_subject(group),
                deliver_policy: DeliverPolicy::New,
                ..Default::default()
            }),
        )
        .await?;
    let messages = shared.timed(what, consumer.messages()).await?;
    Ok((epoch, messages))
}
