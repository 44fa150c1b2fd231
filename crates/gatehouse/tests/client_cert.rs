//! The `client_cert` filter over real TLS: one route per identity field (the right
//! certificate passes, a near miss does not), EKU, weak keys, chains, CRLs and CRL reload.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_testkit::gatehouse_devauth::pki::{CertSpec, KeyKind};
use gatehouse_testkit::{json, Proxy, TestConfig, TestPki, Upstream};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The edge listener (certificates optional, chains up to 3 deep), one upstream, `routes`.
fn config(routes: &str) -> TestConfig {
    TestConfig::edge("optional")
        .client_auth("max_depth: 3")
        .section("upstreams:\n  app: { peers: [\"${UP}\"] }")
        .routes(routes)
}

fn base(routes: &str) -> String {
    config(routes).build()
}

fn route(name: &str, filter: &str) -> String {
    format!("  - name: {name}\n    match: {{ path_prefix: /{name}/ }}\n    upstream: app\n    filters:\n      - kind: client_cert\n{filter}\n")
}

fn hex(b: &[u8], sep: &str) -> String {
    b.iter()
        .map(|x| format!("{x:02X}"))
        .collect::<Vec<_>>()
        .join(sep)
}

/// GET `path` on a new connection presenting `cert` (verdicts are memoized per connection).
async fn get_fresh(
    pki: &TestPki,
    gh: &Proxy,
    cert: &gatehouse_testkit::gatehouse_devauth::pki::Issued,
    path: &str,
) -> reqwest::Response {
    pki.client(Some(cert))
        .get(gh.url(path))
        .send()
        .await
        .unwrap()
}

async fn start(pki: &TestPki, up: &Upstream, routes: &str) -> Proxy {
    let vars = [
        ("CERT_DIR", pki.dir.display().to_string()),
        ("UP", up.addr.to_string()),
    ];
    Proxy::start(&base(routes), &vars).await
}

#[tokio::test(flavor = "multi_thread")]
async fn each_identity_field_accepts_the_right_cert_and_rejects_a_near_miss() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let a = &pki.pki.partner_a;
    let der = a.der();
    let serial = a
        .cert
        .serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string();
    let issuer_sha = Sha256::digest(pki.pki.intermediate.der());
    // near misses: partner-b, or a cert that differs from partner-a in one character / case
    let partner_a_upper = pki.issue(
        &CertSpec {
            organization: Some("partner-a Ltd".into()),
            ..CertSpec::client("Partner-a")
        },
        None,
    );
    let spiffe_dev = pki.issue(
        &CertSpec {
            uris: vec!["spiffe://partner-a.example/ns/dev/sa/billing".into()],
            dns: vec!["api.partner-b.example".into()],
            ..CertSpec::client("partner-a")
        },
        None,
    );
    let other_root = TestPki::new();
    let other_issuer = pki.issue(&CertSpec::client("partner-a"), Some(&pki.pki.root));
    let fields: Vec<(
        &str,
        String,
        &gatehouse_testkit::gatehouse_devauth::pki::Issued,
    )> = vec![
        (
            "sha256",
            format!("thumbprint_sha256: \"{}\"", hex(&Sha256::digest(&der), ":")),
            &pki.pki.partner_b,
        ),
        (
            "sha1",
            format!(
                "thumbprint_sha1: \"{}\"",
                hex(&Sha1::digest(&der), "").to_lowercase()
            ),
            &pki.pki.partner_b,
        ),
        (
            "serial",
            format!("serial: \"{serial}\""),
            &pki.pki.partner_b,
        ),
        (
            "subject",
            "subject: \"o=partner-a Ltd, cn=partner-a\"".into(),
            &partner_a_upper,
        ),
        ("cn", "common_name: partner-a".into(), &partner_a_upper),
        (
            "issuer",
            "issuer_subject: \"CN=Gatehouse Dev Intermediate CA, O=Gatehouse Dev\"".into(),
            &other_issuer,
        ),
        (
            "issuersha",
            format!("issuer_thumbprint_sha256: \"{}\"", hex(&issuer_sha, "")),
            &other_issuer,
        ),
        (
            "dns",
            "san_dns: \"*.partner-a.example\"".into(),
            &spiffe_dev,
        ),
        (
            "uri",
            "san_uri: \"spiffe://partner-a.example/ns/prod/*\"".into(),
            &spiffe_dev,
        ),
    ];
    let mut routes = String::new();
    for (name, id, _) in &fields {
        routes.push_str(&route(name, &format!("        identities: [ {{ {id} }} ]")));
    }
    let email = pki.issue(
        &CertSpec {
            emails: vec!["ops@partner-a.example".into()],
            ..CertSpec::client("mailer")
        },
        None,
    );
    let email_miss = pki.issue(
        &CertSpec {
            emails: vec!["ops@partner-a.exampla".into()],
            ..CertSpec::client("mailer")
        },
        None,
    );
    routes.push_str(&route(
        "email",
        "        identities: [ { san_email: ops@partner-a.example } ]",
    ));
    let gh = start(&pki, &up, &routes).await;
    let ok = pki.client(Some(a));
    for (name, _, miss) in &fields {
        let res = ok.get(gh.url(&format!("/{name}/x"))).send().await.unwrap();
        assert_eq!(res.status(), 200, "{name}: the right certificate");
        let res = pki
            .client(Some(miss))
            .get(gh.url(&format!("/{name}/x")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{name}: near miss");
        assert_eq!(json(res).await["error"], "identity_not_allowed", "{name}");
    }
    assert_eq!(
        pki.client(Some(&email))
            .get(gh.url("/email/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        pki.client(Some(&email_miss))
            .get(gh.url("/email/x"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    // a certificate from another PKI never gets as far as identity matching
    let res = pki
        .client(Some(&other_root.pki.partner_a))
        .get(gh.url("/cn/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(json(res).await["error"], "unknown_ca");
    assert_eq!(gh.metric("gatehouse_client_cert_rejections_total{reason=\"identity_not_allowed\",route=\"sha256\"}").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn eku_weak_keys_chains_and_optional_mode() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let routes = [
        route("eku", ""),
        route("weak", "        min_rsa_bits: 2048"),
        route("short", "        max_depth: 0"),
        route("opt", "        mode: optional"),
        route("noeku", "        require_eku_client_auth: false"),
    ]
    .concat();
    let gh = start(&pki, &up, &routes).await;
    let server_only = pki.issue(
        &CertSpec {
            client_auth: false,
            server_auth: true,
            ..CertSpec::client("svc")
        },
        None,
    );
    let no_eku = pki.issue(
        &CertSpec {
            client_auth: false,
            ..CertSpec::client("signer")
        },
        None,
    );
    let res = pki
        .client(Some(&server_only))
        .get(gh.url("/eku/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(json(res).await["error"], "wrong_key_usage");
    let res = pki
        .client(Some(&no_eku))
        .get(gh.url("/eku/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(json(res).await["error"], "wrong_key_usage");
    assert_eq!(
        pki.client(Some(&server_only))
            .get(gh.url("/noeku/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let rsa1024 = pki.issue(
        &CertSpec {
            key: KeyKind::Rsa(1024),
            ..CertSpec::client("legacy")
        },
        None,
    );
    let rsa2048 = pki.issue(
        &CertSpec {
            key: KeyKind::Rsa(2048),
            ..CertSpec::client("modern")
        },
        None,
    );
    // TLS libraries refuse to present a 1024-bit key at their default security level
    let (addr, root) = (gh.addr, pki.pki.root.clone());
    let raw = tokio::task::spawn_blocking(move || {
        gatehouse_testkit::raw_tls(
            addr,
            &root,
            Some(&rsa1024),
            b"GET /weak/x HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");
    assert!(raw.contains("\"error\":\"weak_key\""), "{raw}");
    assert_eq!(
        pki.client(Some(&rsa2048))
            .get(gh.url("/weak/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // partner-a sits under one intermediate: fine with the listener's depth, too long for 0
    assert_eq!(
        pki.client(Some(&pki.pki.partner_a))
            .get(gh.url("/eku/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let res = pki
        .client(Some(&pki.pki.partner_a))
        .get(gh.url("/short/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(json(res).await["error"], "chain_too_long");

    // a leaf signed by a non-CA certificate (partner-b is CA:FALSE)
    let evil = pki.issue(&CertSpec::client("evil"), Some(&pki.pki.partner_b));
    let res = pki
        .client(Some(&evil))
        .get(gh.url("/eku/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(json(res).await["error"], "invalid_ca");

    // missing intermediate: the client sends only its leaf
    let mut leaf_only = pki.pki.partner_a.clone();
    leaf_only.chain.clear();
    let res = pki
        .client(Some(&leaf_only))
        .get(gh.url("/eku/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(json(res).await["error"], "unknown_ca");

    assert_eq!(
        pki.client(None)
            .get(gh.url("/opt/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let res = pki.client(None).get(gh.url("/eku/x")).send().await.unwrap();
    assert_eq!(json(res).await["error"], "client_certificate_required");

    // every refusal above was counted under its route and reason
    for (route, reason) in [
        ("eku", "wrong_key_usage"),
        ("weak", "weak_key"),
        ("short", "chain_too_long"),
        ("eku", "invalid_ca"),
        ("eku", "unknown_ca"),
        ("eku", "client_certificate_required"),
    ] {
        let series = format!(
            "gatehouse_client_cert_rejections_total{{reason=\"{reason}\",route=\"{route}\"}}"
        );
        assert!(gh.metric(&series).await >= 1.0, "{series}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_certificates_and_crl_reload() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    // CRLs for the whole chain: the intermediate's (leaves) and the root's (the intermediate)
    let inter_crl = pki.crl("inter.crl", &pki.pki.intermediate, &[&pki.pki.partner_b]);
    let root_crl = pki.crl("root.crl", &pki.pki.root, &[]);
    // the root revokes the intermediate; the intermediate's own CRL is not configured
    let root_revokes_inter = pki.crl("root-revokes.crl", &pki.pki.root, &[&pki.pki.intermediate]);
    let routes = [
        route("hard", &format!("        revocation: {{ mode: hard, crl_files: [\"{inter_crl}\", \"{root_crl}\"] }}")),
        route("soft", &format!("        revocation: {{ mode: soft, crl_files: [\"{inter_crl}\"] }}")),
        route("softroot", &format!("        revocation: {{ mode: soft, crl_files: [\"{root_revokes_inter}\"] }}")),
        route("hardpartial", &format!("        revocation: {{ mode: hard, crl_files: [\"{inter_crl}\"] }}")),
    ]
    .concat();
    let gh = start(&pki, &up, &routes).await;
    let a = pki.client(Some(&pki.pki.partner_a));
    let b = pki.client(Some(&pki.pki.partner_b));
    assert_eq!(a.get(gh.url("/hard/x")).send().await.unwrap().status(), 200);
    let res = b.get(gh.url("/hard/x")).send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(json(res).await["error"], "certificate_revoked");
    // soft: the root's CRL is missing, which passes (counted); a revoked leaf still fails
    assert_eq!(a.get(gh.url("/soft/x")).send().await.unwrap().status(), 200);
    assert!(
        gh.metric("gatehouse_crl_updates_total{result=\"unknown_soft_pass\",source=\"check\"}")
            .await
            >= 1.0
    );
    assert_eq!(
        json(b.get(gh.url("/soft/x")).send().await.unwrap()).await["error"],
        "certificate_revoked"
    );
    // soft with the leaf's CRL missing still applies the CRLs it has: the revoked
    // intermediate revokes every leaf under it
    assert_eq!(
        json(a.get(gh.url("/softroot/x")).send().await.unwrap()).await["error"],
        "certificate_revoked"
    );
    // hard with a CRL missing for part of the chain fails closed
    assert_eq!(
        json(a.get(gh.url("/hardpartial/x")).send().await.unwrap()).await["error"],
        "revocation_unknown"
    );

    // revoke partner-a too: the CRL file changes, the filter reloads it (it looks at most
    // every 2 s: the clock moves on instead of the test waiting)
    pki.crl(
        "inter.crl",
        &pki.pki.intermediate,
        &[&pki.pki.partner_b, &pki.pki.partner_a],
    );
    gh.clock.advance(std::time::Duration::from_secs(2));
    let mut revoked = false;
    for _ in 0..40 {
        // new connection each time (the verdict is memoized per connection)
        let fresh = pki.client(Some(&pki.pki.partner_a));
        if fresh.get(gh.url("/hard/x")).send().await.unwrap().status() == 403 {
            revoked = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(revoked, "the reloaded CRL revokes partner-a");
    assert!(
        gh.metric("gatehouse_crl_updates_total{result=\"reloaded\",source=\"file\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_trust_reload_forgets_the_certificates_it_had_verified() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let routes = route("any", "");
    let gh = start(&pki, &up, &routes).await;
    // verified twice on two fresh connections: the second full handshake reuses the
    // listener's memo of the first verification
    for _ in 0..2 {
        assert_eq!(
            get_fresh(&pki, &gh, &pki.pki.partner_a, "/any/x")
                .await
                .status(),
            200
        );
    }
    // the listener now trusts another root only: the same certificate must be verified
    // again, against the new store, and fail
    let other = TestPki::new();
    let yaml = config(&routes)
        .client_ca(&other.path("root-ca.pem"))
        .build();
    gh.reload_with(&yaml).unwrap();
    let res = get_fresh(&pki, &gh, &pki.pki.partner_a, "/any/x").await;
    assert_eq!(res.status(), 403);
    assert_eq!(json(res).await["error"], "unknown_ca");
    // and the old root back: accepted again
    gh.reload_with(&base(&routes)).unwrap();
    assert_eq!(
        get_fresh(&pki, &gh, &pki.pki.partner_a, "/any/x")
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn route_trust_adds_a_ca_and_clock_skew_relaxes_the_leaf_dates() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    // a second, independent CA that only the /other/ route trusts
    let other_root =
        gatehouse_testkit::gatehouse_devauth::pki::issue(&CertSpec::ca("Other Root"), None)
            .unwrap();
    let other_ca = pki.path("other-root.pem");
    std::fs::write(&other_ca, other_root.cert_pem().unwrap()).unwrap();
    let other_partner = pki.issue(&CertSpec::client("other-partner"), Some(&other_root));
    // expired 60 s ago: inside a 5 min skew, outside none
    let just_expired = pki.issue(
        &CertSpec {
            not_before_offset: -86400,
            not_after_offset: -60,
            ..CertSpec::client("just-expired")
        },
        None,
    );
    let routes = [
        route("plain", ""),
        route(
            "other",
            &format!(
                "        ca_files: [\"{other_ca}\"]\n        forward: {{ format: rfc9440, chain: true }}"
            ),
        ),
        route("skew", "        clock_skew: 5m"),
    ]
    .concat();
    let gh = start(&pki, &up, &routes).await;
    let get = |cert, path| get_fresh(&pki, &gh, cert, path);
    // the route-specific bundle accepts its own CA's partner; the listener's routes do not
    assert_eq!(get(&other_partner, "/other/x").await.status(), 200);
    // RFC 9440 Client-Cert-Chain: the chain this route validated with (its own anchor;
    // the listener's verification of this certificate failed)
    use base64::Engine;
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let seen = up.last().unwrap();
    let chain: Vec<_> = seen.headers.get_all("client-cert-chain").iter().collect();
    assert_eq!(chain, [&format!(":{}:", b64(&other_root.der()))]);
    assert_eq!(
        json(get(&other_partner, "/plain/x").await).await["error"],
        "unknown_ca"
    );
    // and the route-specific bundle replaces the listener's: partner-a is unknown there
    assert_eq!(
        json(get(&pki.pki.partner_a, "/other/x").await).await["error"],
        "unknown_ca"
    );
    // clock skew applies to the route's verdict
    assert_eq!(get(&just_expired, "/skew/x").await.status(), 200);
    assert_eq!(
        json(get(&just_expired, "/plain/x").await).await["error"],
        "certificate_expired"
    );
    assert_eq!(up.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn crls_from_distribution_points_are_fetched_once_cached_and_enforced() {
    use gatehouse_testkit::gatehouse_devauth::serve::{bytes_response, handler, serve};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let pki = TestPki::new();
    let up = Upstream::start().await;
    // a CRL publisher on loopback, counting its requests
    let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let crl_addr = listener.local_addr().unwrap();
    let (f, h) = (files.clone(), hits.clone());
    let server = tokio::spawn(serve(
        listener,
        None,
        handler(move |req| {
            h.fetch_add(1, Ordering::SeqCst);
            let body = f.lock().unwrap().get(req.parts.uri.path()).cloned();
            async move {
                match body {
                    Some(b) => bytes_response(200, "application/pkix-crl", b),
                    None => bytes_response(404, "text/plain", Vec::new()),
                }
            }
        }),
    ));
    let with_dp = |cn: &str, path: &str| {
        pki.issue(
            &CertSpec {
                crl_dp: vec![format!("http://{crl_addr}{path}")],
                ..CertSpec::client(cn)
            },
            None,
        )
    };
    let good = with_dp("dp-good", "/inter.crl");
    let revoked = with_dp("dp-revoked", "/inter.crl");
    let unpublished = with_dp("dp-unpublished", "/missing.crl");
    let inter_crl = pki.crl("dp-inter.crl", &pki.pki.intermediate, &[&revoked]);
    files
        .lock()
        .unwrap()
        .insert("/inter.crl".into(), std::fs::read(&inter_crl).unwrap());
    // the intermediate has no distribution point: the root's CRL comes from a file
    let root_crl = pki.crl("dp-root.crl", &pki.pki.root, &[]);
    let routes = [
        route("hard", &format!("        revocation: {{ mode: hard, fetch_distribution_points: true, crl_files: [\"{root_crl}\"] }}")),
        route("soft", "        revocation: { mode: soft, fetch_distribution_points: true }"),
    ]
    .concat();
    let gh = start(&pki, &up, &routes).await;
    let get = |cert, path| get_fresh(&pki, &gh, cert, path);
    assert_eq!(get(&good, "/hard/x").await.status(), 200);
    assert_eq!(get(&good, "/hard/x").await.status(), 200);
    let res = get(&revoked, "/hard/x").await;
    assert_eq!(res.status(), 403);
    assert_eq!(json(res).await["error"], "certificate_revoked");
    // one fetch served every connection and both certificates
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // soft: the intermediate's own status is unknown (no root CRL) but the fetched CRL
    // still revokes
    assert_eq!(get(&good, "/soft/x").await.status(), 200);
    assert_eq!(
        json(get(&revoked, "/soft/x").await).await["error"],
        "certificate_revoked"
    );
    // a distribution point that serves nothing: hard fails closed, soft passes (counted)
    assert_eq!(
        json(get(&unpublished, "/hard/x").await).await["error"],
        "revocation_unknown"
    );
    assert_eq!(get(&unpublished, "/soft/x").await.status(), 200);
    assert_eq!(
        gh.metric("gatehouse_crl_updates_total{result=\"fetched\",source=\"distribution_point\"}")
            .await,
        2.0, // one per route policy (each has its own cache)
    );
    assert!(
        gh.metric("gatehouse_crl_updates_total{result=\"error\",source=\"distribution_point\"}")
            .await
            >= 1.0
    );
    assert_eq!(
        gh.metric(
            "gatehouse_client_cert_rejections_total{reason=\"certificate_revoked\",route=\"hard\"}"
        )
        .await,
        1.0
    );
    // 2 × good (hard) + good (soft) + unpublished (soft)
    assert_eq!(up.count(), 4);
    server.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_verified_certificate_is_forwarded_and_client_copies_never_are() {
    use base64::Engine;
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let routes = [
        route("rfc", "        forward: { format: rfc9440, chain: true }"),
        route("xfcc", "        forward: { format: xfcc }"),
        route(
            "pem",
            "        forward: { format: pem, header: X-Client-Pem }",
        ),
        route("none", ""),
    ]
    .concat();
    let gh = start(&pki, &up, &routes).await;
    let a = &pki.pki.partner_a;
    let c = pki.client(Some(a));
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let forged = |path: &str| {
        c.get(gh.url(path))
            .header("client-cert", ":Zm9yZ2Vk:")
            .header("client-cert-chain", ":Zm9yZ2Vk:")
            .header("x-forwarded-client-cert", "Hash=00;Subject=\"CN=admin\"")
            .header("x-ssl-client-cert", "forged")
            .send()
    };
    let one = |seen: &gatehouse_testkit::Seen, h: &str| -> Vec<String> {
        seen.headers
            .get_all(h)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };

    assert_eq!(forged("/rfc/x").await.unwrap().status(), 200);
    let seen = up.last().unwrap();
    assert_eq!(one(&seen, "client-cert"), [format!(":{}:", b64(&a.der()))]);
    // RFC 9440 §2.3: the chain used for validation (the client sent the intermediate; the
    // root is the trust anchor Gatehouse validated it with)
    let validation_chain = format!(
        ":{}:, :{}:",
        b64(&pki.pki.intermediate.der()),
        b64(&pki.pki.root.der())
    );
    assert_eq!(
        one(&seen, "client-cert-chain"),
        std::slice::from_ref(&validation_chain)
    );
    assert!(one(&seen, "x-forwarded-client-cert").is_empty());
    assert!(one(&seen, "x-ssl-client-cert").is_empty());
    // … not whatever else the client sent along
    let stray =
        gatehouse_testkit::gatehouse_devauth::pki::issue(&CertSpec::ca("Stray CA"), None).unwrap();
    let mut sent = a.chain_pem().unwrap();
    sent.extend(stray.cert_pem().unwrap());
    let id = reqwest::Identity::from_pkcs8_pem(&sent, &a.key_pem().unwrap()).unwrap();
    let padded = pki.client_builder(None).identity(id).build().unwrap();
    let res = padded.get(gh.url("/rfc/x")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        one(&up.last().unwrap(), "client-cert-chain"),
        [validation_chain]
    );

    assert_eq!(forged("/xfcc/x").await.unwrap().status(), 200);
    let seen = up.last().unwrap();
    let xfcc = one(&seen, "x-forwarded-client-cert");
    assert_eq!(xfcc.len(), 1, "{xfcc:?}");
    let sha = hex(&Sha256::digest(a.der()), "").to_ascii_lowercase();
    assert!(
        xfcc[0].starts_with(&format!("Hash={sha};Subject=\"")),
        "{xfcc:?}"
    );
    assert!(
        xfcc[0].contains(";URI=spiffe://partner-a.example/ns/prod/sa/billing"),
        "{xfcc:?}"
    );
    assert!(xfcc[0].contains(";DNS=api.partner-a.example"), "{xfcc:?}");
    assert!(one(&seen, "client-cert").is_empty());

    assert_eq!(forged("/pem/x").await.unwrap().status(), 200);
    let seen = up.last().unwrap();
    let pem = one(&seen, "x-client-pem");
    assert_eq!(pem.len(), 1);
    let decoded: String = {
        let bytes = pem[0].as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                out.push(u8::from_str_radix(&pem[0][i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    assert_eq!(
        openssl::x509::X509::from_pem(decoded.as_bytes())
            .unwrap()
            .to_der()
            .unwrap(),
        a.der()
    );
    assert!(one(&seen, "x-ssl-client-cert").is_empty());

    // forwarding off: nothing, whatever the client sent
    assert_eq!(forged("/none/x").await.unwrap().status(), 200);
    let seen = up.last().unwrap();
    for h in [
        "client-cert",
        "client-cert-chain",
        "x-forwarded-client-cert",
        "x-ssl-client-cert",
    ] {
        assert!(one(&seen, h).is_empty(), "{h}");
    }

    // accepted certificates feed the expiry metrics (by issuer CN, never by client)
    let metrics = gh.metrics().await;
    assert!(
        metrics.contains(
            "gatehouse_client_cert_expiry_seconds_count{issuer=\"Gatehouse Dev Intermediate CA\"}"
        ),
        "{metrics}"
    );
    let soonest = gh
        .metric("gatehouse_client_cert_soonest_expiry_timestamp_seconds")
        .await;
    let not_after = openssl::asn1::Asn1Time::from_unix(0)
        .unwrap()
        .diff(a.cert.not_after())
        .unwrap();
    assert_eq!(
        soonest as i64,
        not_after.days as i64 * 86400 + not_after.secs as i64
    );
}
