//! The internal model: what the request path needs, built once from a validated config
//! (River's external → internal split). Swapped atomically on reload.

use crate::BuildError;
use gatehouse_config::{ClientCertMode, Config, ForwardedHeaders};
use gatehouse_core::Filter;
use gatehouse_metrics::Metrics;
use gatehouse_routing::{RouteKey, RouteRequest};
use http::HeaderName;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A pool of upstream peers, chosen round-robin.
pub struct UpstreamRt {
    pub peers: Vec<SocketAddr>,
    next: AtomicUsize,
    /// `Some(sni, verify)` for TLS to the upstream.
    pub tls: Option<(String, bool)>,
    /// Trust anchors for the upstream's certificate (`None`: the system's).
    pub ca: Option<Arc<Box<[openssl::x509::X509]>>>,
    /// Pingora's connection-pool key does not include the CA: this keeps pooled TLS
    /// connections of upstreams with different trust (name, CA bundle) apart.
    pub pool_key: u64,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

impl UpstreamRt {
    /// The next peer in round-robin order.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.peers.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.peers.len();
        self.peers.get(i).copied()
    }
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
    pub filters: Vec<Box<dyn Filter>>,
    /// Every header a filter of this route (or the chain) sets upstream: stripped from the
    /// client's request first.
    pub owned_headers: Vec<HeaderName>,
}

/// A listener's client-certificate policy, as the chain enforces it.
#[derive(Debug, Clone)]
pub struct ListenerRt {
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub client_cert: ClientCertMode,
}

/// Everything the proxy needs per request.
pub struct Runtime {
    pub routes: Vec<RouteRt>,
    /// Merge repeated slashes when normalising request paths.
    pub merge_slashes: bool,
    pub listeners: Vec<ListenerRt>,
    pub max_authorization_header: usize,
    /// Public JWKS of Gatehouse's signing key (served on the admin listener; swapped with
    /// the key on reload).
    pub jwks: Option<Arc<str>>,
}

/// Headers that are always removed from client requests: a client must never be able to
/// pose as Gatehouse towards the upstream.
pub const ALWAYS_STRIPPED: &[&str] = &[
    "client-cert",
    "client-cert-chain",
    "x-forwarded-client-cert",
    "x-ssl-client-cert",
    "x-gatehouse-route",
    // the edge owns what the upstream learns about the client: see `forwarded_headers`
    "forwarded",
    "x-real-ip",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
];

impl Runtime {
    /// Build from a validated config.
    pub fn build(
        c: &Config,
        metrics: &Metrics,
        filters: &crate::FilterFactory,
    ) -> Result<Self, BuildError> {
        let mut upstreams = std::collections::BTreeMap::new();
        for (name, u) in &c.upstreams {
            let mut peers = Vec::new();
            for p in &u.peers {
                let addr = p
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        BuildError::Config(format!("upstreams.{name}: cannot resolve {p}"))
                    })?;
                peers.push(addr);
            }
            upstreams.insert(
                name.clone(),
                Arc::new(UpstreamRt {
                    peers,
                    next: AtomicUsize::new(0),
                    tls: u.tls.as_ref().map(|t| (t.sni.clone(), t.verify)),
                    pool_key: crate::fingerprint(
                        name,
                        &[u.tls.as_ref().and_then(|t| t.ca_file.as_deref())],
                    ),
                    ca: match u.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
                        Some(f) => Some(Arc::new(
                            gatehouse_mtls::load_pem_bundle(f)
                                .map_err(|e| {
                                    BuildError::Config(format!("upstreams.{name}.tls.ca_file: {e}"))
                                })?
                                .into_boxed_slice(),
                        )),
                        None => None,
                    },
                    connect_timeout: u.connect_timeout.0,
                    read_timeout: u.read_timeout.0,
                }),
            );
        }
        let listeners: Vec<ListenerRt> = c
            .listeners
            .iter()
            .map(|l| ListenerRt {
                name: l.name.as_str().into(),
                addr: l.listen,
                client_cert: l
                    .tls
                    .as_ref()
                    .map(|t| t.client_auth.mode)
                    .unwrap_or(ClientCertMode::Off),
            })
            .collect();
        let mut routes = Vec::new();
        for (i, r) in c.routes.iter().enumerate() {
            let upstream = upstreams.get(&r.upstream).cloned().ok_or_else(|| {
                BuildError::Config(format!("routes[{i}]: unknown upstream {}", r.upstream))
            })?;
            let mut built: Vec<Box<dyn Filter>> = Vec::new();
            for (j, f) in r.filters.iter().enumerate() {
                built.push(filters.build(c, f, metrics).map_err(|e| {
                    BuildError::Config(format!("routes[{i}].filters[{j}] ({}): {e}", f.kind()))
                })?);
            }
            let mut owned: Vec<HeaderName> = ALWAYS_STRIPPED
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect();
            for f in &built {
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
                filters: built,
                owned_headers: owned,
            });
        }
        routes.sort_by(|a, b| a.key.specificity(&b.key));
        Ok(Self {
            routes,
            merge_slashes: c.server.merge_slashes,
            listeners,
            max_authorization_header: c.server.max_authorization_header,
            jwks: filters.jwks(),
        })
    }

    /// The listener bound to `local`, if any.
    pub fn listener(&self, local: Option<SocketAddr>) -> Option<&ListenerRt> {
        let local = local?;
        self.listeners.iter().find(|l| {
            l.addr == local || (l.addr.ip().is_unspecified() && l.addr.port() == local.port())
        })
    }

    /// The route for a request.
    pub fn route(&self, req: &RouteRequest<'_>) -> Option<(usize, &RouteRt)> {
        gatehouse_routing::select(&self.routes, |r| &r.key, req)
    }
}
