//! Request integrity, tried as an attacker would: raw HTTP/1.1 over mTLS to the real
//! Gatehouse, in front of a raw upstream that records the bytes it receives. Every test
//! asserts what the upstream got (or that it got nothing), not only the status.
//!
//! The routes: `/admin/` and the host `secure.example` are strict (a `client_cert` filter
//! no test certificate satisfies: 403); everything else is open, with a catch-all `/`, so
//! a request that walks around a strict route shows up at the upstream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_testkit::{raw_tls, Proxy, RawUpstream, TestConfig, TestPki};

const STRICT: &str = "filters: [ { kind: client_cert, identities: [ { common_name: nobody } ] } ]";

/// The edge listener (certificates optional), the access log at `${ACCESS_LOG}`, the two
/// raw upstreams and the routes the tests aim at; `server` adds a `server:` key.
fn yaml(server: Option<&str>) -> String {
    let mut c = TestConfig::edge("optional").access_log("\"${ACCESS_LOG}\"");
    if let Some(kv) = server {
        c = c.server(kv);
    }
    c.section(
        "upstreams:
  raw: { peers: [\"${UP}\"], connect_timeout: 1s, read_timeout: 2s }
  switching: { peers: [\"${UP101}\"], connect_timeout: 1s, read_timeout: 2s }",
    )
    .routes(&format!(
        "  - {{ name: admin, match: {{ path_prefix: /admin/ }}, upstream: raw, {STRICT} }}
  - {{ name: secure, match: {{ host: secure.example }}, upstream: raw, {STRICT} }}
  - {{ name: public, match: {{ path_prefix: /public/ }}, upstream: raw }}
  - {{ name: files, match: {{ path_prefix: /files/ }}, upstream: raw, forward_raw_path: true }}
  - {{ name: ws, match: {{ path_prefix: /ws/ }}, upstream: raw, websocket: true }}
  - {{ name: fwd, match: {{ path_prefix: /fwd/ }}, upstream: raw, forwarded_headers: set }}
  - {{ name: evil101, match: {{ path_prefix: /evil101/ }}, upstream: switching }}
  - {{ name: root, match: {{ path_prefix: / }}, upstream: raw }}"
    ))
    .build()
}

struct Bench {
    pki: TestPki,
    up: RawUpstream,
    _up101: RawUpstream,
    gh: Proxy,
    access_log: std::path::PathBuf,
}

const SWITCHING: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";

async fn bench_with(server: Option<&str>) -> Bench {
    let pki = TestPki::new();
    let up = RawUpstream::start().await;
    let up101 = RawUpstream::answering(SWITCHING).await;
    let access_log = pki.dir.join("access.log");
    let vars = [
        ("CERT_DIR", pki.dir.display().to_string()),
        ("UP", up.addr.to_string()),
        ("UP101", up101.addr.to_string()),
        ("ACCESS_LOG", access_log.display().to_string()),
    ];
    let gh = Proxy::start(&yaml(server), &vars).await;
    Bench {
        pki,
        up,
        _up101: up101,
        gh,
        access_log,
    }
}

async fn bench() -> Bench {
    bench_with(None).await
}

impl Bench {
    /// Sends `request` as written over mTLS (partner-a) and returns the raw response.
    async fn send(&self, request: &str) -> String {
        let (addr, root, cert) = (
            self.gh.addr,
            self.pki.pki.root.clone(),
            self.pki.pki.partner_a.clone(),
        );
        let request = request.as_bytes().to_vec();
        tokio::task::spawn_blocking(move || raw_tls(addr, &root, Some(&cert), &request))
            .await
            .unwrap()
    }

    /// `GET target` with `Host: localhost` and `Connection: close`.
    async fn get(&self, target: &str) -> String {
        self.send(&format!(
            "GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        ))
        .await
    }
}

fn status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The metric series of refusals before any route was chosen.
fn refused(filter: &str, reason: &str) -> String {
    format!("gatehouse_rejections_total{{filter=\"{filter}\",reason=\"{reason}\",route=\"none\"}}")
}

fn body(resp: &str) -> serde_json::Value {
    let (_, b) = resp.split_once("\r\n\r\n").unwrap_or(("", ""));
    serde_json::from_str(b).unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_segments_encodings_slashes_and_case_reach_the_route_the_upstream_would_resolve() {
    let b = bench().await;
    for target in [
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/public/%2E%2e/admin/x",
        "/x/./../admin/x",
        "//admin/x",
        "/%61dmin/x",
        "/ADMIN/x",
        "/public/.%2e/admin/x",
    ] {
        let resp = b.get(target).await;
        assert_eq!(status(&resp), 403, "{target}: {resp}");
    }
    assert_eq!(
        b.up.connections().len(),
        0,
        "nothing may reach the upstream"
    );

    // what is routed is what is forwarded
    let resp = b.get("/public/a/./b/../c//d%7e?q=%2F%2e").await;
    assert_eq!(status(&resp), 200, "{resp}");
    let got = b.up.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].request_line, "GET /public/a/c/d~?q=%2F%2e HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread")]
async fn targets_that_cannot_be_normalised_safely_get_400_invalid_request() {
    let b = bench().await;
    for (target, reason) in [
        ("/public/a%2fb", "encoded_slash"),
        ("/public/a%5Cb", "encoded_slash"),
        ("/public/a%00", "encoded_nul"),
        ("/public/%zz", "invalid_percent_encoding"),
        ("/public/..;/admin/x", "dot_segment_parameters"),
        ("admin/x", "invalid_target"),
        ("*", "invalid_target"),
    ] {
        let resp = b.get(target).await;
        assert_eq!(status(&resp), 400, "{target}: {resp}");
        assert_eq!(body(&resp)["error"], "invalid_request", "{target}");
        let series = refused("request", reason);
        assert!(b.gh.metric(&series).await >= 1.0, "{series}");
    }
    assert_eq!(b.up.connections().len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raw_path_route_forwards_the_bytes_it_matched() {
    let b = bench().await;
    let resp = b.get("/files/a%2Fb/%2e%2e/c").await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(
        b.up.requests()[0].request_line,
        "GET /files/a%2Fb/%2e%2e/c HTTP/1.1"
    );
    // a path that resolves into it is its own (forwarded as received), never another
    // route's request forwarded as a path the upstream resolves into /files/
    let resp = b.get("/admin/../files/x").await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(
        b.up.requests()[1].request_line,
        "GET /admin/../files/x HTTP/1.1"
    );
    // and a dot segment does not lead out of it
    let resp = b.get("/files/../admin/x").await;
    assert_eq!(status(&resp), 403, "{resp}");
    assert_eq!(b.up.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn merge_slashes_can_be_turned_off() {
    let b = bench_with(Some("merge_slashes: false")).await;
    let resp = b.get("/public//x").await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(b.up.requests()[0].request_line, "GET /public//x HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_is_one_host_for_the_router_and_the_upstream() {
    let b = bench().await;
    // HTTP/1.1 without Host, with and without an absolute-form target (RFC 9112 §3.2)
    for req in [
        "GET http://secure.example/x HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /public/x HTTP/1.1\r\nConnection: close\r\n\r\n",
    ] {
        let resp = b.send(req).await;
        assert_eq!(status(&resp), 400, "{req}: {resp}");
        assert_eq!(body(&resp)["error"], "invalid_request");
    }
    // the absolute-form authority, a mixed-case Host, a trailing dot: the strict host route
    for req in [
        "GET http://secure.example/x HTTP/1.1\r\nHost: secure.example\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: SECURE.Example\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: secure.example.:8443\r\nConnection: close\r\n\r\n",
    ] {
        let resp = b.send(req).await;
        assert_eq!(status(&resp), 403, "{req}: {resp}");
    }
    // a Host that disagrees with the target
    let resp = b
        .send("GET http://secure.example/x HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status(&resp), 400, "{resp}");
    // a Host that is not a host
    let resp = b
        .send("GET /public/x HTTP/1.1\r\nHost: a/b\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status(&resp), 400, "{resp}");
    assert_eq!(b.up.connections().len(), 0);

    // what the upstream gets: origin-form and the canonical Host, once
    let resp = b
        .send("GET http://Other.Example./public/x?y HTTP/1.1\r\nHost: Other.Example.\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status(&resp), 200, "{resp}");
    let got = &b.up.requests()[0];
    assert_eq!(got.request_line, "GET /public/x?y HTTP/1.1");
    assert_eq!(got.one("host"), Some("other.example"));

    // HTTP/1.0 may omit Host: no host for the router, none for the upstream
    let resp = b.send("GET /public/y HTTP/1.0\r\n\r\n").await;
    assert_eq!(status(&resp), 200, "{resp}");
    let got = &b.up.requests()[1];
    assert_eq!(got.request_line, "GET /public/y HTTP/1.1");
    assert_eq!(got.one("host"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn content_length_reaches_the_upstream_as_one_canonical_value() {
    let b = bench().await;
    for cl in [
        "Content-Length: 5, 5",
        "Content-Length: 5\r\nContent-Length: 5",
        "Content-Length: 005",
    ] {
        let resp = b
            .send(&format!(
                "POST /public/x HTTP/1.1\r\nHost: localhost\r\n{cl}\r\nConnection: close\r\n\r\nhello"
            ))
            .await;
        assert_eq!(status(&resp), 200, "{cl}: {resp}");
    }
    let got = b.up.requests();
    assert_eq!(got.len(), 3, "{:?}", b.up.received());
    for r in &got {
        assert_eq!(r.one("content-length"), Some("5"), "{}", b.up.received());
        assert_eq!(r.body, b"hello");
    }
    // values that differ are refused before anything is forwarded
    let resp = b
        .send("POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5, 6\r\nConnection: close\r\n\r\nhello!")
        .await;
    assert_eq!(status(&resp), 400, "{resp}");
    assert_eq!(b.up.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn cl_te_and_te_cl_send_one_chunked_request_and_close() {
    let b = bench().await;
    let smuggled = "GET /admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n";
    // CL.TE: Content-Length covers only the last chunk; TE.CL: it covers less than the body
    for req in [
        format!(
            "POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}"
        ),
    ] {
        let resp = b.send(&req).await;
        assert_eq!(status(&resp), 200, "{req}: {resp}");
        assert!(
            resp.to_ascii_lowercase().contains("connection: close"),
            "{resp}"
        );
        assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "one answer: {resp}");
    }
    let got = b.up.requests();
    assert_eq!(got.len(), 2, "{}", b.up.received());
    for r in &got {
        assert_eq!(r.request_line, "POST /public/x HTTP/1.1");
        assert_eq!(r.all("content-length").len(), 0);
        assert_eq!(r.one("transfer-encoding"), Some("chunked"));
    }
    assert!(!b.up.received().contains("/admin/"));
}

#[tokio::test(flavor = "multi_thread")]
async fn obfuscated_framing_and_malformed_headers_are_refused() {
    let b = bench().await;
    for (what, req) in [
        ("te not chunked", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
        ("te chunked not last", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
        ("space before colon", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        ("te on http/1.0", "POST /public/x HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("obs-fold", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n b\r\n\r\n"),
        ("bare CR in a value", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A: a\rX-B: b\r\n\r\n"),
        ("two Hosts", "GET /public/x HTTP/1.1\r\nHost: localhost\r\nHost: secure.example\r\n\r\n"),
        ("bad content-length", "POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: +5\r\n\r\nhello"),
    ] {
        let resp = b.send(req).await;
        assert_eq!(status(&resp), 400, "{what}: {resp}");
        assert_eq!(body(&resp)["error"], "invalid_request", "{what}: {resp}");
    }
    assert_eq!(b.up.connections().len(), 0, "{}", b.up.received());
    // each counted with the rule that refused it, and in the access log
    for (reason, n) in [
        ("invalid_transfer_encoding", 3.0),
        ("invalid_content_length", 1.0),
        ("invalid_host", 1.0),
        ("malformed_request", 3.0),
    ] {
        let series = refused("http", reason);
        assert_eq!(
            b.gh.metric(&series).await,
            n,
            "{series}\n{}",
            b.gh.metrics().await
        );
    }
    let log = std::fs::read_to_string(&b.access_log).unwrap();
    let refused: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["rejected_by"] == "http")
        .collect();
    assert_eq!(refused.len(), 8, "{log}");
    for e in &refused {
        assert_eq!((&e["status"], &e["route"]), (&400.into(), &"none".into()));
        // who sent it is known from the connection even when the request is not
        assert!(
            e["cert_subject"]
                .as_str()
                .is_some_and(|s| s.contains("partner-a")),
            "{e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bare_lf_requests_reach_the_upstream_with_crlf_only() {
    let b = bench().await;
    let resp = b
        .send("GET /public/x HTTP/1.1\nHost: localhost\nX-A: a\nConnection: close\n\n")
        .await;
    assert_eq!(status(&resp), 200, "{resp}");
    let got = &b.up.requests()[0];
    assert_eq!(got.request_line, "GET /public/x HTTP/1.1");
    assert_eq!(got.one("x-a"), Some("a"));
    let head = &got.head;
    for (i, &c) in head.iter().enumerate() {
        if c == b'\n' {
            assert!(i > 0 && head[i - 1] == b'\r', "bare LF forwarded");
        }
    }
}

/// Pingora's default, kept: the first of pipelined requests is answered, then the
/// connection closes and the client retries the rest (RFC 9112 §9.3.2). What was queued
/// behind it never reaches an upstream unrouted.
#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_get_one_answer_and_a_close() {
    let b = bench().await;
    let resp = b
        .send(
            "GET /public/a HTTP/1.1\r\nHost: localhost\r\n\r\n\
             GET /admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n\
             GET /public/b HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
        .await;
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{resp}");
    assert_eq!(status(&resp), 200, "{resp}");
    let lines: Vec<String> =
        b.up.requests()
            .into_iter()
            .map(|r| r.request_line)
            .collect();
    assert_eq!(lines, ["GET /public/a HTTP/1.1"], "{}", b.up.received());
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_are_stripped_or_set_by_gatehouse() {
    let b = bench().await;
    let spoof = "Forwarded: for=1.2.3.4;host=evil\r\nX-Real-IP: 1.2.3.4\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Port: 1\r\nX-Forwarded-Prefix: /evil\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: http\r\n";
    for path in ["/public/x", "/fwd/x"] {
        let resp = b
            .send(&format!(
                "GET {path} HTTP/1.1\r\nHost: api.example:8443\r\n{spoof}Connection: close\r\n\r\n"
            ))
            .await;
        assert_eq!(status(&resp), 200, "{resp}");
    }
    let got = b.up.requests();
    let (stripped, set) = (&got[0], &got[1]);
    for h in [
        "forwarded",
        "x-real-ip",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
    ] {
        assert_eq!(stripped.one(h), None, "{h}");
    }
    for r in [stripped, set] {
        assert_eq!(r.one("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(r.one("x-forwarded-proto"), Some("https"));
    }
    assert_eq!(
        set.one("forwarded"),
        Some("for=127.0.0.1;proto=https;host=\"api.example:8443\"")
    );
    assert_eq!(set.one("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(set.one("x-forwarded-host"), Some("api.example:8443"));
    let port = b.gh.addr.port().to_string();
    assert_eq!(set.one("x-forwarded-port"), Some(port.as_str()));
    assert_eq!(set.one("x-forwarded-prefix"), None);
    // nominating a forwarding header for removal is refused; nominating one Gatehouse sets
    // removes only the client's copy
    let resp = b
        .send(
            "GET /fwd/x HTTP/1.1\r\nHost: localhost\r\nConnection: close, X-Forwarded-For\r\n\r\n",
        )
        .await;
    assert_eq!(status(&resp), 400, "{resp}");
    let resp = b
        .send("GET /fwd/y HTTP/1.1\r\nHost: localhost\r\nX-Real-IP: 6.6.6.6\r\nConnection: close, X-Real-IP\r\n\r\n")
        .await;
    assert_eq!(status(&resp), 200, "{resp}");
    let got = b.up.requests();
    assert_eq!(got.len(), 3, "{}", b.up.received());
    assert_eq!(got[2].one("x-real-ip"), Some("127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrades_pass_only_on_routes_that_allow_websocket() {
    let b = bench().await;
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade, close\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let resp = b
        .send(&format!(
            "GET /public/x HTTP/1.1\r\nHost: localhost\r\n{upgrade}\r\n"
        ))
        .await;
    assert_eq!(status(&resp), 200, "{resp}");
    let resp = b
        .send(&format!(
            "GET /ws/x HTTP/1.1\r\nHost: localhost\r\n{upgrade}\r\n"
        ))
        .await;
    assert_eq!(status(&resp), 200, "{resp}");
    let got = b.up.requests();
    assert_eq!(got[0].one("upgrade"), None, "{}", b.up.received());
    assert_eq!(got[0].one("connection"), None);
    assert_eq!(got[1].one("upgrade"), Some("websocket"));
    // h2c smuggling: no route forwards a non-WebSocket upgrade
    let resp = b
        .send("GET /ws/y HTTP/1.1\r\nHost: localhost\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\r\n")
        .await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(b.up.requests()[2].one("upgrade"), None);
    // an upstream that switches protocols unasked is refused, not piped
    let resp = b
        .send(&format!(
            "GET /evil101/x HTTP/1.1\r\nHost: localhost\r\n{upgrade}\r\n"
        ))
        .await;
    assert_eq!(status(&resp), 502, "{resp}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_json_logged_and_counted() {
    let b = bench().await;
    let resp = b.get("/public/a%2fb").await;
    assert_eq!(status(&resp), 400, "{resp}");
    assert!(resp.contains("content-type: application/json"), "{resp}");
    let log = std::fs::read_to_string(&b.access_log).unwrap_or_default();
    let line = log
        .lines()
        .find(|l| l.contains("encoded_slash"))
        .unwrap_or_else(|| panic!("no access-log line: {log}"));
    let entry: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(entry["status"], 400);
}
