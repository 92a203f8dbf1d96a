//! Per-group history: the last messages sent with `save_history()`, bounded by count, bytes
//! and age, each with its own id and timestamp. A group whose entries have all aged out is
//! forgotten (the sweeper prunes), so groups that are gone leave nothing behind.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// One saved message of a group's history.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// Increasing within the group (the first message saved is 1).
    pub id: u64,
    /// When it was sent.
    pub timestamp: SystemTime,
    payload: Utf8Bytes,
    /// When it was saved, on the monotonic clock (for the age bound).
    saved: Instant,
}

impl HistoryEntry {
    /// The payload as sent (JSON text).
    pub fn text(&self) -> &str {
        self.payload.as_str()
    }

    /// The payload, parsed.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.payload.as_str()).unwrap_or(Value::Null)
    }
}

/// Bounds of each group's history.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HistoryLimits {
    pub(crate) max_entries: usize,
    pub(crate) max_bytes: usize,
    pub(crate) max_age: Duration,
}

#[derive(Debug, Default)]
struct GroupHistory {
    entries: VecDeque<HistoryEntry>,
    bytes: usize,
    next_id: u64,
}

/// The histories of every group that saved one.
#[derive(Debug)]
pub(crate) struct Histories {
    limits: HistoryLimits,
    groups: std::sync::Mutex<HashMap<Arc<str>, GroupHistory>>,
}

impl Histories {
    pub(crate) fn new(limits: HistoryLimits) -> Self {
        Self {
            limits,
            groups: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, GroupHistory>> {
        self.groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Saves a message; returns its id. The oldest entries go when a bound is passed.
    pub(crate) fn save(&self, group: &str, payload: Utf8Bytes) -> u64 {
        let mut groups = self.lock();
        let history = match groups.get_mut(group) {
            Some(history) => history,
            None => groups.entry(group.into()).or_default(),
        };
        history.next_id += 1;
        let id = history.next_id;
        history.bytes += payload.len();
        history.entries.push_back(HistoryEntry {
            id,
            timestamp: SystemTime::now(),
            payload,
            saved: Instant::now(),
        });
        while history.entries.len() > self.limits.max_entries
            || (history.bytes > self.limits.max_bytes && history.entries.len() > 1)
        {
            if let Some(old) = history.entries.pop_front() {
                history.bytes -= old.payload.len();
            }
        }
        id
    }

    /// The saved messages of `group` younger than the age bound, oldest first.
    pub(crate) fn get(&self, group: &str) -> Vec<HistoryEntry> {
        let now = Instant::now();
        self.lock()
            .get(group)
            .map(|h| {
                h.entries
                    .iter()
                    .filter(|e| now.duration_since(e.saved) <= self.limits.max_age)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drops the entries past the age bound, and the groups left without any.
    pub(crate) fn prune(&self) {
        let now = Instant::now();
        let max_age = self.limits.max_age;
        let mut groups = self.lock();
        groups.retain(|_, history| {
            while history
                .entries
                .front()
                .is_some_and(|e| now.duration_since(e.saved) > max_age)
            {
                if let Some(old) = history.entries.pop_front() {
                    history.bytes -= old.payload.len();
                }
            }
            !history.entries.is_empty()
        });
    }

    /// Whether any group has a history.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Groups with a history.
    #[cfg(feature = "testing")]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Forgets the history of `group`; returns how many entries it had.
    pub(crate) fn flush(&self, group: &str) -> usize {
        self.lock().remove(group).map_or(0, |h| h.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_count_and_bytes_with_increasing_ids() {
        let h = Histories::new(HistoryLimits {
            max_entries: 3,
            max_bytes: 10,
            max_age: Duration::from_secs(60),
        });
        for text in ["aa", "bb", "cc", "dd"] {
            h.save("g", Utf8Bytes::from(text));
        }
        let ids: Vec<u64> = h.get("g").iter().map(|e| e.id).collect();
        assert_eq!(ids, [2, 3, 4], "count bound keeps the newest");
        h.save("g", Utf8Bytes::from("0123456789"));
        let kept: Vec<String> = h.get("g").iter().map(|e| e.text().to_owned()).collect();
        assert_eq!(kept, ["0123456789"], "byte bound drops the oldest");
        assert_eq!(h.flush("g"), 1);
        assert!(h.get("g").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn entries_past_the_age_bound_go_and_so_does_the_group() {
        let h = Histories::new(HistoryLimits {
            max_entries: 10,
            max_bytes: 1024,
            max_age: Duration::from_secs(2),
        });
        h.save("g", Utf8Bytes::from("old"));
        tokio::time::advance(Duration::from_secs(1)).await;
        h.save("g", Utf8Bytes::from("new"));
        tokio::time::advance(Duration::from_millis(1500)).await;
        let kept: Vec<String> = h.get("g").iter().map(|e| e.text().to_owned()).collect();
        assert_eq!(kept, ["new"], "older than 2 s: not served");
        h.prune();
        assert!(!h.is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        h.prune();
        assert!(h.is_empty(), "a group without entries is forgotten");
    }
}
