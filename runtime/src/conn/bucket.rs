//! A token bucket: up to `burst` at once, then `per_second`.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(per_second: f64, burst: f64) -> Self {
        Self {
            per_second,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
    }

    /// Spends `amount` whatever the tokens (the bucket may go into debt); returns whether it
    /// stayed within the limit.
    pub(crate) fn spend(&mut self, amount: f64) -> bool {
        self.refill(Instant::now());
        self.tokens -= amount;
        self.tokens >= 0.0
    }

    /// Spends `amount` only if the bucket holds it.
    pub(crate) fn try_spend(&mut self, amount: f64) -> bool {
        self.refill(Instant::now());
        if self.tokens < amount {
            return false;
        }
        self.tokens -= amount;
        true
    }

    /// How long until the bucket is out of debt (`None`: it is not in debt).
    pub(crate) fn debt(&mut self) -> Option<Duration> {
        self.refill(Instant::now());
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.per_second))
    }
}
