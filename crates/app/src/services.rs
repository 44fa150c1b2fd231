//! The services routes share, built eagerly from the configuration: per authorization
//! server an introspection client with its token cache and a JWT verifier with its key
//! store, and Gatehouse's signing key. A reload builds them anew but carries a token cache
//! or a key store over when the configuration it depends on, and the contents of the files
//! that configuration names, are equal: a SIGHUP does not send every partner's token back
//! to the authorization server, nor forget the signing keys.

use crate::error::BuildError;
use gatehouse_config::{AuthorizationServer, CacheStore, Config, FilterConfig, TokenSigning};
use gatehouse_core::{Filter, SharedClock};
use gatehouse_metrics::Metrics;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

type SharedCache = dyn gatehouse_phantom::TokenCache;

/// SHA-256 of each named file's contents (`None`: no file, or unreadable).
fn digests(files: &[Option<&str>]) -> Vec<Option<[u8; 32]>> {
    files
        .iter()
        .map(|f| {
            f.and_then(|f| std::fs::read(f).ok())
                .map(|b| Sha256::digest(b).into())
        })
        .collect()
}

/// What a token cache's entries depend on: the whole authorization-server section (issuer,
/// keys, formats, TTLs), Gatehouse's signing key (entries hold the JWTs it signed), whether
/// every claim is kept, and the files those name. Not the client credentials' secrets.
#[derive(Clone, PartialEq)]
struct CacheBasis {
    server: AuthorizationServer,
    signing: Option<TokenSigning>,
    full_claims: bool,
    files: Vec<Option<[u8; 32]>>,
}

/// What a key store's keys depend on.
#[derive(Clone, PartialEq)]
struct KeysBasis {
    jwks_uri: Option<String>,
    jwks_file: Option<String>,
    ca_file: Option<String>,
    min_refresh: Duration,
    files: Vec<Option<[u8; 32]>>,
}

/// A carried-over value with what it was built from.
type Carried<B, T> = HashMap<String, (B, Arc<T>)>;

/// Take `name`'s value from `prev` when it was built from an equal basis, else make one.
fn carry<B: PartialEq, T: ?Sized>(
    prev: Option<&Carried<B, T>>,
    name: &str,
    basis: &B,
    make: impl FnOnce() -> Result<Arc<T>, String>,
) -> Result<Arc<T>, String> {
    match prev.and_then(|p| p.get(name)) {
        Some((b, v)) if b == basis => Ok(v.clone()),
        _ => make(),
    }
}

/// The shared services of one configuration.
pub struct Services {
    listener_ca_files: Vec<String>,
    listener_max_depth: u32,
    max_authorization_header: usize,
    signer: Option<Arc<gatehouse_phantom::Signer>>,
    auth_servers: HashMap<String, Arc<gatehouse_phantom::AuthServer>>,
    verifiers: HashMap<String, Arc<gatehouse_jwt::Verifier>>,
    /// What the next configuration may carry over.
    caches: Carried<CacheBasis, SharedCache>,
    key_stores: Carried<KeysBasis, gatehouse_jwt::KeyStore>,
    clock: SharedClock,
}

impl Services {
    /// Build every service `c`'s routes use, carrying `prev`'s token caches and key stores
    /// over where their basis is unchanged (a reload). `prev`'s clock goes on.
    pub fn new(
        c: &Config,
        prev: Option<&Services>,
        clock: SharedClock,
        metrics: &Metrics,
    ) -> Result<Self, BuildError> {
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
        let mut s = Self {
            listener_ca_files: files,
            listener_max_depth: depth,
            max_authorization_header: c.server.max_authorization_header,
            signer,
            auth_servers: HashMap::new(),
            verifiers: HashMap::new(),
            caches: HashMap::new(),
            key_stores: HashMap::new(),
            clock,
        };
        // every authorization server a route uses, in the order routes name them
        for (i, r) in c.routes.iter().enumerate() {
            for (j, f) in r.filters.iter().enumerate() {
                let at = |e: String| {
                    BuildError::Config(format!("routes[{i}].filters[{j}] ({}): {e}", f.kind()))
                };
                match f {
                    FilterConfig::PhantomToken(p) => {
                        s.auth_server(c, &p.authorization_server, prev, metrics)
                            .map_err(at)?;
                    }
                    FilterConfig::Jwt(jf) => {
                        let a = c
                            .authorization_servers
                            .get(&jf.authorization_server)
                            .ok_or_else(|| {
                                format!("unknown authorization server {}", jf.authorization_server)
                            })
                            .map_err(at)?;
                        s.verifier(&jf.authorization_server, a, prev, metrics)
                            .map_err(at)?;
                    }
                    _ => {}
                }
            }
        }
        Ok(s)
    }

    /// Gatehouse's public JWKS, when it signs JWTs.
    pub fn jwks(&self) -> Option<Arc<str>> {
        self.signer.as_ref().map(|s| s.jwks().into())
    }

    fn http_client(a: &AuthorizationServer, timeout: Duration) -> Result<reqwest::Client, String> {
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

    /// The verifier of authorization server `name` (built once; `None` without keys).
    fn verifier(
        &mut self,
        name: &str,
        a: &AuthorizationServer,
        prev: Option<&Services>,
        metrics: &Metrics,
    ) -> Result<Option<Arc<gatehouse_jwt::Verifier>>, String> {
        if let Some(v) = self.verifiers.get(name) {
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
                        .unwrap_or(Duration::from_secs(2)),
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
        let basis = KeysBasis {
            jwks_uri: a.jwks_uri.clone(),
            jwks_file: a.jwks_file.clone(),
            ca_file: a.ca_file.clone(),
            min_refresh: a.jwks_min_refresh.0,
            files: digests(&[a.jwks_file.as_deref(), a.ca_file.as_deref()]),
        };
        let (m, label, clock) = (metrics.clone(), name.to_owned(), self.clock.clone());
        let store = carry(prev.map(|p| &p.key_stores), name, &basis, || {
            Ok(Arc::new(gatehouse_jwt::KeyStore::new(
                source,
                a.jwks_min_refresh.0,
                Box::new(move |result| m.jwks_refreshes.with_label_values(&[&label, result]).inc()),
                clock,
            )))
        })?;
        self.key_stores
            .insert(name.to_owned(), (basis, store.clone()));
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
        self.verifiers.insert(name.to_owned(), v.clone());
        Ok(Some(v))
    }

    /// The introspection client and token cache of authorization server `name`.
    fn auth_server(
        &mut self,
        c: &Config,
        name: &str,
        prev: Option<&Services>,
        metrics: &Metrics,
    ) -> Result<Arc<gatehouse_phantom::AuthServer>, String> {
        if let Some(s) = self.auth_servers.get(name) {
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
        let verifier = self.verifier(name, a, prev, metrics)?;
        let introspector = gatehouse_phantom::Introspector::new(
            Self::http_client(a, i.timeout.0)?,
            i.url.clone(),
            i.accept,
            gatehouse_phantom::ClientAuth::from_config(&i.client_auth)?,
            verifier,
        );
        let full_claims = routes_need_full_claims(c, name);
        let basis = CacheBasis {
            server: a.clone(),
            signing: c.token_signing.clone(),
            full_claims,
            files: digests(&[
                a.jwks_file.as_deref(),
                c.token_signing.as_ref().map(|s| s.key_file.as_str()),
            ]),
        };
        let cache = carry(prev.map(|p| &p.caches), name, &basis, || {
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
        self.caches.insert(name.to_owned(), (basis, cache.clone()));
        let server = Arc::new(gatehouse_phantom::AuthServer::new(
            name.to_owned(),
            introspector,
            cache,
            gatehouse_phantom::CachePolicy {
                max_ttl: a.cache.max_ttl.0,
                negative_ttl: a.cache.negative_ttl.0,
                stale_if_error: a.cache.stale_if_error.map(|d| d.0),
                backoff: i.backoff.0,
                full_claims,
            },
            self.signer.clone(),
            metrics.clone(),
            self.clock.clone(),
        ));
        self.auth_servers.insert(name.to_owned(), server.clone());
        Ok(server)
    }

    /// The clock the services read.
    pub fn clock(&self) -> SharedClock {
        self.clock.clone()
    }

    /// One filter instance for one route, over the services built for its configuration.
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
                self.clock.clone(),
            )
            .map(|f| Box::new(f) as Box<dyn Filter>)
            .map_err(|e| e.to_string()),
            FilterConfig::PhantomToken(p) => {
                let server = self
                    .auth_servers
                    .get(&p.authorization_server)
                    .cloned()
                    .ok_or_else(|| format!("{} was not built", p.authorization_server))?;
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
                let v = self
                    .verifiers
                    .get(&j.authorization_server)
                    .cloned()
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
