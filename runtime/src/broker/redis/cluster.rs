//! Redis Cluster: the broker's commands and subscriptions spread over the shards.
//!
//! - Every key and channel of one group carries the group as its hash tag
//!   (`{prefix}:s:{GROUP}`, `{prefix}:g:{GROUP}`, with `{`, `}` and `%` escaped in the name),
//!   so a group's keys are in one slot (its scripts run there) and its channel hashes to the
//!   same shard.
//! - Group messages use sharded pub/sub (`SPUBLISH` / `SSUBSCRIBE`, Redis 7): a message goes
//!   to the shard that owns the group's slot only, instead of being broadcast to every node
//!   as `PUBLISH` is, so pub/sub scales with the shards. `send_to` and cluster events, which
//!   every server listens to, stay on classic channels.
//! - Pipelines are split by slot (a cluster pipeline runs on one node) and the parts run side
//!   by side: a shard that is down fails its own part only.
//! - A probe asks every shard's primary for a `PING` (every half timeout): a shard that does
//!   not answer is reported down (`cluster.down` with `shard`), publishes to its groups fail
//!   at once, and when it answers again its groups are subscribed again and `cluster.up`
//!   says so. Groups on the other shards keep working throughout.
//! - When a slot moves to another shard (resharding), Redis unsubscribes its channels'
//!   subscribers; the subscriber subscribes those with members here again, which reaches the
//!   new owner (the client follows `MOVED`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::{Control, DOWN, Shared, UP, lock};
use crate::Error;
use crate::broker::Inbox;
use crate::broker::common::{report_down, report_up};
use crate::broker::envelope::dispatch;

/// Slots in a Redis Cluster.
const SLOTS: u16 = 16384;

/// The slot of a key or shard channel: CRC16 (XMODEM) of its hash tag (the part between the
/// first `{` and the next `}`, if not empty) or of the whole key, modulo 16384.
pub(super) fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % SLOTS
}

/// A group name as a hash tag: `{name}` with `%`, `{` and `}` escaped (so the tag is the
/// whole name, and never empty).
pub(super) fn tag(group: &str) -> String {
    let mut out = String::with_capacity(group.len() + 2);
    out.push('{');
    for c in group.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out.push('}');
    out
}

/// The group a tag names (`None`: not a tag of [`tag`]'s making).
pub(super) fn untag(tagged: &str) -> Option<String> {
    let inner = tagged.strip_prefix('{')?.strip_suffix('}')?;
    let mut out = String::with_capacity(inner.len());
    let mut rest = inner;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3)?;
        out.push(match code {
            "25" => '%',
            "7B" => '{',
            "7D" => '}',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The connection commands go through: one Redis, or a cluster's.
#[derive(Clone)]
pub(super) enum Commands {
    Single(redis::aio::ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Commands::Single(c) => c.req_packed_command(cmd),
            Commands::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Commands::Single(c) => c.req_packed_commands(cmd, offset, count),
            Commands::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Single(c) => c.get_db(),
            Commands::Cluster(c) => c.get_db(),
        }
    }
}

/// The slot a command's key (or shard channel) is in: the first argument after the name,
/// or after the script and the key count for `EVAL`. `None`: a command without a key.
fn command_slot(cmd: &redis::Cmd) -> Option<u16> {
    let mut args = cmd.args_iter().filter_map(|arg| match arg {
        redis::Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    let name = args.next()?.to_ascii_uppercase();
    match name.as_slice() {
        // (The redis crate routes a classic `PUBLISH` by its channel's slot too.)
        b"PING" | b"SCAN" | b"CLUSTER" => None,
        b"EVAL" | b"EVALSHA" => {
            let _script = args.next()?;
            let keys = args.next()?;
            (keys != b"0").then(|| args.next().map(slot))?
        }
        _ => args.next().map(slot),
    }
}

/// One slot's part of a pipeline: the indices of its commands in the whole, and what they
/// answered (or why they did not).
pub(super) type Part = (Vec<usize>, Result<Vec<Value>, Error>);

impl Shared {
    /// Runs `pipe` on a cluster: split by slot, the parts side by side, each in order. A part
    /// whose shard is known to be down fails at once.
    pub(super) async fn run_split(
        &self,
        what: &str,
        connection: &ClusterConnection,
        pipe: &redis::Pipeline,
    ) -> Vec<Part> {
        let mut parts: Vec<(Option<u16>, redis::Pipeline, Vec<usize>)> = Vec::new();
        let mut by_slot: HashMap<Option<u16>, usize> = HashMap::new();
        for (i, cmd) in pipe.cmd_iter().enumerate() {
            let slot = command_slot(cmd);
            let at = *by_slot.entry(slot).or_insert_with(|| {
                parts.push((slot, redis::pipe(), Vec::new()));
                parts.len() - 1
            });
            parts[at].1.add_command(cmd.clone());
            parts[at].2.push(i);
        }
        let runs = parts.into_iter().map(|(slot, part, indices)| {
            let mut connection = connection.clone();
            async move {
                if let Some(shard) = slot.and_then(|slot| self.down_shard(slot)) {
                    let error = self.broker_error(
                        what,
                        format!("the Redis shard {shard} that holds this group is unreachable"),
                    );
                    return (indices, Err(error));
                }
                let answer = self
                    .timed(what, part.query_async::<Vec<Value>>(&mut connection))
                    .await;
                (indices, answer)
            }
        });
        futures_util::future::join_all(runs).await
    }

    /// Fails at once for a command whose shard is known to be down (a cluster's other
    /// shards keep working).
    pub(super) fn check_shard(&self, what: &str, cmd: &redis::Cmd) -> Result<(), Error> {
        match command_slot(cmd).and_then(|slot| self.down_shard(slot)) {
            Some(shard) => Err(self.broker_error(
                what,
                format!("the Redis shard {shard} that holds this group is unreachable"),
            )),
            None => Ok(()),
        }
    }

    /// The shard (`host:port`) that holds `slot`, if it is known to be down.
    fn down_shard(&self, slot: u16) -> Option<String> {
        let shards = lock(&self.shards);
        let owner = shards.owner(slot)?;
        shards.down.contains_key(owner).then(|| owner.to_owned())
    }

    /// The primaries of the cluster (`host:port`), from `CLUSTER SLOTS`.
    pub(super) async fn primaries(
        &self,
        connection: &mut ClusterConnection,
    ) -> Result<Vec<String>, Error> {
        let map = self.slot_map(connection).await?;
        let primaries: BTreeSet<String> = map.iter().map(|(_, _, addr)| addr.clone()).collect();
        Ok(primaries.into_iter().collect())
    }

    /// Slot ranges and their primaries, from `CLUSTER SLOTS`.
    async fn slot_map(
        &self,
        connection: &mut ClusterConnection,
    ) -> Result<Vec<(u16, u16, String)>, Error> {
        let what = "cannot read the cluster's slots";
        let value = self
            .timed(
                what,
                connection.route_command(
                    redis::cmd("CLUSTER").arg("SLOTS").to_owned(),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                ),
            )
            .await?;
        let Value::Array(ranges) = value else {
            return Err(self.broker_error(what, "an answer that is not a list"));
        };
        let mut map = Vec::new();
        for range in ranges {
            let Value::Array(fields) = range else {
                continue;
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                continue;
            };
            let host = match primary.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => continue,
            };
            let Some(Value::Int(port)) = primary.get(1) else {
                continue;
            };
            let (Ok(start), Ok(end)) = (u16::try_from(*start), u16::try_from(*end)) else {
                continue;
            };
            map.push((start, end, format!("{host}:{port}")));
        }
        Ok(map)
    }

    /// Runs `SCAN` with `pattern` on every primary; the keys found.
    pub(super) async fn scan_cluster(
        &self,
        what: &str,
        connection: &ClusterConnection,
        pattern: &str,
        count: usize,
    ) -> Result<Vec<String>, Error> {
        let mut connection = connection.clone();
        let mut keys = Vec::new();
        for primary in self.primaries(&mut connection).await? {
            let Some((host, port)) = primary.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse() else { continue };
            let route = || {
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.to_owned(),
                    port,
                })
            };
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(count);
                let value = self
                    .timed(what, connection.route_command(scan, route()))
                    .await?;
                let (next, found): (u64, Vec<String>) =
                    redis::FromRedisValue::from_redis_value(value)
                        .map_err(|e| self.broker_error(what, e))?;
                keys.extend(found);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(keys)
    }
}

/// Which shard holds which slots, and the shards that do not answer.
#[derive(Debug, Default)]
pub(super) struct Shards {
    /// Slot ranges (first, last) and their primary, sorted.
    ranges: Vec<(u16, u16, String)>,
    /// Shards that did not answer the last probe: since when, and why.
    down: BTreeMap<String, (Instant, String)>,
}

impl Shards {
    fn owner(&self, slot: u16) -> Option<&str> {
        self.ranges
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, owner)| owner.as_str())
    }
}

/// The subscriber for a cluster: one cluster connection (RESP3, pushes), the shard channels
/// of the groups with members here, the classic channels every server listens to, and the
/// probe of every shard.
pub(super) async fn run(
    shared: Arc<Shared>,
    inbox: Inbox,
    mut control: UnboundedReceiver<Control>,
) {
    let config = shared.config().clone();
    let mut backoff = config.backoff_min;
    let mut down_since: Option<Instant> = None;
    loop {
        let (pushes_tx, mut pushes) = unbounded_channel::<PushInfo>();
        let client = shared.cluster_client(Some(pushes_tx));
        let connected = match client {
            Ok(client) => tokio::select! {
                () = inbox.closed() => return,
                connected = tokio::time::timeout(config.timeout, client.get_async_connection()) => {
                    match connected {
                        Ok(Ok(connection)) => Ok(connection),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no connection within {:?}", config.timeout)),
                    }
                }
            },
            Err(e) => Err(e.to_string()),
        };
        let error = match connected {
            Ok(mut connection) => {
                match serve(
                    &shared,
                    &inbox,
                    &mut control,
                    &mut connection,
                    &mut pushes,
                    &mut down_since,
                )
                .await
                {
                    None => return,
                    Some(error) => {
                        backoff = config.backoff_min;
                        error
                    }
                }
            }
            Err(error) => error,
        };
        let error = shared.scrub(&error);
        lock(&shared.subscribed).clear();
        *lock(&shared.last_error) = error.clone();
        if shared.state.swap(DOWN, Ordering::AcqRel) != DOWN {
            shared.counters.outages.fetch_add(1, Ordering::Relaxed);
            down_since = Some(Instant::now());
            tracing::warn!(
                url = %shared.url,
                "Redis Cluster unreachable: groups reach this server's members only until it is back: {error}"
            );
            report_down(&inbox, shared.node, &error, None);
        }
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

/// Subscribes what this server needs, then serves until every shard is unreachable (the
/// error) or the app is gone (`None`).
async fn serve(
    shared: &Shared,
    inbox: &Inbox,
    control: &mut UnboundedReceiver<Control>,
    connection: &mut ClusterConnection,
    pushes: &mut UnboundedReceiver<PushInfo>,
    down_since: &mut Option<Instant>,
) -> Option<String> {
    let timeout = shared.config().timeout;
    let classic = [shared.direct_channel(), shared.events_channel()];
    if let Err(e) = confirm(timeout, connection.subscribe(&classic)).await {
        return Some(e);
    }
    // Every group with members here (those refused while down too).
    let groups: Vec<String> = inbox.local_members().into_iter().map(|(g, _)| g).collect();
    for group in &groups {
        if let Err(e) = ssubscribe(shared, connection, group).await {
            return Some(e);
        }
    }
    if let Err(e) = probe(shared, inbox, connection).await {
        return Some(e);
    }
    if shared.state.swap(UP, Ordering::AcqRel) == DOWN {
        let down_ms = down_since
            .take()
            .map_or(0, |since| since.elapsed().as_millis());
        let resubscribed = lock(&shared.subscribed).len();
        tracing::warn!(url = %shared.url, down_ms, resubscribed, "Redis Cluster connection back");
        report_up(inbox, shared.node, down_ms, resubscribed, None);
        shared.refresh_now.notify_one();
    }
    let mut tick = tokio::time::interval((timeout / 2).max(Duration::from_millis(20)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Groups this server asked to leave: their unsubscribe confirmations are expected.
    let mut leaving: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::select! {
            () = inbox.closed() => return None,
            _ = tick.tick() => {
                if let Err(e) = probe(shared, inbox, connection).await {
                    return Some(e);
                }
            }
            push = pushes.recv() => {
                let Some(push) = push else { return Some("the connection was closed".to_owned()) };
                on_push(shared, inbox, connection, push, &mut leaving).await;
            }
            request = control.recv() => {
                let request = request?;
                match request {
                    Control::Subscribe(group, done) => {
                        let result = ssubscribe(shared, connection, &group).await;
                        let _ = done.send(result);
                    }
                    Control::Unsubscribe(group) => {
                        if inbox.has_group(&group) {
                            continue;
                        }
                        leaving.insert(group.clone());
                        let _ = confirm(timeout, connection.sunsubscribe(shared.group_channel(&group))).await;
                        lock(&shared.subscribed).remove(&group);
                    }
                }
            }
        }
    }
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

/// Subscribes to a group's shard channel (on the shard that owns its slot).
async fn ssubscribe(
    shared: &Shared,
    connection: &mut ClusterConnection,
    group: &str,
) -> Result<(), String> {
    let timeout = shared.config().timeout;
    if let Some(shard) = shared.down_shard(slot(shared.group_channel(group).as_bytes())) {
        return Err(format!(
            "the Redis shard {shard} that holds this group is unreachable"
        ));
    }
    confirm(timeout, connection.ssubscribe(shared.group_channel(group))).await?;
    lock(&shared.subscribed).insert(group.to_owned());
    Ok(())
}

/// One push from the cluster: a message, or a shard unsubscribing this server (its slot
/// moved, or the shard restarted).
async fn on_push(
    shared: &Shared,
    inbox: &Inbox,
    connection: &mut ClusterConnection,
    push: PushInfo,
    leaving: &mut BTreeSet<String>,
) {
    let channel = |value: Option<&Value>| match value {
        Some(Value::BulkString(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Some(Value::SimpleString(text)) => Some(text.clone()),
        _ => None,
    };
    match push.kind {
        PushKind::Message | PushKind::SMessage => {
            let (Some(name), Some(Value::BulkString(payload))) =
                (channel(push.data.first()), push.data.get(1))
            else {
                shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let group = shared.group_of_channel(&name);
            let dispatched = dispatch(inbox, shared.node, group.as_deref(), payload);
            shared.counters.count(dispatched, &name);
        }
        PushKind::SUnsubscribe => {
            let Some(group) =
                channel(push.data.first()).and_then(|name| shared.group_of_channel(&name))
            else {
                return;
            };
            if leaving.remove(&group) {
                return;
            }
            // Not asked for: the slot moved to another shard. Follow it.
            if inbox.has_group(&group) {
                tracing::info!(group, "a group's slot moved: subscribing on its new shard");
                lock(&shared.subscribed).remove(&group);
                if let Err(e) = ssubscribe(shared, connection, &group).await {
                    tracing::warn!(group, "cannot subscribe to the group on its new shard: {e}");
                }
            }
        }
        _ => {}
    }
}

/// Asks every shard's primary for a `PING`: reports the shards that stopped answering, and
/// the ones that answer again (after subscribing their groups again). An `Err` when no
/// shard answers.
async fn probe(
    shared: &Shared,
    inbox: &Inbox,
    connection: &mut ClusterConnection,
) -> Result<(), String> {
    let timeout = shared.config().timeout;
    if let Ok(map) = shared.slot_map(connection).await
        && !map.is_empty()
    {
        lock(&shared.shards).ranges = map;
    }
    let primaries: BTreeSet<String> = lock(&shared.shards)
        .ranges
        .iter()
        .map(|(_, _, addr)| addr.clone())
        .collect();
    if primaries.is_empty() {
        return Err("no shard of the cluster answers".to_owned());
    }
    let pings = primaries.iter().map(|primary| {
        let mut connection = connection.clone();
        async move {
            let (host, port) = primary.rsplit_once(':')?;
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.to_owned(),
                port: port.parse().ok()?,
            });
            let answer =
                tokio::time::timeout(timeout, connection.route_command(redis::cmd("PING"), route))
                    .await;
            match answer {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some((primary.clone(), e.to_string())),
                Err(_) => Some((primary.clone(), format!("no answer within {timeout:?}"))),
            }
        }
    });
    let failed: BTreeMap<String, String> = futures_util::future::join_all(pings)
        .await
        .into_iter()
        .flatten()
        .collect();
    if failed.len() == primaries.len() {
        let (shard, error) = failed.into_iter().next().unwrap_or_default();
        return Err(format!(
            "no shard of the cluster answers ({shard}: {error})"
        ));
    }
    let (went_down, came_back) = {
        let mut shards = lock(&shared.shards);
        let went_down: Vec<(String, String)> = failed
            .iter()
            .filter(|(shard, _)| !shards.down.contains_key(*shard))
            .map(|(s, e)| (s.clone(), e.clone()))
            .collect();
        let came_back: Vec<(String, Instant)> = shards
            .down
            .iter()
            .filter(|(shard, _)| !failed.contains_key(*shard))
            .map(|(s, (since, _))| (s.clone(), *since))
            .collect();
        for (shard, error) in &went_down {
            shards
                .down
                .insert(shard.clone(), (Instant::now(), error.clone()));
        }
        for (shard, _) in &came_back {
            shards.down.remove(shard);
        }
        (went_down, came_back)
    };
    for (shard, error) in went_down {
        let error = shared.scrub(&error);
        let groups: Vec<String> = local_groups_on(shared, inbox, &shard);
        for group in &groups {
            lock(&shared.subscribed).remove(group);
        }
        tracing::warn!(
            url = %shared.url,
            shard,
            groups = groups.len(),
            "a Redis shard is unreachable: its groups reach this server's members only until it is back: {error}"
        );
        report_down(
            inbox,
            shared.node,
            &format!("the Redis shard {shard} is unreachable: {error}"),
            Some(&shard),
        );
    }
    for (shard, since) in came_back {
        let mut resubscribed = 0;
        for group in local_groups_on(shared, inbox, &shard) {
            match ssubscribe(shared, connection, &group).await {
                Ok(()) => resubscribed += 1,
                Err(e) => tracing::warn!(group, "cannot subscribe to the group again: {e}"),
            }
        }
        let down_ms = since.elapsed().as_millis();
        tracing::warn!(url = %shared.url, shard, down_ms, resubscribed, "a Redis shard is back");
        report_up(inbox, shared.node, down_ms, resubscribed, Some(&shard));
    }
    Ok(())
}

/// The groups with members here whose slot `shard` holds.
fn local_groups_on(shared: &Shared, inbox: &Inbox, shard: &str) -> Vec<String> {
    let shards = lock(&shared.shards);
    inbox
        .local_members()
        .into_iter()
        .map(|(group, _)| group)
        .filter(|group| shards.owner(slot(shared.group_channel(group).as_bytes())) == Some(shard))
        .collect()
}

impl Shared {
    /// A cluster client for the nodes of the URL (RESP3 with `pushes`, for the subscriber).
    pub(super) fn cluster_client(
        &self,
        pushes: Option<tokio::sync::mpsc::UnboundedSender<PushInfo>>,
    ) -> redis::RedisResult<redis::cluster::ClusterClient> {
        let config = self.config();
        let (nodes, root_ca, client_cert) = {
            let connect = lock(&self.connect);
            (
                connect.cluster.clone().unwrap_or_default(),
                connect.root_ca.clone(),
                connect.client_cert.clone(),
            )
        };
        let mut builder = ClusterClientBuilder::new(nodes)
            .connection_timeout(config.timeout)
            .response_timeout(config.timeout)
            .retries(1)
            .min_retry_wait(u64::try_from(config.backoff_min.as_millis()).unwrap_or(100))
            .max_retry_wait(u64::try_from(config.backoff_max.as_millis()).unwrap_or(5000));
        if root_ca.is_some() || client_cert.is_some() {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: client_cert.map(|(client_cert, client_key)| redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }),
                root_cert: root_ca,
            });
        }
        if let Some(pushes) = pushes {
            builder = builder
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(pushes);
        }
        builder.build()
    }

    /// The group a (classic or shard) channel name belongs to, if it is a group's.
    pub(super) fn group_of_channel(&self, channel: &str) -> Option<String> {
        let rest = channel.strip_prefix(&format!("{}:g:", self.config().prefix))?;
        if self.is_cluster() {
            untag(rest)
        } else {
            Some(rest.to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_cluster_spec() {
        // The values `CLUSTER KEYSLOT` gives.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"123456789"), 0x31C3 % SLOTS);
        // A hash tag: only what is between the braces counts.
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"a:{room}"), slot(b"b:{room}:x"));
        // An empty tag is no tag.
        assert_eq!(slot(b"{}x"), slot(b"{}x"));
        assert_ne!(slot(b"{}x"), slot(b""));
    }

    #[test]
    fn group_tags_are_one_whole_tag_and_round_trip() {
        for group in ["lobby", "a}b", "{x}", "%7B", "é"] {
            let tagged = tag(group);
            assert_eq!(untag(&tagged).as_deref(), Some(group), "{tagged}");
            // The whole name is the tag: every key of the group is in one slot.
            assert_eq!(
                slot(format!("p:s:{tagged}").as_bytes()),
                slot(format!("p:pm:{tagged}").as_bytes())
            );
        }
        assert_ne!(tag("a}b"), tag("a"));
        assert_eq!(untag("{bad%zz}"), None);
        assert_eq!(untag("plain"), None);
    }

    #[test]
    fn commands_are_routed_by_their_key() {
        let mut eval = redis::cmd("EVAL");
        eval.arg("return 1")
            .arg(2)
            .arg("p:s:{room}")
            .arg("p:sm:{room}");
        assert_eq!(command_slot(&eval), Some(slot(b"room")));
        let mut zadd = redis::cmd("ZADD");
        zadd.arg("p:members:{room}").arg(1).arg("x");
        assert_eq!(command_slot(&zadd), Some(slot(b"room")));
        assert_eq!(
            command_slot(redis::cmd("PUBLISH").arg("p:events").arg("x")),
            Some(slot(b"p:events"))
        );
        assert_eq!(command_slot(&redis::cmd("PING")), None);
        let mut spublish = redis::cmd("SPUBLISH");
        spublish.arg("p:g:{room}").arg("x");
        assert_eq!(command_slot(&spublish), Some(slot(b"room")));
    }
}
