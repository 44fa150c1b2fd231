//! RFC 8705 certificate-bound tokens, locally verified JWTs, and claims rules, end to end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use gatehouse_testkit::{
    bearer_status, gateway_client, json, partner_client, AuthServer, DevAuthorizationServer, Proxy,
    TestConfig, TestPki, Upstream,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Routes: /api/ (phantom + cnf + scope transactions), /admin/ (phantom + cnf + scope admin),
/// /jwt/ (jwt filter + cnf + claims with roles/azp/azpacr).
fn yaml() -> String {
    TestConfig::edge("required").threads(2).build()
        + "authorization_servers:\n"
        + &DevAuthorizationServer::new(
            "token-introspection+jwt",
            "{ method: client_secret_basic, client_id: gateway, client_secret_env: GH_TEST_SECRET }",
        )
        .build()
        + "  local:
    issuer: https://issuer.example
    jwks_file: ${CERT_DIR}/local-jwks.json
    algorithms: [ES256, RS256]
token_signing: { key_file: ${CERT_DIR}/gatehouse-signing.key, key_id: gh, issuer: https://gatehouse.test }
upstreams:
  app: { peers: [\"${UP}\"] }
routes:
  - name: api
    match: { path_prefix: /api/ }
    upstream: app
    filters:
      - kind: client_cert
      - kind: phantom_token
        authorization_server: dev
        audience: https://api.test
      - kind: cert_bound_token
      - kind: claims
        scope: [transactions]
        to_headers: { client_id: X-Client-Id }
  - name: admin
    match: { path_prefix: /admin/ }
    upstream: app
    filters:
      - kind: client_cert
      - kind: phantom_token
        authorization_server: dev
        audience: https://api.test
      - kind: cert_bound_token
      - kind: claims
        scope: [admin]
  - name: jwt
    match: { path_prefix: /jwt/ }
    upstream: app
    filters:
      - kind: client_cert
      - kind: jwt
        authorization_server: local
        audience: [api://transactions]
        typ: at+jwt
      - kind: cert_bound_token
      - kind: claims
        roles: [service-api]
        equals: { azp: partner-a, azpacr: \"2\" }
"
}

struct Env {
    pki: TestPki,
    up: Upstream,
    auth: AuthServer,
    gh: Proxy,
    ec_key: Vec<u8>,
    rsa_pub_pem: Vec<u8>,
}

async fn env() -> Env {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let auth = AuthServer::start(
        &pki,
        vec![
            partner_client("partner-a", "transactions"),
            partner_client("partner-b", "transactions"),
            gateway_client(),
        ],
    )
    .await;
    // a local issuer whose JWKS is a file: one EC key, one RSA key
    let ec = openssl::ec::EcKey::generate(
        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
    )
    .unwrap();
    let mut ctx = openssl::bn::BigNumContext::new().unwrap();
    let (mut x, mut y) = (
        openssl::bn::BigNum::new().unwrap(),
        openssl::bn::BigNum::new().unwrap(),
    );
    ec.public_key()
        .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
        .unwrap();
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let jwks = json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "k1", "x": B64.encode(x.to_vec_padded(32).unwrap()), "y": B64.encode(y.to_vec_padded(32).unwrap())},
        {"kty": "RSA", "kid": "r1", "n": B64.encode(rsa.n().to_vec()), "e": B64.encode(rsa.e().to_vec())},
    ]});
    std::fs::write(pki.path("local-jwks.json"), jwks.to_string()).unwrap();
    std::env::set_var("GH_TEST_SECRET", "gateway-secret");
    let vars = [
        ("CERT_DIR", pki.dir.display().to_string()),
        ("UP", up.addr.to_string()),
        ("ISSUER", auth.issuer()),
    ];
    let gh = Proxy::start(&yaml(), &vars).await;
    Env {
        ec_key: openssl::pkey::PKey::from_ec_key(ec)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap(),
        rsa_pub_pem: rsa.public_key_to_pem().unwrap(),
        pki,
        up,
        auth,
        gh,
    }
}

fn x5t(der: &[u8]) -> String {
    B64.encode(Sha256::digest(der))
}

fn now() -> i64 {
    gatehouse_jwt::now()
}

fn at_jwt(e: &Env, claims: serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("k1".into());
    h.typ = Some("at+jwt".into());
    jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ec_pem(&e.ec_key).unwrap()).unwrap()
}

fn good_claims(e: &Env) -> serde_json::Value {
    json!({
        "iss": "https://issuer.example", "aud": "api://transactions", "sub": "partner-a",
        "exp": now() + 300, "iat": now(), "azp": "partner-a", "azpacr": "2", "roles": ["service-api"],
        "cnf": {"x5t#S256": x5t(&e.pki.pki.partner_a.der())},
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_bound_to_partner_a_is_useless_on_partner_b_connection() {
    let e = env().await;
    let token = e.auth.token(&e.pki, &e.pki.pki.partner_a).await;
    let a = e.pki.client(Some(&e.pki.pki.partner_a));
    // a client-sent copy of a claim header never reaches the upstream: only the claim does
    let res = a
        .get(e.gh.url("/api/x"))
        .bearer_auth(&token)
        .header("X-Client-Id", "admin")
        .header("x-client-id", "root")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = e.up.last().unwrap();
    let ids: Vec<_> = seen.headers.get_all("x-client-id").iter().collect();
    assert_eq!(ids, ["partner-a"]);

    let b = e.pki.client(Some(&e.pki.pki.partner_b));
    let res = b
        .get(e.gh.url("/api/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\", error_description=\"certificate binding mismatch\""
    );
    assert_eq!(json(res).await["error"], "invalid_token");
    assert_eq!(e.up.count(), 1);
    assert_eq!(
        e.gh.metric("gatehouse_cert_binding_failures_total{reason=\"cnf_mismatch\",route=\"api\"}")
            .await,
        1.0
    );
    // the token families (introspection, cache, JWKS, binding, rejections) pass promtool too
    let text = e.gh.metrics().await;
    for family in [
        "gatehouse_introspection_requests_total",
        "gatehouse_introspection_duration_seconds",
        "gatehouse_token_cache_total",
        "gatehouse_jwks_refreshes_total",
        "gatehouse_cert_binding_failures_total",
        "gatehouse_rejections_total",
    ] {
        assert!(
            text.contains(&format!("{family}{{")) || text.contains(&format!("{family}_count")),
            "{family} missing"
        );
    }
    if let Err(report) = gatehouse_testkit::promtool_check(&text) {
        panic!("promtool check metrics:\n{report}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cache_hit_still_checks_the_route_scope() {
    let e = env().await;
    let token = e.auth.token(&e.pki, &e.pki.pki.partner_a).await;
    let a = e.pki.client(Some(&e.pki.pki.partner_a));
    assert_eq!(bearer_status(&a, e.gh.url("/api/x"), &token).await, 200);
    // same token, now cached, on a route that needs scope "admin"
    let res = a
        .get(e.gh.url("/admin/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer error=\"insufficient_scope\", scope=\"admin\""
    );
    assert_eq!(json(res).await["error"], "insufficient_scope");
    assert_eq!(
        e.auth.introspections(),
        1,
        "the second route was served from the cache"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_filter_accepts_a_good_token_and_refuses_forgeries() {
    let e = env().await;
    let a = e.pki.client(Some(&e.pki.pki.partner_a));
    let good = at_jwt(&e, good_claims(&e));
    let res = a
        .get(e.gh.url("/jwt/x"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(e.up.last_bearer(), good, "JWT forwarded unchanged");

    let mut cases: Vec<(String, &str)> = Vec::new();
    // unsigned (alg none) with a matching cnf
    let body = B64.encode(good_claims(&e).to_string());
    cases.push((
        format!("{}.{body}.", B64.encode(r#"{"alg":"none","typ":"at+jwt"}"#)),
        "alg none",
    ));
    // HS256 with the RSA public key as secret
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("r1".into());
    h.typ = Some("at+jwt".into());
    cases.push((
        jsonwebtoken::encode(
            &h,
            &good_claims(&e),
            &EncodingKey::from_secret(&e.rsa_pub_pem),
        )
        .unwrap(),
        "hs256 confusion",
    ));
    // forged: signed by a key that is not in the JWKS
    let other = openssl::ec::EcKey::generate(
        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
    )
    .unwrap();
    let other_pem = openssl::pkey::PKey::from_ec_key(other)
        .unwrap()
        .private_key_to_pem_pkcs8()
        .unwrap();
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("k1".into());
    h.typ = Some("at+jwt".into());
    cases.push((
        jsonwebtoken::encode(
            &h,
            &good_claims(&e),
            &EncodingKey::from_ec_pem(&other_pem).unwrap(),
        )
        .unwrap(),
        "forged",
    ));
    for (patch, what) in [
        (json!({"exp": now() - 120}), "expired"),
        (json!({"nbf": now() + 600}), "not yet valid"),
        (json!({"iss": "https://evil.example"}), "wrong issuer"),
        (json!({"aud": "api://other"}), "wrong audience"),
    ] {
        let mut c = good_claims(&e);
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        cases.push((at_jwt(&e, c), what));
    }
    for (token, what) in cases {
        let res = a
            .get(e.gh.url("/jwt/x"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{what}");
        assert!(
            res.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer error=\"invalid_token\""),
            "{what}"
        );
    }
    assert_eq!(e.up.count(), 1);

    // a valid JWT bound to partner-a, presented on partner-b's connection
    let b = e.pki.client(Some(&e.pki.pki.partner_b));
    assert_eq!(bearer_status(&b, e.gh.url("/jwt/x"), &good).await, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_azp_and_azpacr_rules() {
    let e = env().await;
    let a = e.pki.client(Some(&e.pki.pki.partner_a));
    for (patch, reason) in [
        (json!({"roles": ["reader"]}), "missing_role"),
        (json!({"azp": "partner-b"}), "claim_mismatch"),
        (json!({"azpacr": "1"}), "claim_mismatch"),
    ] {
        let mut c = good_claims(&e);
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        let res = a
            .get(e.gh.url("/jwt/x"))
            .bearer_auth(at_jwt(&e, c))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{reason}");
        assert_eq!(json(res).await["error"], reason);
    }
    assert_eq!(
        e.gh.metric(
            "gatehouse_rejections_total{filter=\"claims\",reason=\"claim_mismatch\",route=\"jwt\"}"
        )
        .await,
        2.0
    );
}
