//! Rings of outgoing frames that connection writers pull from.
//!
//! A group has one ring; so does each connection, for its direct sends. Sending appends the
//! frame, encoded once, to one ring (O(1), whatever the number of members) and wakes the
//! writers that were idle; each member's writer copies what it has not taken yet, at its own
//! pace. Every frame carries a sequence number from one counter per app, so a writer that reads
//! several rings writes their frames in the order they were sent.
//!
//! A ring keeps entries until every member has passed them. A member that falls behind by more
//! than the bound is a slow consumer: it is reported to the sender, which closes it (or skips
//! what it missed), and it stops holding the ring.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::{Conn, ConnConfig, ConnectionId, Frame, lock};

/// A ring is trimmed (its entries all members passed are dropped) each time it grows by this
/// many bytes: the scan of members' cursors is amortised over many sends.
const TRIM_STEP: usize = 64 * 1024;

/// The slot of a member that left.
const GONE: usize = usize::MAX;

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) frame: Frame,
    cost: usize,
    except: Option<ConnectionId>,
    /// The ring's `pushed` before this entry: a member at this entry has `pushed - start`
    /// bytes left to read.
    start: u64,
}

/// What one [`Ring::take`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taken {
    /// Bytes (frame costs) copied.
    pub(crate) bytes: usize,
    /// When the budget cut the copy short: the sequence number of the first entry left.
    pub(crate) left: Option<u64>,
}

/// One member's place in a ring.
#[derive(Debug)]
pub(crate) struct Sub {
    pub(crate) ring: Arc<Ring>,
    /// The index of the next entry this member reads.
    next: AtomicU64,
    /// The ring's `pushed` at `next`: `ring.pushed - read_to` is what this member has left to
    /// read (readable without the ring's lock).
    read_to: AtomicU64,
    /// Registered in the ring's waiters (its writer is idle).
    waiting: AtomicBool,
    /// Its index in the ring's members ([`GONE`] once it left), so that leaving is O(1)
    /// whatever the number of members.
    slot: AtomicUsize,
    pub(crate) conn: Weak<Conn>,
    /// The group's name (`None` for a connection's own ring).
    pub(crate) group: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The index of `entries[0]`.
    base: u64,
    entries: VecDeque<Entry>,
    bytes: usize,
    /// `bytes` after the last trim.
    trimmed_at: usize,

    subs: Vec<Arc<Sub>>,
    waiters: Vec<Arc<Sub>>,
    /// Waiters that left the ring since `waiters` was last emptied (taken out in bulk once
    /// they are half of it, so a churn of idle members does not pile up).
    gone_waiters: usize,
}

/// What a push did.
#[derive(Debug, Default)]
pub(crate) struct Pushed {
    /// Members when the frame was appended (the excepted one included).
    pub(crate) members: usize,
    /// Members that fell behind by more than the bound: no longer in the ring, or (skipping)
    /// moved past what they missed.
    pub(crate) laggards: Vec<Laggard>,
}

/// A member that fell behind by more than the bound.
#[derive(Debug)]
pub(crate) struct Laggard {
    pub(crate) conn: Arc<Conn>,
    /// Messages it skipped (when laggards skip rather than leave): each one it will never get.
    pub(crate) skipped: u64,
}

#[derive(Debug)]
pub(crate) struct Ring {
    inner: Mutex<Inner>,
    /// Bytes ever pushed (written under the lock, readable without it).
    pushed: AtomicU64,
    /// The app's connection settings: the sequence numbers, the lag bound, the count of rings.
    config: Arc<ConnConfig>,
}

impl Drop for Ring {
    fn drop(&mut self) {
        self.config.rings.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Sub {
    /// Bytes this member has not taken from its ring yet.
    pub(crate) fn behind(&self) -> usize {
        let pushed = self.ring.pushed.load(Ordering::SeqCst);
        pushed.saturating_sub(self.read_to.load(Ordering::SeqCst)) as usize
    }
}

impl Ring {
    pub(crate) fn new(config: &Arc<ConnConfig>) -> Arc<Self> {
        config.rings.fetch_add(1, Ordering::Relaxed);
        Arc::new(Self {
            inner: Mutex::default(),
            pushed: AtomicU64::new(0),
            config: config.clone(),
        })
    }

    /// Adds a member, reading from the next entry on.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        conn: Weak<Conn>,
        group: Option<Arc<str>>,
    ) -> Arc<Sub> {
        let mut inner = lock(&self.inner);
        let head = inner.base + inner.entries.len() as u64;
        let sub = Arc::new(Sub {
            ring: self.clone(),
            next: AtomicU64::new(head),
            read_to: AtomicU64::new(self.pushed.load(Ordering::SeqCst)),
            waiting: AtomicBool::new(false),
            slot: AtomicUsize::new(inner.subs.len()),
            conn,
            group,
        });
        inner.subs.push(sub.clone());
        sub
    }

    /// Removes a member; returns how many are left.
    pub(crate) fn unsubscribe(&self, sub: &Arc<Sub>) -> usize {
        let mut inner = lock(&self.inner);
        inner.remove(sub);
        if inner.subs.is_empty() {
            inner.bytes = 0;
            inner.trimmed_at = 0;
            inner.base += inner.entries.len() as u64;
            inner.entries = VecDeque::new();
        }
        inner.subs.len()
    }

    /// The members.
    pub(crate) fn members(&self) -> Vec<Arc<Sub>> {
        lock(&self.inner).subs.clone()
    }

    pub(crate) fn member_count(&self) -> usize {
        lock(&self.inner).subs.len()
    }

    /// Bytes held (what the slowest member has not read yet, at most one trim step more).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        lock(&self.inner).bytes
    }

    /// Appends a frame (taking its sequence number from the app's counter under the ring's
    /// lock, so a ring's entries are in sequence order) and wakes the idle members. Members
    /// behind by more than the queue bound are returned as laggards; with `skip_laggards` they
    /// stay and skip what they missed instead.
    pub(crate) fn push(
        &self,
        frame: Frame,
        except: Option<ConnectionId>,
        skip_laggards: bool,
    ) -> Pushed {
        let cost = frame.cost();
        let bound = self.config.max_queue_bytes;
        let mut inner = lock(&self.inner);
        let seq = self.config.sequence.fetch_add(1, Ordering::Relaxed);
        let start = self.pushed.load(Ordering::Relaxed);
        inner.entries.push_back(Entry {
            seq,
            frame,
            cost,
            except,
            start,
        });
        inner.bytes += cost;
        self.pushed.store(start + cost as u64, Ordering::SeqCst);
        let mut pushed = Pushed {
            members: inner.subs.len(),
            laggards: Vec::new(),
        };
        if inner.bytes > inner.trimmed_at + TRIM_STEP {
            inner.trim();
            if inner.bytes > bound {
                pushed.laggards = inner.drop_laggards(bound, skip_laggards, start + cost as u64);
                inner.trim();
            }
            inner.trimmed_at = inner.bytes;
        }
        let waiters = std::mem::take(&mut inner.waiters);
        inner.gone_waiters = 0;
        drop(inner);
        for sub in waiters {
            sub.waiting.store(false, Ordering::Relaxed);
            if sub.slot.load(Ordering::Relaxed) == GONE {
                continue;
            }
            if let Some(conn) = sub.conn.upgrade() {
                conn.wake_writer();
            }
        }
        pushed
    }

    /// Copies the entries `sub` has not read into `out`, at most `budget` bytes (at least one
    /// entry).
    pub(crate) fn take(
        &self,
        sub: &Sub,
        me: ConnectionId,
        out: &mut VecDeque<(u64, Frame)>,
        budget: usize,
    ) -> Taken {
        let taken = self.read_unless(
            sub,
            me,
            budget,
            || false,
            |seq, frame| {
                out.push_back((seq, frame.clone()));
            },
        );
        taken.unwrap_or(Taken {
            bytes: 0,
            left: None,
        })
    }

    /// Gives `sub` the entries it has not read, in order, at most `budget` bytes (at least one
    /// entry), under the ring's lock: `read` copies what it needs of each (a writer copies the
    /// payload into its socket's buffer, so the frame is not cloned). `None`, and nothing
    /// read, when `skip` (asked once the lock is held) says so.
    pub(crate) fn read_unless(
        &self,
        sub: &Sub,
        me: ConnectionId,
        budget: usize,
        skip: impl FnOnce() -> bool,
        mut read: impl FnMut(u64, &Frame),
    ) -> Option<Taken> {
        let inner = lock(&self.inner);
        if skip() {
            return None;
        }
        let pushed = self.pushed.load(Ordering::Relaxed);
        let mut next = sub.next.load(Ordering::Relaxed).max(inner.base);
        let mut taken = Taken {
            bytes: 0,
            left: None,
        };
        let mut read_to = pushed;
        while let Some(entry) = inner.entries.get((next - inner.base) as usize) {
            if taken.bytes + entry.cost > budget && taken.bytes > 0 {
                taken.left = Some(entry.seq);
                read_to = entry.start;
                break;
            }
            next += 1;
            if entry.except != Some(me) {
                taken.bytes += entry.cost;
                read(entry.seq, &entry.frame);
            }
        }
        sub.next.store(next, Ordering::Relaxed);
        sub.read_to.store(read_to, Ordering::SeqCst);
        Some(taken)
    }

    /// Whether `sub` has entries to read; if not, registers it to be woken by the next push.
    pub(crate) fn wait(&self, sub: &Arc<Sub>) -> bool {
        let mut inner = lock(&self.inner);
        let head = inner.base + inner.entries.len() as u64;
        if sub.next.load(Ordering::Relaxed) < head {
            return true;
        }
        if sub.slot.load(Ordering::Relaxed) != GONE && !sub.waiting.swap(true, Ordering::Relaxed) {
            inner.waiters.push(sub.clone());
        }
        false
    }
}

impl Inner {
    /// Takes `sub` out of the members in O(1) (the last member takes its slot). A waiter that
    /// left stays in `waiters`, skipped, until the next push empties it, or until the ones
    /// that left are half of it.
    fn remove(&mut self, sub: &Arc<Sub>) {
        let slot = sub.slot.load(Ordering::Relaxed);
        if slot >= self.subs.len() || !Arc::ptr_eq(&self.subs[slot], sub) {
            return; // left already (a laggard)
        }
        self.subs.swap_remove(slot);
        if let Some(moved) = self.subs.get(slot) {
            moved.slot.store(slot, Ordering::Relaxed);
        }
        sub.slot.store(GONE, Ordering::Relaxed);
        if sub.waiting.load(Ordering::Relaxed) {
            self.gone_waiters += 1;
            if self.gone_waiters * 2 > self.waiters.len() {
                self.waiters
                    .retain(|w| w.slot.load(Ordering::Relaxed) != GONE);
                self.gone_waiters = 0;
            }
        }
    }

    /// Drops the entries every member has read.
    fn trim(&mut self) {
        let min = self
            .subs
            .iter()
            .map(|s| s.next.load(Ordering::Relaxed))
            .min()
            .unwrap_or(self.base + self.entries.len() as u64);
        while self.base < min {
            let Some(entry) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= entry.cost;
            self.base += 1;
        }
    }

    /// The members whose unread entries exceed `bound` bytes: removed and returned, or (with
    /// `skip`) moved forward past what they missed.
    fn drop_laggards(&mut self, bound: usize, skip: bool, pushed: u64) -> Vec<Laggard> {
        // The first index a member may be at without being more than `bound` behind, and the
        // ring's byte position there.
        let mut limit = self.base + self.entries.len() as u64;
        let mut bytes = 0;
        let mut position = pushed;
        for entry in self.entries.iter().rev() {
            if bytes + entry.cost > bound {
                break;
            }
            bytes += entry.cost;
            limit -= 1;
            position = entry.start;
        }
        let (base, entries) = (self.base, &self.entries);
        // The entries from `from` to the limit that were meant for `conn`.
        let missed = |conn: &Conn, from: u64| {
            let range = (from.max(base) - base) as usize..(limit - base) as usize;
            entries
                .range(range)
                .filter(|e| e.except != Some(conn.id))
                .count() as u64
        };
        let mut laggards = Vec::new();
        self.subs.retain(|sub| {
            let next = sub.next.load(Ordering::Relaxed);
            if next >= limit {
                return true;
            }
            if let Some(conn) = sub.conn.upgrade() {
                let skipped = if skip { missed(&conn, next) } else { 0 };
                laggards.push(Laggard { conn, skipped });
            }
            if skip {
                sub.next.store(limit, Ordering::Relaxed);
                sub.read_to.store(position, Ordering::SeqCst);
                true
            } else {
                sub.slot.store(GONE, Ordering::Relaxed);
                false
            }
        });
        if !skip {
            for (slot, sub) in self.subs.iter().enumerate() {
                sub.slot.store(slot, Ordering::Relaxed);
            }
            self.waiters
                .retain(|w| w.slot.load(Ordering::Relaxed) != GONE);
            self.gone_waiters = 0;
        }
        laggards
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::Utf8Bytes;

    fn frame(n: usize) -> Frame {
        Frame::Text(Utf8Bytes::from("x".repeat(n)))
    }

    fn config(max_queue_bytes: usize, first_seq: u64) -> Arc<ConnConfig> {
        let mut config = ConnConfig::new();
        config.max_queue_bytes = max_queue_bytes;
        config.sequence = AtomicU64::new(first_seq);
        Arc::new(config)
    }

    #[test]
    fn members_read_what_was_pushed_after_they_joined_in_order() {
        let config = config(usize::MAX, 0);
        let ring = Ring::new(&config);
        ring.push(frame(1), None, false);
        let sub = ring.subscribe(Weak::new(), None);
        for _ in 0..3 {
            ring.push(frame(1), None, false);
        }
        let mut out = VecDeque::new();
        let taken = ring.take(&sub, ConnectionId::new(), &mut out, usize::MAX);
        assert_eq!((taken.left, sub.behind()), (None, 0));
        let seqs: Vec<u64> = out.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert!(!ring.wait(&sub), "nothing more to read: registered");
        ring.push(frame(1), None, false);
        assert!(ring.wait(&sub));
        drop((ring, sub));
        assert_eq!(
            config.rings.load(Ordering::Relaxed),
            1,
            "the member holds it"
        );
    }

    #[test]
    fn a_budget_cuts_the_copy_short_and_says_where() {
        let config = config(usize::MAX, 10);
        let ring = Ring::new(&config);
        let sub = ring.subscribe(Weak::new(), None);
        for _ in 0..4 {
            ring.push(frame(100), None, false);
        }
        let mut out = VecDeque::new();
        let cost = frame(100).cost();
        assert_eq!(sub.behind(), 4 * cost);
        let taken = ring.take(&sub, ConnectionId::new(), &mut out, 2 * cost);
        assert_eq!(
            taken,
            Taken {
                bytes: 2 * cost,
                left: Some(12),
            }
        );
        assert_eq!((out.len(), sub.behind()), (2, 2 * cost));
        let taken = ring.take(&sub, ConnectionId::new(), &mut out, usize::MAX);
        assert_eq!((taken.left, sub.behind(), out.len()), (None, 0, 4));
    }

    #[test]
    fn entries_everyone_read_are_trimmed_and_laggards_reported() {
        let config = config(100_000, 0);
        let ring = Ring::new(&config);
        let fast = ring.subscribe(Weak::new(), None);
        let _slow = ring.subscribe(Weak::new(), None);
        let mut out = VecDeque::new();
        for _ in 0..2000 {
            ring.push(frame(100), None, false);
            ring.take(&fast, ConnectionId::new(), &mut out, usize::MAX);
        }
        // The slow member held the ring until it fell past the bound; then it was dropped and
        // the ring trimmed down to what the fast member has not read.
        assert_eq!(ring.member_count(), 1);
        assert!(
            ring.bytes() <= TRIM_STEP + frame(100).cost(),
            "{}",
            ring.bytes()
        );
    }

    /// Leaving takes O(1) whatever the order: the members left are exactly the others, each
    /// at its own slot, and idle members that left do not pile up in the waiters.
    #[test]
    fn members_leave_in_any_order_and_idle_ones_do_not_pile_up() {
        let ring = Ring::new(&config(1 << 20, 1));
        let subs: Vec<Arc<Sub>> = (0..1000)
            .map(|_| ring.subscribe(Weak::new(), None))
            .collect();
        // All idle: every member waits for the next push.
        for sub in &subs {
            assert!(!ring.wait(sub));
        }
        // Leave in a scrambled order (every 7th, then the rest of the odd ones).
        let mut left = std::collections::HashSet::new();
        for i in (0..1000).step_by(7).chain((1..1000).step_by(2)) {
            if left.insert(i) {
                ring.unsubscribe(&subs[i]);
            }
        }
        let members = ring.members();
        assert_eq!(members.len(), 1000 - left.len());
        for (slot, member) in members.iter().enumerate() {
            assert_eq!(member.slot.load(Ordering::Relaxed), slot);
            let index = subs.iter().position(|s| Arc::ptr_eq(s, member)).unwrap();
            assert!(!left.contains(&index), "member {index} left");
        }
        // Those that left are taken out of the waiters once they are half of them.
        let waiters = lock(&ring.inner).waiters.len();
        assert!(waiters < 2 * members.len() + 1, "{waiters} waiters");
        // Leaving twice, or after being dropped as a laggard, changes nothing.
        ring.unsubscribe(&subs[0]);
        assert_eq!(ring.member_count(), members.len());
        // A push wakes only members: the ones that left are skipped, then forgotten.
        ring.push(frame(10), None, false);
        assert!(lock(&ring.inner).waiters.is_empty());
    }
}
