//! A circuit breaker per authorization server. After a failed introspection the server is
//! left alone for a while (`introspection.backoff`, 1 s by default, doubling with each
//! further failure up to 30 s): cached
//! tokens are served from the stale-if-error window at once instead of each request
//! waiting for its own attempt, new tokens are refused at once (503) instead of after a
//! timeout, and when the wait is over exactly one attempt (a probe) is let through. A
//! success closes the circuit. A recovering server is not hammered; a healthy one is never
//! delayed.

use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// Longest wait between attempts (unless the first is longer).
const MAX_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct State {
    /// Failures in a row (the one that opened the circuit, then each failed probe).
    failures: u32,
    /// No attempt before this.
    closed_until: Option<Instant>,
    /// A probe is out: its failure counts, and calls that were already in flight when the
    /// circuit opened do not (fifty of them failing at once is one outage, not fifty).
    probing: bool,
}

/// Whether an introspection may be attempted now.
#[derive(Debug, Default)]
pub struct Breaker {
    state: Mutex<State>,
    /// The wait after a first failure (zero: never wait).
    first: Duration,
}

impl Breaker {
    /// A breaker that waits `first` after a failure.
    pub fn new(first: Duration) -> Self {
        Self {
            state: Mutex::default(),
            first,
        }
    }

    /// Whether a call may go out at `now`: always while the server is healthy; once the
    /// wait after a failure is over, to exactly one caller (the probe: the others see the
    /// circuit open until it reports).
    pub fn attempt(&self, now: Instant) -> bool {
        let mut s = self.state.lock();
        match s.closed_until {
            None => true,
            Some(t) if now >= t => {
                // the probe: hold the others off for as long as it may take
                s.closed_until = Some(now + wait(self.first, s.failures));
                s.probing = true;
                true
            }
            Some(_) => false,
        }
    }

    /// Whether the circuit is open (attempts are being held off).
    pub fn is_open(&self) -> bool {
        self.state.lock().closed_until.is_some()
    }

    /// A call failed at `now`: wait before the next (longer after each failed probe).
    pub fn failed(&self, now: Instant) {
        let mut s = self.state.lock();
        if s.closed_until.is_some() && !s.probing {
            // already open: a call that was in flight when it opened
            return;
        }
        s.probing = false;
        s.failures = s.failures.saturating_add(1);
        s.closed_until = Some(now + wait(self.first, s.failures));
    }

    /// A call succeeded: the server is healthy again.
    pub fn succeeded(&self) {
        let mut s = self.state.lock();
        *s = State::default();
    }
}

/// The wait after `failures` failures in a row: `first`, twice that, four times … up to
/// 30 s (or `first`, if longer).
fn wait(first: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (first * 2u32.pow(doublings)).min(MAX_WAIT.max(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_probe_per_wait_doubling_up_to_thirty_seconds_and_a_success_closes() {
        const FIRST_WAIT: Duration = Duration::from_secs(1);
        let b = Breaker::new(FIRST_WAIT);
        let t0 = Instant::now();
        assert!(b.attempt(t0) && b.attempt(t0), "healthy: every call goes");
        b.failed(t0);
        assert!(b.is_open());
        assert!(!b.attempt(t0 + Duration::from_millis(999)));
        // the wait is over: one probe, the others still held off
        let t1 = t0 + FIRST_WAIT;
        assert!(b.attempt(t1));
        assert!(!b.attempt(t1));
        b.failed(t1);
        assert!(
            !b.attempt(t1 + Duration::from_millis(1999)),
            "2 s after a second failure"
        );
        assert!(b.attempt(t1 + Duration::from_secs(2)));
        assert_eq!(wait(FIRST_WAIT, 3), Duration::from_secs(4));
        assert_eq!(wait(FIRST_WAIT, 6), MAX_WAIT);
        assert_eq!(wait(FIRST_WAIT, 60), MAX_WAIT);
        b.succeeded();
        assert!(!b.is_open());
        assert!(b.attempt(t1) && b.attempt(t1));
        // fifty calls in flight failing after the first: one outage, one wait
        let b = Breaker::new(FIRST_WAIT);
        for _ in 0..50 {
            b.failed(t0);
        }
        assert!(b.attempt(t0 + FIRST_WAIT), "still the first wait");
        // backoff 0s: a failure never holds a call off
        let b = Breaker::new(Duration::ZERO);
        b.failed(t0);
        assert!(b.attempt(t0) && b.attempt(t0));
    }
}
