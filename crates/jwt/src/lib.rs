//! JWS/JWT verification shared by the token filters: keys from a JWKS (fetched from a
//! `jwks_uri`, cached, refreshed on an unknown `kid` at most every `jwks_min_refresh`; or a
//! file), algorithm allow-list, `iss`/`aud`/`exp`/`nbf`/`iat` with leeway, optional `typ`.
//!
//! Signature math is jsonwebtoken's (ring); this crate decides which key and which
//! algorithm may be used, which is where JWT verification usually goes wrong:
//! - `alg: none` never parses (jsonwebtoken has no such algorithm);
//! - HS* is only accepted with a configured shared secret, and only that secret is used as
//!   the HMAC key (a public key from the JWKS can never become an HMAC secret);
//! - the key's type must fit the algorithm, and a JWK's own `alg` must equal the header's.
#![forbid(unsafe_code)]

mod filter;
mod keys;

pub use filter::{bearer_rejection, JwtFilter, BEARER_REASONS};
pub use keys::{KeySource, KeyStore};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Why a JWT was not accepted. Each maps to a metric reason; all are RFC 6750
/// `invalid_token` towards the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token is not a well-formed JWS")]
    Malformed,
    #[error("algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    #[error("no key with this kid")]
    UnknownKey,
    #[error("key type does not match the algorithm")]
    KeyMismatch,
    #[error("signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("token was issued in the future")]
    IssuedInFuture,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("wrong typ header")]
    WrongType,
    #[error("required claim {0} is missing")]
    MissingClaim(&'static str),
    #[error("signing keys are unavailable")]
    KeysUnavailable,
}

/// Every reason of a JWT that does not verify ([`JwtError::reason`]).
pub const JWT_REASONS: [&str; 13] = [
    "malformed_jwt",
    "algorithm_not_allowed",
    "unknown_kid",
    "key_mismatch",
    "bad_signature",
    "token_expired",
    "token_not_yet_valid",
    "token_issued_in_future",
    "wrong_issuer",
    "wrong_audience",
    "wrong_typ",
    "missing_claim",
    "jwks_unavailable",
];

impl JwtError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed_jwt",
            Self::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            Self::UnknownKey => "unknown_kid",
            Self::KeyMismatch => "key_mismatch",
            Self::BadSignature => "bad_signature",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::IssuedInFuture => "token_issued_in_future",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::WrongType => "wrong_typ",
            Self::MissingClaim(_) => "missing_claim",
            Self::KeysUnavailable => "jwks_unavailable",
        }
    }
}

/// What one verification requires beyond the signature.
#[derive(Debug, Clone, Default)]
pub struct Expect<'a> {
    /// Accepted audiences (any one); empty: `aud` not checked.
    pub audience: &'a [String],
    /// Required `typ` header (compared case-insensitively, `application/` optional).
    pub typ: Option<&'a str>,
    /// Require an `exp` claim (access tokens: yes; RFC 9701 responses carry none).
    pub require_exp: bool,
}

/// Verifies JWTs of one issuer.
pub struct Verifier {
    keys: Arc<KeyStore>,
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    leeway: Duration,
    hmac: Option<DecodingKey>,
}

impl Verifier {
    /// `algorithms` are names as in JWA (`PS256`, `ES256`, `EdDSA`, …); unknown ones are
    /// ignored (config validation rejects them first).
    pub fn new(
        keys: Arc<KeyStore>,
        algorithms: &[String],
        issuer: Option<String>,
        leeway: Duration,
        hmac_secret: Option<&[u8]>,
    ) -> Self {
        let algorithms = algorithms
            .iter()
            .filter_map(|a| Algorithm::from_str(a).ok())
            .filter(|a| !is_hmac(*a) || hmac_secret.is_some())
            .collect();
        Self {
            keys,
            algorithms,
            issuer,
            leeway,
            hmac: hmac_secret.map(DecodingKey::from_secret),
        }
    }

    /// The key store (to share it, or to look at its metrics).
    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }

    /// Verify `token` and return its claims.
    pub async fn verify(
        &self,
        token: &str,
        expect: &Expect<'_>,
    ) -> Result<Map<String, Value>, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(JwtError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
        }
        if let Some(want) = expect.typ {
            let got = header.typ.as_deref().unwrap_or("");
            let norm = |s: &str| {
                let s = s.to_ascii_lowercase();
                s.strip_prefix("application/")
                    .map(str::to_owned)
                    .unwrap_or(s)
            };
            if norm(got) != norm(want) {
                return Err(JwtError::WrongType);
            }
        }
        let key = if is_hmac(header.alg) {
            self.hmac.clone().ok_or(JwtError::KeyMismatch)?
        } else {
            self.keys.key_for(header.kid.as_deref(), header.alg).await?
        };
        let mut v = Validation::new(header.alg);
        v.leeway = self.leeway.as_secs();
        v.validate_nbf = true;
        v.validate_exp = true;
        v.required_spec_claims.clear();
        if expect.require_exp {
            v.required_spec_claims.insert("exp".to_owned());
        }
        match &self.issuer {
            Some(iss) => {
                v.set_issuer(&[iss]);
                v.required_spec_claims.insert("iss".to_owned());
            }
            None => v.iss = None,
        }
        if expect.audience.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(expect.audience);
            v.required_spec_claims.insert("aud".to_owned());
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => JwtError::BadSignature,
                K::ExpiredSignature => JwtError::Expired,
                K::ImmatureSignature => JwtError::NotYetValid,
                K::InvalidIssuer => JwtError::WrongIssuer,
                K::InvalidAudience => JwtError::WrongAudience,
                K::InvalidAlgorithm
                | K::InvalidKeyFormat
                | K::InvalidEcdsaKey
                | K::InvalidRsaKey(_) => JwtError::KeyMismatch,
                K::MissingRequiredClaim(c) => JwtError::MissingClaim(match c.as_str() {
                    "exp" => "exp",
                    "iss" => "iss",
                    "aud" => "aud",
                    _ => "claim",
                }),
                _ => JwtError::Malformed,
            }
        })?;
        if let Some(iat) = data.claims.get("iat").and_then(Value::as_i64) {
            if iat > now() + self.leeway.as_secs() as i64 {
                return Err(JwtError::IssuedInFuture);
            }
        }
        Ok(data.claims)
    }
}

fn is_hmac(a: Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
