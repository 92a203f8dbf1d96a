//! What a connection's channel carries: how it takes JSON, its expiry and its data.

use std::any::Any;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Conn, lock};

/// How a channel receives JSON (group messages, `send_json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadType {
    /// JSON in text frames (the default).
    #[default]
    Json,
    /// Text frames (JSON is text, so the same frames as `Json`).
    Text,
    /// Binary frames holding the JSON bytes.
    Bytes,
}

impl PayloadType {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => PayloadType::Text,
            2 => PayloadType::Bytes,
            _ => PayloadType::Json,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            PayloadType::Json => 0,
            PayloadType::Text => 1,
            PayloadType::Bytes => 2,
        }
    }
}

#[derive(Default)]
pub(super) struct Attributes {
    payload_type: AtomicU8,
    /// Expiry in milliseconds since the last activity (0: none).
    ttl_ms: AtomicU64,
    /// The last activity, in milliseconds since the app's epoch.
    active_ms: AtomicU64,
    data: Mutex<Option<Arc<dyn Any + Send + Sync>>>,
}

impl Conn {
    pub(crate) fn payload_type(&self) -> PayloadType {
        PayloadType::from_u8(self.attributes.payload_type.load(Ordering::Relaxed))
    }

    pub(crate) fn set_payload_type(&self, payload_type: PayloadType) {
        self.attributes
            .payload_type
            .store(payload_type.as_u8(), Ordering::Relaxed);
    }

    /// Whether JSON goes out in binary frames.
    pub(super) fn sends_binary(&self) -> bool {
        self.payload_type() == PayloadType::Bytes
    }

    /// Records activity, when an expiry is set (a clock read otherwise saved).
    pub(crate) fn touch_if_expiring(&self) {
        if self.attributes.ttl_ms.load(Ordering::Relaxed) != 0 {
            self.touch();
        }
    }

    /// Records activity.
    pub(crate) fn touch(&self) {
        let now = self.config.now_ms();
        self.attributes.active_ms.store(now, Ordering::Relaxed);
    }

    /// Sets or removes the expiry (counted in the app's expiring connections while set).
    pub(crate) fn set_ttl(&self, ttl: Option<Duration>) {
        let ms = ttl.map_or(0, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        self.touch();
        let before = self.attributes.ttl_ms.swap(ms, Ordering::Relaxed);
        self.count_expiry(before, ms);
    }

    /// Forgets the expiry of a connection that ended.
    pub(crate) fn clear_ttl(&self) {
        let before = self.attributes.ttl_ms.swap(0, Ordering::Relaxed);
        self.count_expiry(before, 0);
    }

    fn count_expiry(&self, before: u64, after: u64) {
        match (before, after) {
            (0, 0) => {}
            (0, _) => {
                self.config.expiring.fetch_add(1, Ordering::Relaxed);
            }
            (_, 0) => {
                self.config.expiring.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Whether the channel has been idle past its expiry.
    pub(crate) fn is_expired(&self) -> bool {
        let ttl = self.attributes.ttl_ms.load(Ordering::Relaxed);
        ttl != 0
            && self
                .config
                .now_ms()
                .saturating_sub(self.attributes.active_ms.load(Ordering::Relaxed))
                > ttl
    }

    pub(crate) fn set_data(&self, data: Arc<dyn Any + Send + Sync>) {
        *lock(&self.attributes.data) = Some(data);
    }

    pub(crate) fn data(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        lock(&self.attributes.data).clone()
    }
}
