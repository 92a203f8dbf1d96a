//! One emit, as a future written by hand: listeners that finish at once (sync listeners, and
//! `async` ones that do not suspend) all run inside a single `poll`, reading the listener list
//! under the map's guard; only when a listener really suspends does the emit take its own
//! reference to the list and keep its place.

use std::any::Any;
use std::borrow::Cow;
use std::future::Future;
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

// A TSC-based clock where the CPU has a stable one: two reads per emit, at half the cost of
// `std::time::Instant` on the machines this was measured on.

use super::bus::{Bus, LISTENER_ERROR, Listener, Listeners, Slot, Stats};
use serde::Serialize;

use super::context::{EventContext, Memo, PayloadKind};
use super::listener::{Failure, ListenerCall, Outcome, panic_message};
use super::{EmitReport, EventId, ListenerFailed};
use crate::App;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the emit waits for between polls.
enum Waiting<'a> {
    /// A listener that suspended.
    Listener(BoxFuture<'static, Outcome>),
    /// Reporting a failure on the error event.
    Report(BoxFuture<'a, EmitReport>),
}

/// Runs the listeners of `name` on `bus`, in order, inline; the last listener may take the
/// payload by value. `report_failures`: failures go to the listener-failed event (not for that
/// event's own listeners).
pub(crate) fn emit<'a, T: Serialize + Any + Send + Sync>(
    bus: &'a Bus,
    app: &'a App,
    name: Cow<'a, str>,
    payload: T,
    report_failures: bool,
) -> Emit<'a, Option<T>> {
    Emit::new(
        bus,
        app,
        name,
        Some(payload),
        PayloadKind::of::<T>(),
        report_failures,
    )
}

/// The future of one emit (see [`emit`]): the payload `P` (an `Option<T>`) it owns, and the
/// non-generic part that runs the listeners, handed the payload on each poll.
pub(crate) struct Emit<'a, P> {
    core: Core<'a>,
    payload: P,
}

// The payload is never pinned: listeners get it by `&mut` for one call, or by value.
impl<P> Unpin for Emit<'_, P> {}

impl<'a, P: Any + Send + Sync> Emit<'a, P> {
    fn new(
        bus: &'a Bus,
        app: &'a App,
        name: Cow<'a, str>,
        payload: P,
        kind: PayloadKind,
        report_failures: bool,
    ) -> Self {
        Self {
            core: Core::new(bus, app, name, kind, report_failures),
            payload,
        }
    }
}

impl<P: Any + Send + Sync> Future for Emit<'_, P> {
    type Output = EmitReport;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<EmitReport> {
        let this = self.get_mut();
        this.core.poll(&mut this.payload, cx)
    }
}

struct Core<'a> {
    bus: &'a Bus,
    app: &'a App,
    name: Cow<'a, str>,
    kind: PayloadKind,
    report_failures: bool,
    /// What listeners computed from the payload (its JSON, the time), boxed when first needed:
    /// most emits never need it, and the emit future stays small to move.
    memo: Option<Box<Memo>>,
    tally: Tally,
    /// The clock's raw reading when the first listener started (0: none ran).
    started: u64,
    /// The next listener to run.
    next: usize,
    /// The listener being awaited, for its label in reports.
    current: usize,
    /// What an emit needs once it suspends (boxed: most emits never do, and the future stays
    /// small to move).
    suspended: Option<Box<Suspended<'a>>>,
}

#[derive(Default)]
struct Suspended<'a> {
    /// The emit's span, when debug lines are wanted.
    span: Option<tracing::Span>,
    /// Held once a listener suspended (until then the list is read under the map's guard): the
    /// name's slot (for its counters) and the list this emit runs.
    entry: Option<(Arc<Slot>, Arc<Listeners>)>,
    waiting: Option<Waiting<'a>>,
}

enum Step {
    Done,
    Suspended,
}

impl<'a> Core<'a> {
    fn new(
        bus: &'a Bus,
        app: &'a App,
        name: Cow<'a, str>,
        kind: PayloadKind,
        report_failures: bool,
    ) -> Self {
        Self {
            bus,
            app,
            name,
            kind,
            report_failures,
            memo: None,
            tally: Tally {
                event_id: EventId(0),
                executed: 0,
                failed: 0,
                timed_out: 0,
                stopped: false,
                disabled: false,
            },
            started: 0,
            next: 0,
            current: 0,
            suspended: None,
        }
    }

    fn poll(
        &mut self,
        payload: &mut (dyn Any + Send + Sync),
        cx: &mut Context<'_>,
    ) -> Poll<EmitReport> {
        if tracing::enabled!(tracing::Level::DEBUG) {
            return self.poll_traced(payload, cx);
        }
        let Some((slot, listeners)) = self.suspended.as_mut().and_then(|s| s.entry.take()) else {
            self.tally.event_id = self.bus.next_event_id();
            return self.start(payload, cx);
        };
        self.poll_again(slot, listeners, payload, cx)
    }

    /// [`poll`](Self::poll) inside the emit's span (event name and id), when debug lines are
    /// wanted: the span lives in the suspended part, so emits pay for it only then.
    #[cold]
    #[inline(never)]
    fn poll_traced(
        &mut self,
        payload: &mut (dyn Any + Send + Sync),
        cx: &mut Context<'_>,
    ) -> Poll<EmitReport> {
        let entry = self.suspended.as_mut().and_then(|s| s.entry.take());
        if entry.is_none() {
            // The first poll: the id is taken before the span is made, so the span has it.
            self.tally.event_id = self.bus.next_event_id();
        }
        let span = match self.suspended.as_mut().and_then(|s| s.span.take()) {
            Some(span) => span,
            // (Also when debug lines were turned on while this emit was suspended.)
            None => tracing::debug_span!("emit", event = %self.name, id = self.tally.event_id.0),
        };
        let result = span.in_scope(|| match entry {
            None => self.start(payload, cx),
            Some((slot, listeners)) => self.poll_again(slot, listeners, payload, cx),
        });
        if result.is_pending() {
            self.suspended().span = Some(span);
        }
        result
    }

    /// A later poll: runs on from the listener the emit waits for.
    #[inline(always)]
    fn poll_again(
        &mut self,
        slot: Arc<Slot>,
        listeners: Arc<Listeners>,
        payload: &mut (dyn Any + Send + Sync),
        cx: &mut Context<'_>,
    ) -> Poll<EmitReport> {
        let result = match self.run(&listeners, payload, cx) {
            Step::Done => Poll::Ready(self.finish(&slot.stats)),
            Step::Suspended => Poll::Pending,
        };
        self.suspended().entry = Some((slot, listeners));
        result
    }

    fn suspended(&mut self) -> &mut Suspended<'a> {
        self.suspended.get_or_insert_with(Box::default)
    }

    /// The first poll (its event id taken): look the name up and run as far as possible
    /// without suspending. Inlined into `poll`, as it was before the traced variant existed
    /// (a call costs the 1-listener emit about 45 instructions).
    #[inline(always)]
    fn start(
        &mut self,
        payload: &mut (dyn Any + Send + Sync),
        cx: &mut Context<'_>,
    ) -> Poll<EmitReport> {
        let guard = self.bus.index.pin();
        let owned;
        let slot = match guard.get(&*self.name) {
            Some(slot) => slot,
            // Names with listeners are in the index: only the others need checking.
            None => match super::check_emitted(&self.name) {
                Err(problem) => return Poll::Ready(self.invalid(problem)),
                Ok(()) => match self.bus.uncached_slot(&self.name) {
                    Some(slot) => {
                        owned = slot;
                        &owned
                    }
                    None => {
                        self.bus.count_unheard();
                        return Poll::Ready(self.report(Duration::ZERO));
                    }
                },
            },
        };
        if slot.stats.disabled.load(Ordering::Relaxed) {
            self.tally.disabled = true;
            return Poll::Ready(self.report(Duration::ZERO));
        }
        let listeners = slot.listeners.load();
        if listeners.is_empty() {
            slot.stats
                .record(0, 0, Duration::ZERO, self.bus.durations());
            return Poll::Ready(self.report(Duration::ZERO));
        }
        self.started = self.bus.clock().raw();
        match self.run(&listeners, payload, cx) {
            Step::Done => Poll::Ready(self.finish(&slot.stats)),
            Step::Suspended => {
                self.suspended().entry =
                    Some((slot.clone(), arc_swap::Guard::into_inner(listeners)));
                Poll::Pending
            }
        }
    }

    /// The report of an emit whose name is not valid: nothing ran.
    #[cold]
    fn invalid(&mut self, problem: String) -> EmitReport {
        tracing::warn!(event = &*self.name, "emit refused: {problem}");
        let mut report = self.report(Duration::ZERO);
        report.invalid_name = Some(problem);
        report
    }

    /// Runs listeners from `self.next`, finishing what it waits for first.
    fn run(
        &mut self,
        listeners: &[Arc<Listener>],
        payload: &mut (dyn Any + Send + Sync),
        cx: &mut Context<'_>,
    ) -> Step {
        loop {
            if self.resume(listeners, cx).is_pending() {
                return Step::Suspended;
            }
            if self.tally.stopped || self.next == listeners.len() {
                return Step::Done;
            }
            let index = self.next;
            self.next += 1;
            let listener = &listeners[index];
            if !self.claim(listener) {
                continue;
            }
            self.tally.executed += 1;
            self.current = index;
            let may_move = index == listeners.len() - 1;
            match self.start_listener(listener, may_move, payload, cx) {
                Ok(outcome) => self.settle(listener, outcome, cx),
                Err(future) => {
                    self.suspended().waiting = Some(Waiting::Listener(future));
                    return Step::Suspended;
                }
            }
        }
    }

    /// Finishes what the emit waits for (a listener that suspended, a failure being reported):
    /// `Pending` while it is not done.
    #[inline]
    fn resume(&mut self, listeners: &[Arc<Listener>], cx: &mut Context<'_>) -> Poll<()> {
        while let Some(waiting) = self.suspended.as_mut().and_then(|s| s.waiting.as_mut()) {
            match waiting {
                Waiting::Listener(future) => {
                    let Poll::Ready(outcome) = poll_guarded(future, cx) else {
                        return Poll::Pending;
                    };
                    self.suspended().waiting = None;
                    self.settle(&listeners[self.current], outcome, cx);
                }
                Waiting::Report(future) => {
                    if future.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.suspended().waiting = None;
                }
            }
        }
        Poll::Ready(())
    }

    /// Whether `listener` runs in this emit: a `once` listener runs for the first emit that
    /// claims it, and is removed then.
    #[inline]
    fn claim(&self, listener: &Listener) -> bool {
        let Some(claimed) = &listener.once else {
            return true;
        };
        if claimed.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.bus.remove(listener.id, &listener.pattern);
        true
    }

    /// Calls a listener and polls its future once, under one unwind guard: its outcome, or the
    /// future to await (bounded by the listener timeout, if one is set).
    #[inline]
    fn start_listener(
        &mut self,
        listener: &Listener,
        may_move: bool,
        payload: &mut (dyn Any + Send + Sync),
        cx: &mut Context<'_>,
    ) -> Result<Outcome, BoxFuture<'static, Outcome>> {
        let mut event = EventContext::new(
            self.app,
            &self.name,
            self.tally.event_id,
            payload,
            self.kind,
            &mut self.memo,
        );
        let timeout = self.bus.listener_timeout();
        let first = catch_unwind(AssertUnwindSafe(|| {
            match listener.call.call(&mut event, may_move) {
                ListenerCall::Done(outcome) => Ok(outcome),
                ListenerCall::Pending(future) => {
                    let mut future = match timeout {
                        Some(limit) => Box::pin(async move {
                            tokio::time::timeout(limit, future)
                                .await
                                .unwrap_or(Outcome(Err(Failure::Timeout)))
                        }),
                        None => future,
                    };
                    match future.as_mut().poll(cx) {
                        Poll::Ready(outcome) => Ok(outcome),
                        Poll::Pending => Err(future),
                    }
                }
            }
        }));
        match first {
            Ok(result) => result,
            Err(panic) => Ok(Outcome(Err(Failure::Panic(panic_message(&*panic))))),
        }
    }

    /// Counts one listener's outcome; a failure is logged and reported on the error event.
    #[inline]
    fn settle(&mut self, listener: &Listener, outcome: Outcome, cx: &mut Context<'_>) {
        match outcome.0 {
            Ok(ControlFlow::Continue(())) => {}
            Ok(ControlFlow::Break(())) => self.tally.stopped = true,
            Err(failure) => self.failed(listener, failure, cx),
        }
    }

    /// Counts a failure, logs it, and reports it on the error event.
    #[cold]
    fn failed(&mut self, listener: &Listener, failure: Failure, cx: &mut Context<'_>) {
        self.tally.failed += 1;
        if matches!(failure, Failure::Timeout) {
            self.tally.timed_out += 1;
        }
        let message = failure.message();
        let skipped = self.bus.cold.failure_log.allow();
        if !self.report_failures {
            if let Some(skipped) = skipped {
                tracing::error!(
                    event = &*self.name,
                    listener = %listener.label,
                    kind = failure.kind(),
                    skipped,
                    "error-event listener failed (not re-emitted): {message}"
                );
            }
            return;
        }
        if let Some(skipped) = skipped {
            tracing::error!(
                event = &*self.name,
                event_id = self.tally.event_id.0,
                listener = %listener.label,
                kind = failure.kind(),
                skipped,
                "listener failed: {message}"
            );
        }
        if !self.bus.has_listeners(LISTENER_ERROR) {
            return;
        }
        let error = ListenerFailed {
            event: self.name.to_string(),
            event_id: self.tally.event_id,
            listener: listener.label.to_string(),
            kind: failure.kind().to_owned(),
            message,
        };
        let mut report = Box::pin(emit(
            self.bus,
            self.app,
            Cow::Borrowed(LISTENER_ERROR),
            error,
            false,
        ));
        if report.as_mut().poll(cx).is_pending() {
            self.suspended().waiting = Some(Waiting::Report(report));
        }
    }

    /// The report of this emit.
    #[inline]
    fn report(&self, elapsed: Duration) -> EmitReport {
        let t = &self.tally;
        let mut report = EmitReport::new(t.event_id);
        report.listeners_executed = t.executed as usize;
        report.failed = t.failed as usize;
        report.timed_out = t.timed_out as usize;
        report.stopped = t.stopped;
        report.disabled = t.disabled;
        report.elapsed = elapsed;
        report
    }

    #[inline]
    fn finish(&mut self, stats: &Stats) -> EmitReport {
        let elapsed = match self.started {
            0 => Duration::ZERO,
            started => {
                let clock = self.bus.clock();
                clock.delta(started, clock.raw())
            }
        };
        let t = &self.tally;
        let durations = self.bus.durations();
        stats.record(t.executed as usize, t.failed as usize, elapsed, durations);
        self.report(elapsed)
    }
}

/// What an emit counted so far (kept small: the emit future lives in its caller's future).
#[derive(Debug, Clone, Copy)]
struct Tally {
    event_id: EventId,
    executed: u32,
    failed: u32,
    timed_out: u32,
    stopped: bool,
    disabled: bool,
}

/// Polls a listener's future; a panic is that listener's failure.
fn poll_guarded(future: &mut BoxFuture<'static, Outcome>, cx: &mut Context<'_>) -> Poll<Outcome> {
    match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
        Ok(poll) => poll,
        Err(panic) => Poll::Ready(Outcome(Err(Failure::Panic(panic_message(&*panic))))),
    }
}
