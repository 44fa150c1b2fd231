//! The time Gatehouse's own decisions read: token cache freshness and expiry, negative
//! answers, the stale-if-error window, the introspection breaker, JWKS refresh limits and
//! the JWTs Gatehouse signs. One clock per instance, injected at build: production runs on
//! the system clock; tests move theirs forward instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time.
pub trait Clock: Send + Sync {
    /// Monotonic time (TTLs, waits).
    fn now(&self) -> Instant;
    /// Unix seconds (token `exp`, `iat`).
    fn unix(&self) -> i64;
}

/// A clock shared by everything one Gatehouse builds.
pub type SharedClock = Arc<dyn Clock>;

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix(&self) -> i64 {
        unix_seconds(SystemTime::now())
    }
}

/// The system clock as a [`SharedClock`].
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// The system clock plus an offset that only grows: tests call [`ManualClock::advance`]
/// where they would otherwise sleep. Time also passes as usual, so anything that waits
/// for real (a network call, a timeout) behaves as in production.
#[derive(Debug, Default)]
pub struct ManualClock {
    offset_ms: AtomicU64,
}

impl ManualClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Move the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.offset_ms
            .fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }

    fn offset(&self) -> Duration {
        Duration::from_millis(self.offset_ms.load(Ordering::SeqCst))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        Instant::now() + self.offset()
    }

    fn unix(&self) -> i64 {
        unix_seconds(SystemTime::now() + self.offset())
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_when_told_and_with_time() {
        let c = ManualClock::new();
        let (i, u) = (c.now(), c.unix());
        c.advance(Duration::from_secs(90));
        assert!(c.now() >= i + Duration::from_secs(90));
        assert!(c.unix() >= u + 90);
        assert!((SystemClock.unix() - unix_seconds(SystemTime::now())).abs() <= 1);
    }
}
