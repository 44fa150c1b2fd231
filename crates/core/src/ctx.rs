//! Per-request state shared by the filters of one route.

use crate::{ClientCert, Rejection};
use std::sync::Arc;

/// What a token filter established about the caller's access token.
#[derive(Debug, Clone, Default)]
pub struct TokenInfo {
    /// The verified claims (introspection result or JWT payload). Never contains the
    /// opaque token itself.
    pub claims: Arc<serde_json::Map<String, serde_json::Value>>,
}

impl TokenInfo {
    /// A string claim.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(|v| v.as_str())
    }

    /// RFC 8705 §3.1 `cnf."x5t#S256"`, if present.
    pub fn cnf_x5t_s256(&self) -> Option<&str> {
        self.claims
            .get("cnf")
            .and_then(|c| c.get("x5t#S256"))
            .and_then(|v| v.as_str())
    }
}

/// Headers the filters want set on the upstream request (after the chain stripped every
/// client-supplied copy of them).
pub type UpstreamHeaders = Vec<(http::HeaderName, http::HeaderValue)>;

/// Per-request context, created empty for every request and filled by the filters.
#[derive(Debug, Default)]
pub struct RequestCtx {
    /// Index of the matched route in the active configuration.
    pub route: Option<usize>,
    /// The route's name (metric label).
    pub route_name: Arc<str>,
    /// The connection's client certificate, if one was presented.
    pub conn_cert: Option<Arc<ClientCert>>,
    /// Verification failure recorded for the connection's certificate at handshake time.
    pub conn_cert_failure: Option<crate::CertFailure>,
    /// The client certificate as accepted by the `client_cert` filter. Later filters use
    /// only this one: a certificate that no `client_cert` filter accepted is invisible.
    pub client_cert: Option<Arc<ClientCert>>,
    /// The token as established by a token filter.
    pub token: Option<TokenInfo>,
    /// Headers to add to the upstream request.
    pub upstream_headers: UpstreamHeaders,
    /// The filter that rejected the request, and why (for metrics and the access log).
    pub rejected_by: Option<(&'static str, Rejection)>,
    /// Upstream peer chosen for this request (access log).
    pub upstream_addr: Option<std::net::SocketAddr>,
    /// When the request started (monotonic), for the duration histogram.
    pub started: Option<std::time::Instant>,
}
