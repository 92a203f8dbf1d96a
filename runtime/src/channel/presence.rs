//! Presence: who is in a group, and who joined or left.
//!
//! The groups named in [`Builder::presence_groups`](crate::Builder::presence_groups) keep a
//! roster: each member's channel id, the user it says it is and a small JSON value
//! ([`MemberInfo`], given when it joins, bounded by
//! [`Builder::max_member_info`](crate::Builder::max_member_info)), and when it joined. The
//! roster answers [`ChannelBox::presence`](crate::ChannelBox::presence) one page at a time and
//! [`ChannelBox::presence_stats`](crate::ChannelBox::presence_stats) at constant cost.
//!
//! Joins and leaves (every way a member goes: it leaves, its connection ends, it expires, the
//! groups are flushed) are collected for a short window
//! ([`Builder::presence_window`](crate::Builder::presence_window)); at its end, each change is
//! emitted as an event ([`names::PRESENCE_JOIN`],
//! [`names::PRESENCE_LEAVE`]), in order, and the groups
//! named in [`Builder::presence_diffs`](crate::Builder::presence_diffs) get one message with
//! the window's changes:
//!
//! ```json
//! {"presence":{"group":"chat_lobby","joins":[MEMBER,..],"leaves":[MEMBER,..]}}
//! ```
//!
//! where a `MEMBER` is `{"channel":"<uuid>","user":"alice"|null,"data":..,"joined_at":MS}`
//! (milliseconds since the Unix epoch). A member that joined and left within one window is in
//! neither list; one that left and joined again is in both: apply the leaves, then the joins. A window with more changes than
//! [`Builder::presence_max_diff`](crate::Builder::presence_max_diff) sends the counts instead,
//! and the client fetches the roster again if it shows it:
//!
//! ```json
//! {"presence":{"group":"chat_lobby","reset":true,"connections":5012,"users":4980}}
//! ```

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use tokio_util::sync::CancellationToken;

use super::Patterns;
use crate::app::WeakApp;
use crate::conn::{ConnectionId, lock};
use crate::event::names;
use crate::{App, Error, ErrorKind};

/// What a member of a presence group tells the others about itself: a user id (several
/// connections of one user count as one user) and a small JSON value (a name, an avatar...).
/// Without it a member is its connection id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberInfo {
    user: Option<String>,
    data: Value,
}

impl MemberInfo {
    /// A member that is `user` (an id of the app's: several connections of one user count as
    /// one distinct user).
    pub fn user(user: impl Into<String>) -> Self {
        MemberInfo {
            user: Some(user.into()),
            data: Value::Null,
        }
    }

    /// With a JSON value the others see (bounded in size: see
    /// [`Builder::max_member_info`](crate::Builder::max_member_info)).
    pub fn with_data(mut self, data: impl Serialize) -> Result<Self, Error> {
        self.data = serde_json::to_value(data).map_err(Error::serialize)?;
        Ok(self)
    }

    /// Its encoded size, checked against `max` bytes, and its nesting (at most
    /// [`MAX_DEPTH`] levels, so every server and Redis's scripts read it back).
    pub(crate) fn check(&self, max: usize) -> Result<(), Error> {
        if depth(&self.data) > MAX_DEPTH {
            return Err(Error::new(
                ErrorKind::InvalidGroup,
                format!("member info is nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        let size = self.user.as_ref().map_or(0, String::len)
            + serde_json::to_string(&self.data).map_or(usize::MAX, |s| s.len());
        if size > max {
            return Err(Error::new(
                ErrorKind::InvalidGroup,
                format!(
                    "member info is {size} bytes, more than the {max} a member may carry \
                     (Builder::max_member_info)"
                ),
            ));
        }
        Ok(())
    }
}

/// How deep member info may nest (arrays and objects).
pub const MAX_DEPTH: usize = 32;

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// One member of a presence group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Member {
    /// Its channel (connection) id.
    pub channel: ConnectionId,
    /// The user it said it is, if any.
    pub user: Option<String>,
    /// Its JSON value (`null` when none was given).
    pub data: Value,
    /// When it joined, in milliseconds since the Unix epoch.
    pub joined_at: u64,
}

impl Member {
    pub(crate) fn new(channel: ConnectionId, info: Option<&MemberInfo>) -> Member {
        let info = info.cloned().unwrap_or_default();
        Member {
            channel,
            user: info.user,
            data: info.data,
            joined_at: now_ms(),
        }
    }

    /// What distinct users are counted by: the user id, or the channel for a member without.
    pub(crate) fn user_key(&self) -> String {
        match &self.user {
            Some(user) => format!("u:{user}"),
            None => format!("c:{}", self.channel),
        }
    }
}

/// One page of a group's roster ([`ChannelBox::presence`](crate::ChannelBox::presence)).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PresencePage {
    /// The members of this page.
    pub members: Vec<Member>,
    /// Where the next page starts (hand it to
    /// [`ChannelBox::presence_after`](crate::ChannelBox::presence_after)), or `None` when this
    /// is the last.
    pub next: Option<String>,
}

impl PresencePage {
    pub(crate) fn new(members: Vec<Member>, next: Option<String>) -> Self {
        PresencePage { members, next }
    }
}

/// How many are in a group ([`ChannelBox::presence_stats`](crate::ChannelBox::presence_stats)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PresenceStats {
    /// Members (connections).
    pub connections: usize,
    /// Distinct users: members with the same user id count once, a member without one counts
    /// as its own user.
    pub users: usize,
}

impl PresenceStats {
    pub(crate) fn new(connections: usize, users: usize) -> Self {
        PresenceStats { connections, users }
    }
}

/// Payload of [`names::PRESENCE_JOIN`] (a typed event: `#[on(PresenceJoined)]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PresenceJoined {
    /// The group.
    pub group: String,
    /// Who joined.
    pub member: Member,
}

/// Payload of [`names::PRESENCE_LEAVE`] (a typed event: `#[on(PresenceLeft)]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PresenceLeft {
    /// The group.
    pub group: String,
    /// Who left.
    pub member: Member,
}

impl crate::Event for PresenceJoined {
    const NAME: &'static str = names::PRESENCE_JOIN;
}

impl crate::Event for PresenceLeft {
    const NAME: &'static str = names::PRESENCE_LEAVE;
}

/// The changes of one group in one window, as they travel between servers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(crate) struct Diff {
    pub(crate) group: String,
    /// Every change in order: `true` for a join.
    pub(crate) changes: Vec<(bool, Member)>,
    /// This server's counts right after the last change (for a reset message in one process).
    #[serde(skip)]
    pub(crate) stats: PresenceStats,
}

/// What a window's changes come to, for the members.
#[derive(Debug, PartialEq)]
pub(crate) enum Net {
    /// Every member that joined also left.
    Nothing,
    /// `{"presence":{"group","joins","leaves"}}`.
    Diff(Value),
    /// More changes than a diff may carry.
    TooMany,
}

impl Diff {
    /// The window's net joins and leaves (a member that joined and left is in neither), as
    /// the members' message, unless there are more than `max`.
    pub(crate) fn net(&self, max: usize) -> Net {
        let mut joined: HashMap<ConnectionId, usize> = HashMap::new();
        let mut joins: Vec<Option<&Member>> = Vec::new();
        let mut leaves: Vec<&Member> = Vec::new();
        for (join, member) in &self.changes {
            if *join {
                joined.insert(member.channel, joins.len());
                joins.push(Some(member));
            } else if let Some(at) = joined.remove(&member.channel) {
                joins[at] = None;
            } else {
                leaves.push(member);
            }
        }
        let joins: Vec<&Member> = joins.into_iter().flatten().collect();
        match joins.len() + leaves.len() {
            0 => Net::Nothing,
            n if n > max => Net::TooMany,
            _ => Net::Diff(serde_json::json!({ "presence": {
                "group": self.group, "joins": joins, "leaves": leaves,
            }})),
        }
    }
}

/// Diffs from other servers that may wait for the dispatcher.
const MAX_REMOTE: usize = 10_000;

/// The most changes one diff carries between servers (a larger window goes in several).
const CHANGES_PER_PUBLISH: usize = 1000;

/// Settings of presence.
#[derive(Debug, Clone)]
pub(crate) struct PresenceConfig {
    /// The groups that keep a roster.
    pub(crate) tracked: Patterns,
    /// The groups whose members get the diffs.
    pub(crate) pushed: Patterns,
    pub(crate) window: Duration,
    pub(crate) max_diff: usize,
    pub(crate) page: usize,
    pub(crate) max_info: usize,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            tracked: Patterns::default(),
            pushed: Patterns::default(),
            window: Duration::from_millis(200),
            max_diff: 100,
            page: 1000,
            max_info: 1024,
        }
    }
}

/// One group's roster.
#[derive(Debug, Default)]
struct Roster {
    members: BTreeMap<ConnectionId, Member>,
    /// Members per distinct user key.
    users: HashMap<String, usize>,
}

impl Roster {
    fn stats(&self) -> PresenceStats {
        PresenceStats::new(self.members.len(), self.users.len())
    }
}

/// The rosters of this server's presence groups, and the changes waiting for the window's end.
#[derive(Debug, Default)]
pub(crate) struct Presences {
    pub(crate) config: PresenceConfig,
    rosters: Mutex<HashMap<Arc<str>, Roster>>,
    pending: Mutex<Vec<(Arc<str>, bool, Member)>>,
    /// Diffs from other servers, waiting for the dispatcher.
    remote: Mutex<Vec<Diff>>,
    /// Wakes the dispatcher when changes are waiting.
    pub(crate) changed: tokio::sync::Notify,
    /// Whether a dispatcher runs (the app is served): changes are kept for it only then.
    dispatching: std::sync::atomic::AtomicBool,
}

impl Presences {
    pub(crate) fn new(config: PresenceConfig) -> Self {
        Presences {
            config,
            ..Presences::default()
        }
    }

    /// Whether `group` keeps a roster.
    pub(crate) fn tracks(&self, group: &str) -> bool {
        !self.config.tracked.is_empty() && self.config.tracked.matches(group)
    }

    /// Whether the members of `group` get its diffs.
    pub(crate) fn pushes(&self, group: &str) -> bool {
        !self.config.pushed.is_empty() && self.config.pushed.matches(group)
    }

    /// Records a join (the caller checked `tracks`); returns the member.
    pub(crate) fn join(&self, group: &Arc<str>, member: Member) -> Member {
        let mut rosters = lock(&self.rosters);
        let roster = rosters.entry(group.clone()).or_default();
        *roster.users.entry(member.user_key()).or_default() += 1;
        roster.members.insert(member.channel, member.clone());
        // Recorded under the rosters' lock: a window's diff and its counts agree.
        self.record(group, true, member.clone());
        member
    }

    /// Records a leave; returns the member, if it was one.
    pub(crate) fn leave(&self, group: &str, channel: ConnectionId) -> Option<Member> {
        let mut rosters = lock(&self.rosters);
        let name = rosters.get_key_value(group)?.0.clone();
        let roster = rosters.get_mut(group)?;
        let member = roster.members.remove(&channel)?;
        if let Entry::Occupied(mut users) = roster.users.entry(member.user_key()) {
            *users.get_mut() -= 1;
            if *users.get() == 0 {
                users.remove();
            }
        }
        if roster.members.is_empty() {
            rosters.remove(group);
        }
        self.record(&name, false, member.clone());
        Some(member)
    }

    fn record(&self, group: &Arc<str>, join: bool, member: Member) {
        if !self.dispatching.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        lock(&self.pending).push((group.clone(), join, member));
        self.changed.notify_one();
    }

    fn has_pending(&self) -> bool {
        !lock(&self.pending).is_empty()
    }

    /// A diff from another server, for the dispatcher. Past [`MAX_REMOTE`] diffs waiting
    /// (a dispatcher stalled by slow listeners), the oldest go, counted in a warning.
    pub(crate) fn received(&self, diff: Diff) {
        let dropped = {
            let mut remote = lock(&self.remote);
            remote.push(diff);
            let over = remote.len().saturating_sub(MAX_REMOTE);
            remote.drain(..over);
            over
        };
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "presence changes from other servers were dropped: the dispatcher is behind \
                 (slow presence listeners?)"
            );
        }
        self.changed.notify_one();
    }

    fn take_remote(&self) -> Vec<Diff> {
        std::mem::take(&mut *lock(&self.remote))
    }

    /// The changes since the last call, by group, each group's in order.
    pub(crate) fn take_diffs(&self) -> Vec<Diff> {
        let rosters = lock(&self.rosters);
        let pending = std::mem::take(&mut *lock(&self.pending));
        let mut diffs: Vec<Diff> = Vec::new();
        let mut at: HashMap<Arc<str>, usize> = HashMap::new();
        for (group, join, member) in pending {
            let index = *at.entry(group.clone()).or_insert_with(|| {
                diffs.push(Diff {
                    group: group.to_string(),
                    changes: Vec::new(),
                    stats: rosters.get(&group).map(Roster::stats).unwrap_or_default(),
                });
                diffs.len() - 1
            });
            diffs[index].changes.push((join, member));
        }
        diffs
    }

    /// This server's roster of `group`: up to `limit` members after `after`.
    pub(crate) fn page(
        &self,
        group: &str,
        after: Option<ConnectionId>,
        limit: usize,
    ) -> PresencePage {
        let rosters = lock(&self.rosters);
        let Some(roster) = rosters.get(group) else {
            return PresencePage {
                members: Vec::new(),
                next: None,
            };
        };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut members: Vec<Member> = roster
            .members
            .range((start, Bound::Unbounded))
            .take(limit.saturating_add(1))
            .map(|(_, member)| member.clone())
            .collect();
        let next = if members.len() > limit {
            members.truncate(limit);
            members.last().map(|m| m.channel.to_string())
        } else {
            None
        };
        PresencePage::new(members, next)
    }

    /// This server's roster entries, by group.
    pub(crate) fn local_members(&self) -> Vec<(String, Vec<Member>)> {
        lock(&self.rosters)
            .iter()
            .map(|(group, roster)| {
                (
                    group.to_string(),
                    roster.members.values().cloned().collect(),
                )
            })
            .collect()
    }

    /// This server's counts for `group`.
    pub(crate) fn stats(&self, group: &str) -> PresenceStats {
        lock(&self.rosters)
            .get(group)
            .map(Roster::stats)
            .unwrap_or_default()
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The dispatcher of one app: at the end of each window, emits this server's changes as
/// events, pushes their diffs to the members here and hands them to the other servers; emits
/// and pushes the other servers' diffs as they come.
pub(crate) async fn dispatch(app: WeakApp, closed: CancellationToken) {
    let Some(presences) = app.upgrade().map(|app| app.groups().presences.clone()) else {
        return;
    };
    let window = presences.config.window;
    presences
        .dispatching
        .store(true, std::sync::atomic::Ordering::Relaxed);
    loop {
        tokio::select! {
            () = closed.cancelled() => return,
            () = presences.changed.notified() => {}
        }
        if presences.has_pending() {
            // Joins and leaves within the window go out together.
            tokio::select! {
                () = closed.cancelled() => return,
                () = tokio::time::sleep(window) => {}
            }
        }
        let Some(app) = app.upgrade() else {
            return;
        };
        let diffs = presences.take_diffs();
        // Handed to the other servers first, so a shutdown's flush finds them all queued.
        publish(&app, &diffs);
        for diff in &diffs {
            apply(&app, diff).await;
        }
        for diff in presences.take_remote() {
            apply(&app, &diff).await;
        }
    }
}

impl App {
    /// Hands the presence changes waiting for the window's end to the other servers now (at
    /// shutdown: this server's members are gone, the others' are not).
    pub(crate) fn flush_presence(&self) {
        publish(self, &self.groups().presences.take_diffs());
    }
}

/// Hands this server's diffs to the other servers, in pieces of at most
/// [`CHANGES_PER_PUBLISH`] changes.
fn publish(app: &App, diffs: &[Diff]) {
    if !app.broker().is_clustered() {
        return;
    }
    for diff in diffs {
        for changes in diff.changes.chunks(CHANGES_PER_PUBLISH) {
            let piece = serde_json::json!({ "group": diff.group, "changes": changes });
            app.broker()
                .publish_presence(&diff.group, piece.to_string().as_bytes());
        }
    }
}

/// Emits a diff's changes in order, and pushes it to the group's members here.
async fn apply(app: &App, diff: &Diff) {
    for (join, member) in &diff.changes {
        let (group, member) = (diff.group.clone(), member.clone());
        if *join {
            if app.bus().has_listeners(names::PRESENCE_JOIN) {
                app.events()
                    .emit_event(PresenceJoined { group, member })
                    .await;
            }
        } else if app.bus().has_listeners(names::PRESENCE_LEAVE) {
            app.events()
                .emit_event(PresenceLeft { group, member })
                .await;
        }
    }
    let presences = &app.groups().presences;
    if !presences.pushes(&diff.group) {
        return;
    }
    let message = match diff.net(presences.config.max_diff) {
        Net::Nothing => return,
        Net::Diff(message) => message,
        Net::TooMany => {
            // In one process, the counts right after the window's last change; in a
            // cluster, the cluster's now.
            let stats = match app.broker().cluster_presence_stats(&diff.group).await {
                Some(Ok(stats)) => stats,
                None => diff.stats,
                // Without the cluster's counts, no reset that would say wrong ones: the next
                // diff or roster fetch brings the members up to date.
                Some(Err(e)) => {
                    tracing::warn!(group = diff.group, "presence counts unavailable: {e}");
                    return;
                }
            };
            serde_json::json!({ "presence": {
                "group": diff.group, "reset": true,
                "connections": stats.connections, "users": stats.users,
            }})
        }
    };
    app.groups().push_local(&diff.group, message.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(user: Option<&str>) -> Member {
        Member::new(ConnectionId::new(), user.map(MemberInfo::user).as_ref())
    }

    #[test]
    fn distinct_users_and_pages() {
        let mut config = PresenceConfig::default();
        config.tracked.add("room*").unwrap();
        let presences = Presences::new(config);
        presences
            .dispatching
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let group: Arc<str> = "room".into();
        let a1 = presences.join(&group, member(Some("alice")));
        presences.join(&group, member(Some("alice")));
        presences.join(&group, member(Some("bob")));
        presences.join(&group, member(None));
        assert_eq!(
            presences.stats("room"),
            PresenceStats {
                connections: 4,
                users: 3
            }
        );
        let first = presences.page("room", None, 3);
        assert_eq!(first.members.len(), 3);
        let after = first.next.as_deref().unwrap().parse().unwrap();
        let second = presences.page("room", Some(after), 3);
        assert_eq!((second.members.len(), second.next), (1, None));
        presences.leave("room", a1.channel).unwrap();
        assert_eq!(presences.stats("room").users, 3, "alice has one more");
        assert!(presences.leave("room", a1.channel).is_none(), "once");
        let diffs = presences.take_diffs();
        assert_eq!(diffs.len(), 1);
        let kinds: Vec<bool> = diffs[0].changes.iter().map(|(j, _)| *j).collect();
        assert_eq!(kinds, [true, true, true, true, false]);
    }

    #[test]
    fn a_window_nets_out_and_is_bounded() {
        let (a, b) = (member(Some("a")), member(Some("b")));
        let diff = Diff {
            group: "g".into(),
            changes: vec![(true, a.clone()), (true, b.clone()), (false, a.clone())],
            stats: PresenceStats::default(),
        };
        assert_eq!(
            diff.net(10),
            Net::Diff(serde_json::json!({"presence": {"group": "g", "joins": [b], "leaves": []}}))
        );
        assert_eq!(diff.net(0), Net::TooMany);
        let gone = Diff {
            group: "g".into(),
            changes: vec![(true, a.clone()), (false, a.clone())],
            stats: PresenceStats::default(),
        };
        assert_eq!(gone.net(10), Net::Nothing);
        assert!(
            MemberInfo::user("x")
                .with_data("y".repeat(2000))
                .unwrap()
                .check(1024)
                .is_err()
        );
        let mut deep = serde_json::json!(1);
        for _ in 0..MAX_DEPTH {
            deep = serde_json::json!([deep]);
        }
        assert!(
            MemberInfo::user("x")
                .with_data(&deep)
                .unwrap()
                .check(1024)
                .is_ok()
        );
        let e = MemberInfo::user("x")
            .with_data(serde_json::json!([deep]))
            .unwrap()
            .check(1024)
            .unwrap_err();
        assert!(e.to_string().contains("nested more than 32 levels"), "{e}");
    }
}
