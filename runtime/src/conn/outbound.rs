//! A connection's outbound side: its own ring (what its handler and `send_to` send it), the
//! rings of the groups it is in, and the backpressure between them and its reader.
//!
//! Everything queued for a connection is bounded by bytes: a send to its own ring waits (or,
//! from a group, is refused) at the bound, and a reader whose writer lags pauses.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::frame::{Frame, Offer};
use super::own::OwnQueue;
use super::ring::{Ring, Sub};
use super::{Conn, WsError, lock};

#[derive(Debug)]
pub(super) struct Outbound {
    /// This connection's own queue.
    pub(super) own: OwnQueue,
    /// The rings of the groups it is in.
    pub(super) groups: Mutex<Vec<Arc<Sub>>>,
    /// More than half the bound waits for the writer: reads pause until it is below a quarter
    /// (set by the reader, cleared by the writer).
    backlogged: AtomicBool,
    /// Bytes the writer took from the rings and has not given to the socket yet.
    unwritten: AtomicUsize,
    /// Woken when the writer took frames from a full queue (for senders that wait).
    pub(super) space: Notify,
}

impl Outbound {
    pub(super) fn new() -> Self {
        Self {
            own: OwnQueue::default(),
            groups: Mutex::default(),
            backlogged: AtomicBool::new(false),
            unwritten: AtomicUsize::new(0),
            space: Notify::new(),
        }
    }
}

impl Conn {
    /// Offers a frame to this connection's own queue without waiting: queued, or refused
    /// because it is full or the connection is closing.
    pub(crate) fn offer(&self, frame: &Frame) -> Offer {
        if self.is_closing() {
            return Offer::Closed;
        }
        let (offer, wake) = self.outbound.own.offer(frame, &self.config);
        if wake {
            self.writer.wake();
        }
        offer
    }

    /// Queues a frame, waiting while the queue is full.
    pub(crate) async fn send(&self, frame: Frame) -> Result<(), WsError> {
        loop {
            // Registered before offering, so a wake-up between the two is not missed.
            let space = self.outbound.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match self.offer(&frame) {
                Offer::Queued => return Ok(()),
                Offer::Closed => return Err(WsError::closed()),
                // A kill wakes the waiters too.
                Offer::Full => space.await,
            }
        }
    }

    pub(crate) fn wake_writer(&self) {
        self.writer.wake();
    }

    /// Joins a group's ring (its writer reads it from now on).
    pub(crate) fn join(self: &Arc<Self>, ring: &Arc<Ring>, group: Arc<str>) -> bool {
        let mut groups = lock(&self.outbound.groups);
        if groups.iter().any(|s| Arc::ptr_eq(&s.ring, ring)) {
            return false;
        }
        groups.push(ring.subscribe(Arc::downgrade(self), Some(group)));
        drop(groups);
        self.writer.wake();
        true
    }

    /// How many groups this connection is in.
    pub(crate) fn group_count(&self) -> usize {
        lock(&self.outbound.groups).len()
    }

    /// Leaves a group's ring; returns the members left in it, or `None` if not a member.
    pub(crate) fn leave(&self, ring: &Arc<Ring>) -> Option<usize> {
        let mut groups = lock(&self.outbound.groups);
        let i = groups.iter().position(|s| Arc::ptr_eq(&s.ring, ring))?;
        let sub = groups.swap_remove(i);
        drop(groups);
        Some(sub.ring.unsubscribe(&sub))
    }

    /// Leaves every group: returns the subscriptions left (their rings, their names).
    pub(crate) fn leave_all(&self) -> Vec<Arc<Sub>> {
        std::mem::take(&mut *lock(&self.outbound.groups))
    }

    /// Whether this connection is in a group's ring.
    pub(crate) fn is_in(&self, ring: &Arc<Ring>) -> bool {
        lock(&self.outbound.groups)
            .iter()
            .any(|s| Arc::ptr_eq(&s.ring, ring))
    }

    /// The names of the groups this connection is in.
    pub(crate) fn group_names(&self) -> Vec<Arc<str>> {
        lock(&self.outbound.groups)
            .iter()
            .filter_map(|s| s.group.clone())
            .collect()
    }

    /// Bytes waiting for this connection: in its rings, and taken by its writer but not
    /// written yet.
    pub(crate) fn queued_bytes(&self) -> usize {
        let outbound = &self.outbound;
        let mut queued = outbound.unwritten.load(Ordering::SeqCst) + outbound.own.bytes();
        for sub in lock(&outbound.groups).iter() {
            queued += sub.behind();
        }
        queued
    }

    /// Whether the reader should pause: more than half the bound waits for the writer (the
    /// client sends faster than it takes what it is sent). The writer wakes the reader once
    /// less than a quarter waits.
    pub(crate) fn should_pause_reading(&self) -> bool {
        let backlogged = &self.outbound.backlogged;
        if backlogged.load(Ordering::SeqCst) {
            return true;
        }
        let bound = self.config.max_queue_bytes;
        if self.queued_bytes() <= bound / 2 {
            return false;
        }
        backlogged.store(true, Ordering::SeqCst);
        // The writer may have caught up before it could see the flag: look again.
        if self.queued_bytes() <= bound / 4 {
            backlogged.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Publishes what the writer holds and, when the reader paused and less than a quarter
    /// of the bound waits now, lets it read again.
    pub(super) fn set_unwritten(&self, bytes: usize) {
        let outbound = &self.outbound;
        outbound.unwritten.store(bytes, Ordering::SeqCst);
        if outbound.backlogged.load(Ordering::SeqCst)
            && self.queued_bytes() <= self.config.max_queue_bytes / 4
        {
            outbound.backlogged.store(false, Ordering::SeqCst);
            self.reader.wake();
        }
    }
}
