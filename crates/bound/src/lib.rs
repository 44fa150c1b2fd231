//! RFC 8705 certificate-bound tokens and per-route claims rules.
//!
//! Both read only what earlier filters established: the accepted client certificate
//! (`client_cert` filter) and the verified token claims (`phantom_token` or `jwt` filter).
//! Config validation guarantees that order.
#![forbid(unsafe_code)]

use async_trait::async_trait;
use gatehouse_config::{BindingMode, ClaimValue, ClaimsFilter as ClaimsCfg};
use gatehouse_core::{Filter, Rejection, RequestCtx, Verdict};
use gatehouse_metrics::Metrics;
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::Value;
use subtle::ConstantTimeEq;

/// The `cert_bound_token` filter: the token's `cnf."x5t#S256"` must equal
/// base64url(SHA-256(DER of the client certificate on this connection)).
pub struct CertBoundFilter {
    mode: BindingMode,
    metrics: Metrics,
}

impl CertBoundFilter {
    pub fn new(mode: BindingMode, metrics: Metrics) -> Self {
        Self { mode, metrics }
    }

    fn fail(&self, ctx: &RequestCtx, reason: &'static str) -> Verdict {
        self.metrics
            .cert_binding_failures
            .with_label_values(&[&ctx.route_name, reason])
            .inc();
        Verdict::Reject(Rejection::bearer(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            reason,
            "certificate binding mismatch",
        ))
    }
}

/// Constant-time comparison of two SHA-256 thumbprints.
pub fn thumbprints_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    bool::from(a.ct_eq(b))
}

#[async_trait]
impl Filter for CertBoundFilter {
    fn name(&self) -> &'static str {
        "cert_bound_token"
    }

    fn reasons(&self) -> Vec<&'static str> {
        vec![
            "cnf_mismatch",
            "cnf_missing",
            "no_client_certificate",
            "no_token",
        ]
    }

    async fn check(&self, _req: &http::request::Parts, ctx: &mut RequestCtx) -> Verdict {
        if self.mode == BindingMode::Off {
            return Verdict::Continue;
        }
        let Some(token) = &ctx.token else {
            // config validation puts a token filter first; without a token, fail closed
            return self.fail(ctx, "no_token");
        };
        let has_cnf = token.claims.has_cnf();
        let x5t = token.cnf_x5t_s256();
        match (x5t, self.mode) {
            (None, BindingMode::Optional) if !has_cnf => return Verdict::Continue,
            // a cnf that is present but has no usable x5t#S256 is never "unbound"
            (None, _) => {
                return self.fail(
                    ctx,
                    if has_cnf {
                        "cnf_unsupported"
                    } else {
                        "cnf_missing"
                    },
                )
            }
            _ => {}
        }
        let Some(expected) = x5t else {
            return self.fail(ctx, "cnf_missing");
        };
        let Some(cert) = &ctx.accepted_cert else {
            return self.fail(ctx, "no_client_certificate");
        };
        if thumbprints_equal(expected, &cert.sha256) {
            Verdict::Continue
        } else {
            self.fail(ctx, "cnf_mismatch")
        }
    }
}

/// The `claims` filter: required scopes and roles, exact claim values, claim → header.
pub struct ClaimsFilter {
    scope: Vec<String>,
    roles: Vec<String>,
    equals: Vec<(String, ClaimValue)>,
    to_headers: Vec<(String, HeaderName)>,
}

impl ClaimsFilter {
    pub fn new(c: &ClaimsCfg) -> Result<Self, String> {
        let to_headers = c
            .to_headers
            .iter()
            .map(|(claim, h)| {
                HeaderName::from_bytes(h.as_bytes())
                    .map(|n| (claim.clone(), n))
                    .map_err(|e| format!("to_headers.{claim}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            scope: c.scope.clone(),
            roles: c.roles.clone(),
            equals: c
                .equals
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            to_headers,
        })
    }
}

fn claim_matches(v: Option<&Value>, want: &ClaimValue) -> bool {
    match (v, want) {
        (Some(Value::String(s)), ClaimValue::Str(w)) => s == w,
        (Some(Value::Number(n)), ClaimValue::Int(w)) => n.as_i64() == Some(*w),
        (Some(Value::Bool(b)), ClaimValue::Bool(w)) => b == w,
        _ => false,
    }
}

fn header_value(v: &Value) -> Option<HeaderValue> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        _ => return None,
    };
    HeaderValue::from_str(&s).ok()
}

#[async_trait]
impl Filter for ClaimsFilter {
    fn name(&self) -> &'static str {
        "claims"
    }

    fn reasons(&self) -> Vec<&'static str> {
        vec!["insufficient_scope", "missing_role", "claim_mismatch"]
    }

    async fn check(&self, _req: &http::request::Parts, ctx: &mut RequestCtx) -> Verdict {
        let Some(token) = &ctx.token else {
            return Verdict::Reject(Rejection::bearer_missing());
        };
        let claims = &token.claims;
        if !self.scope.is_empty() {
            // RFC 8693 §4.2 / RFC 9068: `scope` is a space-separated string; Azure AD uses `scp`
            if !self
                .scope
                .iter()
                .all(|s| claims.scopes().any(|g| g == s.as_str()))
            {
                return Verdict::Reject(Rejection::insufficient_scope(&self.scope.join(" ")));
            }
        }
        if !self.roles.is_empty() {
            let roles: Vec<&str> = match claims.get("roles") {
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                Some(Value::String(s)) => s.split(' ').collect(),
                _ => Vec::new(),
            };
            if !self.roles.iter().all(|r| roles.contains(&r.as_str())) {
                return Verdict::Reject(Rejection::forbidden(
                    "missing_role",
                    "the token lacks a required role",
                ));
            }
        }
        for (name, want) in &self.equals {
            if !claim_matches(claims.get(name), want) {
                return Verdict::Reject(Rejection::forbidden(
                    "claim_mismatch",
                    format!("claim {name} does not have the required value"),
                ));
            }
        }
        let mut headers = Vec::new();
        for (claim, header) in &self.to_headers {
            if let Some(v) = claims.get(claim).and_then(header_value) {
                headers.push((header.clone(), v));
            }
        }
        ctx.upstream_headers.extend(headers);
        Verdict::Continue
    }

    fn owned_headers(&self) -> Vec<HeaderName> {
        self.to_headers.iter().map(|(_, h)| h.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::{ClientCert, TokenInfo};
    use serde_json::json;
    use std::sync::Arc;

    fn ctx(claims: Value, cert_sha: Option<[u8; 32]>) -> RequestCtx {
        RequestCtx {
            token: Some(TokenInfo {
                claims: gatehouse_core::Claims::new(
                    claims.as_object().cloned().unwrap_or_default(),
                ),
            }),
            accepted_cert: cert_sha.map(|s| {
                Arc::new(ClientCert {
                    sha256: s,
                    ..Default::default()
                })
            }),
            route_name: "r".into(),
            ..Default::default()
        }
    }

    fn req() -> http::request::Parts {
        http::Request::new(()).into_parts().0
    }

    fn x5t(sha: [u8; 32]) -> String {
        ClientCert {
            sha256: sha,
            ..Default::default()
        }
        .x5t_s256()
    }

    #[tokio::test]
    async fn binding_modes() {
        let m = Metrics::new();
        let strict = CertBoundFilter::new(BindingMode::Strict, m.clone());
        let optional = CertBoundFilter::new(BindingMode::Optional, m.clone());
        let a = [1u8; 32];
        let b = [2u8; 32];
        let bound_to_a = json!({"cnf": {"x5t#S256": x5t(a)}});
        assert!(matches!(
            strict
                .check(&req(), &mut ctx(bound_to_a.clone(), Some(a)))
                .await,
            Verdict::Continue
        ));
        let Verdict::Reject(r) = strict
            .check(&req(), &mut ctx(bound_to_a.clone(), Some(b)))
            .await
        else {
            panic!("b passed")
        };
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.reason, "cnf_mismatch");
        assert_eq!(
            r.www_authenticate.as_deref(),
            Some("Bearer error=\"invalid_token\", error_description=\"certificate binding mismatch\"")
        );
        assert!(matches!(
            strict
                .check(&req(), &mut ctx(bound_to_a.clone(), None))
                .await,
            Verdict::Reject(_)
        ));
        assert!(
            matches!(strict.check(&req(), &mut ctx(json!({}), Some(a))).await, Verdict::Reject(r) if r.reason == "cnf_missing")
        );
        assert!(matches!(
            optional.check(&req(), &mut ctx(json!({}), Some(a))).await,
            Verdict::Continue
        ));
        assert!(matches!(
            optional.check(&req(), &mut ctx(bound_to_a, Some(b))).await,
            Verdict::Reject(_)
        ));
        assert!(
            matches!(optional.check(&req(), &mut ctx(json!({"cnf": {"jkt": "x"}}), Some(a))).await, Verdict::Reject(r) if r.reason == "cnf_unsupported")
        );
        let text = String::from_utf8(m.render()).unwrap_or_default();
        assert!(
            text.contains(
                "gatehouse_cert_binding_failures_total{reason=\"cnf_mismatch\",route=\"r\"} 2"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn claims_rules() {
        let cfg = ClaimsCfg {
            scope: vec!["transactions".into()],
            roles: vec!["service-api".into()],
            equals: [
                ("azpacr".to_owned(), ClaimValue::Str("2".into())),
                ("ver".to_owned(), ClaimValue::Int(2)),
            ]
            .into_iter()
            .collect(),
            to_headers: [("client_id".to_owned(), "X-Client-Id".to_owned())]
                .into_iter()
                .collect(),
        };
        let f = ClaimsFilter::new(&cfg).unwrap_or_else(|e| panic!("{e}"));
        let good = json!({"scope": "read transactions", "roles": ["service-api"], "azpacr": "2", "ver": 2, "client_id": "partner-a"});
        let mut c = ctx(good.clone(), None);
        assert!(matches!(f.check(&req(), &mut c).await, Verdict::Continue));
        assert_eq!(
            c.upstream_headers,
            vec![(
                HeaderName::from_static("x-client-id"),
                HeaderValue::from_static("partner-a")
            )]
        );

        let mut no_scope = good.clone();
        no_scope["scope"] = json!("read");
        let Verdict::Reject(r) = f.check(&req(), &mut ctx(no_scope, None)).await else {
            panic!("passed")
        };
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::FORBIDDEN, "insufficient_scope")
        );
        assert!(r
            .www_authenticate
            .unwrap_or_default()
            .contains("scope=\"transactions\""));

        let mut no_role = good.clone();
        no_role["roles"] = json!(["other"]);
        assert!(
            matches!(f.check(&req(), &mut ctx(no_role, None)).await, Verdict::Reject(r) if r.reason == "missing_role")
        );
        let mut weak = good.clone();
        weak["azpacr"] = json!("1");
        assert!(
            matches!(f.check(&req(), &mut ctx(weak, None)).await, Verdict::Reject(r) if r.reason == "claim_mismatch")
        );
        let mut typed = good;
        typed["azpacr"] = json!(2);
        assert!(
            matches!(
                f.check(&req(), &mut ctx(typed, None)).await,
                Verdict::Reject(_)
            ),
            "a number is not the string \"2\""
        );
    }
}
