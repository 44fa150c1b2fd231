//! Upstreams that fail: a dead peer costs at most one retry, a killed peer only its
//! in-flight requests, a peer that comes back gets traffic again after its health check,
//! names follow DNS, all peers down is a fast 502, and a request that was already sent is
//! sent again only when it is idempotent. Real servers on loopback, no sleeps where a
//! poll will do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_testkit::{free_port, json, DnsServer, Proxy, TestConfig, Upstream};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain-HTTP Gatehouse with these upstreams and routes (`server_extra`: more `server:`
/// keys, written `, key: value`).
fn config(threads: u32, server_extra: &str, upstreams: &str, routes: &str) -> String {
    let mut c = TestConfig::plain().threads(threads);
    let extra = server_extra.trim_start_matches(", ");
    if !extra.is_empty() {
        c = c.server(extra);
    }
    c.section(&format!("upstreams:\n{upstreams}"))
        .routes(routes)
        .build()
}

/// [`config`] with one route, everything to the upstream `pool`.
fn yaml(server_extra: &str, upstreams: &str) -> String {
    config(
        2,
        server_extra,
        upstreams,
        "  - { name: pool, match: { path_prefix: / }, upstream: pool }\n",
    )
}

fn dead_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Poll `cond` every 50 ms for up to `secs` seconds (a readiness poll: nothing is asserted
/// about how long it took).
async fn eventually<F, Fut>(secs: u64, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..secs * 20 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

async fn upstreams_view(gh: &Proxy) -> serde_json::Value {
    reqwest::get(format!("http://{}/upstreams", gh.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_peer_costs_one_retry_then_is_taken_out() {
    let a = Upstream::start().await;
    let dead = dead_addr();
    let y = yaml(
        "",
        "  pool: { peers: [\"${A}\", \"${DEAD}\"], connect_timeout: 1s }",
    );
    let gh = Proxy::start(&y, &[("A", a.addr.to_string()), ("DEAD", dead.clone())]).await;
    let c = reqwest::Client::new();
    for i in 0..20 {
        let res = c.get(gh.http_url(&format!("/x/{i}"))).send().await.unwrap();
        assert_eq!(res.status(), 200, "request {i}");
    }
    assert_eq!(a.count(), 20);
    // the dead peer was chosen once, its connection refused, the request retried on the
    // other peer; after that passive health kept it out
    assert_eq!(
        gh.metric("gatehouse_upstream_retries_total{reason=\"connect\",upstream=\"pool\"}")
            .await,
        1.0
    );
    assert_eq!(
        gh.metric("gatehouse_upstream_ejections_total{cause=\"passive\",upstream=\"pool\"}")
            .await,
        1.0
    );
    let up = format!(
        "gatehouse_upstream_peer_up{{peer=\"{}\",upstream=\"pool\"}}",
        a.addr
    );
    let down = format!("gatehouse_upstream_peer_up{{peer=\"{dead}\",upstream=\"pool\"}}");
    assert_eq!(gh.metric(&up).await, 1.0);
    eventually(5, "the dead peer's gauge reads 0", || async {
        gh.metrics().await.contains(&format!("{down} 0"))
    })
    .await;
    // the admin listener shows each peer and its state
    let view = upstreams_view(&gh).await;
    let peers = &view["upstreams"][0]["peers"];
    assert_eq!(peers[0]["addresses"][0]["state"], "up");
    assert_eq!(peers[1]["peer"], dead.as_str());
    assert_eq!(peers[1]["addresses"][0]["state"], "ejected");
}

#[tokio::test(flavor = "multi_thread")]
async fn all_peers_down_is_a_fast_502_and_gatehouse_stays_ready() {
    let (d1, d2) = (dead_addr(), dead_addr());
    let y = yaml(
        "",
        "  pool:
    peers: [\"${D1}\", \"${D2}\"]
    connect_timeout: 1s
    health_check: { type: tcp, interval: 100ms, timeout: 100ms }",
    );
    let gh = Proxy::start(&y, &[("D1", d1), ("D2", d2)]).await;
    let c = reqwest::Client::new();
    // before and after the health checks noticed: 502 with the JSON reason, never a hang
    let res = c.get(gh.http_url("/x")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(json(res).await["error"], "upstream_unavailable");
    eventually(10, "both peers fail their health checks", || async {
        gh.metric("gatehouse_upstream_ejections_total{cause=\"active\",upstream=\"pool\"}")
            .await
            >= 2.0
    })
    .await;
    let res = c.get(gh.http_url("/x")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(json(res).await["error"], "upstream_unavailable");
    assert!(
        gh.metric("gatehouse_upstream_errors_total{kind=\"no_healthy_peer\",route=\"pool\"}")
            .await
            >= 1.0
    );
    assert!(
        gh.metric("gatehouse_upstream_health_checks_total{result=\"failure\",upstream=\"pool\"}")
            .await
            >= 2.0
    );
    // Gatehouse itself is healthy: its upstream is not
    let ready = reqwest::get(format!("http://{}/readyz", gh.admin))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_peer_costs_at_most_the_requests_in_flight_and_comes_back() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    let b_addr = b.addr;
    let y = yaml(
        "",
        "  pool:
    peers: [\"${A}\", \"${B}\"]
    connect_timeout: 1s
    health_check: { type: tcp, interval: 200ms, timeout: 150ms }
    passive: { max_fails: 1, fail_timeout: 60s }",
    );
    let gh = Proxy::start(&y, &[("A", a.addr.to_string()), ("B", b_addr.to_string())]).await;
    let url = gh.http_url("/load");
    const WORKERS: usize = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..WORKERS {
        let (stop, failures, done, url) =
            (stop.clone(), failures.clone(), done.clone(), url.clone());
        load.push(tokio::spawn(async move {
            // one keep-alive client per worker: a sequential stream of requests
            let c = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => failures.lock().unwrap().push(r.status().to_string()),
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    eventually(10, "both peers serve", || async {
        a.count() > 20 && b.count() > 20
    })
    .await;
    // kill b: its listener and every connection it had
    drop(b);
    let after_kill = done.load(Ordering::Relaxed);
    eventually(10, "200 more requests after the kill", || async {
        done.load(Ordering::Relaxed) > after_kill + 200
    })
    .await;
    let failed = failures.lock().unwrap().clone();
    assert!(
        failed.len() <= WORKERS,
        "more failures than requests in flight: {failed:?}"
    );
    // b comes back on its address: the next passing health check brings it back, though
    // its passive ejection (60 s) would still run
    let b = Upstream::start_at(b_addr).await;
    eventually(10, "the revived peer gets traffic", || async {
        b.count() > 0
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert!(failures.lock().unwrap().len() <= WORKERS);
}

#[tokio::test(flavor = "multi_thread")]
async fn peers_by_name_follow_dns_and_keep_the_last_good_answer() {
    let dns = DnsServer::start().await;
    let one = Upstream::start().await;
    let port = one.addr.port();
    // the same port on a second loopback address: the name's answer decides
    let two = Upstream::start_at(SocketAddr::from(([127, 0, 0, 2], port))).await;
    dns.set("api.test.", &["127.0.0.1".parse().unwrap()]);
    let y = yaml(
        ", resolver: { nameservers: [\"${DNS}\"], timeout: 500ms }",
        "  pool: { peers: [\"api.test:${PORT}\"], resolve_interval: 1s, connect_timeout: 1s }",
    );
    let gh = Proxy::start(
        &y,
        &[("DNS", dns.addr.to_string()), ("PORT", port.to_string())],
    )
    .await;
    let c = reqwest::Client::new();
    let get = || async { c.get(gh.http_url("/x")).send().await.unwrap().status() };
    assert_eq!(get().await, 200);
    assert_eq!((one.count(), two.count()), (1, 0));

    // the name moves: traffic follows within the interval
    dns.set("api.test.", &["127.0.0.2".parse().unwrap()]);
    eventually(10, "traffic follows the new address", || async {
        assert_eq!(get().await, 200);
        two.count() > 0
    })
    .await;
    let before = one.count();
    for _ in 0..10 {
        assert_eq!(get().await, 200);
    }
    assert_eq!(one.count(), before, "the old address gets no new requests");

    // the DNS server fails: the last good set stays, and the failure is counted
    dns.fail(true);
    eventually(10, "a failed resolution is counted", || async {
        gh.metric("gatehouse_upstream_resolutions_total{result=\"failed\",upstream=\"pool\"}")
            .await
            >= 1.0
    })
    .await;
    let before = two.count();
    for _ in 0..10 {
        assert_eq!(get().await, 200);
    }
    assert_eq!(two.count(), before + 10);
    let view = upstreams_view(&gh).await;
    let peer = &view["upstreams"][0]["peers"][0];
    assert!(peer["last_resolution_error"].is_string(), "{view}");
    assert_eq!(peer["addresses"][0]["address"], format!("127.0.0.2:{port}"));

    // a headless Service: one name, several addresses, each a peer
    dns.fail(false);
    dns.set(
        "api.test.",
        &["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()],
    );
    let (o, t) = (one.count(), two.count());
    eventually(10, "both addresses get traffic", || async {
        assert_eq!(get().await, 200);
        one.count() > o && two.count() > t
    })
    .await;
    assert!(
        gh.metric("gatehouse_upstream_resolutions_total{result=\"changed\",upstream=\"pool\"}")
            .await
            >= 2.0
    );
}

/// An upstream that answers the first request on each connection (keep-alive) and closes
/// the connection when a second one arrives on it, unanswered: a pooled connection the
/// upstream gave up on. Records every request line.
async fn closing_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let rec = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let rec = rec.clone();
            tokio::spawn(async move {
                for n in 0..2 {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // a request: its head, then Content-Length bytes of body
                    loop {
                        let Ok(k) = s.read(&mut chunk).await else {
                            return;
                        };
                        if k == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..k]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    let line = String::from_utf8_lossy(&buf)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    rec.lock().unwrap().push(line);
                    if n == 1 {
                        return; // closes, unanswered
                    }
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if s.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sent_request_goes_again_only_if_idempotent_and_allowed() {
    let (up, seen) = closing_upstream().await;
    let (strict_up, strict_seen) = closing_upstream().await;
    let y = config(
        1,
        "",
        "  pool: { peers: [\"${UP}\"] }
  strict: { peers: [\"${STRICT}\"], retry_idempotent: false }",
        "  - { name: strict, match: { path_prefix: /strict/ }, upstream: strict }
  - { name: pool, match: { path_prefix: / }, upstream: pool }
",
    );
    let gh = Proxy::start(
        &y,
        &[("UP", up.to_string()), ("STRICT", strict_up.to_string())],
    )
    .await;
    let c = reqwest::Client::new();
    // a GET on a fresh connection, which then waits in Gatehouse's pool
    assert_eq!(c.get(gh.http_url("/a")).send().await.unwrap().status(), 200);
    // a GET on that pooled connection, which the upstream closes: sent again on a new one
    assert_eq!(c.get(gh.http_url("/b")).send().await.unwrap().status(), 200);
    assert_eq!(
        *seen.lock().unwrap(),
        ["GET /a HTTP/1.1", "GET /b HTTP/1.1", "GET /b HTTP/1.1"]
    );
    assert_eq!(
        gh.metric(
            "gatehouse_upstream_retries_total{reason=\"reused_connection\",upstream=\"pool\"}"
        )
        .await,
        1.0
    );
    // a POST on the pooled connection (from the retried /b) that the upstream closes:
    // never sent twice
    let res = c
        .post(gh.http_url("/c"))
        .body("payment=1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(
        seen.lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("POST"))
            .count(),
        1
    );

    // retry_idempotent: false: not even a GET goes twice
    assert_eq!(
        c.get(gh.http_url("/strict/a"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(gh.http_url("/strict/b"))
            .send()
            .await
            .unwrap()
            .status(),
        502
    );
    assert_eq!(
        *strict_seen.lock().unwrap(),
        ["GET /strict/a HTTP/1.1", "GET /strict/b HTTP/1.1"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_health_checks_weights_and_consistent_hashing() {
    let (a, b, c3) = (
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    );
    let y = config(
        2,
        "",
        "  weighted:
    peers: [{ address: \"${A}\", weight: 3 }, \"${B}\"]
    health_check: { path: /healthz, host: api.internal, interval: 100ms, timeout: 100ms }
  picky:
    peers: [\"${C}\"]
    health_check: { path: /ready, expect_status: 204, interval: 100ms, timeout: 100ms }
  hashed:
    peers: [\"${A}\", \"${B}\", \"${C}\"]
    balance: consistent_hash
    hash_on: client_ip",
        "  - { name: weighted, match: { path_prefix: /w/ }, upstream: weighted }
  - { name: picky, match: { path_prefix: /p/ }, upstream: picky }
  - { name: hashed, match: { path_prefix: /h/ }, upstream: hashed }
",
    );
    let gh = Proxy::start(
        &y,
        &[
            ("A", a.addr.to_string()),
            ("B", b.addr.to_string()),
            ("C", c3.addr.to_string()),
        ],
    )
    .await;
    let c = reqwest::Client::new();
    // the HTTP check's request as configured; a peer answering 200 where 204 is expected
    // fails it and is taken out
    eventually(10, "the picky check fails", || async {
        gh.metric("gatehouse_upstream_ejections_total{cause=\"active\",upstream=\"picky\"}")
            .await
            >= 1.0
    })
    .await;
    let probe = a
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.path == "/healthz")
        .cloned()
        .expect("a health check reached the peer");
    assert_eq!(probe.headers["host"], "api.internal");
    assert_eq!(probe.headers["user-agent"], "gatehouse-health-check");
    let res = c.get(gh.http_url("/p/x")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(json(res).await["error"], "upstream_unavailable");
    assert_eq!(
        c3.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == "/p/x")
            .count(),
        0
    );

    // weights: 3 to 1, exactly, over a multiple of the weight sum
    let count = |u: &Upstream, prefix: &str| {
        u.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.starts_with(prefix))
            .count()
    };
    for _ in 0..40 {
        assert_eq!(
            c.get(gh.http_url("/w/x")).send().await.unwrap().status(),
            200
        );
    }
    assert_eq!((count(&a, "/w/"), count(&b, "/w/")), (30, 10));

    // consistent hashing: one client address, one peer, every time
    for _ in 0..30 {
        assert_eq!(
            c.get(gh.http_url("/h/x")).send().await.unwrap().status(),
            200
        );
    }
    let mut spread = [count(&a, "/h/"), count(&b, "/h/"), count(&c3, "/h/")];
    spread.sort();
    assert_eq!(spread, [0, 0, 30]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_times_out_is_taken_out_and_unchanged_pools_survive_a_reload() {
    let slow = Upstream::start_with_delay(Duration::from_secs(3)).await;
    let fast = Upstream::start().await;
    let y = |retries: u32| {
        yaml(
            "",
            &format!(
                "  pool: {{ peers: [\"${{SLOW}}\", \"${{FAST}}\"], read_timeout: 300ms, retries: {retries} }}"
            ),
        )
    };
    let gh = Proxy::start(
        &y(1),
        &[
            ("SLOW", slow.addr.to_string()),
            ("FAST", fast.addr.to_string()),
        ],
    )
    .await;
    let c = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(
            c.get(gh.http_url("/x"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    // the request sent to the slow peer timed out (sent: not retried), then the peer was
    // out: every other request went to the fast one
    assert_eq!(
        statuses.iter().filter(|s| **s == 504).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(fast.count(), 9);
    assert_eq!(
        gh.metric("gatehouse_upstream_ejections_total{cause=\"passive\",upstream=\"pool\"}")
            .await,
        1.0
    );
    let state =
        |v: serde_json::Value| v["upstreams"][0]["peers"][0]["addresses"][0]["state"].clone();
    assert_eq!(state(upstreams_view(&gh).await), "ejected");
    // a reload that leaves the upstream as it was keeps its pool and what it learned
    gh.reload_with(&y(1)).unwrap();
    assert_eq!(state(upstreams_view(&gh).await), "ejected");
    // a changed upstream starts afresh
    gh.reload_with(&y(2)).unwrap();
    assert_eq!(state(upstreams_view(&gh).await), "up");
}
