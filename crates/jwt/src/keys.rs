//! JWKS: where keys come from, how they are cached and refreshed.

use crate::JwtError;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a key store gets its keys.
pub enum KeySource {
    /// Fetched with this client from this URL.
    Url {
        client: reqwest::Client,
        url: String,
    },
    /// A fixed set (a JWKS file, or tests).
    Static(JwkSet),
}

struct Entry {
    jwk: Jwk,
    key: DecodingKey,
}

/// Cached JWKS with refresh on unknown `kid`, rate-limited.
pub struct KeyStore {
    source: KeySource,
    keys: RwLock<Arc<HashMap<String, Arc<Entry>>>>,
    /// Keys without a `kid`.
    anonymous: RwLock<Arc<Vec<Arc<Entry>>>>,
    /// When the JWKS was last fetched, and whether that fetch worked.
    last_fetch: Mutex<Option<(Instant, bool)>>,
    fetch_lock: tokio::sync::Mutex<()>,
    min_refresh: Duration,
    /// Called with `"success"` / `"error"` after each fetch (metrics).
    on_fetch: Box<dyn Fn(&'static str) + Send + Sync>,
    clock: gatehouse_core::SharedClock,
}

impl KeyStore {
    /// A store over `source`. `on_fetch` observes every fetch result.
    pub fn new(
        source: KeySource,
        min_refresh: Duration,
        on_fetch: Box<dyn Fn(&'static str) + Send + Sync>,
        clock: gatehouse_core::SharedClock,
    ) -> Self {
        let s = Self {
            source,
            keys: RwLock::new(Arc::new(HashMap::new())),
            anonymous: RwLock::new(Arc::new(Vec::new())),
            last_fetch: Mutex::new(None),
            fetch_lock: tokio::sync::Mutex::new(()),
            min_refresh,
            on_fetch,
            clock,
        };
        if let KeySource::Static(set) = &s.source {
            let set = set.clone();
            s.install(&set);
        }
        s
    }

    fn install(&self, set: &JwkSet) {
        let mut map = HashMap::new();
        let mut anon = Vec::new();
        for jwk in &set.keys {
            // keys meant for encryption are not verification keys
            if matches!(
                jwk.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            ) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let e = Arc::new(Entry {
                jwk: jwk.clone(),
                key,
            });
            match &jwk.common.key_id {
                Some(kid) => {
                    map.insert(kid.clone(), e);
                }
                None => anon.push(e),
            }
        }
        {
            let mut k = self.keys.write();
            *k = Arc::new(map);
        }
        {
            let mut a = self.anonymous.write();
            *a = Arc::new(anon);
        }
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Option<Result<DecodingKey, JwtError>> {
        let pick = |e: &Entry| -> Result<DecodingKey, JwtError> {
            if !key_fits(&e.jwk, alg) {
                return Err(JwtError::KeyMismatch);
            }
            Ok(e.key.clone())
        };
        match kid {
            Some(kid) => {
                let keys = self.keys.read().clone();
                keys.get(kid).map(|e| pick(e))
            }
            None => {
                // without a kid, only an unambiguous key will do
                let keys = self.keys.read().clone();
                let anon = self.anonymous.read().clone();
                let fitting: Vec<&Arc<Entry>> = keys
                    .values()
                    .chain(anon.iter())
                    .filter(|e| key_fits(&e.jwk, alg))
                    .collect();
                match fitting.as_slice() {
                    [one] => Some(Ok(one.key.clone())),
                    _ => None,
                }
            }
        }
    }

    /// The key for a JWS header, fetching the JWKS when the `kid` is unknown (at most once
    /// per `min_refresh`; concurrent misses share one fetch).
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, JwtError> {
        if let Some(r) = self.lookup(kid, alg) {
            return r;
        }
        let KeySource::Url { .. } = &self.source else {
            return Err(JwtError::UnknownKey);
        };
        let _guard = self.fetch_lock.lock().await;
        // someone else may have refreshed while we waited
        if let Some(r) = self.lookup(kid, alg) {
            return r;
        }
        let recent = self
            .last_fetch
            .lock()
            .as_ref()
            .copied()
            .filter(|(t, _)| self.clock.now().saturating_duration_since(*t) < self.min_refresh);
        match recent {
            // the JWKS we have is current: the kid is really unknown
            Some((_, true)) => return Err(JwtError::UnknownKey),
            // the last fetch failed: we cannot tell (503, not 401)
            Some((_, false)) => return Err(JwtError::KeysUnavailable),
            None => {}
        }
        let fetched = self.fetch().await;
        {
            let mut l = self.last_fetch.lock();
            *l = Some((self.clock.now(), fetched.is_ok()));
        }
        match fetched {
            Ok(set) => {
                (self.on_fetch)("success");
                self.install(&set);
                self.lookup(kid, alg).unwrap_or(Err(JwtError::UnknownKey))
            }
            Err(()) => {
                // existing keys stay; this kid just is not verifiable right now
                (self.on_fetch)("error");
                Err(JwtError::KeysUnavailable)
            }
        }
    }

    async fn fetch(&self) -> Result<JwkSet, ()> {
        let KeySource::Url { client, url } = &self.source else {
            return Err(());
        };
        let res = client.get(url).send().await.map_err(|_| ())?;
        if !res.status().is_success() {
            return Err(());
        }
        res.json::<JwkSet>().await.map_err(|_| ())
    }

    /// Fetch now (start-up warm-up); errors are reported through `on_fetch` only.
    pub async fn prefetch(&self) {
        if let KeySource::Url { .. } = &self.source {
            let _guard = self.fetch_lock.lock().await;
            let fetched = self.fetch().await;
            {
                let mut l = self.last_fetch.lock();
                *l = Some((self.clock.now(), fetched.is_ok()));
            }
            match fetched {
                Ok(set) => {
                    (self.on_fetch)("success");
                    self.install(&set);
                }
                Err(()) => (self.on_fetch)("error"),
            }
        }
    }
}

/// Does the JWK's type (and its own `alg`, if any) fit the header's algorithm?
fn key_fits(jwk: &Jwk, alg: Algorithm) -> bool {
    if let Some(key_alg) = jwk.common.key_algorithm {
        if format!("{key_alg:?}") != format!("{alg:?}") {
            return false;
        }
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        AlgorithmParameters::EllipticCurve(ec) => matches!(
            (alg, &ec.curve),
            (Algorithm::ES256, jsonwebtoken::jwk::EllipticCurve::P256)
                | (Algorithm::ES384, jsonwebtoken::jwk::EllipticCurve::P384)
        ),
        AlgorithmParameters::OctetKeyPair(okp) => {
            alg == Algorithm::EdDSA && okp.curve == jsonwebtoken::jwk::EllipticCurve::Ed25519
        }
        // symmetric keys never come from a JWKS here
        AlgorithmParameters::OctetKey(_) => false,
    }
}
