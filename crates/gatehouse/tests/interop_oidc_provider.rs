//! Interop with a real, certified authorization server: panva's `oidc-provider` 8.8.1 (Node),
//! run from `interop/oidc-provider/server.mjs`. No mock stands in for it here.
//!
//! The suite installs its npm dependencies itself (`npm ci`) and fails with a clear message
//! when Node.js is missing: it never skips silently.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use gatehouse_testkit::{bearer_status, json, jwt_payload, Proxy, TestPki, Upstream};
use sha2::{Digest, Sha256};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

static NPM: Mutex<bool> = Mutex::new(false);

fn harness_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/oidc-provider")
}

fn ensure_npm_deps() {
    let mut done = NPM.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "Node.js is required for the oidc-provider interop suite (install nodejs and npm, e.g. `apt-get install nodejs npm`)"
    );
    let dir = harness_dir();
    if !dir
        .join("node_modules/oidc-provider/package.json")
        .is_file()
    {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .output()
            .expect("npm is required for the oidc-provider interop suite");
        assert!(
            out.status.success(),
            "npm ci failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    *done = true;
}

struct Provider {
    child: Child,
    issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_provider(pki: &TestPki) -> Provider {
    ensure_npm_deps();
    let mut child = Command::new("node")
        .arg("server.mjs")
        .current_dir(harness_dir())
        .env("PORT", "0")
        .env("TLS_CERT", pki.path("server.pem"))
        .env("TLS_KEY", pki.path("server.key"))
        .env("CLIENT_CA", pki.path("root-ca.pem"))
        .env("GATEWAY_SECRET", "interop-gateway-secret")
        .env("PARTNER_A_SUBJECT", "CN=partner-a,O=partner-a Ltd")
        .env("PARTNER_B_SUBJECT", "CN=partner-b,O=partner-b Ltd")
        .env("RESOURCE", "https://api.example.com")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start node");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("oidc-provider did not start");
    let issuer = line
        .trim()
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("unexpected: {line}"))
        .to_owned();
    Provider { child, issuer }
}

fn yaml() -> &'static str {
    "version: 1
server: { threads: 2, grace_period: 0s, shutdown_timeout: 0s }
admin: { listen: \"${ADMIN_ADDR}\" }
log: { access_log: off }
listeners:
  - name: edge
    listen: \"${PROXY_ADDR}\"
    tls:
      cert_file: ${CERT_DIR}/server.pem
      key_file: ${CERT_DIR}/server.key
      client_auth: { mode: required, ca_files: [\"${CERT_DIR}/root-ca.pem\"] }
authorization_servers:
  op:
    issuer: ${ISSUER}
    jwks_uri: ${ISSUER}/jwks
    ca_file: ${CERT_DIR}/root-ca.pem
    algorithms: [ES256]
    introspection:
      url: ${ISSUER}/token/introspection
      accept: token-introspection+jwt
      client_auth: { method: client_secret_basic, client_id: gateway, client_secret_env: GH_INTEROP_SECRET }
    cache: { max_ttl: 1s, negative_ttl: 5s }
upstreams:
  app: { peers: [\"${UP}\"] }
routes:
  - name: phantom
    match: { path_prefix: /api/ }
    upstream: app
    filters:
      - kind: client_cert
      - kind: phantom_token
        authorization_server: op
        forward_jwt: introspection_response   # the RFC 9701 answer itself, checked below
      - kind: cert_bound_token
      - kind: claims
        scope: [transactions]
  - name: jwt
    match: { path_prefix: /jwt/ }
    upstream: app
    filters:
      - kind: client_cert
      - kind: jwt
        authorization_server: op
        audience: [https://api.example.com]
        typ: at+jwt
      - kind: cert_bound_token
      - kind: claims
        scope: [transactions]
"
}

async fn token(
    pki: &TestPki,
    p: &Provider,
    who: &gatehouse_testkit::gatehouse_devauth::pki::Issued,
    id: &str,
    resource: Option<&str>,
) -> String {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", id),
        ("scope", "transactions"),
    ];
    if let Some(r) = resource {
        form.push(("resource", r));
    }
    let res = pki
        .client(Some(who))
        .post(format!("{}/token", p.issuer))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "oidc-provider token endpoint");
    json(res).await["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc_provider_opaque_tokens_jwt_tokens_and_revocation() {
    let pki = TestPki::new();
    let provider = start_provider(&pki);
    let up = Upstream::start().await;
    std::env::set_var("GH_INTEROP_SECRET", "interop-gateway-secret");
    let vars = [
        ("CERT_DIR", pki.dir.display().to_string()),
        ("UP", up.addr.to_string()),
        ("ISSUER", provider.issuer.clone()),
    ];
    let gh = Proxy::start(yaml(), &vars).await;
    let a = pki.client(Some(&pki.pki.partner_a));
    let b = pki.client(Some(&pki.pki.partner_b));
    let x5t_a = B64.encode(Sha256::digest(pki.pki.partner_a.der()));

    // opaque token, introspected with an RFC 9701 signed response
    let opaque = token(&pki, &provider, &pki.pki.partner_a, "partner-a", None).await;
    assert_eq!(
        opaque.split('.').count(),
        1,
        "without a resource the token is opaque"
    );
    let res = a
        .get(gh.url("/api/x"))
        .bearer_auth(&opaque)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let upstream_jwt = &up.last_bearer();
    let claims = jwt_payload(upstream_jwt);
    assert_eq!(claims["iss"], provider.issuer);
    assert_eq!(claims["aud"], "gateway");
    assert_eq!(claims["token_introspection"]["client_id"], "partner-a");
    assert_eq!(claims["token_introspection"]["cnf"]["x5t#S256"], x5t_a);

    // the same token on partner-b's connection
    assert_eq!(bearer_status(&b, gh.url("/api/x"), &opaque).await, 401);

    // revoke (RFC 7009, by its owner); after the cache TTL the token is refused and the
    // negative answer is cached
    let res = a
        .post(format!("{}/token/revocation", provider.issuer))
        .form(&[("token", opaque.as_str()), ("client_id", "partner-a")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    gh.clock.advance(Duration::from_millis(1300));
    for _ in 0..3 {
        let res = a
            .get(gh.url("/api/x"))
            .bearer_auth(&opaque)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        assert!(res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token"));
    }
    assert_eq!(
        gh.metric("gatehouse_token_cache_total{result=\"negative_hit\"}")
            .await,
        2.0
    );
    assert_eq!(
        gh.metric("gatehouse_introspection_requests_total{result=\"inactive\"}")
            .await,
        1.0
    );

    // RFC 9068 JWT access token via a resource indicator, verified against the JWKS only
    let before = gh
        .metric("gatehouse_introspection_requests_total{result=\"active\"}")
        .await;
    let at = token(
        &pki,
        &provider,
        &pki.pki.partner_a,
        "partner-a",
        Some("https://api.example.com"),
    )
    .await;
    assert_eq!(at.split('.').count(), 3);
    let res = a
        .get(gh.url("/jwt/x"))
        .bearer_auth(&at)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(up.last_bearer(), at);
    assert_eq!(
        gh.metric("gatehouse_introspection_requests_total{result=\"active\"}")
            .await,
        before,
        "no introspection for JWTs"
    );
    assert_eq!(bearer_status(&b, gh.url("/jwt/x"), &at).await, 401);
    assert!(
        gh.metric("gatehouse_jwks_refreshes_total{authorization_server=\"op\",result=\"success\"}")
            .await
            >= 1.0
    );
}

/// The oidc-provider guide in `conf/authorization-servers.yaml`, run as written (addresses
/// swapped for the test's, and the test CA trusted): partner-a's opaque token reaches the
/// API as an RFC 9068 token Gatehouse signs for the route's audience, verifiable with
/// Gatehouse's JWKS, and the same token on partner-b's connection is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_oidc_provider_guide_in_conf_works_with_oidc_provider() {
    let pki = TestPki::new();
    let provider = start_provider(&pki);
    let up = Upstream::start().await;
    std::fs::write(pki.path("gateway-secret"), "interop-gateway-secret").unwrap();
    let guide = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../conf/authorization-servers.yaml"),
    )
    .unwrap();
    // each swap must find its text: a guide that changed shape fails here, not silently
    let mut config = guide;
    for (from, to) in [
        (
            "version: 1\n",
            "version: 1\nadmin: { listen: \"${ADMIN_ADDR}\" }\n",
        ),
        ("listen: 127.0.0.1:8443", "listen: \"${PROXY_ADDR}\""),
        (
            "  oidc_provider:\n",
            "  oidc_provider:\n    ca_file: ${CERT_DIR}/root-ca.pem\n",
        ),
        ("https://op.example.com", "${ISSUER}"),
        ("api.internal:8080", "${UP}"),
    ] {
        assert!(config.contains(from), "the guide no longer has {from:?}");
        config = config.replace(from, to);
    }
    let vars = [
        ("CERT_DIR", pki.dir.display().to_string()),
        ("UP", up.addr.to_string()),
        ("ISSUER", provider.issuer.clone()),
    ];
    let gh = Proxy::start(&config, &vars).await;
    let a = pki.client(Some(&pki.pki.partner_a));
    let opaque = token(&pki, &provider, &pki.pki.partner_a, "partner-a", None).await;
    let res = a
        .get(gh.url("/oidc-provider/x"))
        .bearer_auth(&opaque)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let jwt = &up.last_bearer();
    // what the README tells the API team to check
    let claims = gatehouse_testkit::verify_as_api(
        gh.admin,
        jwt,
        "gatehouse-1",
        "https://gatehouse.example.com",
        "https://transactions-api.example",
    )
    .await
    .unwrap();
    assert_eq!(claims["client_id"], "partner-a");
    assert_eq!(claims["sub"], "partner-a");
    assert_eq!(claims["scope"], "transactions");
    assert_eq!(
        claims["cnf"]["x5t#S256"],
        B64.encode(Sha256::digest(pki.pki.partner_a.der()))
    );
    assert!(claims["jti"].is_string() && claims.get("token_introspection").is_none());
    // the same token on partner-b's connection: the binding holds
    let b = pki.client(Some(&pki.pki.partner_b));
    let res = b
        .get(gh.url("/oidc-provider/x"))
        .bearer_auth(&opaque)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}
