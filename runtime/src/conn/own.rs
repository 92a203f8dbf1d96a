//! A connection's own queue: what its handler, `send_json` on its channel and `send_to` send
//! it (group messages are in the groups' rings). One reader, its writer; part of the
//! connection itself, so it holds no reference back to it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::frame::{Frame, Offer};
use super::ring::Taken;
use super::{ConnConfig, lock};

#[derive(Debug, Default)]
struct Queued {
    frames: VecDeque<(u64, Frame)>,
    bytes: usize,
}

#[derive(Debug, Default)]
pub(super) struct OwnQueue {
    queued: Mutex<Queued>,
    /// `queued.bytes`, readable without the lock (for the reader's backlog check).
    bytes: AtomicUsize,
    /// The writer found the queue empty and waits to be woken by the next frame.
    waiting: AtomicBool,
}

impl OwnQueue {
    /// Queues `frame` unless that would pass the bound (a frame is always taken by an empty
    /// queue); returns whether the writer must be woken.
    pub(super) fn offer(&self, frame: &Frame, config: &ConnConfig) -> (Offer, bool) {
        let cost = frame.cost();
        let mut queued = lock(&self.queued);
        if queued.bytes > 0 && queued.bytes + cost > config.max_queue_bytes {
            return (Offer::Full, false);
        }
        let seq = config.sequence.fetch_add(1, Ordering::Relaxed);
        queued.frames.push_back((seq, frame.clone()));
        queued.bytes += cost;
        self.bytes.store(queued.bytes, Ordering::SeqCst);
        drop(queued);
        (Offer::Queued, self.waiting.swap(false, Ordering::AcqRel))
    }

    /// Moves queued frames to `out`, at most `budget` bytes (at least one frame).
    pub(super) fn take(&self, out: &mut VecDeque<(u64, Frame)>, budget: usize) -> Taken {
        let mut queued = lock(&self.queued);
        let mut taken = Taken {
            bytes: 0,
            left: None,
        };
        while let Some((seq, frame)) = queued.frames.front() {
            let cost = frame.cost();
            if taken.bytes + cost > budget && taken.bytes > 0 {
                taken.left = Some(*seq);
                break;
            }
            taken.bytes += cost;
            if let Some(entry) = queued.frames.pop_front() {
                out.push_back(entry);
            }
        }
        queued.bytes -= taken.bytes;
        if queued.frames.is_empty() && queued.frames.capacity() > 64 {
            // A burst grew it: give the memory back once it is drained.
            queued.frames = VecDeque::new();
        }
        self.bytes.store(queued.bytes, Ordering::SeqCst);
        taken
    }

    /// Whether frames are queued; if not, the next offer wakes the writer.
    pub(super) fn wait(&self) -> bool {
        let queued = lock(&self.queued);
        if !queued.frames.is_empty() {
            return true;
        }
        self.waiting.store(true, Ordering::Release);
        false
    }

    /// Bytes queued.
    pub(super) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }
}
