//! Phantom token end to end: partner cert → dev authorization server token → Gatehouse
//! introspects (RFC 7662 / RFC 9701) → JWT upstream; cache, single-flight, failures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use gatehouse_testkit::gatehouse_devauth::authz::DevClient;
use gatehouse_testkit::{
    bearer_status, gateway_client, json, jwt_payload, partner_client, verify_as_api, AuthServer,
    DevAuthorizationServer, Proxy, TestConfig, TestPki, Upstream,
};
use sha2::{Digest, Sha256};
use std::sync::atomic::Ordering;
use std::time::Duration;

struct Setup {
    pki: TestPki,
    up: Upstream,
    auth: AuthServer,
}

async fn setup(extra_clients: Vec<DevClient>) -> Setup {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut clients = vec![
        partner_client("partner-a", "transactions"),
        partner_client("partner-b", "transactions"),
        gateway_client(),
    ];
    clients.extend(extra_clients);
    let auth = AuthServer::start(&pki, clients).await;
    Setup { pki, up, auth }
}

/// A config with one `/api/` route: client_cert → phantom_token at the authorization
/// server `dev` (introspection at `${INTROSPECT_URL}`).
fn yaml(accept: &str, client_auth: &str, forward: &str, cache: &str, extra_top: &str) -> String {
    yaml_with(dev(accept, client_auth, cache), forward, extra_top)
}

/// [`yaml`] for an RFC 9701 server whose answers are forwarded as they are, with the
/// cache settings `cache`: what most tests here run.
fn rfc9701(cache: &str) -> String {
    yaml(
        "token-introspection+jwt",
        BASIC,
        "introspection_response",
        cache,
        "",
    )
}

/// The authorization server `dev` of [`yaml`].
fn dev(accept: &str, client_auth: &str, cache: &str) -> DevAuthorizationServer {
    DevAuthorizationServer::new(accept, client_auth)
        .url("${INTROSPECT_URL}")
        .key(&format!("cache: {cache}"))
}

/// [`yaml`] with the authorization server as given.
fn yaml_with(dev: DevAuthorizationServer, forward: &str, extra_top: &str) -> String {
    test_config(dev, forward, extra_top).build()
}

/// [`yaml_with`], still open to changes.
fn test_config(dev: DevAuthorizationServer, forward: &str, extra_top: &str) -> TestConfig {
    let mut c = TestConfig::edge("required").threads(2);
    if !extra_top.is_empty() {
        c = c.section(extra_top);
    }
    c.section(&format!("authorization_servers:\n{}", dev.build()))
        .section("upstreams:\n  app: { peers: [\"${UP}\"] }")
        .routes(&format!(
            "  - name: api
    match: {{ path_prefix: /api/ }}
    upstream: app
    filters:
      - kind: client_cert
      - kind: phantom_token
        authorization_server: dev
        forward_jwt: {forward}"
        ))
}

const BASIC: &str =
    "{ method: client_secret_basic, client_id: gateway, client_secret_env: GH_TEST_SECRET }";
const CACHE: &str = "{ max_ttl: 60s, negative_ttl: 1s }";
/// `forward_jwt` (and the audience that goes with it) of an RFC 9068 token for the API.
const SIGNED_FOR_API: &str = "signed_by_gatehouse\n        audience: https://api.test";

async fn start(s: &Setup, yaml: &str, vars: &[(&str, String)]) -> Proxy {
    // SAFETY of env: every test uses the same value
    std::env::set_var("GH_TEST_SECRET", "gateway-secret");
    let mut all = vec![
        ("CERT_DIR", s.pki.dir.display().to_string()),
        ("UP", s.up.addr.to_string()),
        ("ISSUER", s.auth.issuer()),
        (
            "INTROSPECT_URL",
            format!("{}/oauth/introspect", s.auth.issuer()),
        ),
    ];
    for (k, v) in vars {
        all.retain(|(x, _)| x != k);
        all.push((k, v.clone()));
    }
    Proxy::start(yaml, &all).await
}

fn x5t(der: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

#[tokio::test(flavor = "multi_thread")]
async fn rfc9701_response_is_verified_and_forwarded_only_when_asked_for() {
    let s = setup(vec![]).await;
    let gh = start(&s, &rfc9701(CACHE), &[]).await;
    let token = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
    let c = s.pki.client(Some(&s.pki.pki.partner_a));
    let res = c
        .get(gh.url("/api/echo"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = s.up.last().unwrap().headers;
    let auth = seen["authorization"].to_str().unwrap();
    let jwt = auth.strip_prefix("Bearer ").unwrap();
    assert!(
        !auth.contains(&token),
        "the opaque token must not reach the upstream"
    );
    let claims = jwt_payload(jwt);
    assert_eq!(claims["aud"], "gateway");
    assert_eq!(claims["token_introspection"]["active"], true);
    assert_eq!(claims["token_introspection"]["client_id"], "partner-a");
    assert_eq!(
        claims["token_introspection"]["cnf"]["x5t#S256"],
        x5t(&s.pki.pki.partner_a.der())
    );

    // second call: cache hit, no new introspection
    let res = c
        .get(gh.url("/api/echo"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(s.auth.introspections(), 1);
    assert_eq!(
        gh.metric("gatehouse_token_cache_total{result=\"hit\"}")
            .await,
        1.0
    );
    assert_eq!(
        gh.metric("gatehouse_token_cache_total{result=\"miss\"}")
            .await,
        1.0
    );
    assert_eq!(
        gh.metric("gatehouse_introspection_requests_total{result=\"active\"}")
            .await,
        1.0
    );
    // the entry is counted at once (moka counts an insert only after its pending tasks)
    assert_eq!(
        gh.metric("gatehouse_token_cache_entries{authorization_server=\"dev\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn application_jwt_and_json_with_gatehouse_signed_jwt() {
    let s = setup(vec![]).await;
    let gh = start(&s, &yaml("jwt", BASIC, "as_issued", CACHE, ""), &[]).await;
    let token = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
    let c = s.pki.client(Some(&s.pki.pki.partner_a));
    assert_eq!(bearer_status(&c, gh.url("/api/x"), &token).await, 200);
    let claims = jwt_payload(&s.up.last_bearer());
    assert_eq!(claims["client_id"], "partner-a");
    assert_eq!(claims["iss"], s.auth.issuer());
    drop(gh);

    // JSON only: Gatehouse signs the upstream JWT and publishes its key on /jwks
    let key = s.pki.pki.partner_b.key_pem().unwrap();
    let key_path = s.pki.path("gatehouse-signing.key");
    std::fs::write(&key_path, key).unwrap();
    let top = format!("token_signing: {{ key_file: {key_path}, key_id: gh1, issuer: https://gatehouse.internal }}");
    let gh = start(&s, &yaml("json", BASIC, SIGNED_FOR_API, CACHE, &top), &[]).await;
    assert_eq!(bearer_status(&c, gh.url("/api/x"), &token).await, 200);
    let jwt = &s.up.last_bearer();
    let claims = jwt_payload(jwt);
    // RFC 9068: typ at+jwt; iss, aud (the route's), exp, iat, jti, sub, client_id
    // what the README tells an API to check
    let admin = gh.admin;
    let verify = |jwt: String| async move {
        verify_as_api(
            admin,
            &jwt,
            "gh1",
            "https://gatehouse.internal",
            "https://api.test",
        )
        .await
    };
    assert_eq!(verify(jwt.to_owned()).await.unwrap(), claims);
    assert_eq!(claims["iss"], "https://gatehouse.internal");
    assert_eq!(claims["aud"], "https://api.test");
    assert_eq!(claims["client_id"], "partner-a");
    assert_eq!(
        claims["sub"], "partner-a",
        "client credentials: sub is the client"
    );
    assert_eq!(claims["scope"], "transactions");
    assert_eq!(claims["cnf"]["x5t#S256"], x5t(&s.pki.pki.partner_a.der()));
    assert!(
        claims["jti"].as_str().is_some_and(|j| j.len() >= 22),
        "{claims}"
    );
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(iat < exp && exp - iat <= 300, "{claims}");
    assert!(claims.get("active").is_none());
    assert!(claims.get("token_type").is_none());

    // key rotation by reload: /jwks publishes the new key, which verifies the new JWTs
    std::fs::write(&key_path, s.pki.pki.partner_a.key_pem().unwrap()).unwrap();
    gh.reload_with(&yaml("json", BASIC, SIGNED_FOR_API, CACHE, &top))
        .unwrap();
    let token2 = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
    let res = c
        .get(gh.url("/api/x"))
        .bearer_auth(&token2)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let jwt2 = &s.up.last_bearer();
    assert!(
        verify(jwt2.to_owned()).await.is_ok(),
        "after a reload the served JWKS verifies the JWTs signed with the new key"
    );
    assert!(
        verify(jwt.to_owned()).await.is_err(),
        "and no longer the old key's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_forwarding_different_jwts_from_one_authorization_server_each_get_theirs() {
    let s = setup(vec![]).await;
    let key_path = s.pki.path("gatehouse-signing.key");
    std::fs::write(&key_path, s.pki.pki.partner_b.key_pem().unwrap()).unwrap();
    let top = format!("token_signing: {{ key_file: {key_path}, key_id: gh1, issuer: https://gatehouse.internal }}");
    // /signed/ and /other/ leave forward_jwt out: for an RFC 9701 server that means an
    // RFC 9068 token Gatehouse signs, each for its route's API
    let config = yaml(
        "token-introspection+jwt",
        BASIC,
        "introspection_response",
        CACHE,
        &top,
    ) + "  - name: signed
    match: { path_prefix: /signed/ }
    upstream: app
    filters:
      - kind: client_cert
      - kind: phantom_token
        authorization_server: dev
        audience: https://api.test
  - name: other
    match: { path_prefix: /other/ }
    upstream: app
    filters:
      - kind: client_cert
      - kind: phantom_token
        authorization_server: dev
        audience: https://other.test
";
    let gh = start(&s, &config, &[]).await;
    let c = s.pki.client(Some(&s.pki.pki.partner_a));
    let token = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
    // both orders, twice: each route forwards its own kind of JWT, from the cache too
    let mut jtis = std::collections::HashMap::new();
    for path in [
        "/api/x",
        "/signed/x",
        "/other/x",
        "/signed/x",
        "/api/x",
        "/other/x",
    ] {
        let res = c
            .get(gh.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let claims = jwt_payload(&s.up.last_bearer());
        // the AS's RFC 9701 response nests the claims; Gatehouse's JWT carries them flat
        let (iss, aud, inner) = match path {
            "/signed/x" => (
                "https://gatehouse.internal".to_owned(),
                "https://api.test",
                &claims,
            ),
            "/other/x" => (
                "https://gatehouse.internal".to_owned(),
                "https://other.test",
                &claims,
            ),
            _ => (s.auth.issuer(), "gateway", &claims["token_introspection"]),
        };
        assert_eq!(claims["iss"], iss, "{path}");
        assert_eq!(claims["aud"], aud, "{path}");
        assert_eq!(inner["client_id"], "partner-a", "{path}: {claims}");
        if path != "/api/x" {
            // the second request of a route gets the cached JWT, the same jti
            let jti = claims["jti"].as_str().unwrap().to_owned();
            let first = jtis.entry(path).or_insert_with(|| jti.clone());
            assert_eq!(*first, jti, "{path}");
        }
    }
    assert_ne!(jtis["/signed/x"], jtis["/other/x"], "one JWT per audience");
    // one introspection per forwarded JWT (mode and audience), then hits
    assert_eq!(s.auth.introspections(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn rfc6750_errors_for_missing_malformed_and_inactive_tokens() {
    let s = setup(vec![]).await;
    let gh = start(&s, &rfc9701(CACHE), &[]).await;
    let c = s.pki.client(Some(&s.pki.pki.partner_a));

    let res = c.get(gh.url("/api/x")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");

    for bad in [
        "Basic Zm9vOmJhcg==",
        "Bearer",
        "Bearer a b",
        "Bearer \u{7f}x",
    ] {
        let res = c
            .get(gh.url("/api/x"))
            .header("authorization", bad)
            .send()
            .await;
        let Ok(res) = res else { continue }; // a header the client library refuses to send
        assert_eq!(res.status(), 400, "{bad:?}");
        assert!(res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer error=\"invalid_request\""));
    }
    let res = c
        .get(gh.url("/api/x"))
        .header("authorization", format!("Bearer {}", "a".repeat(70_000)))
        .send()
        .await
        .unwrap();
    assert!(
        res.status() == 400 || res.status() == 431,
        "{}",
        res.status()
    );

    let res = c
        .get(gh.url("/api/x"))
        .bearer_auth("not-a-real-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer error=\"invalid_token\""));
    assert_eq!(json(res).await["error"], "invalid_token");
    assert_eq!(s.up.count(), 0);
}

/// The cache settings `cache` with the token store `store` (`moka` or `compact`).
fn in_store(cache: &str, store: &str) -> String {
    cache.replacen("{ ", &format!("{{ store: {store}, "), 1)
}

/// The usual RFC 9701 config with [`CACHE`] in the token store `store`.
fn cached_in(store: &str) -> String {
    rfc9701(&in_store(CACHE, store))
}

#[tokio::test(flavor = "multi_thread")]
async fn one_hundred_concurrent_first_uses_make_one_introspection_call() {
    burst_of_first_uses("moka").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_hundred_concurrent_first_uses_make_one_introspection_call_compact_store() {
    burst_of_first_uses("compact").await;
}

async fn burst_of_first_uses(store: &str) {
    let s = setup(vec![]).await;
    // a generous introspection timeout: 100 handshakes at once on a busy CI machine must
    // not turn the one slow call into a 503
    let config = yaml_with(
        dev("token-introspection+jwt", BASIC, &in_store(CACHE, store))
            .introspection("timeout: 10s"),
        "introspection_response",
        "",
    );
    let gh = start(&s, &config, &[]).await;
    let token = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
    // slow the AS so that all 100 requests arrive while the first introspection is in flight
    s.auth.state.faults.delay_ms.store(300, Ordering::Relaxed);
    let c = s.pki.client(Some(&s.pki.pki.partner_a));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let c = c.clone();
        let url = gh.url("/api/x");
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            c.get(url)
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for t in tasks {
        let status = t.await.unwrap();
        assert!(matches!(status, Ok(200)), "{status:?}");
    }
    assert_eq!(
        s.auth.introspections(),
        1,
        "exactly one introspection call for 100 concurrent misses"
    );
    let coalesced = gh
        .metric("gatehouse_token_cache_total{result=\"coalesced\"}")
        .await;
    let hits = gh
        .metric("gatehouse_token_cache_total{result=\"hit\"}")
        .await;
    assert_eq!(coalesced + hits, 99.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn negative_cache_and_revocation_follow_their_ttls() {
    negative_cache_and_revocation("moka").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn negative_cache_and_revocation_follow_their_ttls_compact_store() {
    negative_cache_and_revocation("compact").await;
}

async fn negative_cache_and_revocation(store: &str) {
    let s = setup(vec![]).await;
    let cache = in_store("{ max_ttl: 1s, negative_ttl: 1s }", store);
    let gh = start(&s, &rfc9701(&cache), &[]).await;
    let c = s.pki.client(Some(&s.pki.pki.partner_a));
    for _ in 0..3 {
        assert_eq!(bearer_status(&c, gh.url("/api/x"), "bogus").await, 401);
    }
    assert_eq!(s.auth.introspections(), 1, "inactive answers are cached");
    assert_eq!(
        gh.metric("gatehouse_token_cache_total{result=\"negative_hit\"}")
            .await,
        2.0
    );
    gh.clock.advance(Duration::from_millis(1300));
    assert_eq!(bearer_status(&c, gh.url("/api/x"), "bogus").await, 401);
    assert_eq!(
        s.auth.introspections(),
        2,
        "negative entries expire after negative_ttl"
    );

    // revoke an active token: served from cache until max_ttl, then refused
    let token = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
    assert_eq!(bearer_status(&c, gh.url("/api/x"), &token).await, 200);
    let res = s
        .pki
        .client(None)
        .post(format!("{}/oauth/revoke", s.auth.issuer()))
        .basic_auth("gateway", Some("gateway-secret"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    gh.clock.advance(Duration::from_millis(1300));
    assert_eq!(bearer_status(&c, gh.url("/api/x"), &token).await, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_ttl_is_bounded_by_the_token_exp() {
    cache_ttl_bounded_by_exp("moka").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_ttl_is_bounded_by_the_token_exp_compact_store() {
    cache_ttl_bounded_by_exp("compact").await;
}

async fn cache_ttl_bounded_by_exp(store: &str) {
    let s = setup(vec![]).await;
    let gh = start(&s, &cached_in(store), &[]).await;
    let mut extra = serde_json::Map::new();
    extra.insert("exp".into(), serde_json::json!(gatehouse_jwt::now() + 2));
    let token = s
        .auth
        .state
        .mint("partner-a", Some(&s.pki.pki.partner_a.der()), extra);
    let c = s.pki.client(Some(&s.pki.pki.partner_a));
    assert_eq!(bearer_status(&c, gh.url("/api/x"), &token).await, 200);
    assert_eq!(bearer_status(&c, gh.url("/api/x"), &token).await, 200);
    assert_eq!(s.auth.introspections(), 1);
    gh.clock.advance(Duration::from_millis(2600));
    // max_ttl is 60 s, but the token expired: the cached entry is gone and the AS says inactive
    assert_eq!(bearer_status(&c, gh.url("/api/x"), &token).await, 401);
    assert_eq!(s.auth.introspections(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn authorization_server_failures_fail_closed_with_503() {
    let s = setup(vec![]).await;
    // every fault must reach the server: no breaker holding calls off after the first
    // (the breaker has its own test, stale_if_error_…)
    let config = yaml_with(
        dev("token-introspection+jwt", BASIC, CACHE).introspection("backoff: 0s"),
        "introspection_response",
        "",
    );
    let gh = start(&s, &config, &[]).await;
    let c = s.pki.client(Some(&s.pki.pki.partner_a));
    let f = &s.auth.state.faults;
    for (mode, delay, what) in [
        (1u8, 0u64, "500"),
        (2, 0, "garbage"),
        (3, 0, "active not boolean"),
        (4, 0, "forged unsigned JSON claiming active"),
        (5, 0, "tampered signature"),
        (0, 3500, "slow"),
    ] {
        f.mode.store(mode, Ordering::Relaxed);
        f.delay_ms.store(delay, Ordering::Relaxed);
        let token = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
        let res = c
            .get(gh.url("/api/x"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 503, "{what}");
        assert_eq!(
            json(res).await["error"],
            "temporarily_unavailable",
            "{what}"
        );
    }
    f.mode.store(0, Ordering::Relaxed);
    f.delay_ms.store(0, Ordering::Relaxed);
    // errors are not cached: service recovers by itself
    let token = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
    assert_eq!(bearer_status(&c, gh.url("/api/x"), &token).await, 200);
    assert_eq!(
        gh.metric("gatehouse_introspection_requests_total{result=\"timeout\"}")
            .await,
        1.0
    );
    assert_eq!(
        gh.metric("gatehouse_introspection_requests_total{result=\"error_status\"}")
            .await,
        1.0
    );
    assert_eq!(
        gh.metric("gatehouse_introspection_requests_total{result=\"bad_response\"}")
            .await,
        3.0
    );
    assert_eq!(
        gh.metric("gatehouse_introspection_requests_total{result=\"bad_signature\"}")
            .await,
        1.0
    );
    // none of the failures reached the upstream
    assert_eq!(s.up.count(), 1);
    drop(gh);

    // authorization server down
    let dead = format!(
        "https://localhost:{}/oauth/introspect",
        gatehouse_testkit::free_port()
    );
    let gh = start(&s, &rfc9701(CACHE), &[("INTROSPECT_URL", dead)]).await;
    let res = c
        .get(gh.url("/api/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(s.up.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_if_error_keeps_cached_tokens_working_while_the_as_fails() {
    let s = setup(vec![]).await;
    let cache = "{ max_ttl: 1s, negative_ttl: 1s, stale_if_error: 60s }";
    let gh = start(&s, &rfc9701(cache), &[]).await;
    let c = s.pki.client(Some(&s.pki.pki.partner_a));
    let token = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
    assert_eq!(bearer_status(&c, gh.url("/api/x"), &token).await, 200);
    s.auth.state.faults.mode.store(1, Ordering::Relaxed);
    gh.clock.advance(Duration::from_millis(1300));
    let calls = s.auth.introspections();
    // the first stale request tries the server, fails, and gets the cached answer; the
    // breaker then holds calls off: the next eleven are answered at once, no call made
    for _ in 0..12 {
        assert_eq!(bearer_status(&c, gh.url("/api/x"), &token).await, 200);
    }
    assert_eq!(s.auth.introspections(), calls + 1, "one call, not twelve");
    assert_eq!(
        gh.metric("gatehouse_token_cache_total{result=\"stale\"}")
            .await,
        12.0
    );
    // a token never seen still fails closed, at once and without a call
    let fresh = s.auth.state.mint("partner-a", None, Default::default());
    assert_eq!(bearer_status(&c, gh.url("/api/x"), &fresh).await, 503);
    assert_eq!(s.auth.introspections(), calls + 1);
    assert_eq!(
        gh.metric("gatehouse_introspection_requests_total{result=\"circuit_open\"}")
            .await,
        1.0
    );
    // the server recovers; after the breaker's wait (1 s) one stale request lets one probe
    // go, in the background, which refreshes the entry: then hits again
    s.auth.state.faults.mode.store(0, Ordering::Relaxed);
    gh.clock.advance(Duration::from_millis(1100));
    let probe = c
        .get(gh.url("/api/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 200, "served stale while the probe runs");
    let mut refreshed = false;
    for _ in 0..100 {
        if gh
            .metric("gatehouse_introspection_requests_total{result=\"active\"}")
            .await
            >= 2.0
        {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refreshed, "the background probe refreshed the token");
    assert_eq!(s.auth.introspections(), calls + 2, "one probe");
    let hits = gh
        .metric("gatehouse_token_cache_total{result=\"hit\"}")
        .await;
    assert_eq!(
        bearer_status(&c, gh.url("/api/x"), &fresh).await,
        200,
        "closed again: new tokens are introspected"
    );
    assert_eq!(bearer_status(&c, gh.url("/api/x"), &token).await, 200);
    assert_eq!(
        gh.metric("gatehouse_token_cache_total{result=\"hit\"}")
            .await,
        hits + 1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_client_auth_method_authenticates_to_the_introspection_endpoint() {
    // the gateway's private_key_jwt key is registered with the AS up front
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let jwt_key =
        openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
    let pub_pem = String::from_utf8(jwt_key.public_key_to_pem().unwrap()).unwrap();
    let s = setup(vec![
        DevClient {
            client_id: "gateway-post".into(),
            secret: Some("post-secret".into()),
            introspect: true,
            ..Default::default()
        },
        DevClient {
            client_id: "gateway-jwt".into(),
            public_key_pem: Some(pub_pem),
            introspect: true,
            ..Default::default()
        },
        DevClient {
            client_id: "gateway-mtls".into(),
            subject: Some("CN=gateway-mtls, O=gateway-mtls Ltd".into()),
            introspect: true,
            ..Default::default()
        },
    ])
    .await;
    let jwt_key_path = s.pki.path("gateway-jwt.key");
    std::fs::write(&jwt_key_path, jwt_key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let gw_key = s.pki.issue(
        &gatehouse_testkit::gatehouse_devauth::pki::CertSpec::client("gateway-mtls"),
        None,
    );
    let (cert, key) = s.pki.save("gateway-mtls", &gw_key);
    std::fs::write(s.pki.path("post-secret"), "post-secret\n").unwrap();
    let methods = [
        BASIC.to_owned(),
        format!("{{ method: client_secret_post, client_id: gateway-post, client_secret_file: {} }}", s.pki.path("post-secret")),
        format!("{{ method: private_key_jwt, client_id: gateway-jwt, private_key_file: {jwt_key_path} }}"),
        format!("{{ method: tls_client_auth, client_id: gateway-mtls, cert_file: {cert}, key_file: {key} }}"),
    ];
    let c = s.pki.client(Some(&s.pki.pki.partner_a));
    for (i, m) in methods.iter().enumerate() {
        let gh = start(
            &s,
            &yaml(
                "token-introspection+jwt",
                m,
                "introspection_response",
                CACHE,
                "",
            ),
            &[],
        )
        .await;
        let token = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
        let res = c
            .get(gh.url("/api/x"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{m}");
        assert_eq!(s.auth.introspections(), i + 1);
    }
    // wrong secret: the AS refuses the gateway, Gatehouse answers 503 (not 200, not 401)
    let wrong = "{ method: client_secret_post, client_id: gateway-post, client_secret_env: GH_TEST_SECRET }";
    let gh = start(
        &s,
        &yaml(
            "token-introspection+jwt",
            wrong,
            "introspection_response",
            CACHE,
            "",
        ),
        &[],
    )
    .await;
    let token = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
    assert_eq!(bearer_status(&c, gh.url("/api/x"), &token).await, 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn authorization_server_faults_under_load_spare_cached_tokens_and_heal() {
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::Arc;

    let mut s = setup(vec![]).await;
    let gh = start(&s, &rfc9701(CACHE), &[]).await;
    // a request that hangs fails the test instead of the suite: the introspection timeout
    // is 2 s, so every answer comes long before this
    let client = s
        .pki
        .client_builder(Some(&s.pki.pki.partner_a))
        .timeout(Duration::from_secs(8))
        .build()
        .unwrap();
    let cached = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
    let status = |token: String| {
        let c = client.clone();
        let url = gh.url("/api/x");
        async move {
            c.get(url)
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(status(cached.clone()).await, 200);

    // steady load with the cached token on 8 connections while the AS misbehaves
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        let c = s
            .pki
            .client_builder(Some(&s.pki.pki.partner_a))
            .timeout(Duration::from_secs(8))
            .build()
            .unwrap();
        let (url, token) = (gh.url("/api/x"), cached.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => bad.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    let f = &s.auth.state.faults;
    for (mode, delay, what) in [
        (1u8, 0u64, "500"),
        (2, 0, "garbage"),
        (4, 0, "forged unsigned JSON"),
        (0, 3500, "slower than the timeout"),
    ] {
        f.mode.store(0, Ordering::Relaxed);
        f.delay_ms.store(0, Ordering::Relaxed);
        let fresh = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
        f.mode.store(mode, Ordering::Relaxed);
        f.delay_ms.store(delay, Ordering::Relaxed);
        assert_eq!(status(fresh).await, 503, "{what}");
    }
    f.mode.store(0, Ordering::Relaxed);
    f.delay_ms.store(0, Ordering::Relaxed);

    // down: listener gone and Gatehouse's pooled connections reset
    let fresh = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
    s.auth.stop();
    assert_eq!(status(fresh.clone()).await, 503, "AS down");
    // back: the same token now works, with no restart of Gatehouse (errors are not cached)
    s.auth.restart().await;
    let mut healed = false;
    for _ in 0..50 {
        if status(fresh.clone()).await == 200 {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healed, "service did not recover when the AS came back");

    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "a cached token was refused during the faults"
    );
    assert!(ok.load(Ordering::Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_names_the_caller_and_the_rejection_never_the_token() {
    let s = setup(vec![]).await;
    let log = s.pki.path("access.log");
    let gh = start(
        &s,
        &test_config(
            dev("token-introspection+jwt", BASIC, CACHE),
            "introspection_response",
            "",
        )
        .access_log(&log)
        .build(),
        &[],
    )
    .await;
    let token = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
    let c = s.pki.client(Some(&s.pki.pki.partner_a));
    let ok = c
        .get(gh.url("/api/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = c
        .get(gh.url("/api/y"))
        .bearer_auth("not-a-known-token")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect();
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    let (allowed, rejected) = (&lines[0], &lines[1]);
    assert_eq!(allowed["path"], "/api/x");
    assert_eq!(allowed["status"], 200);
    assert_eq!(allowed["client_id"], "partner-a");
    assert_eq!(allowed["sub"], "partner-a");
    assert_eq!(allowed["cert_subject"], "CN=partner-a, O=partner-a Ltd");
    assert_eq!(allowed["cert_sha256"].as_str().map(str::len), Some(64));
    assert!(allowed["rejected_by"].is_null());
    assert_eq!(rejected["status"], 401);
    assert_eq!(rejected["rejected_by"], "phantom_token");
    assert_eq!(rejected["reason"], "token_inactive");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(&token) && !text.contains("not-a-known-token"));
    assert!(!text.contains("eyJ"), "a JWT in the access log");
}

#[tokio::test(flavor = "multi_thread")]
async fn jwks_is_refetched_for_an_unknown_kid_at_most_once_per_min_refresh() {
    let s = setup(vec![]).await;
    let gh = start(
        &s,
        &yaml_with(
            dev("token-introspection+jwt", BASIC, CACHE).key("jwks_min_refresh: 1s"),
            "introspection_response",
            "",
        ),
        &[],
    )
    .await;
    let c = s.pki.client(Some(&s.pki.pki.partner_a));
    let status = |token: String| {
        let (c, url) = (c.clone(), gh.url("/api/x"));
        async move { bearer_status(&c, url, token).await.as_u16() }
    };
    let fetches = || s.auth.state.jwks_fetches.load(Ordering::SeqCst);
    let t1 = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
    assert_eq!(status(t1).await, 200);
    let after_first = fetches();
    assert!(after_first >= 1);

    // the AS rotates its key and publishes it: one refetch (once min_refresh has passed
    // since the last one), and the new kid verifies
    s.auth.state.rotate_key(true).unwrap();
    gh.clock.advance(Duration::from_millis(1100));
    let t2 = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
    assert_eq!(status(t2).await, 200);
    assert_eq!(fetches(), after_first + 1);

    // it rotates again without publishing: the unknown kid is looked up once, then the
    // refetch is rate-limited; the answers fail closed (503), never 200
    s.auth.state.rotate_key(false).unwrap();
    gh.clock.advance(Duration::from_millis(1100));
    let t3 = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
    assert_eq!(status(t3).await, 503);
    assert_eq!(fetches(), after_first + 2);
    // right after that fetch, further unknown kids do not fetch again (within 1 s: the
    // calls below take milliseconds; if the machine stalls past 1 s, one refetch is allowed)
    for _ in 0..3 {
        let t = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
        assert_eq!(status(t).await, 503);
    }
    assert!(fetches() <= after_first + 3, "refetches are rate-limited");
    assert!(
        gh.metric(
            "gatehouse_jwks_refreshes_total{authorization_server=\"dev\",result=\"success\"}"
        )
        .await
            >= 2.0
    );
    assert_eq!(s.up.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_keeps_the_token_cache_unless_its_authorization_server_changed() {
    let s = setup(vec![]).await;
    let config = |cache: &str| rfc9701(cache);
    let gh = start(&s, &config(CACHE), &[]).await;
    let token = s.auth.token(&s.pki, &s.pki.pki.partner_a).await;
    let c = s.pki.client(Some(&s.pki.pki.partner_a));
    let get = || async { bearer_status(&c, gh.url("/api/x"), &token).await };
    assert_eq!(get().await, 200);
    assert_eq!(s.auth.introspections(), 1);
    let jwks_fetches = s.auth.state.jwks_fetches.load(Ordering::SeqCst);

    // an unrelated change (the route's name): cached token and known keys are kept
    gh.reload_with(&config(CACHE).replace("- name: api", "- name: api-v2"))
        .unwrap();
    assert_eq!(get().await, 200);
    assert_eq!(
        s.auth.introspections(),
        1,
        "the reload flushed the token cache"
    );
    assert_eq!(
        s.auth.state.jwks_fetches.load(Ordering::SeqCst),
        jwks_fetches,
        "the reload forgot the signing keys"
    );

    // the authorization server's own settings changed: its cached results are dropped
    gh.reload_with(&config("{ max_ttl: 30s, negative_ttl: 1s }"))
        .unwrap();
    assert_eq!(get().await, 200);
    assert_eq!(s.auth.introspections(), 2);

    // Without claims rules the cache keeps only the claims the request path reads. A rule
    // on another claim (token_type) needs them all: the cache starts over and the rule
    // sees the claim (kept entries would lack it and fail the rule closed: 403).
    let with_rule = format!(
        "{}      - kind: claims\n        equals: {{ token_type: Bearer }}\n",
        config("{ max_ttl: 30s, negative_ttl: 1s }")
    );
    gh.reload_with(&with_rule).unwrap();
    assert_eq!(get().await, 200);
    assert_eq!(s.auth.introspections(), 3);
    assert_eq!(get().await, 200);
    assert_eq!(s.auth.introspections(), 3);
}
