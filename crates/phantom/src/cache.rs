//! The token cache: keyed by SHA-256 of the token (never the token), per-entry TTL bounded
//! by the token's `exp`, a short negative TTL, and single-flight loading.
//!
//! [`TokenCache`] is the seam for a shared tier (Redis) across replicas; [`MokaCache`] is
//! the in-process implementation.

use async_trait::async_trait;
use moka::future::Cache;
use moka::Expiry;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// SHA-256 of an access token.
pub type TokenKey = [u8; 32];

/// What a cache hit needs: the claims (for cnf and claims rules, re-checked on every hit)
/// and the JWT to forward.
#[derive(Debug)]
pub struct CachedToken {
    /// `None`: the token is inactive (negative entry).
    pub active: Option<ActiveToken>,
    /// Serve as fresh until then.
    pub fresh_until: Instant,
    /// Keep in the cache until then (fresh + stale-if-error window).
    pub keep_for: Duration,
}

/// An active token's cached state.
#[derive(Debug)]
pub struct ActiveToken {
    pub claims: Arc<gatehouse_core::Claims>,
    /// `Bearer <jwt>` for the upstream, built once per token (not per request); the only
    /// copy of the JWT the cache keeps.
    pub upstream_header: http::HeaderValue,
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

/// A token cache.
#[async_trait]
pub trait TokenCache: Send + Sync {
    /// The entry for `key`, if present (fresh or stale).
    async fn get(&self, key: &TokenKey) -> Option<Arc<CachedToken>>;
    /// The entry for `key`, loading it with `load` on a miss. Concurrent calls for one key
    /// share a single `load`. Errors are not cached.
    async fn get_or_load<'a>(
        &'a self,
        key: TokenKey,
        load: std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<Arc<CachedToken>, crate::IntrospectError>>
                    + Send
                    + 'a,
            >,
        >,
    ) -> Result<(Arc<CachedToken>, Lookup), crate::IntrospectError>;
    /// Replace the entry for `key`.
    async fn insert(&self, key: TokenKey, value: Arc<CachedToken>);
    /// Entries held (approximate).
    fn entry_count(&self) -> u64;
}

struct PerEntry;

impl Expiry<TokenKey, Arc<CachedToken>> for PerEntry {
    fn expire_after_create(
        &self,
        _k: &TokenKey,
        v: &Arc<CachedToken>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(v.keep_for)
    }
    fn expire_after_update(
        &self,
        _k: &TokenKey,
        v: &Arc<CachedToken>,
        _now: Instant,
        _d: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.keep_for)
    }
}

/// The in-process cache (moka).
pub struct MokaCache {
    cache: Cache<TokenKey, Arc<CachedToken>>,
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
    async fn get(&self, key: &TokenKey) -> Option<Arc<CachedToken>> {
        self.cache.get(key).await
    }

    async fn get_or_load<'a>(
        &'a self,
        key: TokenKey,
        load: std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<Arc<CachedToken>, crate::IntrospectError>>
                    + Send
                    + 'a,
            >,
        >,
    ) -> Result<(Arc<CachedToken>, Lookup), crate::IntrospectError> {
        // moka runs exactly one init future per key; the others wait for its result
        let entry = self
            .cache
            .entry(key)
            .or_try_insert_with(load)
            .await
            .map_err(|e: Arc<crate::IntrospectError>| (*e).clone())?;
        let how = if entry.is_fresh() {
            Lookup::Miss
        } else {
            Lookup::Coalesced
        };
        Ok((entry.into_value(), how))
    }

    async fn insert(&self, key: TokenKey, value: Arc<CachedToken>) {
        self.cache.insert(key, value).await;
    }

    fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}
