//! Hardening: secrets never reach logs or metrics, request smuggling basics, odd headers,
//! JWKS outages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_testkit::{
    bearer_status, free_port, gateway_client, json, partner_client, raw_tls, raw_tls_pem,
    AuthServer, DevAuthorizationServer, Proxy, TestConfig, TestPki, Upstream,
};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Run the demo (proxy + dev AS + upstream) with debug logging, send valid and invalid
/// traffic, and look for every secret in everything it wrote and in /metrics.
#[tokio::test(flavor = "multi_thread")]
async fn no_token_jwt_secret_or_private_key_in_logs_or_metrics() {
    let dir = gatehouse_testkit::TempDir::new("secrets");
    let (port, admin, auth) = (free_port(), free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["demo", "--dir"])
        .arg(&dir)
        .args([
            "--port",
            &port.to_string(),
            "--admin-port",
            &admin.to_string(),
            "--auth-port",
            &auth.to_string(),
        ])
        .env("GATEHOUSE_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    for _ in 0..200 {
        if reqwest::get(format!("http://127.0.0.1:{admin}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = |who: Option<&str>| {
        let root = reqwest::Certificate::from_pem(&std::fs::read(dir.join("root-ca.pem")).unwrap())
            .unwrap();
        let mut b = reqwest::Client::builder().add_root_certificate(root);
        if let Some(who) = who {
            let cert = std::fs::read(dir.join(format!("{who}.pem"))).unwrap();
            let key = std::fs::read(dir.join(format!("{who}.key"))).unwrap();
            b = b.identity(reqwest::Identity::from_pkcs8_pem(&cert, &key).unwrap());
        }
        b.build().unwrap()
    };
    let a = client(Some("partner-a"));
    let res = a
        .post(format!("https://localhost:{auth}/oauth/token"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let token = json(res).await["access_token"].as_str().unwrap().to_owned();
    let res = a
        .get(format!("https://localhost:{port}/api/echo"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let upstream_jwt = json(res).await["authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    // invalid traffic too: wrong token, token on the wrong connection, malformed header
    let _ = a
        .get(format!("https://localhost:{port}/api/echo"))
        .bearer_auth("made-up-token-value-123")
        .send()
        .await;
    let _ = client(Some("partner-b"))
        .get(format!("https://localhost:{port}/api/echo"))
        .bearer_auth(&token)
        .send()
        .await;
    let _ = a
        .get(format!("https://localhost:{port}/api/echo"))
        .header("authorization", format!("Bearer {token} extra"))
        .send()
        .await;
    // what a client can send to make Pingora complain: a header block that does not parse
    // (with the token in it: Pingora's error text quotes the request's bytes), ambiguous
    // framing, a connection closed mid-header, and a connection that is not TLS at all
    let malformed = [
        format!("GET /api/echo HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nBad Header\r\n\r\n"),
        format!("POST /api/echo HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Length: 1, 2\r\n\r\nab"),
        format!("GET /api/echo HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"),
    ];
    for req in malformed {
        let dir = dir.to_path_buf();
        // the last one is cut short: the client goes away mid-header
        let complete = req.ends_with("\r\n\r\n") || req.ends_with("ab");
        let resp = tokio::task::spawn_blocking(move || {
            raw_tls_pem(port, &dir, "partner-a", req.as_bytes(), complete)
        })
        .await
        .unwrap();
        assert!(
            resp.is_empty() || resp.contains("invalid_request"),
            "a refusal is JSON: {resp}"
        );
    }
    // an oversized Authorization header (64 KiB and more), over HTTP/2 and HTTP/1.1:
    // answered (400, Gatehouse's JSON) and counted on both, never a dropped connection;
    // past the HTTP/2 header-list limit (256 KiB) the h2 layer answers 431 itself
    let huge = |n: usize| format!("Bearer {}", "a".repeat(n));
    let h1 = {
        let root = reqwest::Certificate::from_pem(&std::fs::read(dir.join("root-ca.pem")).unwrap())
            .unwrap();
        let cert = std::fs::read(dir.join("partner-a.pem")).unwrap();
        let key = std::fs::read(dir.join("partner-a.key")).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(root)
            .identity(reqwest::Identity::from_pkcs8_pem(&cert, &key).unwrap())
            .http1_only()
            .build()
            .unwrap()
    };
    for (c, version) in [
        (&a, reqwest::Version::HTTP_2),
        (&h1, reqwest::Version::HTTP_11),
    ] {
        for n in [64 * 1024, 100 * 1024] {
            let res = c
                .get(format!("https://localhost:{port}/api/echo"))
                .header("authorization", huge(n))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{version:?}, {n} bytes: no answer: {e}"));
            assert_eq!(res.version(), version);
            assert_eq!(res.status(), 400, "{version:?}, {n} bytes");
            assert_eq!(json(res).await["error"], "invalid_request");
        }
    }
    let res = a
        .get(format!("https://localhost:{port}/api/echo"))
        .header("authorization", huge(300 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 431, "past the HTTP/2 header-list limit");
    {
        use std::io::Write;
        let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = plain.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let _ = plain.read(&mut [0u8; 64]);
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gatehouse_tls_handshake_failures_total{reason=\"not_tls\"} 1"),
        "the plain-text connection is counted"
    );
    assert!(
        metrics.contains("gatehouse_rejections_total{filter=\"http\",reason=\"malformed_request\",route=\"none\"} 1"),
        "the unparsable request is counted"
    );
    assert!(
        metrics.contains("gatehouse_rejections_total{filter=\"phantom_token\",reason=\"authorization_too_long\",route=\"api\"} 4"),
        "the oversized headers are counted, both protocols"
    );
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let logs = out_reader.join().unwrap() + &err_reader.join().unwrap();
    assert!(
        logs.len() > 1000,
        "expected debug logs, got {} bytes",
        logs.len()
    );
    assert!(
        logs.contains("/api/echo"),
        "the access log is part of what is checked"
    );
    // the level is printed as "ERROR" (with or without colour codes around it)
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "client-caused ERROR lines: {errors:#?}");
    let key_pem = std::fs::read_to_string(dir.join("partner-a.key")).unwrap();
    let key_body = key_pem.lines().nth(1).unwrap().to_owned();
    let secret = std::fs::read_to_string(dir.join("gateway-secret")).unwrap();
    for (what, needle) in [
        ("opaque token", token.as_str()),
        ("made-up token", "made-up-token-value-123"),
        ("upstream JWT", upstream_jwt.as_str()),
        ("JWT signature", upstream_jwt.rsplit('.').next().unwrap()),
        ("introspection secret", secret.trim()),
        ("private key", key_body.as_str()),
        ("private key marker", "PRIVATE KEY"),
    ] {
        assert!(!logs.contains(needle), "{what} appears in the logs");
        assert!(!metrics.contains(needle), "{what} appears in the metrics");
    }
}

fn yaml() -> String {
    TestConfig::edge("required").build()
        + "authorization_servers:\n"
        + &DevAuthorizationServer::new(
            "jwt",
            "{ method: client_secret_basic, client_id: gateway, client_secret_env: GH_HARDEN_SECRET }",
        )
            .key("jwks_min_refresh: 1s")
        .build()
        + "upstreams:
  app: { peers: [\"${UP}\"] }
routes:
  - name: api
    match: { path_prefix: /api/ }
    upstream: app
    filters:
      - kind: client_cert
      - kind: phantom_token
        authorization_server: dev
  - name: jwt
    match: { path_prefix: /jwt/ }
    upstream: app
    filters:
      - kind: client_cert
      - kind: jwt
        authorization_server: dev
        audience: [api://gatehouse-tests]
      - kind: cert_bound_token
  - name: plain
    match: { path_prefix: /plain/ }
    upstream: app
"
}

async fn setup() -> (TestPki, Upstream, AuthServer, Proxy) {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let auth = AuthServer::start_with_audience(
        &pki,
        vec![
            partner_client("partner-a", "transactions"),
            gateway_client(),
        ],
        Some("api://gatehouse-tests"),
    )
    .await;
    std::env::set_var("GH_HARDEN_SECRET", "gateway-secret");
    let vars = [
        ("CERT_DIR", pki.dir.display().to_string()),
        ("UP", up.addr.to_string()),
        ("ISSUER", auth.issuer()),
    ];
    let gh = Proxy::start(&yaml(), &vars).await;
    (pki, up, auth, gh)
}

async fn raw(gh: &Proxy, pki: &TestPki, req: &'static [u8]) -> String {
    let (addr, root, cert) = (gh.addr, pki.pki.root.clone(), pki.pki.partner_a.clone());
    tokio::task::spawn_blocking(move || raw_tls(addr, &root, Some(&cert), req))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn request_smuggling_basics_are_refused_or_normalised() {
    let (pki, up, _auth, gh) = setup().await;
    // CL + TE together: must not let a second request hide in the body
    let res = raw(&gh, &pki, b"POST /plain/a HTTP/1.1\r\nhost: localhost\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /plain/smuggled HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").await;
    assert!(
        res.starts_with("HTTP/1.1 400") || res.starts_with("HTTP/1.1 200"),
        "{res}"
    );
    // conflicting Content-Length values
    let res = raw(&gh, &pki, b"POST /plain/b HTTP/1.1\r\nhost: localhost\r\ncontent-length: 3\r\ncontent-length: 10\r\nconnection: close\r\n\r\nabc").await;
    assert!(res.starts_with("HTTP/1.1 400"), "{res}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let paths: Vec<String> = up
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert!(
        !paths.iter().any(|p| p.contains("smuggled")),
        "a smuggled request reached the upstream: {paths:?}"
    );
    assert!(!paths.iter().any(|p| p == "/plain/b"), "{paths:?}");
    // if the CL+TE request was accepted (the body read as chunked, RFC 9112 §6.1), what
    // reached the upstream must not carry both framings: that is what desyncs a backend
    for seen in up
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path == "/plain/a")
    {
        let both = seen.headers.contains_key("content-length")
            && seen.headers.contains_key("transfer-encoding");
        assert!(!both, "both framings forwarded: {:?}", seen.headers);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn odd_authorization_headers_get_rfc6750_answers() {
    let (pki, up, _auth, gh) = setup().await;
    // (request, status, whether the answer must carry the RFC 6750 challenge: a control
    // character is already refused by the HTTP parser, before any filter runs)
    let cases: [(&'static [u8], &str, bool); 5] = [
        (b"GET /api/x HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer a\r\nauthorization: Bearer b\r\nconnection: close\r\n\r\n", "400", true),
        (b"GET /api/x HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer caf\xc3\xa9\r\nconnection: close\r\n\r\n", "400", true),
        (b"GET /api/x HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer a\x01b\r\nconnection: close\r\n\r\n", "400", false),
        (b"GET /api/x HTTP/1.1\r\nhost: localhost\r\nAUTHORIZATION: bearer   unknown-token\r\nconnection: close\r\n\r\n", "401", true),
        (b"GET /api/x HTTP/1.1\r\nhost: localhost\r\nauthorization: Digest x\r\nconnection: close\r\n\r\n", "400", true),
    ];
    for (req, status, challenge) in cases {
        let res = raw(&gh, &pki, req).await;
        assert!(
            res.starts_with(&format!("HTTP/1.1 {status}")),
            "case {:?}: {res}",
            String::from_utf8_lossy(&req[..60.min(req.len())]).replace("\r\n", " ")
        );
        if challenge {
            assert!(
                res.to_ascii_lowercase()
                    .contains("www-authenticate: bearer"),
                "{res}"
            );
        }
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn known_signing_keys_keep_working_when_the_jwks_endpoint_is_down() {
    let (pki, up, auth, gh) = setup().await;
    let a = pki.client(Some(&pki.pki.partner_a));
    // a JWT access token from the AS (Curity-style application/jwt gives us one)
    let opaque = auth.token(&pki, &pki.pki.partner_a).await;
    assert_eq!(bearer_status(&a, gh.url("/api/x"), &opaque).await, 200);
    let jwt = up.last_bearer();
    assert_eq!(bearer_status(&a, gh.url("/jwt/x"), &jwt).await, 200);
    drop(auth); // the AS (and its JWKS endpoint) is gone
                // past jwks_min_refresh, so an unknown kid triggers a (failing) fetch
    gh.clock.advance(Duration::from_millis(1100));
    assert_eq!(
        bearer_status(&a, gh.url("/jwt/x"), &jwt).await,
        200,
        "cached keys still verify"
    );
    // a kid we have never seen cannot be fetched: 503, not 200
    let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    parts[0] = b64.encode(r#"{"alg":"ES256","typ":"at+jwt","kid":"rotated-key"}"#);
    let res = a
        .get(gh.url("/jwt/x"))
        .bearer_auth(parts.join("."))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(
        gh.metric("gatehouse_jwks_refreshes_total{authorization_server=\"dev\",result=\"error\"}")
            .await
            >= 1.0
    );
}
