//! The walking skeleton, end to end over real TLS: listener client-certificate modes,
//! routing, upstream failures, header spoofing, h2, the admin listener and `check`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_testkit::gatehouse_devauth::pki::CertSpec;
use gatehouse_testkit::{json, Proxy, TestConfig, TestPki, Upstream};
use std::time::Duration;

/// The edge listener in `mode`, the three upstreams, `routes`.
fn config(mode: &str, routes: &str) -> TestConfig {
    TestConfig::edge(mode)
        .section(
            "upstreams:
  app: { peers: [\"${UP}\"], connect_timeout: 1s, read_timeout: 1s }
  other: { peers: [\"${UP2}\"] }
  dead: { peers: [\"${DEAD}\"], connect_timeout: 1s }",
        )
        .routes(routes)
}

const DEFAULT_ROUTES: &str = "  - { name: api, match: { path_prefix: /api/ }, upstream: app }\n";

async fn start(pki: &TestPki, mode: &str, routes: &str, up: &Upstream, up2: &Upstream) -> Proxy {
    start_with_threads(pki, mode, routes, up, up2, 1).await
}

async fn start_with_threads(
    pki: &TestPki,
    mode: &str,
    routes: &str,
    up: &Upstream,
    up2: &Upstream,
    threads: usize,
) -> Proxy {
    start_yaml(pki, &config(mode, routes).threads(threads).build(), up, up2).await
}

async fn start_yaml(pki: &TestPki, yaml: &str, up: &Upstream, up2: &Upstream) -> Proxy {
    let vars = [
        ("CERT_DIR", pki.dir.display().to_string()),
        ("UP", up.addr.to_string()),
        ("UP2", up2.addr.to_string()),
        (
            "DEAD",
            format!("127.0.0.1:{}", gatehouse_testkit::free_port()),
        ),
    ];
    Proxy::start(yaml, &vars).await
}

#[tokio::test(flavor = "multi_thread")]
async fn required_mode_rejects_missing_and_untrusted_certs_with_403_and_reason() {
    let pki = TestPki::new();
    let (up, up2) = (Upstream::start().await, Upstream::start().await);
    let gh = start(&pki, "required", DEFAULT_ROUTES, &up, &up2).await;

    let res = pki.client(None).get(gh.url("/api/x")).send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.headers()["content-type"], "application/json");
    let body = json(res).await;
    assert_eq!(body["error"], "client_certificate_required");
    assert!(body["error_description"].is_string());

    // a certificate from a CA Gatehouse does not trust
    let other = TestPki::new();
    let res = pki
        .client(Some(&other.pki.partner_a))
        .get(gh.url("/api/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(json(res).await["error"], "unknown_ca");

    // a self-signed leaf
    let selfsigned =
        gatehouse_testkit::gatehouse_devauth::pki::issue(&CertSpec::client("mallory"), None)
            .unwrap();
    let res = pki
        .client(Some(&selfsigned))
        .get(gh.url("/api/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(json(res).await["error"], "unknown_ca");
    assert_eq!(up.count(), 0, "no rejected request may reach the upstream");

    let res = pki
        .client(Some(&pki.pki.partner_a))
        .get(gh.url("/api/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(up.count(), 1);
    assert_eq!(up.last().unwrap().path, "/api/x");

    assert_eq!(
        gh.metric("gatehouse_client_cert_rejections_total{reason=\"unknown_ca\",route=\"api\"}")
            .await,
        2.0
    );
    assert_eq!(
        gh.metric(
            "gatehouse_requests_total{outcome=\"allowed\",route=\"api\",status_class=\"2xx\"}"
        )
        .await,
        1.0
    );
    // the TLS layer saw the bad certificate too, by reason; every handshake that started
    // also completed here (none was aborted)
    assert!(
        gh.metric(
            "gatehouse_tls_client_cert_failures_total{listener=\"edge\",reason=\"unknown_ca\"}"
        )
        .await
            >= 1.0
    );
    let started = gh
        .metric("gatehouse_tls_handshakes_started_total{listener=\"edge\"}")
        .await;
    let mut completed = 0.0;
    for state in ["verified", "failed", "none"] {
        completed += gh
            .metric(&format!(
                "gatehouse_tls_handshakes_total{{client_cert=\"{state}\",listener=\"edge\"}}"
            ))
            .await;
    }
    assert!(started >= 3.0, "{started}");
    assert_eq!(started, completed);
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_and_not_yet_valid_certs_get_their_reason() {
    let pki = TestPki::new();
    let (up, up2) = (Upstream::start().await, Upstream::start().await);
    let gh = start(&pki, "required", DEFAULT_ROUTES, &up, &up2).await;
    let expired = pki.issue(
        &CertSpec {
            not_before_offset: -10 * 86400,
            not_after_offset: -86400,
            ..CertSpec::client("old")
        },
        None,
    );
    let future = pki.issue(
        &CertSpec {
            not_before_offset: 86400,
            not_after_offset: 10 * 86400,
            ..CertSpec::client("new")
        },
        None,
    );
    for (cert, reason) in [
        (&expired, "certificate_expired"),
        (&future, "certificate_not_yet_valid"),
    ] {
        let res = pki
            .client(Some(cert))
            .get(gh.url("/api/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        assert_eq!(json(res).await["error"], reason);
        let series =
            format!("gatehouse_client_cert_rejections_total{{reason=\"{reason}\",route=\"api\"}}");
        assert_eq!(gh.metric(&series).await, 1.0, "{series}");
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn optional_mode_passes_without_cert_but_rejects_a_bad_one() {
    let pki = TestPki::new();
    let (up, up2) = (Upstream::start().await, Upstream::start().await);
    let gh = start(&pki, "optional", DEFAULT_ROUTES, &up, &up2).await;
    let res = pki.client(None).get(gh.url("/api/x")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let other = TestPki::new();
    let res = pki
        .client(Some(&other.pki.partner_a))
        .get(gh.url("/api/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(json(res).await["error"], "unknown_ca");
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn off_mode_does_not_ask_for_a_certificate() {
    let pki = TestPki::new();
    let (up, up2) = (Upstream::start().await, Upstream::start().await);
    let gh = start(&pki, "off", DEFAULT_ROUTES, &up, &up2).await;
    // even a certificate from an unknown CA is not requested, hence not judged
    let other = TestPki::new();
    let res = pki
        .client(Some(&other.pki.partner_a))
        .get(gh.url("/api/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(up.last().unwrap().headers.get("client-cert").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_by_host_and_longest_path_prefix() {
    let pki = TestPki::new();
    let (up, up2) = (Upstream::start().await, Upstream::start().await);
    let routes = "  - { name: api, match: { path_prefix: /api/ }, upstream: app }
  - { name: api-v2, match: { path_prefix: /api/v2/ }, upstream: other }
  - { name: partner-host, match: { host: partner.example, path_prefix: /api/ }, upstream: other }
";
    let gh = start(&pki, "required", routes, &up, &up2).await;
    let c = pki.client(Some(&pki.pki.partner_a));
    assert_eq!(
        c.get(gh.url("/api/v1/x")).send().await.unwrap().status(),
        200
    );
    assert_eq!((up.count(), up2.count()), (1, 0));
    assert_eq!(
        c.get(gh.url("/api/v2/x")).send().await.unwrap().status(),
        200
    );
    assert_eq!((up.count(), up2.count()), (1, 1));
    // the port is ignored, and host names match without regard to case (RFC 9110 §4.2.3)
    for (n, host) in [(2, "partner.example:443"), (3, "Partner.EXAMPLE")] {
        let res = c
            .get(gh.url("/api/v1/x"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{host}");
        assert_eq!((up.count(), up2.count()), (1, n), "{host}");
    }
    let res = c.get(gh.url("/nothing/here")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(json(res).await["error"], "no_route");
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_upstream_is_502_and_slow_upstream_is_504_with_json() {
    let pki = TestPki::new();
    let slow = Upstream::start_with_delay(Duration::from_secs(5)).await;
    let up2 = Upstream::start().await;
    let routes = "  - { name: dead, match: { path_prefix: /dead/ }, upstream: dead }
  - { name: slow, match: { path_prefix: /slow/ }, upstream: app }
";
    let gh = start(&pki, "required", routes, &slow, &up2).await;
    let c = pki.client(Some(&pki.pki.partner_a));
    let res = c.get(gh.url("/dead/x")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(json(res).await["error"], "upstream_unavailable");
    let res = c.get(gh.url("/slow/x")).send().await.unwrap();
    assert_eq!(res.status(), 504);
    assert_eq!(json(res).await["error"], "upstream_timeout");
    assert_eq!(
        gh.metric("gatehouse_upstream_errors_total{kind=\"connect\",route=\"dead\"}")
            .await,
        1.0
    );
    assert_eq!(
        gh.metric("gatehouse_upstream_errors_total{kind=\"timeout\",route=\"slow\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_supplied_gatehouse_headers_never_reach_the_upstream() {
    let pki = TestPki::new();
    let (up, up2) = (Upstream::start().await, Upstream::start().await);
    let gh = start(&pki, "required", DEFAULT_ROUTES, &up, &up2).await;
    let res = pki
        .client(Some(&pki.pki.partner_a))
        .get(gh.url("/api/x"))
        .header("client-cert", ":Zm9yZ2Vk:")
        .header("client-cert-chain", ":Zm9yZ2Vk:")
        .header("x-forwarded-client-cert", "Hash=00;Subject=\"CN=admin\"")
        .header("x-ssl-client-cert", "forged")
        .header("x-forwarded-for", "10.9.9.9")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = up.last().unwrap().headers;
    for h in [
        "client-cert",
        "client-cert-chain",
        "x-forwarded-client-cert",
        "x-ssl-client-cert",
    ] {
        assert!(
            seen.get(h).is_none(),
            "{h} was forwarded: {:?}",
            seen.get(h)
        );
    }
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread")]
async fn h2_via_alpn_and_admin_endpoints() {
    let pki = TestPki::new();
    let (up, up2) = (Upstream::start().await, Upstream::start().await);
    let gh = start(&pki, "required", DEFAULT_ROUTES, &up, &up2).await;
    let root = reqwest::Certificate::from_pem(&pki.pki.root.cert_pem().unwrap()).unwrap();
    let c = &pki.pki.partner_b;
    let id =
        reqwest::Identity::from_pkcs8_pem(&c.chain_pem().unwrap(), &c.key_pem().unwrap()).unwrap();
    let h2 = reqwest::Client::builder()
        .add_root_certificate(root)
        .identity(id)
        .build()
        .unwrap();
    let res = h2.get(gh.url("/api/h2")).send().await.unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    let res = h2
        .get(gh.url("/api/h2"))
        .header("client-cert", ":eA==:")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(up.last().unwrap().headers.get("client-cert").is_none());

    let health = reqwest::get(format!("http://{}/healthz", gh.admin))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("http://{}/readyz", gh.admin))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = gh.metrics().await;
    assert!(metrics.contains("# TYPE gatehouse_request_duration_seconds histogram"));
    assert!(metrics.contains("gatehouse_config_info{sha256=\""));
    assert!(metrics
        .contains("gatehouse_tls_handshakes_total{client_cert=\"verified\",listener=\"edge\"}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_listener_round_robin_and_verified_tls_upstream() {
    let pki = TestPki::new();
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    // an HTTPS upstream whose certificate (localhost, from the test PKI) is verified
    // against the CA file the config names
    let secure = Upstream::start_tls(&pki.pki.server).await;
    let yaml = "version: 1
server: { threads: 2, grace_period: 0s, shutdown_timeout: 0s }
admin: { listen: \"${ADMIN_ADDR}\" }
log: { access_log: off }
listeners:
  - name: plain
    listen: \"${PROXY_ADDR}\"
upstreams:
  pool: { peers: [\"${A}\", \"${B}\"] }
  secure:
    peers: [\"${S}\"]
    tls: { sni: localhost, ca_file: \"${CERT_DIR}/root-ca.pem\" }
  untrusted:
    peers: [\"${S}\"]
    tls: { sni: localhost }
routes:
  - { name: pool, match: { path_prefix: /pool/ }, upstream: pool }
  - { name: secure, match: { path_prefix: /secure/ }, upstream: secure }
  - { name: untrusted, match: { path_prefix: /untrusted/ }, upstream: untrusted }
";
    let vars = [
        ("CERT_DIR", pki.dir.display().to_string()),
        ("A", a.addr.to_string()),
        ("B", b.addr.to_string()),
        ("S", secure.addr.to_string()),
    ];
    let gh = Proxy::start(yaml, &vars).await;
    let c = reqwest::Client::new();
    // plain HTTP listener; the pool's two peers take turns
    for _ in 0..6 {
        let res = c.get(gh.http_url("/pool/x")).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!((a.count(), b.count()), (3, 3));
    // on plain HTTP Gatehouse says so upstream
    assert_eq!(a.last().unwrap().headers["x-forwarded-proto"], "http");

    // TLS to the upstream, certificate verified with the configured CA
    let res = c.get(gh.http_url("/secure/x")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(secure.count(), 1);
    // without that CA the same upstream's certificate is not trusted: 502, not a request
    let res = c.get(gh.http_url("/untrusted/x")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(json(res).await["error"], "upstream_unavailable");
    assert_eq!(secure.count(), 1);
}

/// One connection's view from `openssl s_client`.
#[derive(Debug)]
struct Conn {
    resumed: bool,
    status: String,
    /// The server sent a TLS 1.3 NewSessionTicket.
    ticket: bool,
}

/// `openssl s_client` with partner-a (leaf + intermediate): one request on a fresh
/// connection (saving the TLS 1.3 session ticket), then `resumptions` requests, each on a
/// new connection that tries to resume it.
fn connections_with_resumption(port: u16, pki: &TestPki, resumptions: usize) -> Vec<Conn> {
    let sess = pki.path("resume.sess");
    let _ = std::fs::remove_file(&sess);
    let mut out = vec![s_client(port, pki, None, Some(&sess))];
    for _ in 0..resumptions {
        // (no file: the server issued no ticket, there is nothing to offer)
        let offer = std::path::Path::new(&sess)
            .exists()
            .then_some(sess.as_str());
        out.push(s_client(port, pki, offer, None));
    }
    out
}

/// One request with `openssl s_client` as partner-a (leaf + intermediate), offering the
/// session in `sess_in` and saving the one it ends with to `sess_out`.
fn s_client(port: u16, pki: &TestPki, sess_in: Option<&str>, sess_out: Option<&str>) -> Conn {
    let a = &pki.pki.partner_a;
    let (leaf, chain, key) = (
        pki.path("resume-leaf.pem"),
        pki.path("resume-chain.pem"),
        pki.path("resume.key"),
    );
    std::fs::write(&leaf, a.cert.to_pem().unwrap()).unwrap();
    let chain_pem: Vec<u8> = a.chain.iter().flat_map(|c| c.to_pem().unwrap()).collect();
    std::fs::write(&chain, chain_pem).unwrap();
    std::fs::write(&key, a.key_pem().unwrap()).unwrap();
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "localhost", "-tls1_3", "-ign_eof"])
        .args(["-CAfile", &pki.path("root-ca.pem")])
        .args(["-cert", &leaf, "-cert_chain", &chain, "-key", &key]);
    if let Some(f) = sess_in {
        cmd.args(["-sess_in", f]);
    }
    if let Some(f) = sess_out {
        cmd.args(["-sess_out", f]);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl CLI");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
    }
    let text = String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).to_string();
    let resumed = text.lines().any(|l| l.starts_with("Reused, TLSv1.3"));
    // s_client interleaves its session dump with the response: find the status line
    let status = text
        .lines()
        .find_map(|l| l.find("HTTP/1.1 ").map(|i| l[i..].trim_end().to_owned()))
        .unwrap_or_default();
    let ticket = text.contains("New Session Ticket arrived");
    Conn {
        resumed,
        status,
        ticket,
    }
}

/// Two replicas given the same `session_ticket_key_files` (one Kubernetes Secret): a
/// partner resumes on either. Rotation by reload: a new key first, the old one second →
/// old tickets still resume; the old key removed → they no longer do (a full handshake,
/// still served). A key file of the wrong size is refused with its name.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_sharing_ticket_key_files_resume_each_others_sessions_and_rotate() {
    let pki = TestPki::new();
    let (up, up2) = (Upstream::start().await, Upstream::start().await);
    let key = |name: &str| {
        let path = pki.path(name);
        let mut b = [0u8; 80];
        openssl::rand::rand_bytes(&mut b).unwrap();
        std::fs::write(&path, b).unwrap();
        path
    };
    let (old, new) = (key("ticket-old.key"), key("ticket-new.key"));
    let with_keys = |files: &[&str]| {
        config("required", DEFAULT_ROUTES)
            .tls(&format!("session_ticket_key_files: [{}]", files.join(", ")))
            .build()
    };
    let a = start_yaml(&pki, &with_keys(&[&old]), &up, &up2).await;
    let b = start_yaml(&pki, &with_keys(&[&old]), &up, &up2).await;
    let (pa, pb) = (a.addr.port(), b.addr.port());
    let sess = pki.path("replica.sess");
    let pki = std::sync::Arc::new(pki);
    let run = |port: u16, sess_in: Option<String>, sess_out: Option<String>| {
        let pki = pki.clone();
        tokio::task::spawn_blocking(move || {
            s_client(port, &pki, sess_in.as_deref(), sess_out.as_deref())
        })
    };
    let first = run(pa, None, Some(sess.clone())).await.unwrap();
    assert!(first.ticket && !first.resumed, "{first:?}");
    let on_b = run(pb, Some(sess.clone()), None).await.unwrap();
    assert!(
        on_b.resumed,
        "a ticket from replica a resumes on b: {on_b:?}"
    );
    assert_eq!(on_b.status, "HTTP/1.1 200 OK");

    // rotate on b: the new key encrypts, the old one still decrypts
    b.reload_with(&with_keys(&[&new, &old])).unwrap();
    let rotated = run(pb, Some(sess.clone()), None).await.unwrap();
    assert!(rotated.resumed, "old ticket, second key: {rotated:?}");
    // the old key gone: the old ticket means a full handshake, still answered
    b.reload_with(&with_keys(&[&new])).unwrap();
    let gone = run(pb, Some(sess.clone()), None).await.unwrap();
    assert!(!gone.resumed, "{gone:?}");
    assert_eq!(gone.status, "HTTP/1.1 200 OK");
    // a ticket issued under the new key resumes on b, not on a (which never had it)
    let fresh = run(pb, None, Some(sess.clone())).await.unwrap();
    assert!(fresh.ticket, "{fresh:?}");
    assert!(run(pb, Some(sess.clone()), None).await.unwrap().resumed);
    assert!(!run(pa, Some(sess.clone()), None).await.unwrap().resumed);

    // a key file of the wrong size: the reload is refused, naming the file
    let short = pki.path("ticket-short.key");
    std::fs::write(&short, [0u8; 32]).unwrap();
    let errors = b.reload_with(&with_keys(&[&short])).unwrap_err().join("\n");
    assert!(
        errors.contains("ticket-short.key") && errors.contains("80"),
        "{errors}"
    );
}

/// Sockets listening on `port` (IPv4), from the kernel's own table.
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "0A"
        })
        .count()
}

/// With 2 threads the listener runs one shard per thread, each with its own socket and
/// OpenSSL context; the kernel spreads connections over them. A session ticket from one
/// shard must resume on either, and the chain table must serve both.
#[tokio::test(flavor = "multi_thread")]
async fn resumed_sessions_keep_the_verified_certificate_with_its_intermediate() {
    let pki = TestPki::new();
    let (up, up2) = (Upstream::start().await, Upstream::start().await);
    let gh = start_with_threads(&pki, "required", DEFAULT_ROUTES, &up, &up2, 2).await;
    let port = gh.addr.port();
    assert_eq!(listening_sockets(port), 2, "one listening socket per shard");
    const RESUMPTIONS: usize = 8;
    let (_pki, rounds) = tokio::task::spawn_blocking(move || {
        let rounds = connections_with_resumption(port, &pki, RESUMPTIONS);
        (pki, rounds)
    })
    .await
    .unwrap();
    assert!(!rounds[0].resumed, "first connection is a full handshake");
    assert!(rounds[0].ticket, "a ticket was issued: {rounds:?}");
    assert_eq!(rounds[0].status, "HTTP/1.1 200 OK", "{rounds:?}");
    // with per-shard ticket keys, all 8 would land on the issuing shard 1 time in 256
    for (i, r) in rounds.iter().enumerate().skip(1) {
        assert!(r.resumed, "connection {i} resumed the session: {rounds:?}");
        assert_eq!(r.status, "HTTP/1.1 200 OK", "{rounds:?}");
    }
    assert_eq!(up.count(), 1 + RESUMPTIONS);
}

/// `session_resumption: false`: no ticket is issued (none could be redeemed), so every
/// connection is a full handshake.
#[tokio::test(flavor = "multi_thread")]
async fn without_resumption_no_ticket_is_issued_and_every_handshake_is_full() {
    let pki = TestPki::new();
    let (up, up2) = (Upstream::start().await, Upstream::start().await);
    let yaml = config("required", DEFAULT_ROUTES)
        .tls("session_resumption: false")
        .threads(2)
        .build();
    let gh = start_yaml(&pki, &yaml, &up, &up2).await;
    let port = gh.addr.port();
    let (_pki, rounds) = tokio::task::spawn_blocking(move || {
        let rounds = connections_with_resumption(port, &pki, 2);
        (pki, rounds)
    })
    .await
    .unwrap();
    for r in &rounds {
        assert!(!r.resumed, "{rounds:?}");
        assert!(!r.ticket, "{rounds:?}");
        assert_eq!(r.status, "HTTP/1.1 200 OK", "{rounds:?}");
    }
    assert_eq!(up.count(), 3);
}
