//! The vocabulary every Gatehouse filter speaks: the [`Filter`] trait, the per-request
//! [`RequestCtx`], and the [`Verdict`] a filter returns.
//!
//! Filters never write responses. They return [`Verdict::Reject`] and the chain (in
//! `gatehouse-app`) turns the [`Rejection`] into one JSON response, so every refusal looks
//! the same on the wire:
//!
//! ```text
//! HTTP/1.1 403 Forbidden
//! content-type: application/json
//!
//! {"error":"unknown_ca","error_description":"client certificate does not chain to a trusted CA"}
//! ```
#![forbid(unsafe_code)]

mod bounded;
mod cert;
mod claims;
mod clock;
mod ctx;
mod header;

pub use bounded::Bounded;
pub use cert::{CertFailure, ClientCert, RoutePass, RouteVerdict, VerdictMemo};
pub use claims::{Claims, Keep, Reuse};
pub use clock::{system_clock, Clock, ManualClock, SharedClock, SystemClock};
pub use ctx::{RequestCtx, TokenInfo, UpstreamHeaders};
pub use header::{bearer_token, BearerError};

use async_trait::async_trait;
use http::StatusCode;
use std::borrow::Cow;

/// What a filter decided about a request.
#[derive(Debug)]
pub enum Verdict {
    /// Pass the request on to the next filter (or the upstream after the last one).
    Continue,
    /// Stop here and answer the client with this rejection.
    Reject(Rejection),
}

/// A refusal: the status, a machine-readable reason and a human description.
///
/// `www_authenticate` is set by token filters, as RFC 6750 §3 requires for 401 and 403
/// answers to bearer-token requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status sent to the client.
    pub status: StatusCode,
    /// Machine-readable reason, e.g. `unknown_ca` or `invalid_token`; also the metric label.
    pub reason: &'static str,
    /// Human-readable detail for `error_description`. Never contains a token or a secret.
    pub description: Cow<'static, str>,
    /// Value of the `WWW-Authenticate` response header, if any.
    pub www_authenticate: Option<String>,
    /// The JSON `error` member when it is coarser than `reason` (e.g. `invalid_request`
    /// for every malformed request target); `None`: see [`Self::error_code`].
    pub error: Option<&'static str>,
}

impl Rejection {
    /// A rejection without `WWW-Authenticate`.
    pub fn new(
        status: StatusCode,
        reason: &'static str,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            reason,
            description: description.into(),
            www_authenticate: None,
            error: None,
        }
    }

    /// 400 `invalid_request` for a request Gatehouse will not route or forward; `reason`
    /// (the metric label) says which rule refused it.
    pub fn invalid_request(
        reason: &'static str,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            error: Some("invalid_request"),
            ..Self::new(StatusCode::BAD_REQUEST, reason, description)
        }
    }

    /// 403 for client-certificate decisions.
    pub fn forbidden(reason: &'static str, description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, reason, description)
    }

    /// An RFC 6750 bearer-token error: `error` is both the JSON `error` and the
    /// `WWW-Authenticate` `error` attribute. `reason` is the metric label and may be finer
    /// grained than `error` (e.g. `token_expired` for `invalid_token`).
    pub fn bearer(
        status: StatusCode,
        error: &'static str,
        reason: &'static str,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        let description = description.into();
        let mut challenge = format!("Bearer error=\"{error}\"");
        if !description.is_empty() {
            challenge.push_str(&format!(
                ", error_description=\"{}\"",
                quoted_string_safe(&description)
            ));
        }
        Self {
            status,
            reason,
            description,
            www_authenticate: Some(challenge),
            error: None,
        }
    }

    /// A 401 with a bare `WWW-Authenticate: Bearer` challenge (RFC 6750 §3.1: a request
    /// without any authentication information gets no error code).
    pub fn bearer_missing() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            reason: "missing_token",
            description: Cow::Borrowed("an access token is required"),
            www_authenticate: Some("Bearer".to_owned()),
            error: None,
        }
    }

    /// RFC 6750 §3.1 `insufficient_scope` with the `scope` attribute listing what is required.
    pub fn insufficient_scope(required: &str) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            reason: "insufficient_scope",
            description: Cow::Owned(format!("the token lacks the required scope: {required}")),
            www_authenticate: Some(format!(
                "Bearer error=\"insufficient_scope\", scope=\"{}\"",
                quoted_string_safe(required)
            )),
            error: None,
        }
    }

    /// The `error` member of the JSON body: `error` if set, for bearer errors the RFC 6750
    /// code, otherwise the reason itself.
    pub fn error_code(&self) -> &str {
        if let Some(e) = self.error {
            return e;
        }
        match &self.www_authenticate {
            Some(c) => c
                .split_once("error=\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(code, _)| code)
                .unwrap_or(self.reason),
            None => self.reason,
        }
    }

    /// The JSON body sent to the client.
    pub fn body(&self) -> Vec<u8> {
        serde_json::json!({
            "error": self.error_code(),
            "error_description": self.description,
        })
        .to_string()
        .into_bytes()
    }
}

/// Strip characters that may not appear in an RFC 7230 quoted-string attribute value.
fn quoted_string_safe(s: &str) -> String {
    s.chars()
        .filter(|c| *c == ' ' || (c.is_ascii_graphic() && *c != '"' && *c != '\\'))
        .collect()
}

/// One step of a route's chain. Implementations are built once from configuration and shared
/// by every request on the route; per-request state lives in [`RequestCtx`].
///
/// Filters run in configured order from Pingora's `request_filter` phase, after the route
/// was matched and before an upstream peer is chosen; the first `Reject` ends the request.
/// The pipeline is drawn once, in `gatehouse-app`'s `proxy` module.
#[async_trait]
pub trait Filter: Send + Sync {
    /// Stable name used in metrics, logs and config errors (`client_cert`, `phantom_token`, …).
    fn name(&self) -> &'static str;

    /// Decide about this request. `req` is the downstream request head; filters record what
    /// they learned (certificate, token claims, headers for the upstream) in `ctx`.
    async fn check(&self, req: &http::request::Parts, ctx: &mut RequestCtx) -> Verdict;

    /// Upstream request headers this filter sets. The chain removes every client-supplied
    /// copy of them before forwarding, whether or not the filter sets them this time, so
    /// nobody can spoof them.
    fn owned_headers(&self) -> Vec<http::HeaderName> {
        Vec::new()
    }

    /// `true` for a filter that verifies the connection's client certificate against its
    /// own trust policy (route CA bundle, clock skew, CRLs, depth). The listener's verdict
    /// then does not reject on its own: this filter decides, fully, for its route.
    fn verifies_client_cert(&self) -> bool {
        false
    }

    /// Every `reason` this filter's refusals carry: the metric series of a configured
    /// filter start at 0 (an alert on `rate(...)` sees 0, not "no data"), and debug builds
    /// check that no refusal carries an undeclared one.
    fn reasons(&self) -> Vec<&'static str> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_rejection_carries_rfc6750_challenge_and_json() {
        let r = Rejection::bearer(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "token_inactive",
            "the access token is not active",
        );
        assert_eq!(
            r.www_authenticate.as_deref(),
            Some("Bearer error=\"invalid_token\", error_description=\"the access token is not active\"")
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body()).unwrap_or_default();
        assert_eq!(body["error"], "invalid_token");
        assert_eq!(r.reason, "token_inactive");
    }

    #[test]
    fn insufficient_scope_names_the_scope() {
        let r = Rejection::insufficient_scope("transactions write");
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.error_code(), "insufficient_scope");
        assert!(r
            .www_authenticate
            .as_deref()
            .is_some_and(|c| c.contains("scope=\"transactions write\"")));
    }

    #[test]
    fn forbidden_body_uses_reason_as_error() {
        let r = Rejection::forbidden("unknown_ca", "nope");
        let body: serde_json::Value = serde_json::from_slice(&r.body()).unwrap_or_default();
        assert_eq!(body["error"], "unknown_ca");
        assert_eq!(body["error_description"], "nope");
    }

    #[test]
    fn description_cannot_break_the_challenge() {
        let r = Rejection::bearer(StatusCode::UNAUTHORIZED, "invalid_token", "x", "a\"b\\c\n");
        assert_eq!(
            r.www_authenticate.as_deref(),
            Some("Bearer error=\"invalid_token\", error_description=\"abc\"")
        );
    }
}
