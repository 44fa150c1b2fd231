//! Peers from the configuration, names resolved to addresses: at load, then every
//! `resolve_interval` (Pingora's `ServiceDiscovery`). A name with several addresses gives
//! several peers; a failed or empty answer keeps the name's last good addresses.

use async_trait::async_trait;
use gatehouse_config::{parse_nameserver, PeerSpec, ResolverSection};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use parking_lot::Mutex;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;
use prometheus::IntCounterVec;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Where names are resolved.
#[derive(Debug, Clone)]
pub enum Resolver {
    /// getaddrinfo: `/etc/hosts`, `/etc/resolv.conf` and its search domains.
    System,
    /// These DNS servers, asked directly (UDP, then TCP for a truncated answer).
    Servers {
        servers: Vec<SocketAddr>,
        timeout: Duration,
    },
}

impl Resolver {
    pub fn from_config(c: &ResolverSection) -> Self {
        let servers: Vec<SocketAddr> = c
            .nameservers
            .iter()
            .filter_map(|s| parse_nameserver(s))
            .collect();
        if servers.is_empty() {
            Resolver::System
        } else {
            Resolver::Servers {
                servers,
                timeout: c.timeout.0,
            }
        }
    }

    /// The addresses of `host`. An empty answer is an error.
    pub async fn lookup(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, String> {
        let mut ips: Vec<IpAddr> = match self {
            Resolver::System => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| e.to_string())?
                .map(|a| a.ip())
                .collect(),
            Resolver::Servers { servers, timeout } => {
                let groups = servers
                    .iter()
                    .map(|s| {
                        let mut udp = ConnectionConfig::udp();
                        udp.port = s.port();
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = s.port();
                        NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                    })
                    .collect();
                let config = ResolverConfig::from_parts(None, Vec::new(), groups);
                // a resolver per round: its connections live on the runtime that asks
                // (the load-time answer comes from a runtime of its own)
                let mut builder = hickory_resolver::Resolver::builder_with_config(
                    config,
                    TokioRuntimeProvider::default(),
                );
                let opts = builder.options_mut();
                opts.timeout = *timeout;
                opts.attempts = 2;
                opts.cache_size = 0;
                opts.ndots = 0;
                let resolver = builder.build().map_err(|e| e.to_string())?;
                // a name as configured is absolute: no search domains are appended
                let fqdn = if host.ends_with('.') {
                    host.to_owned()
                } else {
                    format!("{host}.")
                };
                resolver
                    .lookup_ip(fqdn.as_str())
                    .await
                    .map_err(|e| e.to_string())?
                    .iter()
                    .collect()
            }
        };
        ips.sort();
        ips.dedup();
        if ips.is_empty() {
            return Err(format!("{host} has no addresses"));
        }
        Ok(ips)
    }
}

/// A configured peer.
#[derive(Debug, Clone)]
pub struct PeerEntry {
    /// As configured (`host:port`): the `peer` label of the metrics.
    pub label: String,
    host: String,
    port: u16,
    weight: usize,
    /// An IP address needs no resolving.
    literal: Option<IpAddr>,
}

impl PeerEntry {
    pub fn parse(spec: &PeerSpec) -> Result<Self, String> {
        let (host, port) = gatehouse_config::parse_peer_address(spec.address())?;
        Ok(Self {
            label: spec.address().to_owned(),
            literal: host.parse().ok(),
            host,
            port,
            weight: spec.weight() as usize,
        })
    }

    pub fn is_name(&self) -> bool {
        self.literal.is_none()
    }
}

/// A name's resolution state, for the admin listener.
#[derive(Debug, Clone, Default)]
pub struct NameState {
    pub addresses: Vec<IpAddr>,
    pub last_error: Option<String>,
}

/// The pool's discovery.
pub struct Discovery {
    pub(crate) upstream: String,
    pub(crate) peers: Vec<PeerEntry>,
    resolver: Resolver,
    /// Per configured peer: its last good addresses.
    pub(crate) state: Mutex<Vec<NameState>>,
    resolutions: IntCounterVec,
}

impl Discovery {
    pub fn new(
        upstream: &str,
        peers: Vec<PeerEntry>,
        resolver: Resolver,
        resolutions: IntCounterVec,
    ) -> Self {
        let state = peers
            .iter()
            .map(|p| NameState {
                addresses: p.literal.into_iter().collect(),
                last_error: None,
            })
            .collect();
        Self {
            upstream: upstream.to_owned(),
            peers,
            resolver,
            state: Mutex::new(state),
            resolutions,
        }
    }

    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, Vec<NameState>> {
        self.state.lock()
    }

    /// Resolve every name once; the errors, by configured peer.
    pub async fn resolve(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for (i, p) in self.peers.iter().enumerate() {
            if !p.is_name() {
                continue;
            }
            let answer = self.resolver.lookup(&p.host, p.port).await;
            let mut state = self.lock();
            let Some(s) = state.get_mut(i) else { continue };
            let result = match answer {
                Ok(ips) => {
                    let changed = ips != s.addresses;
                    s.addresses = ips;
                    s.last_error = None;
                    if changed {
                        "changed"
                    } else {
                        "unchanged"
                    }
                }
                Err(e) => {
                    // keep the last good set
                    s.last_error = Some(e.clone());
                    errors.push((p.label.clone(), e));
                    "failed"
                }
            };
            self.resolutions
                .with_label_values(&[&self.upstream, result])
                .inc();
        }
        errors
    }

    /// Which configured peer an address belongs to (the first, if names overlap).
    pub fn peer_index(&self, a: &SocketAddr) -> Option<usize> {
        let state = self.lock();
        self.peers
            .iter()
            .zip(state.iter())
            .position(|(p, s)| p.port == a.port() && s.addresses.contains(&a.ip()))
    }

    /// The backends the last resolutions give.
    pub fn backends(&self) -> BTreeSet<Backend> {
        let state = self.lock();
        let mut set = BTreeSet::new();
        for (p, s) in self.peers.iter().zip(state.iter()) {
            for ip in &s.addresses {
                // no `ext`: the request path clones the backend it picks, and a non-empty
                // `ext` would make that an allocation (see `peer_index`)
                set.insert(Backend {
                    addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(SocketAddr::new(
                        *ip, p.port,
                    )),
                    weight: p.weight.max(1),
                    ext: http::Extensions::new(),
                });
            }
        }
        set
    }
}

/// Pingora's discovery interface over a shared [`Discovery`].
pub(crate) struct Shared(pub std::sync::Arc<Discovery>);

#[async_trait]
impl ServiceDiscovery for Shared {
    async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        // never an error: a failed name keeps its last addresses (counted in `resolve`)
        self.0.resolve().await;
        Ok((self.0.backends(), HashMap::new()))
    }
}
