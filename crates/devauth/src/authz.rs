//! DEV ONLY: a small OAuth 2.0 authorization server for the demo and the tests.
//!
//! - `POST /oauth/token` — `client_credentials` with `tls_client_auth` (RFC 8705 §2):
//!   clients are registered by subject DN or SHA-256 thumbprint; tokens are opaque and bound
//!   to the presenting certificate (`cnf.x5t#S256`).
//! - `POST /oauth/introspect` — RFC 7662 JSON, RFC 9701 `application/token-introspection+jwt`,
//!   or Curity-style `application/jwt` (the body is the token as a JWT; 204 when inactive).
//!   The caller authenticates with `client_secret_basic`, `client_secret_post`,
//!   `private_key_jwt` (RFC 7523) or `tls_client_auth`.
//! - `GET /oauth/jwks`, `POST /oauth/revoke` (RFC 7009).
//!
//! Fault knobs ([`Faults`]) let tests make it slow, failing or talking garbage.

use crate::serve::{self, bytes_response, json, Req, Resp};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::X509;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A registered client.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DevClient {
    pub client_id: String,
    /// tls_client_auth: the certificate's subject DN (`CN=partner-a, O=partner-a Ltd`)…
    pub subject: Option<String>,
    /// …or its SHA-256 thumbprint (hex).
    pub thumbprint_sha256: Option<String>,
    /// client_secret_basic / client_secret_post.
    pub secret: Option<String>,
    /// private_key_jwt: PEM public key.
    pub public_key_pem: Option<String>,
    /// Scopes it may get (space-separated).
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// May call the introspection endpoint.
    #[serde(default)]
    pub introspect: bool,
}

/// The dev authorization server's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevAuthConfig {
    pub issuer: String,
    /// Lifetime of issued tokens, seconds.
    #[serde(default = "default_ttl")]
    pub token_ttl: i64,
    /// `aud` of issued tokens, if any.
    pub audience: Option<String>,
    pub clients: Vec<DevClient>,
}

fn default_ttl() -> i64 {
    300
}

/// Failure modes for tests.
#[derive(Default)]
pub struct Faults {
    /// Delay before answering introspection, ms.
    pub delay_ms: AtomicU64,
    /// 0 normal, 1 HTTP 500, 2 garbage body, 3 `{"active":"yes"}` (no boolean),
    /// 4 a forged unsigned `application/json` answer claiming `active: true` whatever was
    /// asked for, 5 a signed answer whose signature was tampered with.
    pub mode: AtomicU8,
}

/// Server state.
/// The current signing key and the JWKS that is published.
struct Signing {
    key: EncodingKey,
    kid: String,
    jwks: String,
}

pub struct DevAuth {
    cfg: DevAuthConfig,
    signing: std::sync::RwLock<Arc<Signing>>,
    /// JWKS requests served.
    pub jwks_fetches: AtomicUsize,
    tokens: Mutex<HashMap<String, Map<String, Value>>>,
    seen_jti: Mutex<HashSet<String>>,
    /// Introspection calls received (all outcomes).
    pub introspections: AtomicUsize,
    pub faults: Faults,
}

fn norm_dn(s: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = s
        .split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_uppercase(), v.trim().to_owned()))
        .collect();
    v.sort();
    v
}

fn cert_dn(c: &X509) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = c
        .subject_name()
        .entries()
        .map(|e| {
            let k = e
                .object()
                .nid()
                .short_name()
                .unwrap_or("?")
                .to_ascii_uppercase();
            let val = e.data().to_string().unwrap_or_default();
            (k, val)
        })
        .collect();
    v.sort();
    v
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn oauth_error(status: u16, error: &str) -> Resp {
    json(status, &json!({ "error": error }))
}

impl DevAuth {
    /// A server with a fresh ES256 signing key.
    pub fn new(cfg: DevAuthConfig) -> Result<Arc<Self>, String> {
        Ok(Arc::new(Self {
            signing: std::sync::RwLock::new(Arc::new(Self::new_signing()?)),
            jwks_fetches: AtomicUsize::new(0),
            cfg,
            tokens: Mutex::new(HashMap::new()),
            seen_jti: Mutex::new(HashSet::new()),
            introspections: AtomicUsize::new(0),
            faults: Faults::default(),
        }))
    }

    fn new_signing() -> Result<Signing, String> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(|e| e.to_string())?;
        let pkey = PKey::from_ec_key(EcKey::generate(&group).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let pem = pkey.private_key_to_pem_pkcs8().map_err(|e| e.to_string())?;
        let kid = format!("dev-{}", &hex::encode(Sha256::digest(&pem))[..8]);
        let jwks = gatehouse_phantom::public_jwks(&pem, &kid, Algorithm::ES256)?;
        Ok(Signing {
            key: EncodingKey::from_ec_pem(&pem).map_err(|e| e.to_string())?,
            kid,
            jwks,
        })
    }

    fn signing(&self) -> Option<Arc<Signing>> {
        self.signing.read().ok().map(|s| s.clone())
    }

    /// Sign with a new key from now on (tests: key rotation). With `publish` false the
    /// JWKS keeps serving the previous key (an AS that rotated without publishing).
    pub fn rotate_key(&self, publish: bool) -> Result<(), String> {
        let mut next = Self::new_signing()?;
        if !publish {
            if let Some(old) = self.signing() {
                next.jwks = old.jwks.clone();
            }
        }
        if let Ok(mut s) = self.signing.write() {
            *s = Arc::new(next);
        }
        Ok(())
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    /// Issue a token directly (tests): `claims` merged over the defaults.
    pub fn mint(
        &self,
        client_id: &str,
        cert_der: Option<&[u8]>,
        extra: Map<String, Value>,
    ) -> String {
        let client = self
            .cfg
            .clients
            .iter()
            .find(|c| c.client_id == client_id)
            .cloned()
            .unwrap_or_default();
        let mut claims = self.claims_for(
            &DevClient {
                client_id: client_id.to_owned(),
                ..client
            },
            cert_der,
            None,
        );
        for (k, v) in extra {
            claims.insert(k, v);
        }
        let token = random_token();
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(token.clone(), claims);
        }
        token
    }

    fn claims_for(
        &self,
        c: &DevClient,
        cert_der: Option<&[u8]>,
        scope: Option<&str>,
    ) -> Map<String, Value> {
        let now = now();
        let mut m = Map::new();
        m.insert("iss".into(), json!(self.cfg.issuer));
        m.insert("sub".into(), json!(c.client_id));
        m.insert("client_id".into(), json!(c.client_id));
        m.insert("scope".into(), json!(scope.unwrap_or(&c.scope)));
        m.insert("iat".into(), json!(now));
        m.insert("exp".into(), json!(now + self.cfg.token_ttl));
        m.insert("jti".into(), json!(random_token()));
        m.insert("token_type".into(), json!("Bearer"));
        if !c.roles.is_empty() {
            m.insert("roles".into(), json!(c.roles));
        }
        if let Some(aud) = &self.cfg.audience {
            m.insert("aud".into(), json!(aud));
        }
        if let Some(der) = cert_der {
            m.insert(
                "cnf".into(),
                json!({ "x5t#S256": B64.encode(Sha256::digest(der)) }),
            );
        }
        m
    }

    fn client_by_cert(&self, der: &[u8]) -> Option<&DevClient> {
        let cert = X509::from_der(der).ok()?;
        let thumb = hex::encode(Sha256::digest(der));
        let dn = cert_dn(&cert);
        self.cfg.clients.iter().find(|c| {
            c.thumbprint_sha256
                .as_ref()
                .is_some_and(|t| t.replace(':', "").eq_ignore_ascii_case(&thumb))
                || c.subject.as_ref().is_some_and(|s| norm_dn(s) == dn)
        })
    }

    /// Authenticate the caller of introspection/revocation.
    fn authenticate(
        &self,
        req: &Req,
        f: &HashMap<String, String>,
        endpoint: &str,
    ) -> Option<&DevClient> {
        if let Some(basic) = req
            .parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
        {
            let raw = STANDARD.decode(basic).ok()?;
            let raw = String::from_utf8(raw).ok()?;
            let (id, secret) = raw.split_once(':')?;
            let id: String = url::form_urlencoded::parse(format!("a={id}").as_bytes())
                .map(|(_, v)| v.into_owned())
                .next()?;
            let secret: String = url::form_urlencoded::parse(format!("a={secret}").as_bytes())
                .map(|(_, v)| v.into_owned())
                .next()?;
            return self
                .cfg
                .clients
                .iter()
                .find(|c| c.client_id == id && c.secret.as_deref() == Some(secret.as_str()));
        }
        if let (Some(id), Some(secret)) = (f.get("client_id"), f.get("client_secret")) {
            return self
                .cfg
                .clients
                .iter()
                .find(|c| &c.client_id == id && c.secret.as_ref() == Some(secret));
        }
        if let Some(assertion) = f.get("client_assertion") {
            if f.get("client_assertion_type").map(String::as_str)
                != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            {
                return None;
            }
            let unverified = jsonwebtoken::decode_header(assertion).ok()?;
            let payload: Value = assertion
                .split('.')
                .nth(1)
                .and_then(|p| B64.decode(p).ok())
                .and_then(|b| serde_json::from_slice(&b).ok())?;
            let iss = payload.get("iss")?.as_str()?;
            let client = self.cfg.clients.iter().find(|c| c.client_id == iss)?;
            let pem = client.public_key_pem.as_ref()?;
            let key = DecodingKey::from_ec_pem(pem.as_bytes())
                .or_else(|_| DecodingKey::from_rsa_pem(pem.as_bytes()))
                .ok()?;
            let mut v = Validation::new(unverified.alg);
            v.set_audience(&[endpoint, self.cfg.issuer.as_str()]);
            v.set_issuer(&[iss]);
            v.sub = Some(iss.to_owned());
            v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
            let data = jsonwebtoken::decode::<Map<String, Value>>(assertion, &key, &v).ok()?;
            let jti = data.claims.get("jti")?.as_str()?.to_owned();
            // RFC 7523 §3: a jti must not be replayed
            if !self.seen_jti.lock().ok()?.insert(jti) {
                return None;
            }
            return Some(client);
        }
        if let Some(der) = &req.peer_cert_der {
            let c = self.client_by_cert(der)?;
            if f.get("client_id").is_some_and(|id| id != &c.client_id) {
                return None;
            }
            return Some(c);
        }
        None
    }

    fn sign(&self, typ: &str, claims: &Value) -> Option<String> {
        let s = self.signing()?;
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(s.kid.clone());
        h.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&h, claims, &s.key).ok()
    }

    async fn handle(self: Arc<Self>, req: Req) -> Resp {
        let path = req.parts.uri.path().to_owned();
        let post = req.parts.method == http::Method::POST;
        match (post, path.as_str()) {
            (true, "/oauth/token") => self.token(&req),
            (true, "/oauth/introspect") => self.introspect(&req).await,
            (true, "/oauth/revoke") => self.revoke(&req),
            (false, "/oauth/jwks") => {
                self.jwks_fetches.fetch_add(1, Ordering::SeqCst);
                bytes_response(
                    200,
                    "application/jwk-set+json",
                    self.signing()
                        .map(|s| s.jwks.clone().into_bytes())
                        .unwrap_or_default(),
                )
            }
            (false, "/.well-known/oauth-authorization-server") => json(
                200,
                &json!({
                    "issuer": self.cfg.issuer,
                    "token_endpoint": format!("{}/oauth/token", self.cfg.issuer),
                    "introspection_endpoint": format!("{}/oauth/introspect", self.cfg.issuer),
                    "revocation_endpoint": format!("{}/oauth/revoke", self.cfg.issuer),
                    "jwks_uri": format!("{}/oauth/jwks", self.cfg.issuer),
                    "token_endpoint_auth_methods_supported": ["tls_client_auth"],
                    "tls_client_certificate_bound_access_tokens": true,
                }),
            ),
            _ => oauth_error(404, "not_found"),
        }
    }

    fn token(&self, req: &Req) -> Resp {
        let f = form(&req.body);
        if f.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return oauth_error(400, "unsupported_grant_type");
        }
        let Some(der) = &req.peer_cert_der else {
            return oauth_error(401, "invalid_client");
        };
        let Some(client) = self.client_by_cert(der) else {
            return oauth_error(401, "invalid_client");
        };
        if f.get("client_id").is_some_and(|id| id != &client.client_id) {
            return oauth_error(401, "invalid_client");
        }
        let allowed: HashSet<&str> = client.scope.split_whitespace().collect();
        let scope = match f.get("scope") {
            Some(s) if s.split_whitespace().all(|x| allowed.contains(x)) => s.clone(),
            Some(_) => return oauth_error(400, "invalid_scope"),
            None => client.scope.clone(),
        };
        let claims = self.claims_for(client, Some(der), Some(&scope));
        let token = random_token();
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(token.clone(), claims);
        }
        json(
            200,
            &json!({ "access_token": token, "token_type": "Bearer", "expires_in": self.cfg.token_ttl, "scope": scope }),
        )
    }

    async fn introspect(&self, req: &Req) -> Resp {
        self.introspections.fetch_add(1, Ordering::SeqCst);
        let delay = self.faults.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        match self.faults.mode.load(Ordering::Relaxed) {
            1 => return oauth_error(500, "server_error"),
            2 => return bytes_response(200, "application/json", b"<html>oops".to_vec()),
            3 => return json(200, &json!({ "active": "yes" })),
            4 => {
                return json(
                    200,
                    &json!({ "active": true, "sub": "forged", "scope": "transactions" }),
                )
            }
            _ => {}
        }
        let f = form(&req.body);
        let endpoint = format!("{}/oauth/introspect", self.cfg.issuer);
        let Some(caller) = self.authenticate(req, &f, &endpoint) else {
            return oauth_error(401, "invalid_client");
        };
        if !caller.introspect {
            return oauth_error(403, "access_denied");
        }
        let Some(token) = f.get("token") else {
            return oauth_error(400, "invalid_request");
        };
        let claims = self
            .tokens
            .lock()
            .ok()
            .and_then(|t| t.get(token).cloned())
            .filter(|c| {
                c.get("exp")
                    .and_then(Value::as_i64)
                    .is_some_and(|e| e > now())
            });
        let accept = req
            .parts
            .headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut info = Map::new();
        info.insert("active".into(), json!(claims.is_some()));
        if let Some(c) = &claims {
            for (k, v) in c {
                info.insert(k.clone(), v.clone());
            }
        }
        if accept.contains("application/token-introspection+jwt") {
            let outer = json!({
                "iss": self.cfg.issuer,
                "aud": caller.client_id,
                "iat": now(),
                "token_introspection": info,
            });
            return match self.sign("token-introspection+jwt", &outer) {
                Some(jwt) => bytes_response(
                    200,
                    "application/token-introspection+jwt",
                    self.maybe_tamper(jwt).into_bytes(),
                ),
                None => oauth_error(500, "server_error"),
            };
        }
        if accept.contains("application/jwt") {
            return match &claims {
                None => bytes_response(204, "application/jwt", Vec::new()),
                Some(c) => match self.sign("at+jwt", &Value::Object(c.clone())) {
                    Some(jwt) => {
                        bytes_response(200, "application/jwt", self.maybe_tamper(jwt).into_bytes())
                    }
                    None => oauth_error(500, "server_error"),
                },
            };
        }
        json(200, &Value::Object(info))
    }

    /// Fault mode 5: flip one bit of the signature's first byte.
    fn maybe_tamper(&self, jwt: String) -> String {
        if self.faults.mode.load(Ordering::Relaxed) != 5 {
            return jwt;
        }
        let Some((head, sig)) = jwt.rsplit_once('.') else {
            return jwt;
        };
        let mut sig = B64.decode(sig).unwrap_or_default();
        if let Some(b) = sig.first_mut() {
            *b ^= 1;
        }
        format!("{head}.{}", B64.encode(sig))
    }

    fn revoke(&self, req: &Req) -> Resp {
        let f = form(&req.body);
        let endpoint = format!("{}/oauth/revoke", self.cfg.issuer);
        if self.authenticate(req, &f, &endpoint).is_none()
            && req
                .peer_cert_der
                .as_deref()
                .and_then(|d| self.client_by_cert(d))
                .is_none()
        {
            return oauth_error(401, "invalid_client");
        }
        if let (Some(token), Ok(mut t)) = (f.get("token"), self.tokens.lock()) {
            t.remove(token);
        }
        // RFC 7009 §2.2: 200 whether or not the token existed
        bytes_response(200, "text/plain", Vec::new())
    }

    /// Serve on `listener` (HTTPS when `tls` is given; a client certificate is requested
    /// and verified against the acceptor's CA but not required).
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Option<openssl::ssl::SslAcceptor>,
    ) {
        let me = self.clone();
        serve::serve(listener, tls, serve::handler(move |r| me.clone().handle(r))).await
    }
}

/// An HTTPS acceptor for the dev server: server cert chain + key, client certificates
/// requested (optional) and verified against `ca_pem`.
pub fn acceptor(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
    ca_pem: &[u8],
) -> Result<openssl::ssl::SslAcceptor, openssl::error::ErrorStack> {
    use openssl::ssl::{SslAcceptor, SslMethod, SslVerifyMode};
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    let mut certs = X509::stack_from_pem(cert_chain_pem)?.into_iter();
    if let Some(leaf) = certs.next() {
        b.set_certificate(&leaf)?;
    }
    for c in certs {
        b.add_extra_chain_cert(c)?;
    }
    let key = PKey::private_key_from_pem(key_pem)?;
    b.set_private_key(&key)?;
    let mut store = openssl::x509::store::X509StoreBuilder::new()?;
    for ca in X509::stack_from_pem(ca_pem)? {
        store.add_cert(ca)?;
    }
    b.set_verify_cert_store(store.build())?;
    b.set_verify(SslVerifyMode::PEER);
    b.set_session_id_context(b"gatehouse-devauth")?;
    Ok(b.build())
}

fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    B64.encode(b)
}
