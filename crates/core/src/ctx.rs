//! Per-request state shared by the filters of one route.

use crate::{ClientCert, Rejection};
use std::sync::Arc;

/// What a token filter established about the caller's access token.
#[derive(Debug, Clone, Default)]
pub struct TokenInfo {
    /// The verified claims (introspection result or JWT payload). Never contains the
    /// opaque token itself.
    pub claims: Arc<Claims>,
}

impl TokenInfo {
    /// A string claim.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.str_claim(name)
    }

    /// RFC 8705 §3.1 `cnf."x5t#S256"`, if present.
    pub fn cnf_x5t_s256(&self) -> Option<&str> {
        self.claims.cnf_x5t_s256()
    }
}

type Map = serde_json::Map<String, serde_json::Value>;

/// Verified token claims, stored compactly because a cache may hold a million of them: the
/// claims the per-request path reads (`exp`, `cnf."x5t#S256"`, `scope`, `client_id`,
/// `sub`) are extracted once; the whole set is kept as JSON text and parsed (once per
/// token, then kept) only when a rule asks for another claim.
#[derive(Debug, Default)]
pub struct Claims {
    json: Box<str>,
    full: std::sync::OnceLock<Map>,
    exp: Option<i64>,
    /// `Some(None)`: a `cnf` claim without a usable `x5t#S256`.
    cnf: Option<Option<Box<str>>>,
    /// `scope` when it is a plain string and there is no `scp` (else the map decides).
    scope: Option<Box<str>>,
    client_id: Option<Box<str>>,
    sub: Option<Box<str>>,
}

impl Claims {
    /// Compact form for caching: the map is serialized and dropped.
    pub fn new(map: Map) -> Self {
        let mut c = Self::hot_fields(&map);
        c.json = serde_json::Value::Object(map).to_string().into_boxed_str();
        c
    }

    /// Already-parsed form, for claims used once (a JWT verified for this request).
    pub fn parsed(map: Map) -> Self {
        let c = Self::hot_fields(&map);
        let _ = c.full.set(map);
        c
    }

    fn hot_fields(map: &Map) -> Self {
        let s = |k: &str| map.get(k).and_then(|v| v.as_str()).map(Into::into);
        Self {
            json: Box::default(),
            full: std::sync::OnceLock::new(),
            exp: map.get("exp").and_then(|v| v.as_i64()),
            cnf: map
                .get("cnf")
                .map(|c| c.get("x5t#S256").and_then(|v| v.as_str()).map(Into::into)),
            scope: if map.contains_key("scp") {
                None
            } else {
                s("scope")
            },
            client_id: s("client_id"),
            sub: s("sub"),
        }
    }

    /// Every claim (parsed from the stored JSON on first use).
    pub fn map(&self) -> &Map {
        self.full
            .get_or_init(|| serde_json::from_str(&self.json).unwrap_or_default())
    }

    /// One claim.
    pub fn get(&self, name: &str) -> Option<&serde_json::Value> {
        self.map().get(name)
    }

    /// A string claim (the hot ones without parsing).
    pub fn str_claim(&self, name: &str) -> Option<&str> {
        match name {
            "client_id" => self.client_id.as_deref(),
            "sub" => self.sub.as_deref(),
            _ => self.get(name).and_then(|v| v.as_str()),
        }
    }

    /// `exp`, if the token has one.
    pub fn exp(&self) -> Option<i64> {
        self.exp
    }

    /// Whether there is a `cnf` claim at all.
    pub fn has_cnf(&self) -> bool {
        self.cnf.is_some()
    }

    /// RFC 8705 §3.1 `cnf."x5t#S256"`, if present.
    pub fn cnf_x5t_s256(&self) -> Option<&str> {
        self.cnf.as_ref().and_then(|c| c.as_deref())
    }

    /// The granted scopes: `scope` (space-separated, RFC 9068) and Azure AD's `scp` (string
    /// or array).
    pub fn scopes(&self) -> Vec<&str> {
        if let Some(s) = &self.scope {
            return s.split(' ').filter(|x| !x.is_empty()).collect();
        }
        ["scope", "scp"]
            .iter()
            .filter_map(|k| self.get(k))
            .flat_map(|v| match v {
                serde_json::Value::String(s) => {
                    s.split(' ').filter(|x| !x.is_empty()).collect::<Vec<_>>()
                }
                serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect(),
                _ => Vec::new(),
            })
            .collect()
    }
}

#[cfg(test)]
mod claims_tests {
    use super::*;

    #[test]
    fn compact_and_parsed_claims_answer_alike() {
        let v = serde_json::json!({
            "sub": "partner-a", "client_id": "pa", "scope": "a  b", "exp": 10,
            "roles": ["r"], "cnf": {"x5t#S256": "abc"},
        });
        let map = v.as_object().cloned().unwrap_or_default();
        for c in [Claims::new(map.clone()), Claims::parsed(map.clone())] {
            assert_eq!(c.str_claim("sub"), Some("partner-a"));
            assert_eq!(c.str_claim("client_id"), Some("pa"));
            assert_eq!(c.exp(), Some(10));
            assert_eq!(c.cnf_x5t_s256(), Some("abc"));
            assert!(c.has_cnf());
            assert_eq!(c.scopes(), ["a", "b"]);
            assert_eq!(c.get("roles"), map.get("roles"));
            assert_eq!(c.map(), &map);
        }
        let scp = serde_json::json!({"scope": "x", "scp": ["y", "z"], "cnf": {}});
        let c = Claims::new(scp.as_object().cloned().unwrap_or_default());
        assert_eq!(c.scopes(), ["x", "y", "z"]);
        assert!(c.has_cnf());
        assert_eq!(c.cnf_x5t_s256(), None);
        assert_eq!(Claims::default().scopes(), Vec::<&str>::new());
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
