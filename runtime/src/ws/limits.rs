//! Inbound rate limits: a token bucket for messages and one for bytes per connection. A client
//! that sends faster is paused (its socket is not read, so TCP pushes back on it) or closed
//! with 1008, as configured.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

use crate::conn::TokenBucket;

/// What happens to a client that sends faster than its [`InboundLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateLimitAction {
    /// Stop reading from it until it is within its limit again (the default): TCP pushes back
    /// on the client, nothing is lost.
    #[default]
    Pause,
    /// Close the connection with 1008 "rate limit exceeded".
    Close,
}

/// A rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate {
    per_second: f64,
    burst: f64,
}

/// How fast one client may send: messages per second and bytes per second, each with a burst
/// (a token bucket: a client may send `burst` at once, then at the rate). Give it to
/// [`Builder::inbound_limit`](crate::Builder::inbound_limit) for every route, or
/// [`Builder::route_inbound_limit`](crate::Builder::route_inbound_limit) for one.
///
/// ```
/// use switchboard::ws::{InboundLimit, RateLimitAction};
///
/// let limit = InboundLimit::new()
///     .messages_per_second(50, 100)
///     .bytes_per_second(256 * 1024, 1024 * 1024)
///     .on_exceed(RateLimitAction::Close);
/// # let _ = limit;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct InboundLimit {
    messages: Option<Rate>,
    bytes: Option<Rate>,
    action: RateLimitAction,
}

impl InboundLimit {
    /// No limit yet: add a messages or a bytes rate.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `rate` messages per second, with bursts of up to `burst` (at least 1).
    pub fn messages_per_second(mut self, rate: u32, burst: u32) -> Self {
        self.messages = Some(Rate {
            per_second: f64::from(rate),
            burst: f64::from(burst.max(1)),
        });
        self
    }

    /// At most `rate` bytes of messages per second, with bursts of up to `burst` bytes.
    pub fn bytes_per_second(mut self, rate: u64, burst: u64) -> Self {
        self.bytes = Some(Rate {
            per_second: rate as f64,
            burst: burst.max(1) as f64,
        });
        self
    }

    /// What to do with a client past its limit (default [`RateLimitAction::Pause`]).
    pub fn on_exceed(mut self, action: RateLimitAction) -> Self {
        self.action = action;
        self
    }

    /// The action past the limit.
    pub fn action(&self) -> RateLimitAction {
        self.action
    }

    /// Whether the limit is usable: a rate of zero would never let the client send again.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        let zero = |rate: &Option<Rate>| rate.is_some_and(|r| r.per_second <= 0.0);
        if zero(&self.messages) || zero(&self.bytes) {
            return Some("an inbound limit's rate must be more than zero");
        }
        if self.messages.is_none() && self.bytes.is_none() {
            return Some("an inbound limit needs a messages or a bytes rate");
        }
        None
    }
}

/// A connection's limiter (kept only where a limit is configured).
#[derive(Debug)]
pub(crate) struct Limiter {
    action: RateLimitAction,
    messages: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
    sleep: Option<Pin<Box<Sleep>>>,
}

/// What a message did to the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Within the limit.
    Within,
    /// Past it: reading pauses until the client is within it again.
    Paused,
    /// Past it, and the action is to close the connection.
    Close,
}

impl Limiter {
    pub(crate) fn new(limit: &InboundLimit) -> Self {
        let bucket = |rate: Rate| TokenBucket::new(rate.per_second, rate.burst);
        Self {
            action: limit.action,
            messages: limit.messages.map(bucket),
            bytes: limit.bytes.map(bucket),
            sleep: None,
        }
    }

    /// Counts a message of `len` bytes.
    pub(crate) fn admit(&mut self, len: usize) -> Admit {
        let mut within = true;
        if let Some(bucket) = &mut self.messages {
            within &= bucket.spend(1.0);
        }
        if let Some(bucket) = &mut self.bytes {
            within &= bucket.spend(len as f64);
        }
        match (within, self.action) {
            (true, _) => Admit::Within,
            (false, RateLimitAction::Pause) => Admit::Paused,
            (false, RateLimitAction::Close) => Admit::Close,
        }
    }

    /// Ready once the client may send again (immediately when within its limit); else the
    /// reader is woken when it may.
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let wait = [&mut self.messages, &mut self.bytes]
                .into_iter()
                .flatten()
                .filter_map(TokenBucket::debt)
                .max();
            let Some(wait) = wait else {
                self.sleep = None;
                return Poll::Ready(());
            };
            let deadline = Instant::now() + wait;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            sleep.as_mut().reset(deadline);
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_rate() {
        let limit = InboundLimit::new().messages_per_second(10, 3);
        let mut limiter = Limiter::new(&limit);
        assert_eq!(limiter.admit(1), Admit::Within);
        assert_eq!(limiter.admit(1), Admit::Within);
        assert_eq!(limiter.admit(1), Admit::Within);
        assert_eq!(limiter.admit(1), Admit::Paused, "the burst is spent");
        let started = Instant::now();
        std::future::poll_fn(|cx| limiter.poll_ready(cx)).await;
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(100),
            "one token at 10/s"
        );
        assert_eq!(limiter.admit(1), Admit::Paused);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_count_and_the_close_action() {
        let limit = InboundLimit::new()
            .bytes_per_second(1000, 1000)
            .on_exceed(RateLimitAction::Close);
        let mut limiter = Limiter::new(&limit);
        assert_eq!(limiter.admit(600), Admit::Within);
        assert_eq!(limiter.admit(600), Admit::Close);
        assert!(InboundLimit::new().problem().is_some());
        assert!(
            InboundLimit::new()
                .messages_per_second(0, 5)
                .problem()
                .is_some()
        );
    }
}
