//! Passive health: connection failures seen in live traffic take a peer out for
//! `fail_timeout` once `max_fails` of them fall within that window (NGINX's `max_fails` /
//! `fail_timeout`). Time is passed in, never read here, so tests drive it.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Entry {
    fails: u32,
    window_start: Instant,
    down_until: Option<Instant>,
}

/// Failure counts per peer address.
#[derive(Debug)]
pub struct Passive {
    max_fails: u32,
    fail_timeout: Duration,
    /// Entries in `peers`: the request path reads the map only when it is not empty.
    tracked: AtomicUsize,
    peers: Mutex<HashMap<SocketAddr, Entry>>,
}

impl Passive {
    /// `max_fails` 0 turns passive health off.
    pub fn new(max_fails: u32, fail_timeout: Duration) -> Self {
        Self {
            max_fails,
            fail_timeout,
            tracked: AtomicUsize::new(0),
            peers: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<SocketAddr, Entry>> {
        self.peers.lock()
    }

    /// A failed connection to `addr`. True when this failure takes the peer out.
    pub fn failure(&self, addr: SocketAddr, now: Instant) -> bool {
        if self.max_fails == 0 {
            return false;
        }
        let mut peers = self.lock();
        let e = peers.entry(addr).or_insert(Entry {
            fails: 0,
            window_start: now,
            down_until: None,
        });
        if now.saturating_duration_since(e.window_start) >= self.fail_timeout {
            // a new window
            e.fails = 0;
            e.window_start = now;
        }
        e.fails = e.fails.saturating_add(1);
        let ejected = e.fails >= self.max_fails && e.down_until.is_none_or(|t| t <= now);
        if ejected {
            e.down_until = Some(now + self.fail_timeout);
            e.fails = 0;
            e.window_start = now;
        }
        self.tracked.store(peers.len(), Ordering::Release);
        ejected
    }

    /// A request or an active check to `addr` succeeded: its failures are forgotten.
    pub fn success(&self, addr: SocketAddr) {
        if self.tracked.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut peers = self.lock();
        peers.remove(&addr);
        self.tracked.store(peers.len(), Ordering::Release);
    }

    /// Whether `addr` is out at `now`.
    pub fn is_down(&self, addr: &SocketAddr, now: Instant) -> bool {
        if self.tracked.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.lock()
            .get(addr)
            .and_then(|e| e.down_until)
            .is_some_and(|t| t > now)
    }

    /// Forget the entries that no longer matter (windows and ejections over, or peers gone).
    pub fn expire(&self, now: Instant, present: impl Fn(&SocketAddr) -> bool) {
        if self.tracked.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut peers = self.lock();
        peers.retain(|a, e| {
            present(a)
                && (e.down_until.is_some_and(|t| t > now)
                    || now.saturating_duration_since(e.window_start) < self.fail_timeout)
        });
        self.tracked.store(peers.len(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn one_failure_takes_a_peer_out_for_fail_timeout() {
        let p = Passive::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(!p.is_down(&addr(1), t0));
        assert!(p.failure(addr(1), t0));
        assert!(p.is_down(&addr(1), t0 + Duration::from_secs(9)));
        assert!(!p.is_down(&addr(2), t0));
        assert!(!p.is_down(&addr(1), t0 + Duration::from_secs(10)));
    }

    #[test]
    fn max_fails_counts_within_the_window_only() {
        let p = Passive::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(!p.failure(addr(1), t0));
        assert!(!p.failure(addr(1), t0 + Duration::from_secs(1)));
        // the window is over: counting starts again
        assert!(!p.failure(addr(1), t0 + Duration::from_secs(11)));
        assert!(!p.failure(addr(1), t0 + Duration::from_secs(12)));
        assert!(!p.is_down(&addr(1), t0 + Duration::from_secs(12)));
        assert!(p.failure(addr(1), t0 + Duration::from_secs(13)));
        assert!(p.is_down(&addr(1), t0 + Duration::from_secs(14)));
    }

    #[test]
    fn a_success_brings_a_peer_back_and_off_means_off() {
        let p = Passive::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        p.failure(addr(1), t0);
        p.success(addr(1));
        assert!(!p.is_down(&addr(1), t0));
        let off = Passive::new(0, Duration::from_secs(10));
        assert!(!off.failure(addr(1), t0));
        assert!(!off.is_down(&addr(1), t0));
    }

    #[test]
    fn expiry_forgets_old_entries_and_gone_peers() {
        let p = Passive::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        p.failure(addr(1), t0);
        p.failure(addr(2), t0);
        p.expire(t0 + Duration::from_secs(1), |a| a.port() != 2);
        assert_eq!(p.lock().len(), 1);
        p.expire(t0 + Duration::from_secs(11), |_| true);
        assert_eq!(p.tracked.load(Ordering::Acquire), 0);
    }
}
