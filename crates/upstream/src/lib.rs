//! Upstream pools: which peer a request goes to, and which peers are fit to get one.
//!
//! Selection, weights, consistent hashing and active health checks are Pingora's own
//! (`pingora-load-balancing`); this crate adds what Gatehouse's users expect from an edge
//! proxy beside them: passive health from live traffic ([`passive`]), peers by name that
//! follow DNS ([`discovery`]), the choice of a *different* peer for a retry, metrics by
//! configured peer (bounded), and a status view for the admin listener.
//!
//! The request path calls [`Pool::select`]; a background task calls [`Pool::tick`], which
//! re-resolves names and runs health checks when they are due.

pub mod discovery;
mod health;
pub mod passive;

pub use discovery::Resolver;
pub use health::TlsTo;

use discovery::{Discovery, PeerEntry, Shared};
use gatehouse_config::{Balance, HashOn, Upstream};
use gatehouse_metrics::Metrics;
use parking_lot::Mutex;
use passive::Passive;
use pingora_load_balancing::selection::{Consistent, Random, RoundRobin};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The selection algorithm, as configured.
enum Lb {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Hash(LoadBalancer<Consistent>),
}

macro_rules! each {
    ($lb:expr, $b:ident => $e:expr) => {
        match $lb {
            Lb::RoundRobin($b) => $e,
            Lb::Random($b) => $e,
            Lb::Hash($b) => $e,
        }
    };
}

/// The outcome of a selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Peer(SocketAddr),
    /// Peers exist, but none is fit (all failing their health checks, or all tried).
    NoHealthyPeer,
    /// No peer at all (names that resolved to nothing yet).
    NoPeer,
}

/// One upstream's peers and their health.
pub struct Pool {
    name: Arc<str>,
    lb: Lb,
    discovery: Arc<Discovery>,
    passive: Arc<Passive>,
    pub hash_on: Option<HashOn>,
    /// Further peers tried after a failed connection.
    pub retries: u32,
    /// Retry idempotent requests after a failure on a connection they were sent on.
    pub retry_idempotent: bool,
    resolve_every: Option<Duration>,
    check_every: Option<Duration>,
    next_resolve: Mutex<Option<Instant>>,
    next_check: Mutex<Option<Instant>>,
    metrics: Metrics,
}

/// Bound on the backends a selection walks (Pingora's `max_iterations`).
const MAX_WALK: usize = 256;

impl Pool {
    /// Build a pool and resolve its names once (blocking, on a thread of its own, so it
    /// works inside and outside an async runtime). With `resolve_interval: 0s` a name
    /// that does not resolve is an error; otherwise it is counted, logged and retried.
    pub fn build(
        name: &str,
        c: &Upstream,
        resolver: Resolver,
        tls: Option<TlsTo>,
        metrics: &Metrics,
    ) -> Result<Self, String> {
        let mut peers = Vec::new();
        for (j, p) in c.peers.iter().enumerate() {
            peers.push(PeerEntry::parse(p).map_err(|e| format!("peers[{j}]: {e}"))?);
        }
        let has_names = peers.iter().any(PeerEntry::is_name);
        let discovery = Arc::new(Discovery::new(
            name,
            peers,
            resolver,
            metrics.upstream_resolutions.clone(),
        ));
        let passive = Arc::new(Passive::new(c.passive.max_fails, c.passive.fail_timeout.0));
        let mut backends = Backends::new(Box::new(Shared(discovery.clone())));
        if let Some(hc) = &c.health_check {
            backends.set_health_check(Box::new(health::Checked::new(
                name,
                hc,
                tls.as_ref(),
                c.protocol,
                passive.clone(),
                metrics.upstream_health_checks.clone(),
                metrics.upstream_ejections.clone(),
            )?));
        }
        let lb = match c.balance {
            Balance::RoundRobin => Lb::RoundRobin(LoadBalancer::from_backends(backends)),
            Balance::Random => Lb::Random(LoadBalancer::from_backends(backends)),
            Balance::ConsistentHash => Lb::Hash(LoadBalancer::from_backends(backends)),
        };
        let pool = Self {
            name: name.into(),
            lb,
            discovery,
            passive,
            hash_on: (c.balance == Balance::ConsistentHash).then_some(c.hash_on),
            retries: c.retries,
            retry_idempotent: c.retry_idempotent,
            resolve_every: (has_names && !c.resolve_interval.0.is_zero())
                .then_some(c.resolve_interval.0),
            check_every: c.health_check.as_ref().map(|h| h.interval.0),
            next_resolve: Mutex::new(None),
            next_check: Mutex::new(None),
            metrics: metrics.clone(),
        };
        pool.first_update(has_names && c.resolve_interval.0.is_zero())?;
        Ok(pool)
    }

    /// Resolve and build the selector once, before the first request.
    fn first_update(&self, strict: bool) -> Result<(), String> {
        let run = || -> Result<Vec<(String, String)>, String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let errors = self.discovery.resolve().await;
                each!(&self.lb, lb => lb.update().await).map_err(|e| e.to_string())?;
                Ok(errors)
            })
        };
        // a thread of its own: a nested block_on inside a runtime (a reload) is not allowed
        let errors = std::thread::scope(|s| s.spawn(run).join())
            .map_err(|_| "the resolver thread failed".to_owned())??;
        let now = Instant::now();
        if let Some(every) = self.resolve_every {
            *self.next_resolve.lock() = Some(now + every);
        }
        self.publish(now);
        for (peer, e) in errors {
            if strict {
                return Err(format!("cannot resolve {peer}: {e}"));
            }
            tracing::warn!(upstream = %self.name, %peer, error = %e, "upstream peer does not resolve yet; retried every resolve_interval");
        }
        Ok(())
    }

    /// Whether a selection walks over more than one backend.
    pub fn backend_count(&self) -> usize {
        each!(&self.lb, lb => lb.backends().get_backend().len())
    }

    /// The peer for a request: healthy (active checks), not passively ejected, not in
    /// `tried`. If passive ejection leaves nothing, a healthy untried peer is tried anyway
    /// (as NGINX does when every server is marked failed).
    pub fn select(&self, key: &[u8], tried: &[SocketAddr], now: Instant) -> Pick {
        // one backend (a Service address, a single peer): nothing to choose, and Pingora's
        // walk (a set of the backends seen, a clone of the one chosen) would be most of
        // the cost of this call
        if let Some(pick) = self.select_only(tried) {
            return pick;
        }
        let walk = |skip_passive: bool| {
            each!(&self.lb, lb => lb.select_with(key, MAX_WALK, |b, healthy| {
                let Some(a) = b.addr.as_inet() else { return false };
                healthy
                    && !tried.contains(a)
                    && (skip_passive || !self.passive.is_down(a, now))
            }))
        };
        match walk(false).or_else(|| walk(true)) {
            Some(b) => match b.addr.as_inet() {
                Some(a) => Pick::Peer(*a),
                None => Pick::NoHealthyPeer,
            },
            None if self.backend_count() == 0 => Pick::NoPeer,
            None => Pick::NoHealthyPeer,
        }
    }

    /// [`Pool::select`] for a pool of exactly one backend; `None` for any other pool.
    fn select_only(&self, tried: &[SocketAddr]) -> Option<Pick> {
        let backends = self.status_backends();
        if backends.len() != 1 {
            return None;
        }
        let b = backends.first()?;
        let a = *b.addr.as_inet()?;
        // without active checks nothing ever marks a backend unhealthy
        let healthy = self.check_every.is_none() || self.ready(b);
        // a passively ejected only peer is tried anyway, as `select` would
        Some(if healthy && !tried.contains(&a) {
            Pick::Peer(a)
        } else {
            Pick::NoHealthyPeer
        })
    }

    /// Whether another peer than those in `tried` could take a retry.
    pub fn has_untried(&self, tried: &[SocketAddr]) -> bool {
        each!(&self.lb, lb => lb
            .backends()
            .get_backend()
            .iter()
            .any(|b| b.addr.as_inet().is_some_and(|a| !tried.contains(a) && lb.backends().ready(b))))
    }

    /// A connection to `addr` failed (refused, reset, timed out), or `addr` did not
    /// answer in time.
    pub fn failed(&self, addr: SocketAddr, now: Instant) {
        if self.passive.failure(addr, now) {
            self.metrics
                .upstream_ejections
                .with_label_values(&[&*self.name, "passive"])
                .inc();
            tracing::warn!(upstream = %self.name, peer = %addr, "upstream peer failed a connection or timed out: taken out for fail_timeout");
        }
    }

    /// `addr` answered a request.
    pub fn answered(&self, addr: SocketAddr) {
        self.passive.success(addr);
    }

    /// Count a retry.
    pub fn count_retry(&self, reason: &str) {
        self.metrics
            .upstream_retries
            .with_label_values(&[&*self.name, reason])
            .inc();
    }

    /// Re-resolve and health-check when due; returns when this pool wants the next tick.
    pub async fn tick(&self, now: Instant) -> Instant {
        if let Some(every) = self.resolve_every {
            if due(&self.next_resolve, now, every) {
                let _ = each!(&self.lb, lb => lb.update().await);
            }
        }
        if let Some(every) = self.check_every {
            if due(&self.next_check, now, every) {
                each!(&self.lb, lb => lb.backends().run_health_check(true).await);
            }
        }
        let now = Instant::now();
        self.publish(now);
        [
            self.resolve_every.map(|_| next(&self.next_resolve)),
            self.check_every.map(|_| next(&self.next_check)),
        ]
        .into_iter()
        .flatten()
        .flatten()
        .min()
        .unwrap_or(now + Duration::from_secs(5))
    }

    fn status_backends(&self) -> Arc<BTreeSet<Backend>> {
        each!(&self.lb, lb => lb.backends().get_backend())
    }

    fn ready(&self, b: &Backend) -> bool {
        each!(&self.lb, lb => lb.backends().ready(b))
    }

    /// Set the per-peer gauges (bounded: configured peers only).
    fn publish(&self, now: Instant) {
        let backends = self.status_backends();
        self.passive.expire(now, |a| {
            backends.iter().any(|b| b.addr.as_inet() == Some(a))
        });
        let mut counts = vec![(0i64, 0i64); self.discovery.peers.len()];
        for b in backends.iter() {
            let Some(i) = b.addr.as_inet().and_then(|a| self.discovery.peer_index(a)) else {
                continue;
            };
            let up = self.ready(b)
                && b.addr
                    .as_inet()
                    .is_some_and(|a| !self.passive.is_down(a, now));
            if let Some(c) = counts.get_mut(i) {
                if up {
                    c.0 += 1;
                } else {
                    c.1 += 1;
                }
            }
        }
        for (p, (up, down)) in self.discovery.peers.iter().zip(counts) {
            let m = &self.metrics;
            m.upstream_peer_up
                .with_label_values(&[&*self.name, p.label.as_str()])
                .set(i64::from(up > 0));
            m.upstream_peer_addresses
                .with_label_values(&[&*self.name, p.label.as_str(), "up"])
                .set(up);
            m.upstream_peer_addresses
                .with_label_values(&[&*self.name, p.label.as_str(), "down"])
                .set(down);
        }
    }

    /// The pool as the admin listener shows it.
    pub fn status(&self, now: Instant) -> serde_json::Value {
        let backends = self.status_backends();
        let names = self.discovery.lock().clone();
        let peers: Vec<serde_json::Value> = self
            .discovery
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let addresses: Vec<serde_json::Value> = backends
                    .iter()
                    .filter(|b| {
                        b.addr.as_inet().and_then(|a| self.discovery.peer_index(a)) == Some(i)
                    })
                    .filter_map(|b| {
                        let a = b.addr.as_inet()?;
                        let healthy = self.ready(b);
                        let ejected = self.passive.is_down(a, now);
                        Some(serde_json::json!({
                            "address": a.to_string(),
                            "weight": b.weight,
                            "state": if !healthy { "unhealthy" } else if ejected { "ejected" } else { "up" },
                        }))
                    })
                    .collect();
                serde_json::json!({
                    "peer": p.label,
                    "resolved": p.is_name(),
                    "last_resolution_error": names.get(i).and_then(|n| n.last_error.clone()),
                    "addresses": addresses,
                })
            })
            .collect();
        serde_json::json!({
            "upstream": &*self.name,
            "balance": match self.lb { Lb::RoundRobin(_) => "round_robin", Lb::Random(_) => "random", Lb::Hash(_) => "consistent_hash" },
            "health_check_interval_ms": self.check_every.map(|d| d.as_millis() as u64),
            "resolve_interval_ms": self.resolve_every.map(|d| d.as_millis() as u64),
            "peers": peers,
        })
    }
}

fn due(slot: &Mutex<Option<Instant>>, now: Instant, every: Duration) -> bool {
    let mut next = slot.lock();
    match *next {
        Some(t) if t > now => false,
        _ => {
            *next = Some(now + every);
            true
        }
    }
}

fn next(slot: &Mutex<Option<Instant>>) -> Option<Instant> {
    *slot.lock()
}
