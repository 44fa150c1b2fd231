//! The `client_cert` filter.

use crate::dp::{distribution_points, DpFetcher};
use crate::forward::{forward_headers, CERT_HEADERS};
use crate::identity::IdentityMatcher;
use crate::verify::{load_pem_bundle, revocation_status, unix_now, TrustError, TrustStore};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use gatehouse_config::{
    CertForward, CertForwardFormat, ClientCertFilter as Cfg, RevocationMode, RouteCertMode,
};
use gatehouse_core::{CertFailure, Filter, Rejection, RequestCtx, RoutePass, Verdict};
use gatehouse_metrics::Metrics;
use http::HeaderName;
use openssl::x509::{X509Crl, X509};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Why the filter could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum FilterBuildError {
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("identities[{0}]: {1}")]
    Identity(usize, String),
    #[error("forward.header: {0}")]
    Header(String),
    #[error("revocation: {0}")]
    Http(String),
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A route-specific trust store with the CRL files it watches.
struct RouteTrust {
    cas: Vec<X509>,
    crl_files: Vec<String>,
    max_depth: u32,
    soft: bool,
    /// CRLs from distribution points too: revocation is then checked by
    /// [`revocation_status`] over the file CRLs and the fetched ones.
    dp: Option<DpFetcher>,
    store: ArcSwap<TrustStore>,
    generation: AtomicU64,
    /// Each CRL file's modification time and size when last loaded.
    mtimes: parking_lot::Mutex<Vec<Option<(SystemTime, u64)>>>,
    last_check: AtomicI64,
    /// The time the refresh checks read (certificate dates are OpenSSL's, on the system
    /// clock).
    clock: gatehouse_core::SharedClock,
}

impl RouteTrust {
    /// Rebuild the store when a CRL file changed (checked at most every 2 s, on the request
    /// path: one `stat` per file, no background task to manage).
    fn refresh(&self, metrics: &Metrics) {
        let now = self.clock.unix();
        let last = self.last_check.load(Ordering::Relaxed);
        if now - last < 2
            || self
                .last_check
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let current = mtimes(&self.crl_files);
        let changed = *self.mtimes.lock() != current;
        if !changed {
            return;
        }
        match self.build_store() {
            Ok(store) => {
                self.store.store(Arc::new(store));
                self.generation.fetch_add(1, Ordering::AcqRel);
                {
                    let mut m = self.mtimes.lock();
                    *m = current;
                }
                metrics
                    .crl_updates
                    .with_label_values(&["file", "reloaded"])
                    .inc();
                tracing::info!("client_cert: CRL files changed, trust store reloaded");
            }
            Err(e) => {
                // keep the previous CRLs: fail closed on the known-revoked set
                metrics
                    .crl_updates
                    .with_label_values(&["file", "error"])
                    .inc();
                tracing::warn!("client_cert: CRL reload failed, keeping the previous CRLs: {e}");
            }
        }
    }
}

/// The trust store of a route policy: with distribution points, revocation is checked by
/// [`revocation_status`] over file and fetched CRLs, so the store leaves it out.
fn trust_store(
    cas: &[X509],
    crl_files: &[String],
    max_depth: u32,
    soft: bool,
    dp: bool,
) -> Result<TrustStore, TrustError> {
    if dp {
        TrustStore::with_own_revocation(cas, crl_files, max_depth)
    } else {
        TrustStore::new(cas, crl_files, max_depth, soft)
    }
}

impl RouteTrust {
    fn build_store(&self) -> Result<TrustStore, TrustError> {
        trust_store(
            &self.cas,
            &self.crl_files,
            self.max_depth,
            self.soft,
            self.dp.is_some(),
        )
    }

    /// The policy generation: CRL file reloads, and with distribution points, every
    /// refresh interval (so a connection's memoized verdict sees newly fetched CRLs).
    fn generation(&self) -> u64 {
        let files = self.generation.load(Ordering::Acquire);
        match &self.dp {
            None => files,
            Some(dp) => {
                let epoch = self.clock.unix().max(0) as u64 / dp.refresh().as_secs().max(1);
                files | (epoch << 24)
            }
        }
    }

    /// Chain verification, then revocation against file and distribution-point CRLs.
    async fn verify_with_dp(
        &self,
        dp: &DpFetcher,
        leaf: &X509,
        chain: &[X509],
        skew_secs: i64,
    ) -> Result<RoutePass, CertFailure> {
        let store = self.store.load_full();
        let verified = store.verify_path(leaf, chain, skew_secs)?;
        let path = &verified.path;
        let mut fetched = Vec::new();
        // every certificate but the anchor names where its issuer publishes its CRL
        for cert in path.iter().take(path.len().saturating_sub(1)) {
            for url in distribution_points(cert) {
                if let Some(crl) = dp.get(&url).await {
                    fetched.push(crl);
                }
            }
        }
        let crls: Vec<&X509Crl> = store
            .crls()
            .iter()
            .chain(fetched.iter().map(|c| c.as_ref()))
            .collect();
        match revocation_status(path, &crls)? {
            true if !self.soft => Err(CertFailure::RevocationUnknown),
            revocation_unknown => Ok(RoutePass {
                revocation_unknown,
                chain_der: verified.validation_chain_der().into(),
            }),
        }
    }
}

/// Modification time and size of each file (a file rewritten within one tick of a coarse
/// file-system clock still shows its new size).
fn mtimes(files: &[String]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .and_then(|m| Ok((m.modified()?, m.len())))
                .ok()
        })
        .collect()
}

/// Verifies the connection's client certificate against the route's policy.
pub struct ClientCertFilter {
    id: u64,
    mode: RouteCertMode,
    identities: Vec<IdentityMatcher>,
    require_eku: bool,
    min_rsa_bits: Option<u32>,
    skew_secs: i64,
    route_trust: Option<RouteTrust>,
    forward: CertForward,
    pem_header: HeaderName,
    metrics: Metrics,
}

impl ClientCertFilter {
    /// Build from config. `listener_ca_files` are the CA bundles of the listeners, used
    /// when the route needs its own verification (CRLs, skew) without its own `ca_files`.
    pub fn new(
        cfg: &Cfg,
        listener_ca_files: &[String],
        listener_max_depth: u32,
        metrics: Metrics,
        clock: gatehouse_core::SharedClock,
    ) -> Result<Self, FilterBuildError> {
        let identities = cfg
            .identities
            .iter()
            .enumerate()
            .map(|(i, id)| IdentityMatcher::new(id).map_err(|e| FilterBuildError::Identity(i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let skew_secs = cfg.clock_skew.map(|d| d.0.as_secs() as i64).unwrap_or(0);
        let revocation_on = cfg.revocation.mode != RevocationMode::Off;
        let needs_own =
            cfg.ca_files.is_some() || revocation_on || skew_secs > 0 || cfg.max_depth.is_some();
        let route_trust = if needs_own {
            let files = cfg.ca_files.as_deref().unwrap_or(listener_ca_files);
            let mut cas = Vec::new();
            for f in files {
                cas.extend(load_pem_bundle(f)?);
            }
            let crl_files = if revocation_on {
                cfg.revocation.crl_files.clone()
            } else {
                Vec::new()
            };
            let max_depth = cfg.max_depth.unwrap_or(listener_max_depth);
            let soft = cfg.revocation.mode == RevocationMode::Soft;
            let dp = if revocation_on && cfg.revocation.fetch_distribution_points {
                let r = &cfg.revocation;
                Some(
                    DpFetcher::new(
                        r.refresh.map(|d| d.0).unwrap_or(Duration::from_secs(3600)),
                        r.max_cached_crls.unwrap_or(1000),
                        r.fetch_timeout
                            .map(|d| d.0)
                            .unwrap_or(Duration::from_secs(2)),
                        metrics.clone(),
                    )
                    .map_err(|e| FilterBuildError::Http(e.to_string()))?,
                )
            } else {
                None
            };
            let store = trust_store(&cas, &crl_files, max_depth, soft, dp.is_some())?;
            metrics
                .crl_updates
                .with_label_values(&["file", "loaded"])
                .inc_by(crl_files.len() as u64);
            Some(RouteTrust {
                mtimes: parking_lot::Mutex::new(mtimes(&crl_files)),
                cas,
                crl_files,
                max_depth,
                soft,
                dp,
                store: ArcSwap::from_pointee(store),
                generation: AtomicU64::new(0),
                last_check: AtomicI64::new(clock.unix()),
                clock,
            })
        } else {
            None
        };
        let pem_header = match (&cfg.forward.format, &cfg.forward.header) {
            (CertForwardFormat::Pem, Some(h)) => HeaderName::from_bytes(h.as_bytes())
                .map_err(|e| FilterBuildError::Header(e.to_string()))?,
            _ => HeaderName::from_static("x-ssl-client-cert"),
        };
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            mode: cfg.mode,
            identities,
            require_eku: cfg.require_eku_client_auth,
            min_rsa_bits: cfg.min_rsa_bits,
            skew_secs,
            route_trust,
            forward: cfg.forward.clone(),
            pem_header,
            metrics,
        })
    }

    fn reject(&self, ctx: &RequestCtx, f: CertFailure) -> Verdict {
        self.metrics
            .client_cert_rejections
            .with_label_values(&[&ctx.route_name, f.reason()])
            .inc();
        Verdict::Reject(Rejection::forbidden(f.reason(), f.description()))
    }

    /// The verification verdict for this connection under this route's policy: the
    /// route's own validation chain when it verifies the certificate itself, `None` when
    /// the listener's verification stands.
    async fn verify(&self, ctx: &RequestCtx) -> Result<Option<Arc<[Vec<u8>]>>, CertFailure> {
        let Some(cert) = &ctx.presented_cert else {
            return Err(CertFailure::Missing);
        };
        let Some(rt) = &self.route_trust else {
            return ctx.presented_cert_failure.map_or(Ok(None), Err);
        };
        rt.refresh(&self.metrics);
        let generation = rt.generation();
        let parse = || -> Result<(X509, Vec<X509>), CertFailure> {
            let leaf = X509::from_der(&cert.der).map_err(|_| CertFailure::Invalid)?;
            let chain: Vec<X509> = cert
                .chain_der
                .iter()
                .filter_map(|d| X509::from_der(d).ok())
                .collect();
            Ok((leaf, chain))
        };
        let verdict = match cert.memo.peek(self.id, generation) {
            Some(v) => v,
            None => {
                let v = match (parse(), &rt.dp) {
                    (Err(f), _) => Err(f),
                    (Ok((leaf, chain)), None) => rt
                        .store
                        .load()
                        .verify(&leaf, &chain, self.skew_secs)
                        .map(|v| RoutePass {
                            revocation_unknown: v.revocation_unknown,
                            chain_der: v.validation_chain_der().into(),
                        }),
                    (Ok((leaf, chain)), Some(dp)) => {
                        rt.verify_with_dp(dp, &leaf, &chain, self.skew_secs).await
                    }
                };
                cert.memo.put(self.id, generation, v.clone());
                v
            }
        };
        let pass = verdict?;
        if pass.revocation_unknown {
            self.metrics
                .crl_updates
                .with_label_values(&["check", "unknown_soft_pass"])
                .inc();
        }
        Ok(Some(pass.chain_der))
    }
}

#[async_trait]
impl Filter for ClientCertFilter {
    fn name(&self) -> &'static str {
        "client_cert"
    }

    fn reasons(&self) -> Vec<&'static str> {
        gatehouse_core::CertFailure::ALL
            .iter()
            .map(|f| f.reason())
            .collect()
    }

    fn verifies_client_cert(&self) -> bool {
        self.route_trust.is_some()
    }

    async fn check(&self, _req: &http::request::Parts, ctx: &mut RequestCtx) -> Verdict {
        if ctx.presented_cert.is_none() && self.mode == RouteCertMode::Optional {
            return Verdict::Continue;
        }
        let route_chain = match self.verify(ctx).await {
            Ok(c) => c,
            Err(f) => return self.reject(ctx, f),
        };
        let Some(cert) = ctx.presented_cert.clone() else {
            return self.reject(ctx, CertFailure::Missing);
        };
        if self.require_eku && cert.eku_client_auth != Some(true) {
            return self.reject(ctx, CertFailure::WrongKeyUsage);
        }
        if let Some(min) = self.min_rsa_bits {
            if cert.key_is_rsa && cert.key_bits < min {
                return self.reject(ctx, CertFailure::WeakKey);
            }
        }
        if !self.identities.is_empty() && !self.identities.iter().any(|m| m.matches(&cert)) {
            return self.reject(ctx, CertFailure::IdentityNotAllowed);
        }
        // expiry metrics once per connection (per accepted certificate), not per request
        if cert.memo.first_acceptance() {
            let left = (cert.not_after - unix_now()) as f64;
            let issuer_cn = crate::identity::parse_dn(&cert.issuer)
                .ok()
                .and_then(|dn| dn.into_iter().find(|(k, _)| k == "CN").map(|(_, v)| v))
                .unwrap_or_else(|| "unknown".to_owned());
            // the issuer is a trusted CA here, so the label set is bounded by the CA bundle
            self.metrics
                .client_cert_expiry
                .with_label_values(&[&issuer_cn])
                .observe(left);
            self.metrics.client_cert_soonest_expiry.observe(
                cert.sha256,
                cert.not_after,
                unix_now(),
            );
        }
        let chain = route_chain
            .as_deref()
            .unwrap_or(cert.validated_chain_der.as_slice());
        forward_headers(
            &self.forward,
            &self.pem_header,
            &cert,
            chain,
            &mut ctx.upstream_headers,
        );
        ctx.accepted_cert = Some(cert);
        Verdict::Continue
    }

    fn owned_headers(&self) -> Vec<HeaderName> {
        let mut v: Vec<HeaderName> = CERT_HEADERS
            .iter()
            .map(|h| HeaderName::from_static(h))
            .collect();
        v.push(self.pem_header.clone());
        v
    }
}
