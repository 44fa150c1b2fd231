//! The listener's client-certificate policy as an ordinary filter: the build puts it first
//! in every route's chain behind a listener that asks for certificates, so the chain reads
//! the same for every check — match the route, run its filters, answer.

use async_trait::async_trait;
use gatehouse_config::ClientCertMode;
use gatehouse_core::{CertFailure, Filter, Rejection, RequestCtx, Verdict};
use gatehouse_metrics::Metrics;

/// What a listener requires of the certificate its connections presented.
pub struct ListenerPolicy {
    mode: ClientCertMode,
    /// The route verifies the certificate with its own policy (a `client_cert` filter with
    /// its own CA bundle, clock skew, CRLs): then only a missing certificate is the
    /// listener's business.
    route_verifies: bool,
    metrics: Metrics,
}

impl ListenerPolicy {
    /// The policy of a listener in `mode` in front of a route; `None` when the listener
    /// asks for no certificate (nothing to enforce).
    pub fn new(mode: ClientCertMode, route_verifies: bool, metrics: Metrics) -> Option<Self> {
        (mode != ClientCertMode::Off).then_some(Self {
            mode,
            route_verifies,
            metrics,
        })
    }
}

#[async_trait]
impl Filter for ListenerPolicy {
    fn name(&self) -> &'static str {
        "listener"
    }

    async fn check(&self, _req: &http::request::Parts, ctx: &mut RequestCtx) -> Verdict {
        let failure = match (self.mode, &ctx.presented_cert, ctx.presented_cert_failure) {
            (ClientCertMode::Required, None, _) => CertFailure::Missing,
            (_, Some(_), Some(f)) if !self.route_verifies => f,
            _ => return Verdict::Continue,
        };
        self.metrics
            .client_cert_rejections
            .with_label_values(&[&ctx.route_name, failure.reason()])
            .inc();
        Verdict::Reject(Rejection::forbidden(
            failure.reason(),
            failure.description(),
        ))
    }

    fn reasons(&self) -> Vec<&'static str> {
        CertFailure::ALL.iter().map(|f| f.reason()).collect()
    }
}
