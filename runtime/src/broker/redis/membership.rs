//! Cluster-wide membership: for every group a sorted set `{prefix}:members:{group}` of channel
//! ids scored by the time (ms since the Unix epoch) their entry expires. Joins and leaves are
//! written as they happen (in the background, in batches); every live server rewrites its
//! entries every third of the TTL, so a dead server's members drop out of the answers once
//! their expiry passes. Readers count only unexpired entries.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc::UnboundedReceiver;

use super::{MemberOp, Membership, Presence, Shared, UP, millis, now_ms};
use crate::Error;
use crate::broker::Inbox;
use crate::conn::ConnectionId;

/// Commands per pipeline.
const BATCH: usize = 1000;

impl Shared {
    fn members_key(&self, group: &str) -> String {
        format!("{}:members:{}", self.config().prefix, self.key_group(group))
    }

    /// The group a membership key is of.
    fn group_of_members_key(&self, key: &str) -> Option<String> {
        let rest = key.strip_prefix(&format!("{}:members:", self.config().prefix))?;
        if self.is_cluster() {
            super::cluster::untag(rest)
        } else {
            Some(rest.to_owned())
        }
    }
}

pub(super) async fn run(shared: Arc<Shared>, inbox: Inbox, mut ops: UnboundedReceiver<Membership>) {
    let ttl = shared.config().membership_ttl;
    let mut ticker = tokio::time::interval(ttl / 3);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = inbox.closed() => return,
            _ = ticker.tick() => {
                // What was queued before the rewrite is written first: a member that just
                // joined is not taken for one the rewrite found missing.
                write_queued(&shared, &mut ops, None).await;
                refresh(&shared, &inbox).await;
            }
            () = shared.refresh_now.notified() => {
                write_queued(&shared, &mut ops, None).await;
                refresh(&shared, &inbox).await;
            }
            op = ops.recv() => {
                let Some(op) = op else { return };
                write_queued(&shared, &mut ops, Some(op)).await;
            }
        }
    }
}

/// Writes `first` and what is queued behind it (up to a batch), then answers the flushes
/// among them.
async fn write_queued(
    shared: &Shared,
    ops: &mut UnboundedReceiver<Membership>,
    first: Option<Membership>,
) {
    let (mut batch, mut flushes) = (Vec::new(), Vec::new());
    let mut next = first.or_else(|| ops.try_recv().ok());
    while let Some(op) = next.take() {
        match op {
            Membership::Op(op) => batch.push(op),
            Membership::Flush(done) => flushes.push(done),
        }
        if batch.len() < BATCH {
            next = ops.try_recv().ok();
        }
    }
    if !batch.is_empty() {
        write(shared, &batch).await;
    }
    for done in flushes {
        let _ = done.send(());
    }
}

/// Writes joins and leaves. On failure they are dropped: the next refresh after the
/// connection is back rewrites this server's entries from its groups.
async fn write(shared: &Shared, ops: &[MemberOp]) {
    let ttl = shared.config().membership_ttl;
    let expiry = now_ms() + millis(ttl);
    let mut pipe = redis::pipe();
    for op in ops {
        let member = op.channel.as_uuid().to_string();
        match &op.presence {
            Some(Presence::Joined { json, user_key }) => {
                let entry = [(member, json.clone(), user_key.clone())];
                pipe.add_command(shared.presence_write(&op.group, &entry))
                    .ignore();
                continue;
            }
            Some(Presence::Left { user_key }) => {
                pipe.add_command(shared.presence_remove(&op.group, &member, user_key))
                    .ignore();
                continue;
            }
            None => {}
        }
        let key = shared.members_key(&op.group);
        if op.joined {
            pipe.cmd("ZADD").arg(&key).arg(expiry).arg(member).ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(millis(ttl * 2)).ignore();
        } else {
            pipe.cmd("ZREM").arg(&key).arg(member).ignore();
        }
    }
    if let Err(e) = shared
        .pipeline("cannot record group membership", &pipe)
        .await
    {
        tracing::debug!("{e}");
    }
}

/// Rewrites this server's entries with a new expiry, and clears expired ones.
async fn refresh(shared: &Shared, inbox: &Inbox) {
    if shared.state.load(Ordering::Acquire) != UP {
        return;
    }
    let ttl = shared.config().membership_ttl;
    let now = now_ms();
    let expiry = now + millis(ttl);
    let mut pipe = redis::pipe();
    let mut commands = 0;
    for (group, members) in inbox.local_members() {
        let key = shared.members_key(&group);
        for chunk in members.chunks(BATCH) {
            let zadd = pipe.cmd("ZADD").arg(&key);
            for channel in chunk {
                zadd.arg(expiry).arg(channel.as_uuid().to_string());
            }
            zadd.ignore();
        }
        pipe.cmd("PEXPIRE").arg(&key).arg(millis(ttl * 2)).ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now)
            .ignore();
        commands += 3;
        if commands >= BATCH {
            if let Err(e) = shared
                .pipeline("cannot refresh group membership", &pipe)
                .await
            {
                tracing::debug!("{e}");
                return;
            }
            pipe = redis::pipe();
            commands = 0;
        }
    }
    if commands > 0
        && let Err(e) = shared
            .pipeline("cannot refresh group membership", &pipe)
            .await
    {
        tracing::debug!("{e}");
    }
    shared.refresh_presence(inbox).await;
}

/// Escapes the glob characters of `SCAN MATCH`.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Every group with unexpired members on any server, with the member count, sorted.
pub(super) async fn groups(shared: &Shared) -> Result<Vec<(String, usize)>, Error> {
    let what = "cannot list the cluster's groups";
    let timeout = shared.config().timeout;
    let work = async {
        let pattern = format!(
            "{}*",
            escape_glob(&format!("{}:members:", shared.config().prefix))
        );
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        shared.check_up(what)?;
        if let super::cluster::Commands::Cluster(connection) = shared.commands().await? {
            keys = shared
                .scan_cluster(what, &connection, &pattern, BATCH)
                .await?;
            cursor = u64::MAX;
        }
        while cursor != u64::MAX {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(BATCH);
            let (next, found): (u64, Vec<String>) = shared.query(what, &scan).await?;
            keys.extend(found);
            cursor = if next == 0 { u64::MAX } else { next };
        }
        keys.sort();
        keys.dedup();
        let now = now_ms();
        let mut counts: Vec<usize> = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("ZCOUNT").arg(key).arg(now).arg("+inf");
            }
            counts.extend(shared.pipeline_query::<Vec<usize>>(what, &pipe).await?);
        }
        Ok(keys
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .filter_map(|(key, n)| Some((shared.group_of_members_key(key)?, n)))
            .collect())
    };
    tokio::time::timeout(timeout * 4, work)
        .await
        .unwrap_or_else(|_| {
            Err(shared.broker_error(what, format!("no answer within {:?}", timeout * 4)))
        })
}

/// The unexpired members of `group` on every server.
pub(super) async fn members(shared: &Shared, group: &str) -> Result<Vec<ConnectionId>, Error> {
    let mut range = redis::cmd("ZRANGEBYSCORE");
    range
        .arg(shared.members_key(group))
        .arg(now_ms())
        .arg("+inf");
    let ids: Vec<String> = shared
        .query("cannot list the group's members in the cluster", &range)
        .await?;
    Ok(ids
        .iter()
        .filter_map(|id| id.parse().ok())
        .map(ConnectionId::from_uuid)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::escape_glob;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(escape_glob("switchboard:members:"), "switchboard:members:");
    }
}
