use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::{encode, EncodingKey, Header};
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use serde_json::json;

struct Keys {
    ec_pem: Vec<u8>,
    rsa_pem: Vec<u8>,
    rsa_pub_pem: Vec<u8>,
    jwks: serde_json::Value,
}

fn keys() -> Keys {
    let ec = EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap();
    let mut ctx = BigNumContext::new().unwrap();
    let (mut x, mut y) = (
        openssl::bn::BigNum::new().unwrap(),
        openssl::bn::BigNum::new().unwrap(),
    );
    ec.public_key()
        .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
        .unwrap();
    let rsa = Rsa::generate(2048).unwrap();
    let jwks = json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ec1", "use": "sig",
         "x": B64.encode(x.to_vec_padded(32).unwrap()), "y": B64.encode(y.to_vec_padded(32).unwrap())},
        {"kty": "RSA", "kid": "rsa1", "alg": "PS256",
         "n": B64.encode(rsa.n().to_vec()), "e": B64.encode(rsa.e().to_vec())},
    ]});
    Keys {
        ec_pem: PKey::from_ec_key(ec)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap(),
        rsa_pub_pem: rsa.public_key_to_pem().unwrap(),
        rsa_pem: PKey::from_rsa(rsa)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap(),
        jwks,
    }
}

fn verifier(k: &Keys, algs: &[&str], hmac: Option<&[u8]>) -> Verifier {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(k.jwks.clone()).unwrap();
    let store = KeyStore::new(
        KeySource::Static(set),
        Duration::from_secs(10),
        Box::new(|_| {}),
        gatehouse_core::system_clock(),
    );
    Verifier::new(
        Arc::new(store),
        &algs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        Some("https://as.example".into()),
        Duration::from_secs(5),
        hmac,
    )
}

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"iss": "https://as.example", "sub": "partner-a", "aud": "api", "exp": now() + 300, "iat": now()});
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

fn es256(k: &Keys, kid: Option<&str>, c: &serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = kid.map(str::to_owned);
    h.typ = Some("at+jwt".into());
    encode(&h, c, &EncodingKey::from_ec_pem(&k.ec_pem).unwrap()).unwrap()
}

const API: &[String] = &[];

#[tokio::test]
async fn valid_tokens_verify() {
    let k = keys();
    let v = verifier(&k, &["ES256", "PS256"], None);
    let aud = vec!["api".to_owned()];
    let exp = Expect {
        audience: &aud,
        typ: Some("at+jwt"),
        require_exp: true,
    };
    let c = v
        .verify(&es256(&k, Some("ec1"), &claims(json!({}))), &exp)
        .await
        .unwrap();
    assert_eq!(c["sub"], "partner-a");
    // no kid: the only fitting key is used
    assert!(v
        .verify(&es256(&k, None, &claims(json!({}))), &exp)
        .await
        .is_ok());
    let mut h = Header::new(Algorithm::PS256);
    h.kid = Some("rsa1".into());
    let t = encode(
        &h,
        &claims(json!({})),
        &EncodingKey::from_rsa_pem(&k.rsa_pem).unwrap(),
    )
    .unwrap();
    assert!(v
        .verify(
            &t,
            &Expect {
                audience: &aud,
                typ: None,
                require_exp: true
            }
        )
        .await
        .is_ok());
}

#[tokio::test]
async fn attacks_and_bad_claims_are_rejected() {
    let k = keys();
    let v = verifier(&k, &["ES256", "PS256", "RS256"], None);
    let aud = vec!["api".to_owned()];
    let exp = Expect {
        audience: &aud,
        typ: None,
        require_exp: true,
    };

    // alg none
    let body = B64.encode(claims(json!({})).to_string());
    let none = format!("{}.{body}.", B64.encode(r#"{"alg":"none","typ":"JWT"}"#));
    assert_eq!(v.verify(&none, &exp).await, Err(JwtError::Malformed));

    // HS256 "signed" with the RSA public key (key confusion)
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa1".into());
    let t = encode(
        &h,
        &claims(json!({})),
        &EncodingKey::from_secret(&k.rsa_pub_pem),
    )
    .unwrap();
    assert!(matches!(
        v.verify(&t, &exp).await,
        Err(JwtError::AlgorithmNotAllowed(_))
    ));

    // RS256 against a JWK that says PS256
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa1".into());
    let t = encode(
        &h,
        &claims(json!({})),
        &EncodingKey::from_rsa_pem(&k.rsa_pem).unwrap(),
    )
    .unwrap();
    assert_eq!(v.verify(&t, &exp).await, Err(JwtError::KeyMismatch));

    // ES256 header pointing at the RSA key
    assert_eq!(
        v.verify(&es256(&k, Some("rsa1"), &claims(json!({}))), &exp)
            .await,
        Err(JwtError::KeyMismatch)
    );
    // kid pointing nowhere
    assert_eq!(
        v.verify(&es256(&k, Some("nope"), &claims(json!({}))), &exp)
            .await,
        Err(JwtError::UnknownKey)
    );

    let cases = [
        (json!({"exp": now() - 60}), JwtError::Expired),
        (json!({"nbf": now() + 60}), JwtError::NotYetValid),
        (json!({"iat": now() + 600}), JwtError::IssuedInFuture),
        (
            json!({"iss": "https://evil.example"}),
            JwtError::WrongIssuer,
        ),
        (json!({"aud": "other"}), JwtError::WrongAudience),
    ];
    for (extra, want) in cases {
        let t = es256(&k, Some("ec1"), &claims(extra.clone()));
        assert_eq!(v.verify(&t, &exp).await, Err(want), "{extra}");
    }
    let mut c = claims(json!({}));
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        v.verify(&es256(&k, Some("ec1"), &c), &exp).await,
        Err(JwtError::MissingClaim("exp"))
    );

    // tampered payload
    let t = es256(&k, Some("ec1"), &claims(json!({})));
    let parts: Vec<&str> = t.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(claims(json!({"sub": "admin"})).to_string()),
        parts[2]
    );
    assert_eq!(v.verify(&forged, &exp).await, Err(JwtError::BadSignature));

    // typ
    let typed = Expect {
        audience: API,
        typ: Some("token-introspection+jwt"),
        require_exp: false,
    };
    assert_eq!(
        v.verify(&es256(&k, Some("ec1"), &claims(json!({}))), &typed)
            .await,
        Err(JwtError::WrongType)
    );
}

#[tokio::test]
async fn hmac_only_with_a_configured_secret() {
    let k = keys();
    let v = verifier(&k, &["HS256"], Some(b"shared-secret-of-32-bytes-or-more!!"));
    let t = encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(b"shared-secret-of-32-bytes-or-more!!"),
    )
    .unwrap();
    let exp = Expect {
        audience: API,
        typ: None,
        require_exp: true,
    };
    assert!(v.verify(&t, &exp).await.is_ok());
    let bad = encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(b"other"),
    )
    .unwrap();
    assert_eq!(v.verify(&bad, &exp).await, Err(JwtError::BadSignature));
    // the key-confusion attack where HS256 *is* allowed: signed with the RSA public key
    // (PEM) as the HMAC secret and pointing at the RSA key's kid. Only the configured
    // secret is ever an HMAC key, so this is a bad signature, not a pass.
    let v = verifier(
        &k,
        &["HS256", "PS256"],
        Some(b"shared-secret-of-32-bytes-or-more!!"),
    );
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa1".into());
    let confused = encode(
        &h,
        &claims(json!({})),
        &EncodingKey::from_secret(&k.rsa_pub_pem),
    )
    .unwrap();
    assert!(v.verify(&confused, &exp).await.is_err());
}

#[tokio::test]
async fn rs256_and_eddsa_tokens_verify_with_keys_of_their_type_only() {
    let rsa = Rsa::generate(2048).unwrap();
    let ed = PKey::generate_ed25519().unwrap();
    let ed_pub = ed.raw_public_key().unwrap();
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "r1", "n": B64.encode(rsa.n().to_vec()), "e": B64.encode(rsa.e().to_vec())},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed1", "x": B64.encode(&ed_pub)},
    ]});
    let k = Keys {
        ec_pem: Vec::new(),
        rsa_pem: Vec::new(),
        rsa_pub_pem: Vec::new(),
        jwks,
    };
    let v = verifier(&k, &["RS256", "EdDSA"], None);
    let exp = Expect {
        audience: &[],
        typ: None,
        require_exp: true,
    };
    let sign = |alg: Algorithm, kid: &str, key: &EncodingKey| {
        let mut h = Header::new(alg);
        h.kid = Some(kid.into());
        encode(&h, &claims(json!({})), key).unwrap()
    };
    let rsa_key = EncodingKey::from_rsa_pem(
        &PKey::from_rsa(rsa)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap(),
    )
    .unwrap();
    let ed_key = EncodingKey::from_ed_pem(&ed.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let rs = sign(Algorithm::RS256, "r1", &rsa_key);
    let c = v.verify(&rs, &exp).await.unwrap();
    assert_eq!(c["sub"], "partner-a");
    let eddsa = sign(Algorithm::EdDSA, "ed1", &ed_key);
    assert!(v.verify(&eddsa, &exp).await.is_ok());
    // an EdDSA header pointing at the RSA key (and the reverse) is refused
    let crossed = sign(Algorithm::EdDSA, "r1", &ed_key);
    assert_eq!(
        v.verify(&crossed, &exp).await.err(),
        Some(JwtError::KeyMismatch)
    );
    let crossed = sign(Algorithm::RS256, "ed1", &rsa_key);
    assert_eq!(
        v.verify(&crossed, &exp).await.err(),
        Some(JwtError::KeyMismatch)
    );
    // an algorithm that is not configured is refused even with a fitting key
    let v_rs_only = verifier(&k, &["RS256"], None);
    assert!(v_rs_only.verify(&eddsa, &exp).await.is_err());
}
