//! Operating Gatehouse: hot reload (under load, broken, certificates), SIGHUP/SIGTERM on the
//! real binary, readiness during drain, the JSON access log, and the metrics format.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_testkit::gatehouse_devauth::pki::CertSpec;
use gatehouse_testkit::{bearer_status, free_port, Proxy, TestConfig, TestPki, Upstream};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Two threads, a second of grace, the edge listener (certificates required), upstreams
/// `a` and `b`, and route `api` to `upstream` (plus `extra_route`).
fn config(upstream: &str, extra_route: &str) -> TestConfig {
    TestConfig::edge("required")
        .threads(2)
        .grace("1s")
        .section("upstreams:\n  a: { peers: [\"${UP_A}\"] }\n  b: { peers: [\"${UP_B}\"] }")
        .routes(&format!(
            "  - name: api
    match: {{ path_prefix: /api/ }}
    upstream: {upstream}
    filters:
      - kind: client_cert
{extra_route}"
        ))
}

fn yaml(upstream: &str, extra_route: &str) -> String {
    config(upstream, extra_route).build()
}

/// A test PKI, the two upstreams `yaml()` names, and the variables that fill it in.
async fn setup() -> (TestPki, Upstream, Upstream, [(&'static str, String); 3]) {
    let pki = TestPki::new();
    let (ua, ub) = (Upstream::start().await, Upstream::start().await);
    let vars = [
        ("CERT_DIR", pki.dir.display().to_string()),
        ("UP_A", ua.addr.to_string()),
        ("UP_B", ub.addr.to_string()),
    ];
    (pki, ua, ub, vars)
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_under_load_loses_no_request() {
    let (pki, ua, ub, vars) = setup().await;
    let gh = Proxy::start(&yaml("a", ""), &vars).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = pki.client(Some(&pki.pki.partner_a));
        let url = gh.url("/api/x");
        tasks.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            for _ in 0..150 {
                codes.push(
                    c.get(&url)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0),
                );
            }
            codes
        }));
    }
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        gh.reload_with(&yaml(if i % 2 == 0 { "b" } else { "a" }, ""))
            .unwrap();
    }
    let mut total = 0;
    for t in tasks {
        for code in t.await.unwrap() {
            assert_eq!(code, 200, "a request failed during reloads");
            total += 1;
        }
    }
    assert_eq!(total, 600);
    assert!(
        ua.count() > 0 && ub.count() > 0,
        "both configurations served: a={} b={}",
        ua.count(),
        ub.count()
    );
    assert_eq!(ua.count() + ub.count(), 600);
    assert_eq!(
        gh.metric("gatehouse_config_reloads_total{result=\"success\"}")
            .await,
        7.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_reload_changes_nothing() {
    let (pki, ua, ub, vars) = setup().await;
    let gh = Proxy::start(&yaml("a", ""), &vars).await;
    let before = gh.metrics().await;
    let hash = before
        .lines()
        .find(|l| l.starts_with("gatehouse_config_info"))
        .unwrap()
        .to_owned();

    let typo = yaml("b", "").replace("upstream: b", "upstrem: b");
    let errors = gh.reload_with(&typo).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("routes[0]") && e.contains("upstrem")),
        "{errors:?}"
    );
    let missing_cert = yaml("b", "").replace("server.pem", "nope.pem");
    assert!(gh.reload_with(&missing_cert).is_err());
    let moved = yaml("b", "").replace("\"${PROXY_ADDR}\"", "\"127.0.0.2:1\"");
    let errors = gh.reload_with(&moved).unwrap_err();
    assert!(errors[0].contains("cannot change on reload"), "{errors:?}");

    let c = pki.client(Some(&pki.pki.partner_a));
    assert_eq!(c.get(gh.url("/api/x")).send().await.unwrap().status(), 200);
    assert_eq!(
        (ua.count(), ub.count()),
        (1, 0),
        "still the old configuration"
    );
    let after = gh.metrics().await;
    assert!(after.contains(&hash), "config hash unchanged");
    assert_eq!(
        gh.metric("gatehouse_config_reloads_total{result=\"failure\"}")
            .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_replaces_the_server_certificate_and_trust() {
    let (pki, _ua, _ub, vars) = setup().await;
    let gh = Proxy::start(&yaml("a", ""), &vars).await;
    let (addr, root) = (gh.addr, pki.pki.root.clone());
    let first = tokio::task::spawn_blocking(move || gatehouse_testkit::peer_cert(addr, &root))
        .await
        .unwrap();
    let advertised =
        |addr: std::net::SocketAddr| tokio::task::spawn_blocking(move || advertised_ca_names(addr));
    assert_eq!(advertised(addr).await.unwrap(), 1, "one trusted root");
    // rotate the server certificate, and trust a second root for clients
    let rotated = pki.issue(&CertSpec::localhost(), None);
    pki.save("server", &rotated);
    let other = TestPki::new();
    let bundle = [
        pki.pki.root.cert_pem().unwrap(),
        other.pki.root.cert_pem().unwrap(),
    ]
    .concat();
    std::fs::write(pki.path("root-ca.pem"), bundle).unwrap();
    gh.reload_with(&yaml("a", "")).unwrap();
    let root = pki.pki.root.clone();
    let second = tokio::task::spawn_blocking(move || gatehouse_testkit::peer_cert(addr, &root))
        .await
        .unwrap();
    assert_ne!(first.to_der().unwrap(), second.to_der().unwrap());
    assert_eq!(second.to_der().unwrap(), rotated.der());
    // the expiry metric follows the certificate in use
    let not_after = |c: &openssl::x509::X509Ref| {
        let d = openssl::asn1::Asn1Time::from_unix(0)
            .unwrap()
            .diff(c.not_after())
            .unwrap();
        f64::from(d.days) * 86_400.0 + f64::from(d.secs)
    };
    assert_eq!(
        gh.metric("gatehouse_tls_server_cert_expiry_timestamp_seconds{listener=\"edge\"}")
            .await,
        not_after(&second)
    );
    // the CertificateRequest names both roots now: clients that pick their certificate by
    // the advertised names (browsers, Java, .NET) find the new one
    assert_eq!(advertised(addr).await.unwrap(), 2);
    // a client of the newly trusted root is accepted on a new connection
    let res = pki
        .client(Some(&other.pki.partner_a))
        .get(gh.url("/api/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// How many CA names the server's CertificateRequest carries (`openssl s_client`'s
/// "Acceptable client certificate CA names").
fn advertised_ca_names(addr: std::net::SocketAddr) -> usize {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .expect("openssl CLI");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .skip_while(|l| !l.starts_with("Acceptable client certificate CA names"))
        .skip(1)
        .take_while(|l| {
            !l.starts_with("Requested")
                && !l.starts_with("Client Certificate")
                && !l.starts_with("---")
        })
        .count()
}

/// cert-manager renews the Secret and Kubernetes updates the mounted files in place: the
/// new certificate is served without a SIGHUP, and a broken file changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_certificate_file_is_picked_up_without_a_signal() {
    let (pki, _ua, _ub, vars) = setup().await;
    let y = config("a", "").server("file_watch_interval: 100ms").build();
    let gh = Proxy::start(&y, &vars).await;
    let addr = gh.addr;
    let served = |root: gatehouse_testkit::gatehouse_devauth::pki::Issued| async move {
        tokio::task::spawn_blocking(move || {
            gatehouse_testkit::peer_cert(addr, &root).to_der().unwrap()
        })
        .await
        .unwrap()
    };
    let rotated = pki.issue(&CertSpec::localhost(), None);
    pki.save("server", &rotated);
    let mut seen = false;
    for _ in 0..100 {
        if served(pki.pki.root.clone()).await == rotated.der() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the rotated certificate was never served");
    // a half-written rotation (a key that is not a key): rejected, the rotated one stays
    std::fs::write(pki.path("server.key"), "garbage").unwrap();
    let mut failed = false;
    for _ in 0..100 {
        if gh
            .metric("gatehouse_config_reloads_total{result=\"failure\"}")
            .await
            >= 1.0
        {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed, "the broken key never caused a (rejected) reload");
    assert_eq!(served(pki.pki.root.clone()).await, rotated.der());
    let c = pki.client(Some(&pki.pki.partner_a));
    assert_eq!(c.get(gh.url("/api/x")).send().await.unwrap().status(), 200);
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// `yaml(upstream, "")` with every address filled in, for the real binary.
fn render(
    pki: &TestPki,
    upstream: &str,
    a: &Upstream,
    b: &Upstream,
    port: u16,
    admin: u16,
) -> String {
    render_config(config(upstream, ""), pki, a, b, port, admin)
}

/// `config` with its variables filled in, for a `gatehouse run` of the real binary.
fn render_config(
    config: TestConfig,
    pki: &TestPki,
    a: &Upstream,
    b: &Upstream,
    port: u16,
    admin: u16,
) -> String {
    config
        .build()
        .replace("${CERT_DIR}", &pki.dir.display().to_string())
        .replace("${UP_A}", &a.addr.to_string())
        .replace("${UP_B}", &b.addr.to_string())
        .replace("${PROXY_ADDR}", &format!("127.0.0.1:{port}"))
        .replace("${ADMIN_ADDR}", &format!("127.0.0.1:{admin}"))
}

/// `/readyz`'s status on the admin port (0: no answer).
async fn readyz(admin: u16) -> u16 {
    reqwest::get(format!("http://127.0.0.1:{admin}/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// `render(pki, "a", ua, ua, port, admin)` written to `name` in the PKI directory; its path.
fn config_file(pki: &TestPki, name: &str, ua: &Upstream, port: u16, admin: u16) -> String {
    let file = pki.path(name);
    std::fs::write(&file, render(pki, "a", ua, ua, port, admin)).unwrap();
    file
}

/// Poll `/readyz` until it answers 200 (at most 10 s; the caller asserts what it needs).
async fn wait_ready(admin: u16) {
    for _ in 0..200 {
        if readyz(admin).await == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real binary: `gatehouse run -c FILE ARGS…`, killed when dropped.
fn spawn_gatehouse(file: &str, extra: &[&str], log: &str) -> Child {
    Child(
        Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["run", "-c", file])
            .args(extra)
            .env("GATEHOUSE_LOG", log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_reloads_on_sighup_logs_json_and_drains_on_sigterm() {
    let pki = TestPki::new();
    let (ua, ub) = (Upstream::start().await, Upstream::start().await);
    let (port, admin) = (free_port(), free_port());
    let log = pki.path("access.log");
    let config = |upstream: &str| {
        render_config(
            config(upstream, "").access_log(&log),
            &pki,
            &ua,
            &ub,
            port,
            admin,
        )
    };
    // the default drain_delay: /readyz must answer 503 (not be refused) after SIGTERM
    assert!(!config("a").contains("drain_delay"));
    let file = pki.path("gatehouse.yaml");
    std::fs::write(&file, config("a")).unwrap();
    let mut child = spawn_gatehouse(&file, &[], "warn");
    let pid = child.0.id();
    wait_ready(admin).await;
    assert_eq!(readyz(admin).await, 200);
    let url = format!("https://localhost:{port}/api/x");
    let c = pki.client(Some(&pki.pki.partner_a));
    assert_eq!(bearer_status(&c, &url, "secret-token-value").await, 200);
    assert_eq!(ua.count(), 1);

    // SIGHUP: the new file is read, the process keeps running
    std::fs::write(&file, config("b")).unwrap();
    signal(pid, "HUP");
    let mut switched = false;
    for _ in 0..100 {
        let fresh = pki.client(Some(&pki.pki.partner_a));
        fresh.get(&url).send().await.unwrap();
        if ub.count() > 0 {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(switched, "SIGHUP did not reload");

    // access log: one JSON object per request, no token
    let text = std::fs::read_to_string(&log).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    for field in [
        "time",
        "route",
        "method",
        "path",
        "status",
        "duration_s",
        "upstream",
        "cert_subject",
        "cert_sha256",
    ] {
        assert!(
            first.get(field).is_some(),
            "access log lacks {field}: {first}"
        );
    }
    assert_eq!(first["route"], "api");
    assert_eq!(first["status"], 200);
    assert_eq!(first["cert_subject"], "CN=partner-a, O=partner-a Ltd");
    assert!(!text.contains("secret-token-value"));

    // SIGTERM: /readyz turns 503 while the proxy still serves during drain_delay
    signal(pid, "TERM");
    let mut not_ready = false;
    for _ in 0..20 {
        if readyz(admin).await == 503 {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(not_ready, "/readyz did not turn 503 on SIGTERM");
    let fresh = pki.client(Some(&pki.pki.partner_a));
    assert_eq!(
        fresh.get(&url).send().await.unwrap().status(),
        200,
        "still serving during the drain"
    );
    // the admin listener answers (503) through the drain, not only at its start: asked
    // every 100 ms for the first second of the 5 s default
    for _ in 0..10 {
        assert_eq!(readyz(admin).await, 503, "/readyz answers during the drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut exited = None;
    for _ in 0..300 {
        if let Some(status) = child.0.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        exited.is_some_and(|s| s.success()),
        "gatehouse did not exit cleanly after SIGTERM: {exited:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_upgrade_hands_the_listeners_to_a_new_process() {
    let pki = TestPki::new();
    let ua = Upstream::start().await;
    let (port, admin) = (free_port(), free_port());
    let sock = pki.path("upgrade.sock");
    let text = render_config(
        config("a", "").server(&format!("upgrade_sock: \"{sock}\"")),
        &pki,
        &ua,
        &ua,
        port,
        admin,
    );
    let file = pki.path("gatehouse.yaml");
    std::fs::write(&file, text).unwrap();
    let spawn = |extra: &[&str]| spawn_gatehouse(&file, extra, "warn");
    let mut old = spawn(&[]);
    wait_ready(admin).await;
    let url = format!("https://localhost:{port}/api/x");
    let get = || async {
        pki.client(Some(&pki.pki.partner_a))
            .get(&url)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(get().await, 200);

    // the new binary waits on the upgrade socket for the old one's listeners
    let mut new = spawn(&["--upgrade"]);
    for _ in 0..200 {
        if std::path::Path::new(&sock).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(std::path::Path::new(&sock).exists(), "no upgrade socket");
    signal(old.0.id(), "QUIT");
    let mut old_exit = None;
    for _ in 0..200 {
        if let Some(st) = old.0.try_wait().unwrap() {
            old_exit = Some(st);
            break;
        }
        // partners keep being served while the old process drains
        assert_eq!(get().await, 200, "a request failed during the upgrade");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(old_exit.is_some(), "the old process did not exit");
    // the same addresses are served by the new process alone: both shards' sockets (2
    // threads) were handed over; a socket left behind would take half of the new
    // connections and never answer (each get is a new client, a new connection)
    assert!(new.0.try_wait().unwrap().is_none(), "the new process died");
    for _ in 0..16 {
        assert_eq!(get().await, 200);
    }
    assert_eq!(readyz(admin).await, 200);
    assert!(ua.count() >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_gatehouse_on_taken_addresses_fails_to_start() {
    let pki = TestPki::new();
    let ua = Upstream::start().await;
    let (port, admin) = (free_port(), free_port());
    let file = config_file(&pki, "gatehouse.yaml", &ua, port, admin);
    let _first = spawn_gatehouse(&file, &[], "warn");
    wait_ready(admin).await;
    // the same proxy address (its shards listen with SO_REUSEPORT), another admin port
    let second = config_file(&pki, "second.yaml", &ua, port, free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["run", "-c", &second])
        .env("GATEHOUSE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    for _ in 0..200 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("a second Gatehouse started on 127.0.0.1:{port}, which another one serves");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    // the first one still has every connection
    for _ in 0..8 {
        let res = pki
            .client(Some(&pki.pki.partner_a))
            .get(format!("https://localhost:{port}/api/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_check() {
    let (pki, _ua, _ub, vars) = setup().await;
    let gh = Proxy::start(&yaml("a", ""), &vars).await;
    // before any request, the series with known label values are there at 0: an alert on
    // rate(...) sees 0, not "no data"
    let fresh = gh.metrics().await;
    for series in [
        "gatehouse_introspection_requests_total{result=\"timeout\"} 0",
        "gatehouse_introspection_requests_total{result=\"circuit_open\"} 0",
        "gatehouse_token_cache_total{result=\"stale\"} 0",
        "gatehouse_config_reloads_total{result=\"failure\"} 0",
        "gatehouse_rejections_total{filter=\"client_cert\",reason=\"unknown_ca\",route=\"api\"} 0",
        "gatehouse_rejections_total{filter=\"client_cert\",reason=\"identity_not_allowed\",route=\"api\"} 0",
    ] {
        assert!(fresh.contains(series), "{series} missing from:\n{fresh}");
    }
    // produce a few series of every kind
    let c = pki.client(Some(&pki.pki.partner_a));
    assert_eq!(c.get(gh.url("/api/x")).send().await.unwrap().status(), 200);
    assert_eq!(
        pki.client(None)
            .get(gh.url("/api/x"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        c.get(gh.url("/nothing")).send().await.unwrap().status(),
        404
    );
    let text = gh.metrics().await;
    if let Err(report) = gatehouse_testkit::promtool_check(&text) {
        panic!("promtool check metrics:\n{report}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_tls_handshakes_are_counted_by_reason() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = TestPki::new();
    let ua = Upstream::start().await;
    let (port, admin) = (free_port(), free_port());
    let file = config_file(&pki, "gatehouse.yaml", &ua, port, admin);
    // the log is off: the handshake failures are counted whatever the log level
    let _child = spawn_gatehouse(&file, &[], "off");
    let metrics = || async {
        reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.trim().parse().ok()))
            .unwrap_or(0.0)
    };
    for _ in 0..200 {
        if metrics().await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // plain HTTP on the TLS port, twice
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    }
    // a client that hangs up in the middle of the handshake
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x40]).await.unwrap();
    drop(s);
    // a completed handshake for comparison
    let ok = pki
        .client(Some(&pki.pki.partner_a))
        .get(format!("https://localhost:{port}/api/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    let mut text = String::new();
    for _ in 0..100 {
        text = metrics().await.unwrap_or_default();
        if value(
            &text,
            "gatehouse_tls_handshake_failures_total{reason=\"not_tls\"}",
        ) >= 2.0
            && text
                .matches("gatehouse_tls_handshake_failures_total{")
                .count()
                >= 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        value(
            &text,
            "gatehouse_tls_handshake_failures_total{reason=\"not_tls\"}"
        ),
        2.0,
        "{text}"
    );
    let failures: f64 = text
        .lines()
        .filter(|l| l.starts_with("gatehouse_tls_handshake_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(failures, 3.0, "{text}");
    let completed: f64 = text
        .lines()
        .filter(|l| l.starts_with("gatehouse_tls_handshakes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(completed, 1.0, "{text}");
}
