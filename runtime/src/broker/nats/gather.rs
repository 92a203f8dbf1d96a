//! Cluster-wide membership and presence by scatter-gather: a query goes to every server on
//! `{prefix}.q`, each answers from its own state, and the asker waits for as many answers as
//! there are live servers (heard from within the TTL), at most the broker's timeout.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::Shared;
use crate::broker::Inbox;
use crate::channel::{Member, PresencePage, PresenceStats};
use crate::conn::ConnectionId;
use crate::{Error, ErrorKind};

/// What one server is asked.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "q", rename_all = "snake_case")]
enum Query {
    /// Its groups and their member counts.
    Groups,
    /// The members of a group.
    Members { group: String },
    /// Up to `limit` presence members of a group after `after`, in channel id order.
    Presence {
        group: String,
        after: Option<ConnectionId>,
        limit: usize,
    },
    /// The connections and user keys of a presence group.
    Stats { group: String },
}

/// One server's presence page: `more` when it stopped before its last member (the page
/// limit, or the size bound of a NATS message).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Page {
    members: Vec<Member>,
    more: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stats {
    connections: usize,
    users: Vec<String>,
}

/// This server's answer to a query, as JSON at most about `budget` bytes.
fn local(inbox: &Inbox, query: &Query, budget: usize) -> Vec<u8> {
    let json = match query {
        Query::Groups => {
            let groups: Vec<(String, usize)> = inbox
                .local_members()
                .into_iter()
                .map(|(group, members)| (group, members.len()))
                .collect();
            serde_json::to_vec(&groups)
        }
        Query::Members { group } => {
            let members: Vec<ConnectionId> = inbox
                .local_members()
                .into_iter()
                .find(|(name, _)| name == group)
                .map(|(_, members)| members)
                .unwrap_or_default();
            serde_json::to_vec(&members)
        }
        Query::Presence {
            group,
            after,
            limit,
        } => serde_json::to_vec(&local_page(inbox, group, *after, *limit, budget)),
        Query::Stats { group } => {
            let members = presence_of(inbox, group);
            let users: BTreeSet<String> = members.iter().map(Member::user_key).collect();
            serde_json::to_vec(&Stats {
                connections: members.len(),
                users: users.into_iter().collect(),
            })
        }
    };
    json.unwrap_or_default()
}

fn presence_of(inbox: &Inbox, group: &str) -> Vec<Member> {
    inbox
        .local_presence()
        .into_iter()
        .find(|(name, _)| name == group)
        .map(|(_, members)| members)
        .unwrap_or_default()
}

fn local_page(
    inbox: &Inbox,
    group: &str,
    after: Option<ConnectionId>,
    limit: usize,
    budget: usize,
) -> Page {
    let mut members: Vec<Member> = presence_of(inbox, group)
        .into_iter()
        .filter(|m| after.is_none_or(|after| m.channel > after))
        .collect();
    members.sort_by_key(|m| m.channel);
    let mut page = Page::default();
    let mut size = 64;
    for member in members {
        let len = serde_json::to_vec(&member).map_or(0, |json| json.len() + 1);
        if page.members.len() == limit || size + len > budget {
            page.more = true;
            break;
        }
        size += len;
        page.members.push(member);
    }
    page
}

/// Answers another server's query (a message with a reply subject).
pub(super) async fn answer(shared: &Shared, inbox: &Inbox, message: async_nats::Message) {
    let (Some(reply), Some(client)) = (message.reply, shared.client.get()) else {
        return;
    };
    let Ok(query) = serde_json::from_slice::<Query>(&message.payload) else {
        shared
            .counters
            .malformed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return;
    };
    let budget = client
        .server_info()
        .max_payload
        .saturating_sub(1024)
        .max(4096);
    // The answer names its server (16 bytes), then the JSON.
    let mut answer = shared.node.as_bytes().to_vec();
    answer.extend(local(inbox, &query, budget));
    let _ = client.publish(reply, Bytes::from(answer)).await;
}

/// Asks every other live server, and returns their answers (JSON): one per server, until
/// every server heard from within the TTL answered or the timeout passed (a server heard of
/// just now counts too, but does not stand in for one that has not answered).
async fn ask(shared: &Shared, query: &Query) -> Result<Vec<Bytes>, Error> {
    let what = "cannot ask the other servers";
    shared.check_up(what)?;
    let mut expected: std::collections::HashSet<uuid::Uuid> =
        shared.live_peers().into_iter().collect();
    if expected.is_empty() {
        return Ok(Vec::new());
    }
    let client = shared.client(what)?;
    let reply = client.new_inbox();
    let mut answers = shared.timed(what, client.subscribe(reply.clone())).await?;
    let payload = Bytes::from(serde_json::to_vec(query).unwrap_or_default());
    shared
        .timed(
            what,
            client.publish_with_reply(shared.subject("q"), reply, payload),
        )
        .await?;
    let deadline = tokio::time::Instant::now() + shared.config().timeout;
    let mut got = Vec::with_capacity(expected.len());
    let mut answered = std::collections::HashSet::new();
    while !expected.is_empty() {
        match tokio::time::timeout_at(deadline, answers.next()).await {
            Ok(Some(message)) => {
                let Some((node, json)) = message.payload.split_first_chunk::<16>() else {
                    continue;
                };
                let node = uuid::Uuid::from_bytes(*node);
                expected.remove(&node);
                if answered.insert(node) {
                    got.push(message.payload.slice(16..16 + json.len()));
                }
            }
            // A server that died since its last heartbeat does not answer.
            Ok(None) | Err(_) => break,
        }
    }
    Ok(got)
}

/// Every group with members on any server, with its member count, sorted by name.
pub(super) async fn groups(shared: &Shared, inbox: &Inbox) -> Result<Vec<(String, usize)>, Error> {
    let query = Query::Groups;
    let answers = ask(shared, &query).await?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mine = local(inbox, &query, usize::MAX);
    for answer in answers.iter().map(|a| &a[..]).chain([&mine[..]]) {
        let groups: Vec<(String, usize)> = serde_json::from_slice(answer).unwrap_or_default();
        for (group, count) in groups {
            *counts.entry(group).or_default() += count;
        }
    }
    Ok(counts.into_iter().collect())
}

/// The members of `group` on every server.
pub(super) async fn members(
    shared: &Shared,
    inbox: &Inbox,
    group: &str,
) -> Result<Vec<ConnectionId>, Error> {
    let query = Query::Members {
        group: group.to_owned(),
    };
    let answers = ask(shared, &query).await?;
    let mine = local(inbox, &query, usize::MAX);
    let mut members = Vec::new();
    for answer in answers.iter().map(|a| &a[..]).chain([&mine[..]]) {
        let some: Vec<ConnectionId> = serde_json::from_slice(answer).unwrap_or_default();
        members.extend(some);
    }
    members.sort();
    Ok(members)
}

/// One page of `group`'s roster on every server: each server's first members after the
/// cursor, merged; the page stops where the first server that had more stopped, so no member
/// is skipped.
pub(super) async fn presence_page(
    shared: &Shared,
    inbox: &Inbox,
    group: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<PresencePage, Error> {
    let after = match cursor {
        None => None,
        Some(cursor) => Some(cursor.parse::<ConnectionId>().map_err(|_| {
            Error::new(
                ErrorKind::InvalidGroup,
                format!("`{cursor}` is not a presence cursor (a page's `next`)"),
            )
        })?),
    };
    let query = Query::Presence {
        group: group.to_owned(),
        after,
        limit,
    };
    let answers = ask(shared, &query).await?;
    let mine =
        serde_json::to_vec(&local_page(inbox, group, after, limit, usize::MAX)).unwrap_or_default();
    let mut members = Vec::new();
    let mut bound: Option<ConnectionId> = None;
    for answer in answers.iter().map(|a| &a[..]).chain([&mine[..]]) {
        let Ok(page) = serde_json::from_slice::<Page>(answer) else {
            continue;
        };
        if page.more
            && let Some(last) = page.members.last()
        {
            bound = Some(bound.map_or(last.channel, |b| b.min(last.channel)));
        }
        members.extend(page.members);
    }
    members.sort_by_key(|m| m.channel);
    if let Some(bound) = bound {
        members.retain(|m| m.channel <= bound);
    }
    // More come after this page when a server stopped early or there are more than a page.
    let cut = bound.is_some() || members.len() > limit;
    members.truncate(limit);
    let next = if cut {
        members.last().map(|m| m.channel.to_string())
    } else {
        None
    };
    Ok(PresencePage::new(members, next))
}

/// `group`'s presence counts on every server (distinct users across servers).
pub(super) async fn presence_stats(
    shared: &Shared,
    inbox: &Inbox,
    group: &str,
) -> Result<PresenceStats, Error> {
    let query = Query::Stats {
        group: group.to_owned(),
    };
    let answers = ask(shared, &query).await?;
    let mine = local(inbox, &query, usize::MAX);
    let mut connections = 0;
    let mut users = BTreeSet::new();
    for answer in answers.iter().map(|a| &a[..]).chain([&mine[..]]) {
        let Ok(stats) = serde_json::from_slice::<Stats>(answer) else {
            continue;
        };
        connections += stats.connections;
        users.extend(stats.users);
    }
    Ok(PresenceStats::new(connections, users.len()))
}
