//! CRLs fetched from the certificates' CRL distribution points (RFC 5280 §4.2.1.13), over
//! plain HTTP as CRLs are published, cached per URL for the refresh interval, bounded in
//! count, and fetched once however many connections ask at the same time.

use gatehouse_metrics::Metrics;
use openssl::x509::{X509Crl, X509Ref};
use std::sync::Arc;
use std::time::Duration;

/// The HTTP distribution points (full names) of a certificate, in order.
pub fn distribution_points(cert: &X509Ref) -> Vec<String> {
    let Some(points) = cert.crl_distribution_points() else {
        return Vec::new();
    };
    points
        .iter()
        .filter_map(|p| p.distpoint())
        .filter_map(|n| n.fullname())
        .flat_map(|names| names.iter().filter_map(|g| g.uri()))
        // http only: a CRL is signed, and an https fetch could loop through ourselves
        .filter(|u| u.starts_with("http://"))
        .map(str::to_owned)
        .collect()
}

/// Fetches and caches CRLs by URL.
pub struct DpFetcher {
    client: reqwest::Client,
    cache: moka::future::Cache<String, Arc<X509Crl>>,
    refresh: Duration,
    metrics: Metrics,
}

/// Largest CRL accepted (bytes).
const MAX_CRL: usize = 16 * 1024 * 1024;

impl DpFetcher {
    /// A fetcher keeping at most `max_entries` CRLs, each for `refresh`.
    pub fn new(
        refresh: Duration,
        max_entries: u64,
        timeout: Duration,
        metrics: Metrics,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(Self {
            client,
            cache: moka::future::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(refresh)
                .build(),
            refresh,
            metrics,
        })
    }

    /// How long a fetched CRL is used before it is fetched again.
    pub fn refresh(&self) -> Duration {
        self.refresh
    }

    /// The CRL at `url`, from the cache or fetched now. A failed fetch is not cached (the
    /// next connection tries again) and yields `None`.
    pub async fn get(&self, url: &str) -> Option<Arc<X509Crl>> {
        let fetched = self
            .cache
            .try_get_with(url.to_owned(), async {
                let crl = self.fetch(url).await;
                let result = if crl.is_ok() { "fetched" } else { "error" };
                self.metrics
                    .crl_updates
                    .with_label_values(&["distribution_point", result])
                    .inc();
                crl.map(Arc::new)
            })
            .await;
        match fetched {
            Ok(crl) => Some(crl),
            Err(e) => {
                tracing::warn!("client_cert: CRL distribution point {url}: {e}");
                None
            }
        }
    }

    async fn fetch(&self, url: &str) -> Result<X509Crl, String> {
        let res = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("unreachable: {e}"))?;
        if !res.status().is_success() {
            return Err(format!("HTTP {}", res.status().as_u16()));
        }
        if res.content_length().is_some_and(|n| n as usize > MAX_CRL) {
            return Err("too large".into());
        }
        let body = res.bytes().await.map_err(|e| format!("read: {e}"))?;
        if body.len() > MAX_CRL {
            return Err("too large".into());
        }
        X509Crl::from_der(&body)
            .or_else(|_| X509Crl::from_pem(&body))
            .map_err(|_| "not a CRL".to_owned())
    }
}
