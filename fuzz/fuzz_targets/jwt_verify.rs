//! JWS/JWT verification of arbitrary input against a fixed JWKS: never a panic, never an
//! accepted token (the fuzzer cannot forge an ES256 signature).
#![no_main]
use gatehouse_jwt::{Expect, KeySource, KeyStore, Verifier};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]});
        let set = serde_json::from_value(jwks).unwrap_or(jsonwebtoken::jwk::JwkSet { keys: Vec::new() });
        let store = KeyStore::new(
            KeySource::Static(set),
            Duration::from_secs(10),
            Box::new(|_| {}),
            gatehouse_core::system_clock(),
        );
        Verifier::new(Arc::new(store), &["ES256".to_owned(), "RS256".to_owned()], Some("https://as".to_owned()), Duration::from_secs(5), None)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let rt = tokio::runtime::Builder::new_current_thread().build();
    let Ok(rt) = rt else { return };
    let expect = Expect { audience: &[], typ: None, require_exp: true };
    let result = rt.block_on(verifier().verify(token, &expect));
    assert!(result.is_err(), "a fuzzed token verified");
});
