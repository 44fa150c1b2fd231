//! Fixtures shared by the micro-benchmarks and the cache-memory probe: a realistic cached
//! token (claims and JWT shaped like an RFC 9701 introspection response) and an
//! authorization server whose cache is pre-filled (no network on a hit).
#![forbid(unsafe_code)]

use gatehouse_phantom::{
    AuthServer, CachePolicy, CachedToken, ClientAuth, CompactCache, Introspector, MokaCache,
    TokenCache,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Claims like the NGINX harness's stub returns (plus roles), bound to `x5t`.
pub fn claims(x5t: &str, i: u64) -> serde_json::Map<String, serde_json::Value> {
    let v = serde_json::json!({
        "active": true, "client_id": "partner-client", "sub": format!("partner-{i}"),
        "scope": "transactions", "iss": "https://localhost:9443", "iat": 1_795_000_000,
        "exp": 4_102_444_800i64, "token_type": "Bearer", "roles": ["service-api"],
        "cnf": { "x5t#S256": x5t },
    });
    v.as_object().cloned().unwrap_or_default()
}

/// Length of the JWTs [`jwt`] makes; 0: 535 bytes, like the stub's RFC 9701 response.
static JWT_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Make [`jwt`] return JWTs of `n` bytes (at least 167; 0 for the default 535), to see
/// how the bytes per cached token move with the allocator's size classes.
pub fn set_jwt_bytes(n: usize) {
    JWT_BYTES.store(n, Ordering::Relaxed);
}

/// A JWT-sized string, distinct for each `i`.
pub fn jwt(i: u64) -> Arc<str> {
    const HEADER: &str = "eyJhbGciOiJFUzI1NiIsInR5cCI6InRva2VuLWludHJvc3BlY3Rpb24rand0In0";
    const SIG: usize = 86;
    let body_len = match JWT_BYTES.load(Ordering::Relaxed) {
        0 => 384,
        n => n.saturating_sub(HEADER.len() + 2 + SIG).max(16),
    };
    let mut body = format!("{i:0>16}").repeat(body_len.div_ceil(16));
    body.truncate(body_len);
    format!("{HEADER}.{body}.{}", "s".repeat(SIG)).into()
}

/// A fresh cache entry for token `i`, with every claim or (`full_claims: false`) only
/// those the request path reads.
#[allow(clippy::expect_used)]
pub fn entry(x5t: &str, i: u64, full_claims: bool) -> CachedToken {
    let keep = if full_claims {
        gatehouse_core::Keep::All
    } else {
        gatehouse_core::Keep::Hot
    };
    let fresh_until = Instant::now() + Duration::from_secs(3600);
    let keep_for = Duration::from_secs(3600);
    // an error here would make every measurement one of negative entries
    CachedToken::active(&claims(x5t, i), keep, &jwt(i), fresh_until, keep_for)
        .expect("a bench JWT is a valid header value")
}

/// The cache key of a token (for routes forwarding the authorization server's JWT).
pub fn key(token: &str) -> [u8; 32] {
    gatehouse_phantom::cache_key(
        token,
        &gatehouse_phantom::Forward::new(gatehouse_config::ForwardJwt::AsIssued, None),
    )
}

/// An authorization server whose cache already holds `tokens` (introspection is never
/// reached on a hit; its URL points nowhere).
pub async fn primed_server(
    tokens: &[String],
    x5t: &str,
    metrics: gatehouse_metrics::Metrics,
    full_claims: bool,
    store: gatehouse_config::CacheStore,
) -> (Arc<AuthServer>, Arc<dyn TokenCache>) {
    let max = tokens.len() as u64 * 2 + 16;
    let cache: Arc<dyn TokenCache> = match store {
        gatehouse_config::CacheStore::Moka => Arc::new(MokaCache::new(max)),
        gatehouse_config::CacheStore::Compact => Arc::new(CompactCache::new(max)),
    };
    for (i, t) in tokens.iter().enumerate() {
        cache
            .insert(key(t), entry(x5t, i as u64, full_claims))
            .await;
    }
    let introspector = Introspector::new(
        reqwest::Client::new(),
        "http://127.0.0.1:9/introspect".into(),
        gatehouse_config::IntrospectionFormat::Json,
        ClientAuth::Tls {
            client_id: "bench".into(),
        },
        None,
    );
    let server = AuthServer::new(
        "bench".into(),
        introspector,
        cache.clone(),
        CachePolicy {
            max_ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(5),
            stale_if_error: None,
            backoff: Duration::from_secs(1),
            full_claims,
        },
        None,
        metrics,
        gatehouse_core::system_clock(),
    );
    (Arc::new(server), cache)
}
