//! The `jwt` filter: JWT access tokens verified locally (no introspection).

use crate::{Expect, JwtError, Verifier};
use async_trait::async_trait;
use gatehouse_core::{
    bearer_token, BearerError, Filter, Rejection, RequestCtx, TokenInfo, Verdict,
};
use http::StatusCode;
use std::sync::Arc;

/// Verifies `Authorization: Bearer <JWT>` and exposes its claims to later filters. The
/// token is forwarded upstream unchanged.
pub struct JwtFilter {
    verifier: Arc<Verifier>,
    audience: Vec<String>,
    typ: Option<String>,
    max_header: usize,
}

impl JwtFilter {
    pub fn new(
        verifier: Arc<Verifier>,
        audience: Vec<String>,
        typ: Option<String>,
        max_header: usize,
    ) -> Self {
        Self {
            verifier,
            audience,
            typ,
            max_header,
        }
    }
}

/// Every reason of [`bearer_rejection`].
pub const BEARER_REASONS: [&str; 4] = [
    "missing_token",
    "duplicate_authorization",
    "authorization_too_long",
    "malformed_authorization",
];

/// The RFC 6750 rejection for a bad `Authorization` header.
pub fn bearer_rejection(e: BearerError) -> Rejection {
    match e {
        BearerError::Missing => Rejection::bearer_missing(),
        BearerError::Duplicated => Rejection::bearer(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "duplicate_authorization",
            "more than one Authorization header",
        ),
        BearerError::TooLong => Rejection::bearer(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "authorization_too_long",
            "the Authorization header is too long",
        ),
        BearerError::Malformed => Rejection::bearer(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "malformed_authorization",
            "the Authorization header is not a Bearer token",
        ),
    }
}

#[async_trait]
impl Filter for JwtFilter {
    fn name(&self) -> &'static str {
        "jwt"
    }

    fn reasons(&self) -> Vec<&'static str> {
        let mut r = BEARER_REASONS.to_vec();
        r.extend(crate::JWT_REASONS);
        r.push("temporarily_unavailable");
        r
    }

    async fn check(&self, req: &http::request::Parts, ctx: &mut RequestCtx) -> Verdict {
        let values = req
            .headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .map(|v| v.as_bytes());
        let token = match bearer_token(values, self.max_header) {
            Ok(t) => t,
            Err(e) => return Verdict::Reject(bearer_rejection(e)),
        };
        let expect = Expect {
            audience: &self.audience,
            typ: self.typ.as_deref(),
            require_exp: true,
        };
        match self.verifier.verify(token, &expect).await {
            Ok(claims) => {
                ctx.token = Some(TokenInfo {
                    claims: gatehouse_core::Claims::parsed(claims),
                });
                Verdict::Continue
            }
            Err(JwtError::KeysUnavailable) => Verdict::Reject(Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the signing keys of the authorization server are unavailable",
            )),
            Err(e) => Verdict::Reject(Rejection::bearer(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                e.reason(),
                e.to_string(),
            )),
        }
    }
}
