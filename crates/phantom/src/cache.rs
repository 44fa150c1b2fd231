//! The token cache: keyed by SHA-256 of the token (never the token), per-entry TTL bounded
//! by the token's `exp`, and a short negative TTL.
//!
//! [`TokenCache`] is the seam for a shared tier (Redis) across replicas; [`MokaCache`] is
//! the in-process implementation.

use async_trait::async_trait;
use gatehouse_core::{Claims, Keep, Reuse};
use moka::future::Cache;
use moka::Expiry;
use std::time::{Duration, Instant};

type Map = serde_json::Map<String, serde_json::Value>;

/// SHA-256 of an access token.
pub type TokenKey = [u8; 32];

/// A cache entry: what a hit needs — the claims (for cnf and claims rules, re-checked on
/// every hit) and `Bearer <jwt>` to forward — or a negative entry, with how long to serve
/// and keep it. One allocation per token ([`Claims`] holds the JWT as its attachment);
/// cloning is one reference-count increment.
#[derive(Debug, Clone)]
pub struct CachedToken(Claims);

impl CachedToken {
    /// An active token: its claims (kept as `keep` says) and the JWT to forward.
    pub fn active(
        claims: &Map,
        keep: Keep,
        jwt: &str,
        fresh_until: Instant,
        keep_for: Duration,
    ) -> Result<Self, crate::IntrospectError> {
        let header = format!("Bearer {jwt}");
        // checked once here, so building the header for each request cannot fail
        http::HeaderValue::from_str(&header).map_err(|_| {
            crate::IntrospectError::Unforwardable("the JWT is not a valid header value")
        })?;
        let reuse = Reuse {
            fresh_until,
            keep_for,
        };
        Ok(Self(Claims::cached(
            claims,
            keep,
            header.as_bytes(),
            Some(reuse),
        )))
    }

    /// A negative entry (the token is not active).
    pub fn inactive(fresh_until: Instant, keep_for: Duration) -> Self {
        let reuse = Reuse {
            fresh_until,
            keep_for,
        };
        Self(Claims::cached(&Map::new(), Keep::Hot, b"", Some(reuse)))
    }

    /// What the entry says about its token. (One allocation per entry either way: an
    /// inactive entry is the one without a JWT to forward, and this is the only place that
    /// knows it.)
    pub fn state(&self) -> TokenState<'_> {
        if self.0.attachment().is_empty() {
            TokenState::Inactive
        } else {
            TokenState::Active(&self.0)
        }
    }

    /// `Authorization: Bearer <jwt>` for the upstream request (`None` for a negative
    /// entry). Built per request from the cached bytes: a copy of the JWT, where sharing
    /// one prebuilt header would cost a second allocation per cached token.
    pub fn upstream_header(&self) -> Option<http::HeaderValue> {
        match self.state() {
            TokenState::Active(claims) => http::HeaderValue::from_bytes(claims.attachment()).ok(),
            TokenState::Inactive => None,
        }
    }

    /// Whether both are the very same entry (not merely equal ones).
    pub fn same(&self, other: &CachedToken) -> bool {
        self.0.same(&other.0)
    }

    /// Whether the entry is still fresh at `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        self.0.reuse().is_some_and(|r| now < r.fresh_until)
    }

    /// How long the cache keeps the entry from insertion (fresh + stale-if-error window).
    pub fn keep_for(&self) -> Duration {
        self.0.reuse().map_or(Duration::ZERO, |r| r.keep_for)
    }
}

/// What a cache entry says about its token.
#[derive(Debug, Clone, Copy)]
pub enum TokenState<'a> {
    /// Active, with these claims (and the JWT to forward).
    Active(&'a Claims),
    /// Not active (a negative answer, cached for `negative_ttl`).
    Inactive,
}

/// How a lookup was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Found, fresh.
    Hit,
    /// Loaded by this request.
    Miss,
    /// Loaded by a concurrent request for the same token; this one waited for it.
    Coalesced,
}

/// A token store: entries by key. Single flight is not its business (the authorization
/// server's [`crate::Flights`] serves loads and refreshes alike), so a store is only this.
#[async_trait]
pub trait TokenCache: Send + Sync {
    /// The entry for `key`, if present (fresh or stale).
    async fn get(&self, key: &TokenKey) -> Option<CachedToken>;
    /// Replace the entry for `key`.
    async fn insert(&self, key: TokenKey, value: CachedToken);
    /// Entries held, exactly: a store that defers its bookkeeping (moka) catches up
    /// first, so call it off the hot path (after a miss, which waited for an
    /// introspection anyway).
    async fn entry_count(&self) -> u64;
}

struct PerEntry;

impl Expiry<TokenKey, CachedToken> for PerEntry {
    fn expire_after_create(
        &self,
        _k: &TokenKey,
        v: &CachedToken,
        _now: Instant,
    ) -> Option<Duration> {
        Some(v.keep_for())
    }
    fn expire_after_update(
        &self,
        _k: &TokenKey,
        v: &CachedToken,
        _now: Instant,
        _d: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.keep_for())
    }
}

/// The in-process cache (moka).
pub struct MokaCache {
    cache: Cache<TokenKey, CachedToken>,
}

impl MokaCache {
    /// A cache of at most `max_entries` tokens.
    pub fn new(max_entries: u64) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(PerEntry)
                .build(),
        }
    }
}

#[async_trait]
impl TokenCache for MokaCache {
    async fn get(&self, key: &TokenKey) -> Option<CachedToken> {
        self.cache.get(key).await
    }

    async fn insert(&self, key: TokenKey, value: CachedToken) {
        self.cache.insert(key, value).await;
    }

    async fn entry_count(&self) -> u64 {
        // moka counts an insert only once its pending tasks ran
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }
}
