//! The request as the filters of one route see it: which certificate the connection
//! presented and which one a `client_cert` filter accepted, the caller's token, and the
//! headers the upstream gets.

use crate::{Claims, ClientCert};
use std::sync::Arc;

/// What a token filter established about the caller's access token.
#[derive(Debug, Clone, Default)]
pub struct TokenInfo {
    /// The verified claims (introspection result or JWT payload). Never contains the
    /// opaque token itself; for a phantom-token route it carries, as its attachment, the
    /// `Bearer <jwt>` forwarded upstream.
    pub claims: Claims,
}

impl TokenInfo {
    /// A string claim.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.str_claim(name)
    }

    /// RFC 8705 §3.1 `cnf."x5t#S256"`, decoded: the SHA-256 the token is bound to.
    pub fn cnf_x5t_s256(&self) -> Option<&[u8; 32]> {
        self.claims.cnf_x5t_s256()
    }
}

/// Headers the filters want set on the upstream request (after the chain stripped every
/// client-supplied copy of them).
pub type UpstreamHeaders = Vec<(http::HeaderName, http::HeaderValue)>;

/// Per-request context, created empty for every request and filled by the filters.
#[derive(Debug, Default)]
pub struct RequestCtx {
    /// The route's name (metric label).
    pub route_name: Arc<str>,
    /// The connection's client certificate, if one was presented.
    pub presented_cert: Option<Arc<ClientCert>>,
    /// Verification failure recorded for the connection's certificate at handshake time.
    pub presented_cert_failure: Option<crate::CertFailure>,
    /// The client certificate as accepted by the `client_cert` filter. Later filters use
    /// only this one: a certificate that no `client_cert` filter accepted is invisible.
    pub accepted_cert: Option<Arc<ClientCert>>,
    /// The token as established by a token filter.
    pub token: Option<TokenInfo>,
    /// Headers to add to the upstream request.
    pub upstream_headers: UpstreamHeaders,
}
