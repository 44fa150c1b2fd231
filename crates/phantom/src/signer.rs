//! RFC 9068 access tokens signed by Gatehouse itself (`forward_jwt: signed_by_gatehouse`)
//! for the upstream API, and the public JWKS the API verifies them with.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use openssl::bn::BigNumContext;
use openssl::pkey::{Id, PKey};
use serde_json::{Map, Value};

/// Gatehouse's signing key.
pub struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: String,
    issuer: String,
    max_ttl: i64,
    jwks: String,
}

impl Signer {
    /// From config: the key file (EC P-256 → ES256, RSA → PS256).
    pub fn from_config(c: &gatehouse_config::TokenSigning) -> Result<Self, String> {
        let pem = std::fs::read(&c.key_file).map_err(|e| format!("{}: {e}", c.key_file))?;
        let (key, alg) = crate::introspect::signing_key(&pem, None)?;
        let jwks = public_jwks(&pem, &c.key_id, alg)?;
        Ok(Self {
            key,
            alg,
            kid: c.key_id.clone(),
            issuer: c.issuer.clone(),
            max_ttl: c.max_ttl.0.as_secs() as i64,
            jwks,
        })
    }

    /// The public JWKS (served on the admin listener at `/jwks`).
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// An RFC 9068 access token (`typ: at+jwt`) for the API `audience`, from the
    /// introspected claims: `iss` ours, `aud` the route's, `exp` = min(token exp, now +
    /// max_ttl), a fresh `iat` and `jti`, `sub` the token's or, for a token without a
    /// resource owner (client credentials), its `client_id` (RFC 9068 §2.2). The other
    /// claims (`scope`, `cnf`, `roles`, …) are kept; the introspection-only ones (`active`,
    /// `token_type`) and the authorization server's own `iss`/`aud` are not.
    /// Returns the JWT and its `exp`.
    pub fn sign(
        &self,
        claims: &Map<String, Value>,
        audience: &str,
        now: i64,
    ) -> Result<(String, i64), String> {
        let client_id = match claims.get("client_id") {
            Some(Value::String(c)) if !c.is_empty() => c.clone(),
            _ => {
                return Err(
                    "the introspection response has no client_id (RFC 9068 needs one)".into(),
                )
            }
        };
        let mut out = claims.clone();
        for k in ["active", "token_type", "iss", "aud", "jti", "iat"] {
            out.remove(k);
        }
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .map_or(now + self.max_ttl, |e| e.min(now + self.max_ttl));
        if !matches!(out.get("sub"), Some(Value::String(s)) if !s.is_empty()) {
            out.insert("sub".into(), Value::String(client_id.clone()));
        }
        out.insert("client_id".into(), Value::String(client_id));
        out.insert("iss".into(), Value::String(self.issuer.clone()));
        out.insert("aud".into(), Value::String(audience.to_owned()));
        out.insert("iat".into(), Value::from(now));
        out.insert("exp".into(), Value::from(exp));
        out.insert("jti".into(), Value::String(jti()?));
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        h.typ = Some("at+jwt".into());
        let jwt = jsonwebtoken::encode(&h, &out, &self.key).map_err(|e| e.to_string())?;
        Ok((jwt, exp))
    }
}

/// A JWT id: 128 random bits, base64url.
fn jti() -> Result<String, String> {
    let mut b = [0u8; 16];
    openssl::rand::rand_bytes(&mut b).map_err(|e| e.to_string())?;
    Ok(B64.encode(b))
}

/// The public JWKS (one key) for a PEM private key.
pub fn public_jwks(pem: &[u8], kid: &str, alg: Algorithm) -> Result<String, String> {
    let key = PKey::private_key_from_pem(pem).map_err(|e| e.to_string())?;
    let jwk = match key.id() {
        Id::EC => {
            let ec = key.ec_key().map_err(|e| e.to_string())?;
            let mut ctx = BigNumContext::new().map_err(|e| e.to_string())?;
            let mut x = openssl::bn::BigNum::new().map_err(|e| e.to_string())?;
            let mut y = openssl::bn::BigNum::new().map_err(|e| e.to_string())?;
            ec.public_key()
                .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
                .map_err(|e| e.to_string())?;
            serde_json::json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": B64.encode(x.to_vec_padded(32).map_err(|e| e.to_string())?),
                "y": B64.encode(y.to_vec_padded(32).map_err(|e| e.to_string())?),
            })
        }
        Id::RSA => {
            let rsa = key.rsa().map_err(|e| e.to_string())?;
            serde_json::json!({
                "kty": "RSA", "kid": kid, "use": "sig", "alg": format!("{alg:?}"),
                "n": B64.encode(rsa.n().to_vec()), "e": B64.encode(rsa.e().to_vec()),
            })
        }
        _ => return Err("token_signing.key_file: only EC P-256 and RSA keys are supported".into()),
    };
    Ok(serde_json::json!({ "keys": [jwk] }).to_string())
}
