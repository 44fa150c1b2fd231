//! The phantom-token filter (Curity's pattern): the partner holds an opaque
//! token; Gatehouse introspects it (RFC 7662, preferring RFC 9701 signed responses), caches
//! the answer, and forwards a JWT that only the internal network ever sees.
#![forbid(unsafe_code)]

mod breaker;
mod cache;
mod compact;
mod flight;
mod introspect;
mod signer;

pub use breaker::Breaker;
pub use cache::{CachedToken, Lookup, MokaCache, TokenCache, TokenKey, TokenState};
pub use compact::CompactCache;
pub use flight::Flights;
pub use introspect::{
    classify, client_assertion, signing_key, Body, ClientAuth, IntrospectError, Introspected,
    Introspector,
};
pub use signer::{public_jwks, Signer};

use async_trait::async_trait;
use gatehouse_config::ForwardJwt;
use gatehouse_core::{bearer_token, Filter, Keep, Rejection, RequestCtx, TokenInfo, Verdict};
use gatehouse_metrics::Metrics;
use http::{HeaderName, StatusCode};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Cache policy of one authorization server.
#[derive(Debug, Clone)]
pub struct CachePolicy {
    pub max_ttl: Duration,
    pub negative_ttl: Duration,
    pub stale_if_error: Option<Duration>,
    /// After a failed introspection, how long no call goes out ([`Breaker`]).
    pub backoff: Duration,
    /// Keep every claim of a cached token (as JSON text), not only those the request path
    /// reads (`exp`, `cnf`, scopes, `client_id`, `sub`): needed when a route's claims rules
    /// ask for others (roles, exact values, claim headers); it costs memory per cached token
    /// (benches/README.md).
    pub full_claims: bool,
}

/// One authorization server as the phantom-token filters of every route see it: one
/// introspection client and one cache, shared.
pub struct AuthServer {
    pub name: String,
    introspector: Introspector,
    cache: Arc<dyn TokenCache>,
    /// One introspection per token at a time, for first uses and refreshes alike.
    flights: Flights<Result<CachedToken, IntrospectError>>,
    /// Holds attempts off after a failure (stale answers and 503s at once meanwhile).
    breaker: Breaker,
    policy: CachePolicy,
    signer: Option<Arc<Signer>>,
    metrics: Metrics,
    clock: gatehouse_core::SharedClock,
}

impl AuthServer {
    pub fn new(
        name: String,
        introspector: Introspector,
        cache: Arc<dyn TokenCache>,
        policy: CachePolicy,
        signer: Option<Arc<Signer>>,
        metrics: Metrics,
        clock: gatehouse_core::SharedClock,
    ) -> Self {
        Self {
            name,
            introspector,
            cache,
            flights: Flights::default(),
            breaker: Breaker::new(policy.backoff),
            policy,
            signer,
            metrics,
            clock,
        }
    }

    /// Introspect and turn the answer into a cache entry.
    async fn load(&self, token: &str, forward: &Forward) -> Result<CachedToken, IntrospectError> {
        let started = Instant::now();
        let res = self.introspector.introspect(token).await;
        self.metrics
            .introspection_duration
            .observe(started.elapsed().as_secs_f64());
        let result = match &res {
            Ok(Introspected::Active { .. }) => "active",
            Ok(Introspected::Inactive) => "inactive",
            Err(e) => e.result(),
        };
        self.metrics
            .introspection_requests
            .with_label_values(&[result])
            .inc();
        let now = self.clock.unix();
        let entry = match res? {
            Introspected::Inactive => self.negative(),
            Introspected::Active {
                claims,
                jwt,
                max_age,
            } => {
                let exp = claims.get("exp").and_then(|v| v.as_i64());
                if exp.is_some_and(|e| e <= now) {
                    // an AS that says active for an expired token is not believed
                    return Ok(self.negative());
                }
                let mut ttl = self.policy.max_ttl;
                if let Some(e) = exp {
                    ttl = ttl.min(Duration::from_secs((e - now).max(0) as u64));
                }
                if let Some(m) = max_age {
                    ttl = ttl.min(m);
                }
                let (jwt, signed_exp): (String, Option<i64>) = match (
                    forward.mode,
                    jwt,
                    &self.signer,
                    &forward.audience,
                ) {
                    (ForwardJwt::AsIssued | ForwardJwt::IntrospectionResponse, Some(j), _, _) => {
                        (j, None)
                    }
                    (ForwardJwt::SignedByGatehouse, _, Some(s), Some(aud)) => {
                        let (jwt, exp) = s.sign(&claims, aud, now).map_err(|e| {
                                tracing::warn!(authorization_server = %self.name, "cannot sign the upstream JWT: {e}");
                                IntrospectError::Unforwardable("cannot sign the upstream JWT")
                            })?;
                        (jwt, Some(exp))
                    }
                    _ => return Err(IntrospectError::Unforwardable("no JWT to forward")),
                };
                // the entry must not outlive the JWT it forwards (token_signing.max_ttl may
                // be shorter than the cache's)
                let jwt_left = signed_exp.map(|e| Duration::from_secs((e - now).max(0) as u64));
                if let Some(left) = jwt_left {
                    ttl = ttl.min(left);
                }
                let until_exp = exp
                    .map(|e| Duration::from_secs((e - now).max(0) as u64))
                    .unwrap_or(ttl);
                let mut keep = match self.policy.stale_if_error {
                    Some(stale) => (ttl + stale).min(until_exp.max(ttl)),
                    None => ttl,
                };
                if let Some(left) = jwt_left {
                    keep = keep.min(left);
                }
                let keep_claims = if self.policy.full_claims {
                    Keep::All
                } else {
                    Keep::Hot
                };
                CachedToken::active(&claims, keep_claims, &jwt, self.clock.now() + ttl, keep)?
            }
        };
        Ok(entry)
    }

    /// A negative entry, for a token that is not active.
    fn negative(&self) -> CachedToken {
        CachedToken::inactive(
            self.clock.now() + self.policy.negative_ttl,
            self.policy.negative_ttl,
        )
    }

    /// The state of `token`: from the cache when fresh, else introspected (one call per
    /// token however many requests ask at once). While the authorization server fails,
    /// a cached active token within its stale-if-error window is served at once and
    /// refreshed in the background by the breaker's probe, and an unknown one is refused
    /// without waiting for a call that would fail.
    pub async fn lookup(
        self: &Arc<Self>,
        token: &str,
        forward: &Forward,
    ) -> Result<CachedToken, IntrospectError> {
        let key = cache_key(token, forward);
        let count = |r: &str| self.metrics.token_cache.with_label_values(&[r]).inc();
        let now = self.clock.now();
        let cached = self.cache.get(&key).await;
        if let Some(e) = &cached {
            if e.is_fresh(now) {
                count(match e.state() {
                    TokenState::Active(_) => "hit",
                    TokenState::Inactive => "negative_hit",
                });
                return Ok(e.clone());
            }
        }
        // stale: an active token may still be served while the server fails
        let stale = cached.filter(|e| {
            matches!(e.state(), TokenState::Active(c) if c.exp().is_none_or(|x| x > self.clock.unix()))
        });
        if self.breaker.is_open() {
            let probe = self.breaker.attempt(now);
            if let Some(e) = stale {
                if probe {
                    // the client does not wait for the probe
                    let (server, token, forward) =
                        (self.clone(), token.to_owned(), forward.clone());
                    tokio::spawn(async move {
                        let _ = server.call(key, &token, &forward).await;
                    });
                }
                count("stale");
                return Ok(e);
            }
            if !probe {
                self.metrics
                    .introspection_requests
                    .with_label_values(&["circuit_open"])
                    .inc();
                return Err(IntrospectError::CircuitOpen);
            }
        }
        match self.call(key, token, forward).await {
            Ok((fresh, how)) => {
                count(match how {
                    Lookup::Coalesced => "coalesced",
                    _ => "miss",
                });
                Ok(fresh)
            }
            Err(err) => match stale {
                Some(e) => {
                    count("stale");
                    Ok(e)
                }
                None => Err(err),
            },
        }
    }

    /// Introspect `token` (one call per key at a time), cache the answer and tell the
    /// breaker how it went.
    async fn call(
        &self,
        key: TokenKey,
        token: &str,
        forward: &Forward,
    ) -> Result<(CachedToken, Lookup), IntrospectError> {
        let (result, how) = self
            .flights
            .run(key, async {
                // a flight that ended just before this one began may have filled it
                if let Some(e) = self.cache.get(&key).await {
                    if e.is_fresh(self.clock.now()) {
                        return Ok(e);
                    }
                }
                let result = self.load(token, forward).await;
                match &result {
                    Ok(entry) => {
                        self.breaker.succeeded();
                        self.cache.insert(key, entry.clone()).await;
                        self.metrics
                            .token_cache_entries
                            .with_label_values(&[&self.name])
                            .set(self.cache.entry_count().await as i64);
                    }
                    Err(e) if e.is_server_failure() => {
                        // once per failed call, not per request refused meanwhile
                        tracing::warn!(authorization_server = %self.name, "introspection failed: {e}");
                        self.breaker.failed(self.clock.now());
                    }
                    Err(e) => {
                        tracing::debug!(authorization_server = %self.name, "introspection: {e}")
                    }
                }
                result
            })
            .await;
        result.map(|e| (e, how))
    }
}

/// What a route forwards upstream: the mode, and for `signed_by_gatehouse` the audience
/// of the JWT Gatehouse signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub mode: ForwardJwt,
    pub audience: Option<Arc<str>>,
}

impl Forward {
    pub fn new(mode: ForwardJwt, audience: Option<&str>) -> Self {
        Self {
            mode,
            audience: audience.map(Arc::from),
        }
    }
}

/// The cache key of `token` for routes forwarding `forward`: SHA-256 of the token (never
/// the token itself), domain-separated by what the entry forwards, because an entry holds
/// the JWT to forward (the authorization server's, or one Gatehouse signed for one
/// audience) and two routes of one authorization server may forward differently.
pub fn cache_key(token: &str, forward: &Forward) -> TokenKey {
    let mut h = Sha256::new();
    if forward.mode == ForwardJwt::SignedByGatehouse {
        h.update(b"gatehouse-signed\0");
        let aud = forward.audience.as_deref().unwrap_or_default();
        h.update((aud.len() as u64).to_be_bytes());
        h.update(aud.as_bytes());
    }
    h.update(token.as_bytes());
    h.finalize().into()
}

/// The `phantom_token` filter.
pub struct PhantomTokenFilter {
    server: Arc<AuthServer>,
    forward: Forward,
    max_header: usize,
}

impl PhantomTokenFilter {
    pub fn new(server: Arc<AuthServer>, forward: Forward, max_header: usize) -> Self {
        Self {
            server,
            forward,
            max_header,
        }
    }
}

#[async_trait]
impl Filter for PhantomTokenFilter {
    fn name(&self) -> &'static str {
        "phantom_token"
    }

    fn reasons(&self) -> Vec<&'static str> {
        let mut r = gatehouse_jwt::BEARER_REASONS.to_vec();
        r.extend(["temporarily_unavailable", "token_inactive", "token_expired"]);
        r
    }

    async fn check(&self, req: &http::request::Parts, ctx: &mut RequestCtx) -> Verdict {
        let values = req
            .headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .map(|v| v.as_bytes());
        let token = match bearer_token(values, self.max_header) {
            Ok(t) => t,
            Err(e) => return Verdict::Reject(gatehouse_jwt::bearer_rejection(e)),
        };
        let entry = match self.server.lookup(token, &self.forward).await {
            Ok(e) => e,
            // (the failed call was logged once, where it was made)
            Err(_) => {
                return Verdict::Reject(Rejection::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the authorization server is unavailable",
                ));
            }
        };
        let inactive = || {
            Verdict::Reject(Rejection::bearer(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "token_inactive",
                "the access token is not active",
            ))
        };
        let TokenState::Active(claims) = entry.state() else {
            return inactive();
        };
        if claims.exp().is_some_and(|e| e <= self.server.clock.unix()) {
            return Verdict::Reject(Rejection::bearer(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "token_expired",
                "the access token has expired",
            ));
        }
        // `Bearer <jwt>` was validated as a header value when cached: copying it cannot
        // fail (and would refuse the request if it did)
        let Some(upstream_header) = entry.upstream_header() else {
            return inactive();
        };
        ctx.upstream_headers
            .push((http::header::AUTHORIZATION, upstream_header));
        ctx.token = Some(TokenInfo {
            claims: claims.clone(),
        });
        Verdict::Continue
    }

    fn owned_headers(&self) -> Vec<HeaderName> {
        vec![http::header::AUTHORIZATION]
    }
}
