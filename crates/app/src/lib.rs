//! Wires a validated configuration into a running Pingora server: the proxy chain on the
//! configured listeners, the admin listener, readiness, and shutdown.

pub mod access_log;
mod admin;
mod files;
mod proxy;
mod reload;
mod runtime;
mod target;
mod tickets;
mod tls;
pub use tls::{server_cert_expiry, ServerCertExpiry};
mod upstreams;

use admin::Admin;
pub use admin::Readiness;
use arc_swap::ArcSwap;
use gatehouse_config::{CacheStore, Config, FilterConfig, Loaded};
use gatehouse_core::Filter;
use gatehouse_metrics::Metrics;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::listeners::TcpSocketOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownSignalWatch};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
pub use reload::Reloader;
use std::sync::Arc;

pub use pingora_core::server::ShutdownSignal;
pub use proxy::Chain;
pub use runtime::Runtime;

/// Why a configuration could not be turned into a running server (after it validated:
/// unreadable keys, bad PEM, and the like).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Config(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("access log: {0}")]
    AccessLog(String),
    /// Files the configuration names that cannot be used, each with its field and line.
    #[error("{0}")]
    Files(gatehouse_config::ConfigErrors),
}

/// Loading from a file failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Config(gatehouse_config::ConfigErrors),
    #[error("{0}")]
    Build(BuildError),
}

/// Builds filters from their config. Holds what filters of several routes share: one
/// introspection client and token cache per authorization server, one JWT verifier per
/// authorization server, Gatehouse's signing key.
pub struct FilterFactory {
    listener_ca_files: Vec<String>,
    listener_max_depth: u32,
    max_authorization_header: usize,
    signer: Option<Arc<gatehouse_phantom::Signer>>,
    auth_servers:
        parking_lot::Mutex<std::collections::HashMap<String, Arc<gatehouse_phantom::AuthServer>>>,
    verifiers: parking_lot::Mutex<std::collections::HashMap<String, Arc<gatehouse_jwt::Verifier>>>,
    /// Token caches and JWKS key stores by authorization server, with the fingerprint of
    /// what their content depends on. A reload hands them to the next factory, which keeps
    /// those whose fingerprint is unchanged: a SIGHUP does not send every partner's token
    /// back to the authorization server, nor forget the signing keys.
    caches: parking_lot::Mutex<Carried<SharedCache>>,
    key_stores: parking_lot::Mutex<Carried<gatehouse_jwt::KeyStore>>,
    carried_caches: Carried<SharedCache>,
    carried_key_stores: Carried<gatehouse_jwt::KeyStore>,
}

/// Shared state by authorization-server name, with the fingerprint it was built for.
type Carried<T> = std::collections::HashMap<String, (u64, Arc<T>)>;
type SharedCache = dyn gatehouse_phantom::TokenCache;

/// A fingerprint of settings and of the contents of the files they name.
fn fingerprint(settings: &impl std::fmt::Debug, files: &[Option<&str>]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{settings:?}").hash(&mut h);
    for f in files.iter().flatten() {
        std::fs::read(f).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

/// Take `name`'s entry from `carried` if built for `fp`, else make a new one; remember it
/// in `now` for the next reload.
fn reuse<T: ?Sized>(
    carried: &Carried<T>,
    now: &parking_lot::Mutex<Carried<T>>,
    name: &str,
    fp: u64,
    make: impl FnOnce() -> Result<Arc<T>, String>,
) -> Result<Arc<T>, String> {
    let v = match carried.get(name) {
        Some((f, v)) if *f == fp => v.clone(),
        _ => make()?,
    };
    now.lock().insert(name.to_owned(), (fp, v.clone()));
    Ok(v)
}

impl FilterFactory {
    fn new(c: &Config) -> Result<Self, BuildError> {
        let mut files = Vec::new();
        let mut depth = 0;
        for l in &c.listeners {
            if let Some(t) = &l.tls {
                files.extend(t.client_auth.ca_files.iter().cloned());
                depth = depth.max(t.client_auth.max_depth);
            }
        }
        let signer = match &c.token_signing {
            Some(s) => Some(Arc::new(
                gatehouse_phantom::Signer::from_config(s)
                    .map_err(|e| BuildError::Config(format!("token_signing: {e}")))?,
            )),
            None => None,
        };
        Ok(Self {
            listener_ca_files: files,
            listener_max_depth: depth,
            max_authorization_header: c.server.max_authorization_header,
            signer,
            auth_servers: Default::default(),
            verifiers: Default::default(),
            caches: Default::default(),
            key_stores: Default::default(),
            carried_caches: Default::default(),
            carried_key_stores: Default::default(),
        })
    }

    /// A factory for `c` that keeps `prev`'s token caches and key stores where their
    /// settings did not change (reload).
    pub(crate) fn new_after(c: &Config, prev: &FilterFactory) -> Result<Self, BuildError> {
        let mut f = Self::new(c)?;
        f.carried_caches = prev.caches.lock().clone();
        f.carried_key_stores = prev.key_stores.lock().clone();
        Ok(f)
    }

    /// Gatehouse's public JWKS, when it signs JWTs.
    pub fn jwks(&self) -> Option<Arc<str>> {
        self.signer.as_ref().map(|s| s.jwks().into())
    }

    fn http_client(
        a: &gatehouse_config::AuthorizationServer,
        timeout: std::time::Duration,
    ) -> Result<reqwest::Client, String> {
        let mut b = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(64)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &a.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("{ca}: {e}"))?;
            for cert in
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("{ca}: {e}"))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        if let Some(i) = &a.introspection {
            if i.client_auth.method == gatehouse_config::ClientAuthMethod::TlsClientAuth {
                let (Some(cert), Some(key)) = (&i.client_auth.cert_file, &i.client_auth.key_file)
                else {
                    return Err("tls_client_auth needs cert_file and key_file".into());
                };
                let cert = std::fs::read(cert).map_err(|e| format!("{cert}: {e}"))?;
                let key = std::fs::read(key).map_err(|e| format!("{key}: {e}"))?;
                let id = reqwest::Identity::from_pkcs8_pem(&cert, &key)
                    .map_err(|e| format!("client certificate: {e}"))?;
                b = b.identity(id);
            }
        }
        b.build().map_err(|e| e.to_string())
    }

    fn verifier(
        &self,
        name: &str,
        a: &gatehouse_config::AuthorizationServer,
        metrics: &Metrics,
    ) -> Result<Option<Arc<gatehouse_jwt::Verifier>>, String> {
        if let Some(v) = self.verifiers.lock().get(name) {
            return Ok(Some(v.clone()));
        }
        let source = match (&a.jwks_uri, &a.jwks_file) {
            (Some(url), _) => gatehouse_jwt::KeySource::Url {
                // the same bound as introspection: an unknown kid must not hold a request
                // longer than the authorization server's timeout
                client: Self::http_client(
                    a,
                    a.introspection
                        .as_ref()
                        .map(|i| i.timeout.0)
                        .unwrap_or(std::time::Duration::from_secs(2)),
                )?,
                url: url.clone(),
            },
            (None, Some(file)) => {
                let text = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
                let set = serde_json::from_slice(&text)
                    .map_err(|e| format!("{file}: not a JWKS: {e}"))?;
                gatehouse_jwt::KeySource::Static(set)
            }
            (None, None) => return Ok(None),
        };
        let m = metrics.clone();
        let label = name.to_owned();
        let fp = fingerprint(
            &(&a.jwks_uri, &a.jwks_file, &a.ca_file, &a.jwks_min_refresh),
            &[a.jwks_file.as_deref(), a.ca_file.as_deref()],
        );
        let store = reuse(&self.carried_key_stores, &self.key_stores, name, fp, || {
            Ok(Arc::new(gatehouse_jwt::KeyStore::new(
                source,
                a.jwks_min_refresh.0,
                Box::new(move |result| m.jwks_refreshes.with_label_values(&[&label, result]).inc()),
            )))
        })?;
        let secret = match (&a.hmac_secret_file, &a.hmac_secret_env) {
            (None, None) => None,
            (f, e) => Some(gatehouse_config::read_secret(f.as_deref(), e.as_deref())?),
        };
        let v = Arc::new(gatehouse_jwt::Verifier::new(
            store,
            &a.algorithms,
            a.issuer.clone(),
            a.leeway.0,
            secret.as_deref().map(str::as_bytes),
        ));
        self.verifiers.lock().insert(name.to_owned(), v.clone());
        Ok(Some(v))
    }

    fn auth_server(
        &self,
        c: &Config,
        name: &str,
        metrics: &Metrics,
    ) -> Result<Arc<gatehouse_phantom::AuthServer>, String> {
        if let Some(s) = self.auth_servers.lock().get(name) {
            return Ok(s.clone());
        }
        let a = c
            .authorization_servers
            .get(name)
            .ok_or_else(|| format!("unknown authorization server {name}"))?;
        let i = a
            .introspection
            .as_ref()
            .ok_or_else(|| format!("{name} has no introspection endpoint"))?;
        let verifier = self.verifier(name, a, metrics)?;
        let introspector = gatehouse_phantom::Introspector::new(
            Self::http_client(a, i.timeout.0)?,
            i.url.clone(),
            i.accept,
            gatehouse_phantom::ClientAuth::from_config(&i.client_auth)?,
            verifier,
        );
        // cached results depend on the whole authorization-server section (issuer, keys,
        // formats, TTLs) and on Gatehouse's signing key; not on client credentials
        let full_claims = routes_need_full_claims(c, name);
        let fp = fingerprint(
            &(a, &c.token_signing, full_claims),
            &[
                a.jwks_file.as_deref(),
                c.token_signing.as_ref().map(|s| s.key_file.as_str()),
            ],
        );
        let cache = reuse(&self.carried_caches, &self.caches, name, fp, || {
            Ok(match a.cache.store {
                CacheStore::Moka => {
                    Arc::new(gatehouse_phantom::MokaCache::new(a.cache.max_entries))
                        as Arc<SharedCache>
                }
                CacheStore::Compact => {
                    Arc::new(gatehouse_phantom::CompactCache::new(a.cache.max_entries))
                }
            })
        })?;
        let server = Arc::new(gatehouse_phantom::AuthServer::new(
            name.to_owned(),
            introspector,
            cache,
            gatehouse_phantom::CachePolicy {
                max_ttl: a.cache.max_ttl.0,
                negative_ttl: a.cache.negative_ttl.0,
                stale_if_error: a.cache.stale_if_error.map(|d| d.0),
                backoff: a
                    .introspection
                    .as_ref()
                    .map_or(std::time::Duration::from_secs(1), |i| i.backoff.0),
                full_claims,
            },
            self.signer.clone(),
            metrics.clone(),
        ));
        self.auth_servers
            .lock()
            .insert(name.to_owned(), server.clone());
        Ok(server)
    }

    /// One filter instance for one route.
    pub fn build(
        &self,
        c: &Config,
        f: &FilterConfig,
        metrics: &Metrics,
    ) -> Result<Box<dyn Filter>, String> {
        match f {
            FilterConfig::ClientCert(cfg) => gatehouse_mtls::ClientCertFilter::new(
                cfg,
                &self.listener_ca_files,
                self.listener_max_depth,
                metrics.clone(),
            )
            .map(|f| Box::new(f) as Box<dyn Filter>)
            .map_err(|e| e.to_string()),
            FilterConfig::PhantomToken(p) => {
                let server = self.auth_server(c, &p.authorization_server, metrics)?;
                let accept = c
                    .authorization_servers
                    .get(&p.authorization_server)
                    .and_then(|a| a.introspection.as_ref())
                    .map(|i| i.accept);
                Ok(Box::new(gatehouse_phantom::PhantomTokenFilter::new(
                    server,
                    gatehouse_phantom::Forward::new(p.forward(accept), p.audience.as_deref()),
                    self.max_authorization_header,
                )))
            }
            FilterConfig::Jwt(j) => {
                let a = c
                    .authorization_servers
                    .get(&j.authorization_server)
                    .ok_or_else(|| {
                        format!("unknown authorization server {}", j.authorization_server)
                    })?;
                let v = self
                    .verifier(&j.authorization_server, a, metrics)?
                    .ok_or_else(|| {
                        format!("{} has no jwks_uri or jwks_file", j.authorization_server)
                    })?;
                Ok(Box::new(gatehouse_jwt::JwtFilter::new(
                    v,
                    j.audience.clone(),
                    j.typ.clone(),
                    self.max_authorization_header,
                )))
            }
            FilterConfig::CertBoundToken(b) => Ok(Box::new(gatehouse_bound::CertBoundFilter::new(
                b.mode,
                metrics.clone(),
            ))),
            FilterConfig::Claims(cl) => Ok(Box::new(gatehouse_bound::ClaimsFilter::new(cl)?)),
        }
    }
}

/// A Gatehouse instance ready to run.
pub struct Gatehouse {
    server: Server,
    pub metrics: Metrics,
    pub runtime: Arc<ArcSwap<Runtime>>,
    reloader: Arc<Reloader>,
    ready: Readiness,
    drain: std::time::Duration,
    /// Every address this instance binds, listeners and admin (none when taking sockets
    /// over in an upgrade): see [`Gatehouse::check_addresses_free`].
    listen_addrs: Vec<(String, std::net::SocketAddr)>,
}

impl Gatehouse {
    /// Whether every address this instance will bind (listeners and admin) is free. Call
    /// before [`Gatehouse::run`]: Pingora binds inside its service threads, where an
    /// address in use is retried for a while and then panics the thread, leaving a process
    /// that serves nothing. And with one shard per thread every shard binds its listeners
    /// with `SO_REUSEPORT`, as would a second Gatehouse started on the same addresses by
    /// mistake: the kernel would split the connections between both without an error.
    /// Binding each address once here, without `SO_REUSEPORT`, turns both into a clear
    /// error. `run --upgrade` takes the sockets over and skips this.
    pub fn check_addresses_free(&self) -> Result<(), String> {
        for (what, a) in &self.listen_addrs {
            if a.port() == 0 {
                continue;
            }
            std::net::TcpListener::bind(a)
                .map_err(|e| format!("{what}: cannot listen on {a}: {e}"))?;
        }
        Ok(())
    }

    /// Build everything from a validated config: load certificates, build filters, bind
    /// nothing yet (Pingora binds when it runs).
    pub fn build(loaded: &Loaded) -> Result<Self, BuildError> {
        Self::build_with_path(loaded, None, false)
    }

    /// Like [`Gatehouse::build`], remembering the file so SIGHUP (or
    /// [`Gatehouse::reloader`]) can re-read it.
    pub fn build_from_file(path: &std::path::Path) -> Result<Self, LoadError> {
        Self::build_from_file_upgrading(path, false)
    }

    /// Like [`Gatehouse::build_from_file`]; with `upgrade`, the listening sockets are taken
    /// over from a running Gatehouse (Pingora's graceful upgrade: start this one, then send
    /// the old one SIGQUIT; it hands its sockets over `server.upgrade_sock` and drains).
    pub fn build_from_file_upgrading(
        path: &std::path::Path,
        upgrade: bool,
    ) -> Result<Self, LoadError> {
        let loaded = gatehouse_config::load_file(path).map_err(LoadError::Config)?;
        Self::build_with_path(&loaded, Some(path.to_owned()), upgrade).map_err(LoadError::Build)
    }

    fn build_with_path(
        loaded: &Loaded,
        path: Option<std::path::PathBuf>,
        upgrade: bool,
    ) -> Result<Self, BuildError> {
        let c = &loaded.config;
        let unusable = files::problems(c);
        if !unusable.is_empty() {
            return Err(BuildError::Files(loaded.locate(unusable)));
        }
        for w in &loaded.warnings {
            tracing::warn!("configuration: {w}");
        }
        let metrics = Metrics::new();
        metrics.set_config_hash(&loaded.hash);
        metrics.config_reloads.with_label_values(&["success"]).inc();
        tls::publish_server_cert_expiry(&metrics, c);
        let factory = FilterFactory::new(c)?;
        let runtime = Arc::new(ArcSwap::from_pointee(Runtime::build(
            c, &metrics, &factory, None,
        )?));

        let mut conf = ServerConf {
            threads: c.server.threads,
            grace_period_seconds: Some(c.server.grace_period.0.as_secs()),
            graceful_shutdown_timeout_seconds: Some(c.server.shutdown_timeout.0.as_secs()),
            upstream_keepalive_pool_size: c.server.upstream_keepalive_pool,
            work_stealing: c.server.work_stealing,
            ..ServerConf::default()
        };
        // the old and the new process must agree on this path: it comes from the config
        conf.upgrade_sock = c.server.upgrade_sock.clone().unwrap_or_else(|| {
            std::env::temp_dir()
                .join("gatehouse-upgrade.sock")
                .display()
                .to_string()
        });
        let opt = upgrade.then(|| pingora_core::server::configuration::Opt {
            upgrade,
            ..Default::default()
        });
        let mut server = Server::new_with_opt_and_conf(opt, conf);
        server.bootstrap();

        let access_log = access_log::AccessLog::open(c.log.access_log.as_deref())
            .map_err(|e| BuildError::AccessLog(e.to_string()))?;
        let chain = Chain::new(runtime.clone(), metrics.clone(), access_log);
        // (port 0 would give each shard a different port)
        let shards =
            if c.server.shard_per_thread && c.listeners.iter().all(|l| l.listen.port() != 0) {
                c.server.threads.max(1)
            } else {
                1
            };
        let mut listen_addrs = Vec::new();
        if !upgrade {
            for l in &c.listeners {
                listen_addrs.push((format!("listener {:?}", l.name), l.listen));
            }
            if let Some(a) = &c.admin {
                listen_addrs.push(("admin".to_owned(), a.listen));
            }
        }
        let mut listener_tls = Vec::new();
        for l in &c.listeners {
            listener_tls.push(match &l.tls {
                None => None,
                Some(t) => Some(tls::ListenerTlsState::load(&l.name, t)?),
            });
        }
        for shard in 0..shards {
            let name = if shards > 1 {
                format!("gatehouse proxy {shard}")
            } else {
                "gatehouse proxy".to_owned()
            };
            let mut proxy = pingora_proxy::http_proxy_service_with_name(
                &server.configuration,
                chain.clone(),
                &name,
            );
            let mut sock = None;
            if shards > 1 {
                proxy.threads = Some(1);
                let mut o = TcpSocketOptions::default();
                o.so_reuseport = Some(true);
                sock = Some(o);
            }
            for (l, state) in c.listeners.iter().zip(listener_tls.iter_mut()) {
                let addr = shard_address(l.listen, shard);
                match (&l.tls, state) {
                    (Some(t), Some(state)) => {
                        let settings = state.settings(t, &metrics)?;
                        proxy.add_tls_with_settings(&addr, sock.clone(), settings);
                    }
                    _ => match &sock {
                        Some(o) => proxy.add_tcp_with_settings(&addr, o.clone()),
                        None => proxy.add_tcp(&addr),
                    },
                }
            }
            server.add_service(proxy);
        }
        let tls_state = c
            .listeners
            .iter()
            .zip(listener_tls)
            .filter_map(|(l, s)| Some((l.name.clone(), s?.shared)))
            .collect();

        let ready = Readiness::default();
        server.add_service(background_service("readiness", ready.clone()));
        server.add_service(background_service(
            "upstream upkeep",
            upstreams::UpstreamUpkeep {
                runtime: runtime.clone(),
            },
        ));
        if let Some(a) = &c.admin {
            let app = Admin {
                metrics: metrics.clone(),
                ready: ready.clone(),
                runtime: runtime.clone(),
            };
            let mut svc = Service::new("gatehouse admin".to_owned(), HttpServer::new_app(app));
            svc.add_tcp(&a.listen.to_string());
            svc.threads = Some(1);
            server.add_service(svc);
        }
        let from_file = path.is_some();
        let reloader = Arc::new(Reloader::new(
            path,
            c,
            runtime.clone(),
            tls_state,
            metrics.clone(),
            factory,
        ));
        if !c.server.file_watch_interval.0.is_zero() && from_file {
            server.add_service(background_service(
                "certificate file watch",
                reload::FileWatch {
                    reloader: reloader.clone(),
                    interval: c.server.file_watch_interval.0,
                },
            ));
        }
        Ok(Self {
            server,
            metrics,
            runtime,
            reloader,
            ready,
            drain: c.server.drain_delay.0,
            listen_addrs,
        })
    }

    /// The reloader (what SIGHUP calls).
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// Run until the shutdown signal (Unix signals by default). Returns when every service
    /// stopped; never calls `process::exit`.
    pub fn run(self, shutdown: Option<Box<dyn ShutdownSignalWatch>>) {
        let args = match shutdown {
            Some(shutdown_signal) => RunArgs { shutdown_signal },
            None => RunArgs {
                shutdown_signal: Box::new(reload::Signals {
                    reloader: self.reloader.clone(),
                    ready: self.ready.clone(),
                    drain: self.drain,
                }),
            },
        };
        self.server.run(args);
    }
}

/// Whether a route that introspects at authorization server `name` has claims rules that
/// read more than the hot claims (`scope`/`scp`): then its cache keeps every claim.
fn routes_need_full_claims(c: &Config, name: &str) -> bool {
    c.routes.iter().any(|r| {
        let introspects_here = r
            .filters
            .iter()
            .any(|f| matches!(f, FilterConfig::PhantomToken(p) if p.authorization_server == name));
        introspects_here
            && r.filters
                .iter()
                .any(|f| matches!(f, FilterConfig::Claims(cl) if cl.reads_other_claims()))
    })
}

/// The address string shard `n` binds for a listener. Pingora keys listening sockets by
/// this string (to hand them to a new process on `--upgrade`), so each shard needs its own:
/// shard 0 uses the plain address, shard n pads the port with n leading zeros
/// (`127.0.0.1:08443`), which resolves to the same socket address.
fn shard_address(listen: std::net::SocketAddr, shard: usize) -> String {
    // the address as written for one socket (IPv6 brackets and scope id included)
    let plain = listen.to_string();
    let host = plain.rsplit_once(':').map_or(plain.as_str(), |(h, _)| h);
    format!("{host}:{}{}", "0".repeat(shard), listen.port())
}

/// Re-export of Pingora's shutdown-signal trait, for embedding Gatehouse with a shutdown
/// you control (tests).
pub use pingora_core::server::ShutdownSignalWatch as ShutdownSignalWatchExt;

#[cfg(test)]
mod shard_tests {
    use super::shard_address;
    use std::net::{SocketAddr, ToSocketAddrs};

    #[test]
    fn every_shard_address_resolves_to_the_listener_address() {
        for listen in [
            "127.0.0.1:8443",
            "[::1]:443",
            "[fe80::1%1]:8443",
            "0.0.0.0:65535",
        ] {
            let listen: SocketAddr = listen.parse().unwrap();
            let mut seen = std::collections::HashSet::new();
            for shard in 0..8 {
                let s = shard_address(listen, shard);
                if shard == 0 {
                    assert_eq!(
                        s,
                        listen.to_string(),
                        "shard 0 binds the address as written"
                    );
                }
                assert!(seen.insert(s.clone()), "distinct key per shard: {s}");
                // what Pingora does with the string before binding
                let resolved: Vec<SocketAddr> = s.to_socket_addrs().unwrap().collect();
                assert_eq!(resolved, vec![listen], "{s}");
            }
        }
    }
}
