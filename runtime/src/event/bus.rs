//! The event bus: per event name an immutable, sorted listener list (exact listeners and the
//! wildcard listeners that match the name, merged), found through a lock-free map and replaced
//! whole when listeners change. Emitting reads that map without locks and runs the listeners
//! inline, in order, in the emitting task.

use std::borrow::Cow;
use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use super::context::EventId;
use super::listener::Callable;
use super::name::{self, Pattern};
use super::{EventMetrics, Priority};
use crate::log::LogLimit;
use crate::{Error, ErrorKind};

/// The documented name of the event that reports failed listeners (payload: [`ListenerFailed`]).
pub(crate) const LISTENER_ERROR: &str = "switchboard:listener.error";

/// How many names without exact listeners keep a cached list of matching wildcard listeners.
const WILDCARD_CACHE: usize = 4096;

pub(crate) struct Listener {
    pub(super) id: u64,
    pub(super) pattern: Box<str>,
    wildcard: Option<Pattern>,
    priority: Priority,
    seq: u64,
    pub(super) once: Option<AtomicBool>,
    scoped: bool,
    pub(super) call: Callable,
    pub(super) label: Cow<'static, str>,
}

impl Listener {
    fn order(&self) -> (Reverse<Priority>, u64) {
        (Reverse(self.priority), self.seq)
    }
}

/// What the bus needs to register a listener.
pub(crate) struct Spec {
    pub(crate) pattern: String,
    pub(crate) priority: Priority,
    pub(crate) once: bool,
    /// Tied to a connection: exempt from `max_listeners`.
    pub(crate) scoped: bool,
    pub(crate) call: Callable,
    pub(crate) label: Cow<'static, str>,
    /// Registration order; `None` for run-time listeners (after every macro listener).
    pub(crate) seq: Option<u64>,
}

/// The counters of one name. One uncontended lock per emit costs less than an atomic add per
/// counter.
#[derive(Default)]
pub(super) struct Stats {
    pub(super) disabled: AtomicBool,
    pub(super) counters: Mutex<Counters>,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counters {
    pub(super) emits: u64,
    pub(super) listeners_run: u64,
    pub(super) failures: u64,
    pub(super) time: Duration,
    /// Emits by how long their listeners took: `[i]` counts those up to
    /// `DURATION_BUCKETS[i]` (and above the bound before); the last, those above every bound.
    pub(super) durations: [u64; DURATION_BUCKETS.len() + 1],
}

/// The upper bounds of the emit-duration histogram, in nanoseconds: powers of 4 from 1.024 us
/// to 17.2 s, so that an emit finds its bucket from the bit length of its duration (a few
/// instructions) instead of searching a table.
pub(crate) const DURATION_BUCKETS: [u64; 13] = {
    let mut bounds = [0; 13];
    let mut i = 0;
    while i < bounds.len() {
        bounds[i] = 1 << (10 + 2 * i);
        i += 1;
    }
    bounds
};

/// The histogram bucket of a duration of `nanos`: the first bound it does not exceed, or
/// `DURATION_BUCKETS.len()` above them all.
#[inline]
pub(crate) fn duration_bucket(nanos: u64) -> usize {
    // ceil(log2(nanos)) (0 for 0 and 1), then one bucket per two bits above 2^10.
    let bits = 64 - nanos.saturating_sub(1).leading_zeros();
    (bits.saturating_sub(10) as usize)
        .div_ceil(2)
        .min(DURATION_BUCKETS.len())
}

impl Stats {
    /// Counts one emit; `durations`: also in the histogram (an app without a metrics route
    /// does not pay for it).
    pub(super) fn record(
        &self,
        listeners_run: usize,
        failures: usize,
        time: Duration,
        durations: bool,
    ) {
        let mut c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        c.emits += 1;
        c.listeners_run += listeners_run as u64;
        c.failures += failures as u64;
        c.time += time;
        if durations {
            let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
            c.durations[duration_bucket(nanos)] += 1;
        }
    }
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        self.emits += other.emits;
        self.listeners_run += other.listeners_run;
        self.failures += other.failures;
        self.time += other.time;
        for (sum, n) in self.durations.iter_mut().zip(other.durations) {
            *sum += n;
        }
    }
}

/// One event name's numbers, for metrics exporters.
#[derive(Debug, Clone)]
pub(crate) struct EventSeries {
    /// The name, or `None` for every name the app did not register (emitted names without a
    /// listener, names only wildcards or connection-scoped listeners heard), summed.
    pub(crate) name: Option<String>,
    pub(crate) emits: u64,
    pub(crate) failures: u64,
    pub(crate) time: Duration,
    pub(crate) durations: [u64; DURATION_BUCKETS.len() + 1],
}

/// The listeners that run for one name, in order.
pub(super) type Listeners = Vec<Arc<Listener>>;

/// One name's place in the index, stable while the name is known. Its listener list is
/// replaced whole when listeners change: emits read it without locks, and a replaced list (with
/// the closures it holds) is dropped as soon as the last emit using it is done. (The map itself
/// reclaims removed values late, in batches: only slots holding an empty list are removed.)
pub(super) struct Slot {
    pub(super) listeners: ArcSwap<Listeners>,
    pub(super) stats: Arc<Stats>,
}

impl Slot {
    fn new(listeners: Listeners, stats: Arc<Stats>) -> Self {
        Self {
            listeners: ArcSwap::from_pointee(listeners),
            stats,
        }
    }
}

struct NameState {
    exact: Vec<Arc<Listener>>,
    stats: Arc<Stats>,
    /// Kept only as a cache of matching wildcard listeners.
    cached: bool,
    /// Had a listener for the life of the app (not one tied to a connection): the name and its
    /// metrics stay while the app lives, even without listeners.
    registered: bool,
}

impl NameState {
    fn new(cached: bool) -> Self {
        Self {
            exact: Vec::new(),
            stats: Arc::default(),
            cached,
            registered: false,
        }
    }

    fn keep(&self) -> bool {
        !self.exact.is_empty() || self.registered || self.stats.disabled.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Registry {
    names: HashMap<Box<str>, NameState>,
    wildcards: Vec<Arc<Listener>>,
    cached: usize,
    next_seq: u64,
    next_id: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct BusConfig {
    pub(crate) max_listeners: usize,
    pub(crate) listener_timeout: Option<Duration>,
    pub(crate) max_background_emits: usize,
    /// Whether emits fill the duration histogram (the metrics route reads it).
    pub(crate) durations: bool,
}

pub(crate) struct Bus {
    pub(super) index: papaya::HashMap<Box<str>, Arc<Slot>, foldhash::fast::RandomState>,
    registry: Mutex<Registry>,
    wildcards: AtomicUsize,
    next_event: AtomicU64,
    /// Tells this bus's blocks of event ids apart in the threads' caches.
    bus_id: u64,
    /// Times emits: raw TSC readings, scaled once per emit.
    clock: quanta::Clock,
    config: BusConfig,
    background: Arc<Semaphore>,
    /// What emits rarely touch, apart (so it does not spread what they do touch over more
    /// cache lines).
    pub(crate) cold: Box<Cold>,
}

/// The parts of a bus off the emit path.
#[derive(Debug, Default)]
pub(crate) struct Cold {
    /// Bounds the log lines of failing listeners.
    pub(crate) failure_log: LogLimit,
    /// Emits of names nothing listened to (they have no counters of their own).
    unheard: AtomicU64,
    /// The counters of names forgotten while not registered (connection-scoped or cached
    /// names), kept so that the sum of everything unregistered never goes down.
    retired: Mutex<Counters>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("names", &self.index.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Bus {
    pub(crate) fn new(config: BusConfig, first_runtime_seq: u64) -> Self {
        Self {
            index: papaya::HashMap::with_hasher(foldhash::fast::RandomState::default()),
            registry: Mutex::new(Registry {
                next_seq: first_runtime_seq,
                ..Registry::default()
            }),
            wildcards: AtomicUsize::new(0),
            next_event: AtomicU64::new(1),
            clock: quanta::Clock::new(),
            cold: Box::default(),
            bus_id: {
                static NEXT_BUS: AtomicU64 = AtomicU64::new(0);
                NEXT_BUS.fetch_add(1, Ordering::Relaxed)
            },
            background: Arc::new(Semaphore::new(config.max_background_emits)),
            config,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn background(&self) -> &Arc<Semaphore> {
        &self.background
    }

    pub(crate) fn max_background_emits(&self) -> usize {
        self.config.max_background_emits
    }

    /// Registers a listener; returns its id.
    pub(crate) fn add(&self, spec: Spec) -> Result<u64, Error> {
        let wildcard = name::check(&spec.pattern, name::Kind::Pattern).map_err(|e| {
            Error::new(
                ErrorKind::InvalidName,
                format!(
                    "invalid event name `{}`: {}",
                    spec.pattern,
                    e.message(&spec.pattern)
                ),
            )
        })?;
        let mut guard = self.lock();
        let reg = &mut *guard;
        if !spec.scoped {
            let existing = if wildcard {
                reg.wildcards
                    .iter()
                    .filter(|l| !l.scoped && *l.pattern == *spec.pattern)
                    .count()
            } else {
                reg.names
                    .get(spec.pattern.as_str())
                    .map_or(0, |n| n.exact.iter().filter(|l| !l.scoped).count())
            };
            if existing >= self.config.max_listeners {
                return Err(Error::new(
                    ErrorKind::ListenerLimit,
                    format!(
                        "event `{}` already has {existing} listeners (max_listeners is {})",
                        spec.pattern, self.config.max_listeners
                    ),
                ));
            }
        }
        let id = reg.next_id;
        reg.next_id += 1;
        let seq = spec.seq.unwrap_or_else(|| {
            reg.next_seq += 1;
            reg.next_seq - 1
        });
        let listener = Arc::new(Listener {
            id,
            wildcard: wildcard.then(|| Pattern::new(&spec.pattern)),
            pattern: spec.pattern.into_boxed_str(),
            priority: spec.priority,
            seq,
            once: spec.once.then(|| AtomicBool::new(false)),
            scoped: spec.scoped,
            call: spec.call,
            label: spec.label,
        });
        if wildcard {
            insert_sorted(&mut reg.wildcards, listener);
            self.wildcards.store(reg.wildcards.len(), Ordering::Release);
            self.rebuild_all(reg);
        } else {
            let name = listener.pattern.clone();
            let state = reg
                .names
                .entry(name.clone())
                .or_insert_with(|| NameState::new(false));
            if state.cached {
                state.cached = false;
                reg.cached -= 1;
            }
            state.registered |= !listener.scoped;
            insert_sorted(&mut state.exact, listener);
            self.rebuild(reg, &name);
        }
        Ok(id)
    }

    /// Removes one listener; returns whether it was there.
    pub(crate) fn remove(&self, id: u64, pattern: &str) -> bool {
        let mut guard = self.lock();
        let reg = &mut *guard;
        if let Some(state) = reg.names.get_mut(pattern)
            && let Some(i) = state.exact.iter().position(|l| l.id == id)
        {
            state.exact.remove(i);
            self.rebuild(reg, pattern);
            return true;
        }
        if let Some(i) = reg.wildcards.iter().position(|l| l.id == id) {
            reg.wildcards.remove(i);
            self.wildcards.store(reg.wildcards.len(), Ordering::Release);
            self.rebuild_all(reg);
            return true;
        }
        false
    }

    /// Removes every listener registered under exactly `pattern`; returns how many.
    pub(crate) fn remove_all(&self, pattern: &str) -> usize {
        let mut guard = self.lock();
        let reg = &mut *guard;
        let mut removed = 0;
        if let Some(state) = reg.names.get_mut(pattern) {
            removed = state.exact.len();
            state.exact.clear();
            self.rebuild(reg, pattern);
        }
        let before = reg.wildcards.len();
        reg.wildcards.retain(|l| &*l.pattern != pattern);
        if reg.wildcards.len() != before {
            removed += before - reg.wildcards.len();
            self.wildcards.store(reg.wildcards.len(), Ordering::Release);
            self.rebuild_all(reg);
        }
        removed
    }

    /// Listeners registered under exactly `pattern`.
    pub(crate) fn count(&self, pattern: &str) -> usize {
        let reg = self.lock();
        reg.names.get(pattern).map_or(0, |n| n.exact.len())
            + reg
                .wildcards
                .iter()
                .filter(|l| &*l.pattern == pattern)
                .count()
    }

    /// Names and patterns that have at least one listener, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let reg = self.lock();
        let mut names: Vec<String> = reg
            .names
            .iter()
            .filter(|(_, s)| !s.exact.is_empty())
            .map(|(n, _)| n.to_string())
            .chain(reg.wildcards.iter().map(|l| l.pattern.to_string()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    pub(crate) fn set_enabled(&self, name: &str, enabled: bool) {
        let mut guard = self.lock();
        let reg = &mut *guard;
        if !reg.names.contains_key(name) {
            if enabled {
                return;
            }
            reg.names.insert(name.into(), NameState::new(false));
        }
        reg.names[name]
            .stats
            .disabled
            .store(!enabled, Ordering::Relaxed);
        self.rebuild(reg, name);
    }

    pub(crate) fn is_enabled(&self, name: &str) -> bool {
        self.index
            .pin()
            .get(name)
            .is_none_or(|slot| !slot.stats.disabled.load(Ordering::Relaxed))
    }

    pub(crate) fn metrics(&self, name: &str) -> Option<EventMetrics> {
        self.index
            .pin()
            .get(name)
            .map(|slot| metrics_of(&slot.stats))
    }

    /// An emit of a name nothing listens to.
    #[cold]
    pub(super) fn count_unheard(&self) {
        self.cold.unheard.fetch_add(1, Ordering::Relaxed);
    }

    /// The numbers of every name the app registered a listener for (for the life of the app),
    /// sorted, then everything else summed as one series (bounded, whatever clients emit).
    pub(crate) fn series(&self) -> Vec<EventSeries> {
        let reg = self.lock();
        let retired = *self
            .cold
            .retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut other = EventSeries {
            name: None,
            emits: retired.emits + self.cold.unheard.load(Ordering::Relaxed),
            failures: retired.failures,
            time: retired.time,
            durations: retired.durations,
        };
        let mut named = Vec::new();
        for (name, state) in &reg.names {
            let c = *state
                .stats
                .counters
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if state.registered {
                named.push(EventSeries {
                    name: Some(name.to_string()),
                    emits: c.emits,
                    failures: c.failures,
                    time: c.time,
                    durations: c.durations,
                });
            } else {
                other.emits += c.emits;
                other.failures += c.failures;
                other.time += c.time;
                for (sum, n) in other.durations.iter_mut().zip(c.durations) {
                    *sum += n;
                }
            }
        }
        named.sort_by(|a, b| a.name.cmp(&b.name));
        named.push(other);
        named
    }

    pub(crate) fn all_metrics(&self) -> Vec<(String, EventMetrics)> {
        let reg = self.lock();
        let mut all: Vec<_> = reg
            .names
            .iter()
            .filter(|(_, s)| s.keep() || metrics_of(&s.stats).emits > 0)
            .map(|(n, s)| (n.to_string(), metrics_of(&s.stats)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Names the registry knows, entries of the index, and listeners (exact and wildcard).
    #[cfg(feature = "testing")]
    pub(crate) fn sizes(&self) -> (usize, usize, usize) {
        let reg = self.lock();
        let listeners =
            reg.names.values().map(|n| n.exact.len()).sum::<usize>() + reg.wildcards.len();
        (reg.names.len(), self.index.len(), listeners)
    }

    /// Whether emitting `name` would run anything (used to skip building lifecycle payloads).
    pub(crate) fn has_listeners(&self, name: &str) -> bool {
        match self.index.pin().get(name) {
            Some(slot) => !slot.listeners.load().is_empty(),
            None => {
                self.wildcards.load(Ordering::Acquire) > 0 && {
                    let reg = self.lock();
                    reg.wildcards
                        .iter()
                        .any(|l| l.wildcard.as_ref().is_some_and(|p| p.matches(name)))
                }
            }
        }
    }

    /// Rebuilds the listener list of one name from its exact listeners and the matching
    /// wildcards; drops the name when nothing is left to keep for it.
    fn rebuild(&self, reg: &mut Registry, name: &str) {
        let Some(state) = reg.names.get(name) else {
            self.unindex(name);
            return;
        };
        let cached = state.cached;
        // A cached name is kept while there are wildcards to cache.
        let cache = cached && !reg.wildcards.is_empty();
        if !state.keep() && !cache {
            if cached {
                reg.cached -= 1;
            }
            if let Some(state) = reg.names.remove(name)
                && !state.registered
            {
                let gone = *state
                    .stats
                    .counters
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                self.cold
                    .retired
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .add(&gone);
            }
            self.unindex(name);
            return;
        }
        let mut listeners = state.exact.clone();
        listeners.extend(
            reg.wildcards
                .iter()
                .filter(|l| l.wildcard.as_ref().is_some_and(|p| p.matches(name)))
                .cloned(),
        );
        listeners.sort_by_key(|l| l.order());
        let index = self.index.pin();
        match index.get(name) {
            Some(slot) => slot.listeners.store(Arc::new(listeners)),
            None => {
                index.insert(
                    name.into(),
                    Arc::new(Slot::new(listeners, state.stats.clone())),
                );
            }
        }
    }

    /// Removes a name from the index, emptying its slot first (the map drops it late).
    fn unindex(&self, name: &str) {
        if let Some(slot) = self.index.pin().remove(name) {
            slot.listeners.store(Arc::default());
        }
    }

    fn rebuild_all(&self, reg: &mut Registry) {
        let names: Vec<Box<str>> = reg.names.keys().cloned().collect();
        for name in names {
            self.rebuild(reg, &name);
        }
    }

    /// The slot of a `name` that is not in the index: the list of matching wildcard listeners,
    /// built and cached (within bounds) on first use.
    pub(super) fn uncached_slot(&self, name: &str) -> Option<Arc<Slot>> {
        if self.wildcards.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut guard = self.lock();
        let reg = &mut *guard;
        if let Some(slot) = self.index.pin().get(name) {
            return Some(slot.clone());
        }
        if reg.cached < WILDCARD_CACHE {
            reg.cached += 1;
            reg.names.insert(name.into(), NameState::new(true));
            self.rebuild(reg, name);
            return self.index.pin().get(name).cloned();
        }
        let mut listeners: Listeners = reg
            .wildcards
            .iter()
            .filter(|l| l.wildcard.as_ref().is_some_and(|p| p.matches(name)))
            .cloned()
            .collect();
        listeners.sort_by_key(|l| l.order());
        Some(Arc::new(Slot::new(listeners, Arc::default())))
    }

    pub(super) fn clock(&self) -> &quanta::Clock {
        &self.clock
    }

    /// A new event id. Each thread takes ids from the app's counter in blocks (one atomic add
    /// per block instead of per emit): ids are unique within the app and increase in the
    /// emits of one thread.
    pub(crate) fn next_event_id(&self) -> EventId {
        const BLOCK: u64 = 1024;
        thread_local! {
            /// The bus the cached block belongs to, the next id, the end of the block.
            static IDS: Cell<(u64, u64, u64)> = const { Cell::new((u64::MAX, 0, 0)) };
        }
        IDS.with(|ids| {
            let (bus, next, end) = ids.get();
            if bus == self.bus_id && next < end {
                ids.set((bus, next + 1, end));
                return EventId(next);
            }
            let start = self.next_event.fetch_add(BLOCK, Ordering::Relaxed);
            ids.set((self.bus_id, start + 1, start + BLOCK));
            EventId(start)
        })
    }

    pub(super) fn durations(&self) -> bool {
        self.config.durations
    }

    pub(crate) fn listener_timeout(&self) -> Option<Duration> {
        self.config.listener_timeout
    }
}

fn insert_sorted(list: &mut Vec<Arc<Listener>>, listener: Arc<Listener>) {
    let at = list.partition_point(|l| l.order() <= listener.order());
    list.insert(at, listener);
}

fn metrics_of(stats: &Stats) -> EventMetrics {
    let c = *stats
        .counters
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    EventMetrics {
        emits: c.emits,
        listeners_run: c.listeners_run,
        failures: c.failures,
        total_time: c.time,
        enabled: !stats.disabled.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod duration_tests {
    #[test]
    fn a_duration_lands_in_the_first_bucket_it_does_not_exceed() {
        use super::{DURATION_BUCKETS, duration_bucket};
        let mut values: Vec<u64> = vec![0, 1, 2, 1023, u64::MAX];
        for bound in DURATION_BUCKETS {
            values.extend([bound - 1, bound, bound + 1]);
        }
        for nanos in values {
            let searched = DURATION_BUCKETS.partition_point(|&bound| bound < nanos);
            assert_eq!(duration_bucket(nanos), searched, "{nanos} ns");
        }
    }
}
