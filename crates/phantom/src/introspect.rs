//! The RFC 7662 introspection client: request, client authentication, and the three
//! response formats (RFC 9701 JWT, `application/jwt`, JSON).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use gatehouse_config::{ClientAuthMethod, IntrospectionFormat};
use gatehouse_jwt::{Expect, Verifier};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Why introspection gave no usable answer. All of these fail closed: the client gets a
/// 503 `temporarily_unavailable`, never a 200.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntrospectError {
    #[error("introspection endpoint timed out")]
    Timeout,
    #[error("introspection endpoint unreachable")]
    Unreachable,
    #[error("introspection endpoint answered {0}")]
    Status(u16),
    #[error("introspection response is invalid: {0}")]
    BadResponse(&'static str),
    #[error("introspection response signature is invalid: {0}")]
    BadSignature(String),
    /// Not attempted: the last call failed and the breaker holds calls off for a while.
    #[error("the authorization server failed recently; not called again yet")]
    CircuitOpen,
    /// The answer was fine but this token's cannot be forwarded (no `client_id` to sign
    /// for, a JWT that is no header value): this token's problem, not the server's.
    #[error("the token cannot be forwarded: {0}")]
    Unforwardable(&'static str),
}

impl IntrospectError {
    /// Whether the authorization server failed (unreachable, slow, 5xx, an answer that
    /// does not parse or verify, refusing Gatehouse's credentials): what the breaker
    /// counts. A problem with one token is not.
    pub fn is_server_failure(&self) -> bool {
        !matches!(self, Self::CircuitOpen | Self::Unforwardable(_))
    }

    /// Metric label.
    pub fn result(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::Status(_) => "error_status",
            Self::BadResponse(_) => "bad_response",
            Self::BadSignature(_) => "bad_signature",
            Self::CircuitOpen => "circuit_open",
            Self::Unforwardable(_) => "unforwardable",
        }
    }
}

/// An introspection answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Introspected {
    Active {
        /// The token's claims (for RFC 9701: the `token_introspection` member).
        claims: Map<String, Value>,
        /// The JWT the authorization server returned, if any.
        jwt: Option<String>,
        /// `Cache-Control: max-age`, if the server sent one.
        max_age: Option<Duration>,
    },
    Inactive,
}

/// How Gatehouse authenticates to the introspection endpoint.
pub enum ClientAuth {
    SecretBasic {
        client_id: String,
        secret: String,
    },
    SecretPost {
        client_id: String,
        secret: String,
    },
    PrivateKeyJwt {
        client_id: String,
        key: EncodingKey,
        alg: Algorithm,
        kid: Option<String>,
    },
    /// The client certificate is in the HTTP client's TLS identity.
    Tls {
        client_id: String,
    },
}

impl ClientAuth {
    /// From config, reading secrets and keys.
    pub fn from_config(c: &gatehouse_config::IntrospectionClientAuth) -> Result<Self, String> {
        let id = c.client_id.clone();
        Ok(match c.method {
            ClientAuthMethod::ClientSecretBasic => Self::SecretBasic {
                client_id: id,
                secret: gatehouse_config::read_secret(
                    c.client_secret_file.as_deref(),
                    c.client_secret_env.as_deref(),
                )?,
            },
            ClientAuthMethod::ClientSecretPost => Self::SecretPost {
                client_id: id,
                secret: gatehouse_config::read_secret(
                    c.client_secret_file.as_deref(),
                    c.client_secret_env.as_deref(),
                )?,
            },
            ClientAuthMethod::PrivateKeyJwt => {
                let path = c
                    .private_key_file
                    .as_deref()
                    .ok_or("private_key_file is required")?;
                let pem = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
                let (key, alg) = signing_key(&pem, c.algorithm.as_deref())
                    .map_err(|e| format!("{path}: {e}"))?;
                Self::PrivateKeyJwt {
                    client_id: id,
                    key,
                    alg,
                    kid: c.key_id.clone(),
                }
            }
            ClientAuthMethod::TlsClientAuth => Self::Tls { client_id: id },
        })
    }

    fn client_id(&self) -> &str {
        match self {
            Self::SecretBasic { client_id, .. }
            | Self::SecretPost { client_id, .. }
            | Self::PrivateKeyJwt { client_id, .. }
            | Self::Tls { client_id } => client_id,
        }
    }
}

/// An encoding key from PEM: EC P-256 → ES256, RSA → `alg` (default PS256), Ed25519 → EdDSA.
pub fn signing_key(pem: &[u8], alg: Option<&str>) -> Result<(EncodingKey, Algorithm), String> {
    let want: Option<Algorithm> = alg
        .map(|a| a.parse().map_err(|_| format!("unknown algorithm {a}")))
        .transpose()?;
    if let Ok(k) = EncodingKey::from_ec_pem(pem) {
        return Ok((k, want.unwrap_or(Algorithm::ES256)));
    }
    if let Ok(k) = EncodingKey::from_ed_pem(pem) {
        return Ok((k, Algorithm::EdDSA));
    }
    if let Ok(k) = EncodingKey::from_rsa_pem(pem) {
        return Ok((k, want.unwrap_or(Algorithm::PS256)));
    }
    Err("not a PEM EC, Ed25519 or RSA private key".to_owned())
}

/// The introspection client of one authorization server.
pub struct Introspector {
    http: reqwest::Client,
    url: String,
    format: IntrospectionFormat,
    auth: ClientAuth,
    verifier: Option<Arc<Verifier>>,
}

impl Introspector {
    pub fn new(
        http: reqwest::Client,
        url: String,
        format: IntrospectionFormat,
        auth: ClientAuth,
        verifier: Option<Arc<Verifier>>,
    ) -> Self {
        Self {
            http,
            url,
            format,
            auth,
            verifier,
        }
    }

    /// RFC 7662 §2.1: `POST token=…` (plus `token_type_hint`), authenticated.
    pub async fn introspect(&self, token: &str) -> Result<Introspected, IntrospectError> {
        let accept = match self.format {
            IntrospectionFormat::TokenIntrospectionJwt => "application/token-introspection+jwt",
            IntrospectionFormat::Jwt => "application/jwt",
            IntrospectionFormat::Json => "application/json",
        };
        let mut form: Vec<(&str, String)> = vec![
            ("token", token.to_owned()),
            ("token_type_hint", "access_token".to_owned()),
        ];
        let mut req = self.http.post(&self.url).header("accept", accept);
        match &self.auth {
            ClientAuth::SecretBasic { client_id, secret } => {
                // RFC 6749 §2.3.1: form-urlencode id and secret before base64
                let creds = format!("{}:{}", form_encode(client_id), form_encode(secret));
                req = req.header("authorization", format!("Basic {}", STANDARD.encode(creds)));
            }
            ClientAuth::SecretPost { client_id, secret } => {
                form.push(("client_id", client_id.clone()));
                form.push(("client_secret", secret.clone()));
            }
            ClientAuth::PrivateKeyJwt {
                client_id,
                key,
                alg,
                kid,
            } => {
                let assertion = client_assertion(client_id, &self.url, key, *alg, kid.clone())
                    .map_err(|_| IntrospectError::BadResponse("cannot sign client assertion"))?;
                form.push(("client_id", client_id.clone()));
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
                ));
                form.push(("client_assertion", assertion));
            }
            ClientAuth::Tls { client_id } => form.push(("client_id", client_id.clone())),
        }
        let res = req.form(&form).send().await.map_err(|e| {
            if e.is_timeout() {
                IntrospectError::Timeout
            } else {
                IntrospectError::Unreachable
            }
        })?;
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let max_age = res
            .headers()
            .get_all("cache-control")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(max_age);
        let body = res.bytes().await.map_err(|e| {
            if e.is_timeout() {
                IntrospectError::Timeout
            } else {
                IntrospectError::Unreachable
            }
        })?;
        let parsed = classify(self.format, status, &content_type, &body)?;
        match parsed {
            Body::Inactive => Ok(Introspected::Inactive),
            Body::Json(claims) => Ok(Introspected::Active {
                claims,
                jwt: None,
                max_age,
            }),
            Body::Jwt(jwt) => {
                let verifier = self.verifier.as_ref().ok_or(IntrospectError::BadResponse(
                    "no keys to verify a JWT response",
                ))?;
                match self.format {
                    IntrospectionFormat::TokenIntrospectionJwt => {
                        // RFC 9701 §5: typ token-introspection+jwt, aud = the introspecting client
                        let aud = [self.auth.client_id().to_owned()];
                        let expect = Expect {
                            audience: &aud,
                            typ: Some("token-introspection+jwt"),
                            require_exp: false,
                        };
                        let outer = verifier
                            .verify(&jwt, &expect)
                            .await
                            .map_err(|e| IntrospectError::BadSignature(e.to_string()))?;
                        let inner = outer
                            .get("token_introspection")
                            .and_then(Value::as_object)
                            .cloned()
                            .ok_or(IntrospectError::BadResponse(
                                "no token_introspection object",
                            ))?;
                        match inner.get("active") {
                            Some(Value::Bool(true)) => Ok(Introspected::Active {
                                claims: inner,
                                jwt: Some(jwt),
                                max_age,
                            }),
                            Some(Value::Bool(false)) => Ok(Introspected::Inactive),
                            _ => Err(IntrospectError::BadResponse(
                                "active is missing or not a boolean",
                            )),
                        }
                    }
                    _ => {
                        let expect = Expect {
                            audience: &[],
                            typ: None,
                            require_exp: true,
                        };
                        let claims = verifier
                            .verify(&jwt, &expect)
                            .await
                            .map_err(|e| IntrospectError::BadSignature(e.to_string()))?;
                        Ok(Introspected::Active {
                            claims,
                            jwt: Some(jwt),
                            max_age,
                        })
                    }
                }
            }
        }
    }
}

/// A classified, not yet verified response body.
#[derive(Debug, PartialEq)]
pub enum Body {
    Inactive,
    Json(Map<String, Value>),
    Jwt(String),
}

/// Sort a response into inactive / JSON claims / a JWT to verify. Pure (fuzzed).
pub fn classify(
    format: IntrospectionFormat,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<Body, IntrospectError> {
    let json_body = |body: &[u8]| -> Result<Body, IntrospectError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|_| IntrospectError::BadResponse("body is not JSON"))?;
        let Value::Object(map) = v else {
            return Err(IntrospectError::BadResponse("body is not a JSON object"));
        };
        match map.get("active") {
            Some(Value::Bool(true)) => Ok(Body::Json(map)),
            Some(Value::Bool(false)) => Ok(Body::Inactive),
            _ => Err(IntrospectError::BadResponse(
                "active is missing or not a boolean",
            )),
        }
    };
    // Curity's phantom-token endpoint answers an inactive token with 204 No Content
    if status == 204 && format == IntrospectionFormat::Jwt {
        return Ok(Body::Inactive);
    }
    if status != 200 {
        return Err(IntrospectError::Status(status));
    }
    let media = content_type.split(';').next().unwrap_or("").trim();
    match (format, media) {
        (IntrospectionFormat::Json, "application/json") => json_body(body),
        // A signed format was configured: an unsigned JSON answer may say "inactive" (fail
        // closed either way), but its claims are never trusted.
        (_, "application/json") => match json_body(body)? {
            Body::Inactive => Ok(Body::Inactive),
            _ => Err(IntrospectError::BadResponse(
                "unsigned JSON where a signed response is required",
            )),
        },
        (IntrospectionFormat::TokenIntrospectionJwt, "application/token-introspection+jwt")
        | (IntrospectionFormat::Jwt, "application/jwt") => {
            let s = std::str::from_utf8(body)
                .map_err(|_| IntrospectError::BadResponse("JWT is not UTF-8"))?;
            let s = s.trim();
            if s.split('.').count() != 3 || s.is_empty() {
                return Err(IntrospectError::BadResponse("not a compact JWS"));
            }
            Ok(Body::Jwt(s.to_owned()))
        }
        _ => Err(IntrospectError::BadResponse("unexpected content type")),
    }
}

/// `max-age=N` from one Cache-Control value.
fn max_age(v: &str) -> Option<Duration> {
    v.split(',').find_map(|d| {
        let d = d.trim();
        if d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache") {
            return Some(Duration::ZERO);
        }
        d.strip_prefix("max-age=")
            .and_then(|n| n.trim_matches('"').parse().ok())
            .map(Duration::from_secs)
    })
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// RFC 7523 §3 client assertion: `iss` = `sub` = client id, `aud` = the endpoint, short
/// `exp`, unique `jti`.
pub fn client_assertion(
    client_id: &str,
    aud: &str,
    key: &EncodingKey,
    alg: Algorithm,
    kid: Option<String>,
) -> Result<String, jsonwebtoken::errors::Error> {
    use rand::RngCore;
    let now = gatehouse_jwt::now();
    let mut jti = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut jti);
    let claims = serde_json::json!({
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "iat": now,
        "exp": now + 60,
        "jti": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jti),
    });
    let mut h = Header::new(alg);
    h.kid = kid;
    jsonwebtoken::encode(&h, &claims, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use IntrospectionFormat as F;

    #[test]
    fn classifies_every_format() {
        assert_eq!(
            classify(F::Json, 200, "application/json", br#"{"active":false}"#),
            Ok(Body::Inactive)
        );
        assert!(
            matches!(classify(F::Json, 200, "application/json; charset=utf-8", br#"{"active":true,"sub":"a"}"#), Ok(Body::Json(m)) if m["sub"] == "a")
        );
        assert_eq!(
            classify(F::Json, 200, "application/json", b"[1]"),
            Err(IntrospectError::BadResponse("body is not a JSON object"))
        );
        assert_eq!(
            classify(F::Json, 200, "application/json", br#"{"sub":"a"}"#),
            Err(IntrospectError::BadResponse(
                "active is missing or not a boolean"
            ))
        );
        assert_eq!(
            classify(F::Json, 200, "application/json", br#"{"active":"true"}"#),
            Err(IntrospectError::BadResponse(
                "active is missing or not a boolean"
            ))
        );
        assert_eq!(
            classify(F::Json, 200, "application/json", b"garbage"),
            Err(IntrospectError::BadResponse("body is not JSON"))
        );
        assert_eq!(
            classify(F::Json, 500, "application/json", b"{}"),
            Err(IntrospectError::Status(500))
        );
        assert_eq!(classify(F::Jwt, 204, "", b""), Ok(Body::Inactive));
        assert_eq!(
            classify(F::Jwt, 200, "application/jwt", b"a.b.c\n"),
            Ok(Body::Jwt("a.b.c".into()))
        );
        assert_eq!(
            classify(
                F::TokenIntrospectionJwt,
                200,
                "application/token-introspection+jwt",
                b"a.b.c"
            ),
            Ok(Body::Jwt("a.b.c".into()))
        );
        // unsigned active claims where a signed response was asked for are not trusted
        for f in [F::Jwt, F::TokenIntrospectionJwt] {
            assert_eq!(
                classify(f, 200, "application/json", br#"{"active":true,"sub":"a"}"#),
                Err(IntrospectError::BadResponse(
                    "unsigned JSON where a signed response is required"
                ))
            );
            assert_eq!(
                classify(f, 200, "application/json", br#"{"active":false}"#),
                Ok(Body::Inactive)
            );
        }
        // a JWT where JSON was asked for is not trusted
        assert!(classify(F::Json, 200, "application/jwt", b"a.b.c").is_err());
        assert!(classify(F::TokenIntrospectionJwt, 200, "text/html", b"<html>").is_err());
    }

    #[test]
    fn cache_control() {
        assert_eq!(max_age("public, max-age=30"), Some(Duration::from_secs(30)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("private"), None);
    }
}
