//! The cluster's presence rosters in Redis. Per presence group, four keys:
//!
//! - `{prefix}:pm:{group}`: a hash, channel id -> the member as JSON;
//! - `{prefix}:pu:{group}`: a hash, user key (`u:USER`, or `c:CHANNEL` for a member without a
//!   user) -> its members (so distinct users are its length);
//! - `{prefix}:pl:{group}`: a sorted set of the channel ids, all scored 0, paged in id order
//!   (`ZRANGEBYLEX`);
//! - `{prefix}:pe:{group}`: a sorted set, channel id -> when its entry expires (ms).
//!
//! Each server writes its joins and leaves as they happen (scripts, so the four keys agree),
//! and rewrites its members with a new expiry every third of the membership TTL. Entries past
//! their expiry (a server that stopped without a goodbye) are swept out by the live servers'
//! refreshes and before every query; the sweeper publishes them as leaves. Every key expires
//! after twice the TTL without a write, so a group nobody is in leaves nothing behind.

use serde_json::Value;

use super::{Shared, millis, now_ms};
use crate::Error;
use crate::broker::Inbox;
use crate::channel::{Member, PresencePage, PresenceStats};

/// Adds members (or rewrites them with a new expiry: a member already there is not counted
/// again); returns the channels that were not there (new, or swept out meanwhile). KEYS: pm, pu, pl, pe. ARGV: key ttl (ms), expiry (ms), then per member: channel,
/// JSON, user key.
const WRITE: &str = r"
local added = {}
for i = 3, #ARGV, 3 do
  if redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[i + 2], 1)
    table.insert(added, ARGV[i])
  end
  redis.call('ZADD', KEYS[3], 0, ARGV[i])
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[i])
end
for k = 1, 4 do redis.call('PEXPIRE', KEYS[k], ARGV[1]) end
return added
";

/// Removes a member. KEYS: pm, pu, pl, pe. ARGV: channel, user key.
const REMOVE: &str = r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
";

/// Removes up to ARGV[2] members whose entry expired by ARGV[1] (ms); returns them (JSON).
/// KEYS: pm, pu, pl, pe.
const SWEEP: &str = r"
local gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, channel in ipairs(gone) do
  local member = redis.call('HGET', KEYS[1], channel)
  if member then
    redis.call('HDEL', KEYS[1], channel)
    local user = cjson.decode(member).user
    local key = 'c:' .. channel
    if type(user) == 'string' then key = 'u:' .. user end
    if redis.call('HINCRBY', KEYS[2], key, -1) <= 0 then redis.call('HDEL', KEYS[2], key) end
    table.insert(out, member)
  end
  redis.call('ZREM', KEYS[3], channel)
  redis.call('ZREM', KEYS[4], channel)
end
return out
";

/// Up to ARGV[2] members from ARGV[1] (`-`, or `(` and the last id of the previous page), in
/// id order (JSON). KEYS: pm, pu, pl, pe.
const PAGE: &str = r"
local ids = redis.call('ZRANGEBYLEX', KEYS[3], ARGV[1], '+', 'LIMIT', 0, ARGV[2])
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[1], unpack(ids))
";

/// Expired members one sweep call removes, at most.
const SWEEP_MAX: usize = 1000;

/// Sweep calls in a row, at most (while each finds `SWEEP_MAX`): 100k members at once.
const SWEEP_CALLS: usize = 100;

/// Members per `WRITE` call of a refresh.
const WRITE_CHUNK: usize = 300;

impl Shared {
    fn presence_keys(&self, group: &str) -> [String; 4] {
        let prefix = &self.config().prefix;
        let group = self.key_group(group);
        ["pm", "pu", "pl", "pe"].map(|kind| format!("{prefix}:{kind}:{group}"))
    }

    fn presence_script(&self, script: &str, group: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(4);
        for key in self.presence_keys(group) {
            cmd.arg(key);
        }
        cmd
    }

    /// The script call that writes `members` of `group` with a fresh expiry.
    pub(super) fn presence_write(
        &self,
        group: &str,
        members: &[(String, String, String)],
    ) -> redis::Cmd {
        let ttl = self.config().membership_ttl;
        let mut cmd = self.presence_script(WRITE, group);
        cmd.arg(millis(ttl * 2)).arg(now_ms() + millis(ttl));
        for (channel, json, user_key) in members {
            cmd.arg(channel).arg(json).arg(user_key);
        }
        cmd
    }

    /// The script call that removes a member of `group`.
    pub(super) fn presence_remove(&self, group: &str, channel: &str, user_key: &str) -> redis::Cmd {
        let mut cmd = self.presence_script(REMOVE, group);
        cmd.arg(channel).arg(user_key);
        cmd
    }

    /// Removes the expired members of `group` and hands them, as leaves, to this server and
    /// the others (they were on servers that stopped answering).
    async fn sweep(&self, inbox: &Inbox, group: &str) -> Result<(), Error> {
        for _ in 0..SWEEP_CALLS {
            let mut cmd = self.presence_script(SWEEP, group);
            cmd.arg(now_ms()).arg(SWEEP_MAX);
            let gone: Vec<String> = self
                .query("cannot sweep the group's presence", &cmd)
                .await?;
            if gone.is_empty() {
                break;
            }
            let changes: Vec<Value> = gone
                .iter()
                .filter_map(|json| serde_json::from_str::<Value>(json).ok())
                .map(|member| serde_json::json!([false, member]))
                .collect();
            let diff = serde_json::json!({ "group": group, "changes": changes }).to_string();
            inbox.deliver_presence(group, diff.as_bytes());
            self.publish_presence_diff(group, diff.as_bytes());
            if gone.len() < SWEEP_MAX {
                break;
            }
        }
        Ok(())
    }

    /// One page of `group`'s roster (expired members swept out first).
    pub(super) async fn presence_page(
        &self,
        inbox: &Inbox,
        group: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<PresencePage, Error> {
        self.sweep(inbox, group).await?;
        let start = match cursor {
            None => "-".to_owned(),
            Some(cursor) => {
                let id: uuid::Uuid = cursor.parse().map_err(|_| {
                    Error::new(
                        crate::ErrorKind::InvalidGroup,
                        format!("`{cursor}` is not a presence cursor (a page's `next`)"),
                    )
                })?;
                format!("({id}")
            }
        };
        let mut cmd = self.presence_script(PAGE, group);
        cmd.arg(start).arg(limit.saturating_add(1));
        let found: Vec<Option<String>> =
            self.query("cannot list the group's presence", &cmd).await?;
        let mut members: Vec<Member> = found
            .iter()
            .flatten()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect();
        let next = if found.len() > limit {
            members.truncate(limit);
            members.last().map(|m| m.channel.to_string())
        } else {
            None
        };
        Ok(PresencePage::new(members, next))
    }

    /// `group`'s counts (expired members swept out first): two `HLEN`s.
    pub(super) async fn presence_stats(
        &self,
        inbox: &Inbox,
        group: &str,
    ) -> Result<PresenceStats, Error> {
        self.sweep(inbox, group).await?;
        let [members, users, ..] = self.presence_keys(group);
        let mut pipe = redis::pipe();
        pipe.cmd("HLEN").arg(members).cmd("HLEN").arg(users);
        let (connections, users): (usize, usize) = self
            .pipeline_query("cannot count the group's presence", &pipe)
            .await?;
        Ok(PresenceStats::new(connections, users))
    }

    /// Rewrites this server's members of every presence group with a new expiry, and sweeps
    /// out the expired members of those groups. Members the rewrite finds missing (swept out
    /// while this server could not refresh them, or lost with Redis's data) are announced to
    /// the other servers as joins again.
    pub(super) async fn refresh_presence(&self, inbox: &Inbox) {
        for (group, members) in inbox.local_presence() {
            let entries: Vec<(String, String, String)> = members
                .iter()
                .filter_map(|member| {
                    let json = serde_json::to_string(member).ok()?;
                    Some((member.channel.to_string(), json, member.user_key()))
                })
                .collect();
            let mut pipe = redis::pipe();
            for chunk in entries.chunks(WRITE_CHUNK) {
                pipe.add_command(self.presence_write(&group, chunk));
            }
            let added: Vec<Vec<String>> =
                match self.pipeline_query("cannot refresh presence", &pipe).await {
                    Ok(added) => added,
                    Err(e) => {
                        tracing::debug!("{e}");
                        return;
                    }
                };
            let added: std::collections::HashSet<String> = added.into_iter().flatten().collect();
            if !added.is_empty() {
                let changes: Vec<Value> = members
                    .iter()
                    .filter(|member| added.contains(&member.channel.to_string()))
                    .map(|member| serde_json::json!([true, member]))
                    .collect();
                for piece in changes.chunks(SWEEP_MAX) {
                    let diff = serde_json::json!({ "group": group, "changes": piece });
                    self.publish_presence_diff(&group, diff.to_string().as_bytes());
                }
            }
            if let Err(e) = self.sweep(inbox, &group).await {
                tracing::debug!("{e}");
            }
        }
    }
}
