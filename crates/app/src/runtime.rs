//! The internal model: what the request path needs, built once from a validated config
//! (River's external → internal split). Swapped atomically on reload.

use crate::BuildError;
use gatehouse_config::{ClientCertMode, Config, ForwardedHeaders};
use gatehouse_config::{ResolverSection, Upstream, UpstreamProtocol};
use gatehouse_core::Filter;
use gatehouse_metrics::Metrics;
use gatehouse_routing::{RouteKey, RouteRequest};
use gatehouse_upstream::{Pool, Resolver, TlsTo};
use http::HeaderName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// An upstream: its pool of peers and how to talk to them.
pub struct UpstreamRt {
    pub name: Arc<str>,
    pub pool: Arc<Pool>,
    /// TLS to the upstream: SNI, verification and trust anchors, as its health checks use
    /// them too.
    pub tls: Option<TlsTo>,
    /// Pingora's connection-pool key does not include the CA: this keeps pooled TLS
    /// connections of upstreams with different trust (name, CA bundle) apart.
    pub pool_key: u64,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// What the pool was built from: a reload that leaves it equal keeps the pool (its
    /// health state, resolutions and passive ejections).
    config: (Upstream, ResolverSection),
}

/// A route ready to serve.
pub struct RouteRt {
    pub name: Arc<str>,
    /// What it matches (listeners, host, path prefix; raw or normalised path).
    pub key: RouteKey,
    /// Let WebSocket upgrades through (otherwise `Upgrade` is removed).
    pub websocket: bool,
    /// Strip or set `Forwarded`, `X-Real-IP`, `X-Forwarded-Host`, `X-Forwarded-Port`.
    pub forwarded_headers: ForwardedHeaders,
    pub upstream: Arc<UpstreamRt>,
    /// The route's filters as each listener runs them, by listener position: the
    /// listener's certificate policy first (when it asks for certificates), then the
    /// route's own filters, shared by every listener's chain.
    pub chains: Vec<Vec<Arc<dyn Filter>>>,
    /// The route's own filters (a request from no known listener runs only these).
    pub filters: Vec<Arc<dyn Filter>>,
    /// Every header a filter of this route (or the chain) sets upstream: stripped from the
    /// client's request first.
    pub owned_headers: Vec<HeaderName>,
}

/// A listener as requests find it: by the address they came in on, for routes by name.
#[derive(Debug, Clone)]
pub struct ListenerRt {
    pub name: Arc<str>,
    pub addr: SocketAddr,
}

/// Everything the proxy needs per request.
pub struct Runtime {
    pub routes: Vec<RouteRt>,
    /// Every upstream (the background task re-resolves and health-checks their pools).
    pub upstreams: Vec<Arc<UpstreamRt>>,
    /// Merge repeated slashes when normalising request paths.
    pub merge_slashes: bool,
    pub listeners: Vec<ListenerRt>,
    pub max_authorization_header: usize,
    /// Public JWKS of Gatehouse's signing key (served on the admin listener; swapped with
    /// the key on reload).
    pub jwks: Option<Arc<str>>,
    /// Each listener's certificate, key, trust and ticket keys, by position in
    /// `listeners` (`None`: plain HTTP). In here so that a reload swaps one value: no
    /// request sees new routes with an old certificate, or the other way round.
    pub tls: Vec<Option<Arc<crate::listeners::tls::TlsMaterial>>>,
}

/// Headers that are always removed from client requests, besides the certificate headers
/// ([`gatehouse_mtls::CERT_HEADERS`]): a client must never be able to pose as Gatehouse
/// towards the upstream.
pub const ALWAYS_STRIPPED: &[&str] = &[
    "x-gatehouse-route",
    // the edge owns what the upstream learns about the client: see `forwarded_headers`
    "forwarded",
    "x-real-ip",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
];

/// Pingora's connection-pool group of an upstream: its name and the CA its connections
/// were verified with (a changed CA must not reuse connections verified with the old one).
fn pool_key(name: &str, ca_file: Option<&str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    if let Some(f) = ca_file {
        std::fs::read(f).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

impl Runtime {
    /// Build from a validated config. `previous`: the running one, whose upstream pools
    /// are kept where their configuration did not change.
    pub fn build(
        c: &Config,
        metrics: &Metrics,
        filters: &crate::services::Services,
        previous: Option<&Runtime>,
    ) -> Result<Self, BuildError> {
        let mut upstreams = std::collections::BTreeMap::new();
        for (name, u) in &c.upstreams {
            let at = |e: String| BuildError::Config(format!("upstreams.{name}: {e}"));
            let ca = match u.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
                Some(f) => Some(Arc::new(
                    gatehouse_mtls::load_pem_bundle(f)
                        .map_err(|e| at(format!("tls.ca_file: {e}")))?
                        .into_boxed_slice(),
                )),
                None => None,
            };
            let config = (u.clone(), c.server.resolver.clone());
            let tls = u.tls.as_ref().map(|t| TlsTo {
                sni: t.sni.clone(),
                verify: t.verify,
                ca,
            });
            let kept = previous.and_then(|p| {
                p.upstreams
                    .iter()
                    .find(|x| {
                        &*x.name == name.as_str()
                            && x.config == config
                            && x.tls.as_ref().map(|t| &t.ca) == tls.as_ref().map(|t| &t.ca)
                    })
                    .map(|x| x.pool.clone())
            });
            let pool = match kept {
                Some(pool) => pool,
                None => Arc::new(
                    Pool::build(
                        name,
                        u,
                        Resolver::from_config(&c.server.resolver),
                        tls.clone(),
                        metrics,
                    )
                    .map_err(at)?,
                ),
            };
            upstreams.insert(
                name.clone(),
                Arc::new(UpstreamRt {
                    name: name.as_str().into(),
                    pool,
                    tls,
                    pool_key: pool_key(name, u.tls.as_ref().and_then(|t| t.ca_file.as_deref())),
                    protocol: u.protocol,
                    connect_timeout: u.connect_timeout.0,
                    read_timeout: u.read_timeout.0,
                    config,
                }),
            );
        }
        let listeners: Vec<ListenerRt> = c
            .listeners
            .iter()
            .map(|l| ListenerRt {
                name: l.name.as_str().into(),
                addr: l.listen,
            })
            .collect();
        let mut routes = Vec::new();
        for (i, r) in c.routes.iter().enumerate() {
            let upstream = upstreams.get(&r.upstream).cloned().ok_or_else(|| {
                BuildError::Config(format!("routes[{i}]: unknown upstream {}", r.upstream))
            })?;
            let mut built: Vec<Arc<dyn Filter>> = Vec::new();
            for (j, f) in r.filters.iter().enumerate() {
                built.push(Arc::from(filters.build(c, f, metrics).map_err(|e| {
                    BuildError::Config(format!("routes[{i}].filters[{j}] ({}): {e}", f.kind()))
                })?));
            }
            // a route whose client_cert filter verifies with its own policy decides about
            // the certificate itself; the listener's verdict stands for the others
            let route_verifies = built.iter().any(|f| f.verifies_client_cert());
            let policies: Vec<Option<Arc<dyn Filter>>> = c
                .listeners
                .iter()
                .map(|l| {
                    let mode = l
                        .tls
                        .as_ref()
                        .map_or(ClientCertMode::Off, |t| t.client_auth.mode);
                    gatehouse_mtls::ListenerPolicy::new(mode, route_verifies, metrics.clone())
                        .map(|p| Arc::new(p) as Arc<dyn Filter>)
                })
                .collect();
            let chains: Vec<Vec<Arc<dyn Filter>>> = policies
                .iter()
                .map(|p| p.iter().chain(&built).cloned().collect())
                .collect();
            let mut owned: Vec<HeaderName> = gatehouse_mtls::CERT_HEADERS
                .iter()
                .chain(ALWAYS_STRIPPED)
                .map(|h| HeaderName::from_static(h))
                .collect();
            for f in policies.iter().flatten().take(1).chain(&built) {
                // this route's refusal series exist from the start, at 0
                for reason in f.reasons() {
                    metrics
                        .rejections
                        .with_label_values(&[&r.name, f.name(), reason]);
                }
                for h in f.owned_headers() {
                    if !owned.contains(&h) {
                        owned.push(h);
                    }
                }
            }
            routes.push(RouteRt {
                name: r.name.as_str().into(),
                key: RouteKey::new(
                    r.matches.listeners.clone(),
                    r.matches.host.as_deref(),
                    &r.matches.path_prefix,
                    r.matches.case_sensitive,
                    r.forward_raw_path,
                ),
                websocket: r.websocket,
                forwarded_headers: r.forwarded_headers,
                upstream,
                chains,
                filters: built,
                owned_headers: owned,
            });
        }
        routes.sort_by(|a, b| a.key.specificity(&b.key));
        Ok(Self {
            routes,
            upstreams: upstreams.into_values().collect(),
            merge_slashes: c.server.merge_slashes,
            listeners,
            max_authorization_header: c.server.max_authorization_header,
            jwks: filters.jwks(),
            tls: c
                .listeners
                .iter()
                .map(|l| {
                    l.tls
                        .as_ref()
                        .map(|t| {
                            crate::listeners::tls::TlsMaterial::load(t)
                                .map(Arc::new)
                                .map_err(|e| BuildError::Tls(format!("listeners.{}: {e}", l.name)))
                        })
                        .transpose()
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// The position of the listener a connection came in on.
    pub fn listener_index(&self, local: Option<SocketAddr>) -> Option<usize> {
        let local = local?;
        self.listeners.iter().position(|l| {
            l.addr == local || (l.addr.ip().is_unspecified() && l.addr.port() == local.port())
        })
    }

    /// The route for a request.
    pub fn route(&self, req: &RouteRequest<'_>) -> Option<(usize, &RouteRt)> {
        gatehouse_routing::select(&self.routes, |r| &r.key, req)
    }
}
