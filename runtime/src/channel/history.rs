//! Per-group history: the last messages sent with `save_history()`, or every message of a
//! recoverable group, bounded by count, bytes and age, each with its id (its offset in the
//! group's stream) and timestamp. A history has an epoch, drawn when it is created: a group
//! whose entries have all aged out is forgotten (the sweeper prunes), so groups that are gone
//! leave nothing behind, and its next history is a new epoch (positions of the old one cannot
//! be recovered from it).

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

/// One group's history. Its lock also orders a recoverable group's sends against its
/// recovering joins (see `Groups::send` and `Groups::add_from`).
#[derive(Debug)]
pub(crate) struct GroupHistory {
    entries: VecDeque<HistoryEntry>,
    bytes: usize,
    /// The id of the last entry saved (0: none yet).
    last_id: u64,
    /// Drawn when the history is created.
    epoch: Arc<str>,
}

impl GroupHistory {
    fn new() -> Self {
        let epoch = uuid::Uuid::new_v4().simple().to_string();
        GroupHistory {
            entries: VecDeque::new(),
            bytes: 0,
            last_id: 0,
            epoch: epoch[..12].into(),
        }
    }

    /// The epoch of this history.
    pub(crate) fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// The id of the last entry saved (0: none yet).
    pub(crate) fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Starts over at another epoch (the cluster stream's), with `last_id` as the last id.
    pub(crate) fn reset(&mut self, epoch: &str, last_id: u64) {
        self.entries.clear();
        self.bytes = 0;
        self.epoch = epoch.into();
        self.last_id = last_id;
    }

    /// Saves a message; returns its id. The oldest entries go when a bound is passed.
    pub(crate) fn save(&mut self, limits: &HistoryLimits, payload: Utf8Bytes) -> u64 {
        let id = self.last_id + 1;
        self.save_at(limits, id, payload);
        id
    }

    /// Counts every id up to `id` as delivered (without entries for those not saved here).
    pub(crate) fn advance_to(&mut self, id: u64) {
        self.last_id = self.last_id.max(id);
    }

    /// Saves a message with the id the cluster stream gave it (above `last_id`).
    pub(crate) fn save_at(&mut self, limits: &HistoryLimits, id: u64, payload: Utf8Bytes) {
        self.last_id = id;
        self.bytes += payload.len();
        self.entries.push_back(HistoryEntry {
            id,
            timestamp: SystemTime::now(),
            payload,
            saved: Instant::now(),
        });
        while self.entries.len() > limits.max_entries
            || (self.bytes > limits.max_bytes && self.entries.len() > 1)
        {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.payload.len();
            }
        }
    }

    /// The entries with ids in `(from, to]` still within the age bound, oldest first.
    pub(crate) fn between(&self, from: u64, to: u64, max_age: Duration) -> Vec<HistoryEntry> {
        let now = Instant::now();
        self.entries
            .iter()
            .filter(|e| e.id > from && e.id <= to && now.duration_since(e.saved) <= max_age)
            .cloned()
            .collect()
    }

    /// The entries after `id` still within the age bound, if they are all there: `None` when
    /// an entry after `id` was already dropped (or aged out).
    pub(crate) fn after(&self, id: u64, max_age: Duration) -> Option<Vec<HistoryEntry>> {
        let now = Instant::now();
        let kept: Vec<HistoryEntry> = self
            .entries
            .iter()
            .filter(|e| e.id > id && now.duration_since(e.saved) <= max_age)
            .cloned()
            .collect();
        let first_needed = id + 1;
        let complete = match kept.first() {
            Some(first) => first.id == first_needed,
            None => id == self.last_id,
        };
        complete.then_some(kept)
    }
}

/// The histories of every group that saved one.
#[derive(Debug)]
pub(crate) struct Histories {
    limits: HistoryLimits,
    groups: std::sync::Mutex<HashMap<Arc<str>, Arc<std::sync::Mutex<GroupHistory>>>>,
}

/// A group's history, locked.
pub(crate) type HistoryGuard<'a> = std::sync::MutexGuard<'a, GroupHistory>;

impl Histories {
    pub(crate) fn new(limits: HistoryLimits) -> Self {
        Self {
            limits,
            groups: Default::default(),
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<std::sync::Mutex<GroupHistory>>>> {
        self.groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn limits(&self) -> &HistoryLimits {
        &self.limits
    }

    /// The history of `group`, created (a new epoch) if it has none.
    pub(crate) fn of(&self, group: &str) -> Arc<std::sync::Mutex<GroupHistory>> {
        let mut groups = self.lock();
        match groups.get(group) {
            Some(history) => history.clone(),
            None => groups
                .entry(group.into())
                .or_insert_with(|| Arc::new(std::sync::Mutex::new(GroupHistory::new())))
                .clone(),
        }
    }

    /// Saves a message; returns its id. The oldest entries go when a bound is passed.
    pub(crate) fn save(&self, group: &str, payload: Utf8Bytes) -> u64 {
        let history = self.of(group);
        lock_history(&history).save(&self.limits, payload)
    }

    /// The saved messages of `group` younger than the age bound, oldest first.
    pub(crate) fn get(&self, group: &str) -> Vec<HistoryEntry> {
        let now = Instant::now();
        let Some(history) = self.lock().get(group).cloned() else {
            return Vec::new();
        };
        let history = lock_history(&history);
        history
            .entries
            .iter()
            .filter(|e| now.duration_since(e.saved) <= self.limits.max_age)
            .cloned()
            .collect()
    }

    /// Drops the entries past the age bound, and the groups left without any unless `keep`
    /// says otherwise (a recoverable group with members keeps its epoch).
    pub(crate) fn prune(&self, keep: impl Fn(&str) -> bool) {
        let now = Instant::now();
        let max_age = self.limits.max_age;
        let mut groups = self.lock();
        groups.retain(|name, history| {
            let mut history = lock_history(history);
            while history
                .entries
                .front()
                .is_some_and(|e| now.duration_since(e.saved) > max_age)
            {
                if let Some(old) = history.entries.pop_front() {
                    history.bytes -= old.payload.len();
                }
            }
            !history.entries.is_empty() || keep(name)
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

    /// Forgets the history of `group`; returns how many entries it had. Its next history is a
    /// new epoch.
    pub(crate) fn flush(&self, group: &str) -> usize {
        self.lock()
            .remove(group)
            .map_or(0, |h| lock_history(&h).entries.len())
    }
}

/// Locks one group's history, ignoring poisoning (every critical section leaves it whole).
pub(crate) fn lock_history(history: &std::sync::Mutex<GroupHistory>) -> HistoryGuard<'_> {
    history
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        h.prune(|_| false);
        assert!(!h.is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        h.prune(|_| false);
        assert!(h.is_empty(), "a group without entries is forgotten");
    }
}
