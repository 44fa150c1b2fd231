//! `gatehouse demo` as users run it: the real binary, its PKI contract, and the phantom-token
//! flow through it (ports overridden to free ones).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_testkit::{free_port, json, jwt_payload, raw_tls_pem};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client(dir: &std::path::Path, who: Option<&str>) -> reqwest::Client {
    let root =
        reqwest::Certificate::from_pem(&std::fs::read(dir.join("root-ca.pem")).unwrap()).unwrap();
    let mut b = reqwest::Client::builder()
        .add_root_certificate(root)
        .timeout(Duration::from_secs(10));
    if let Some(who) = who {
        let cert = std::fs::read(dir.join(format!("{who}.pem"))).unwrap();
        let key = std::fs::read(dir.join(format!("{who}.key"))).unwrap();
        b = b.identity(reqwest::Identity::from_pkcs8_pem(&cert, &key).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_runs_the_phantom_token_flow() {
    let dir = gatehouse_testkit::TempDir::new("demo-test");
    let (port, admin, auth) = (free_port(), free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
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
        .env("GATEHOUSE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _demo = Demo(child);
    let mut up = false;
    for _ in 0..200 {
        if reqwest::get(format!("http://127.0.0.1:{admin}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "demo did not become ready");
    for f in [
        "root-ca.pem",
        "root-ca.key",
        "partner-a.pem",
        "partner-a.key",
        "partner-b.pem",
        "partner-b.key",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    // the PKCS#12 the README promises Postman users: partner-a's key and certificate,
    // password "gatehouse"
    let p12 = openssl::pkcs12::Pkcs12::from_der(&std::fs::read(dir.join("partner-a.p12")).unwrap())
        .unwrap()
        .parse2("gatehouse")
        .unwrap();
    let pem = std::fs::read(dir.join("partner-a.pem")).unwrap();
    let leaf = openssl::x509::X509::from_pem(&pem).unwrap();
    assert_eq!(p12.cert.unwrap().to_der().unwrap(), leaf.to_der().unwrap());
    assert!(p12.pkey.is_some());
    let a = client(&dir, Some("partner-a"));
    let none = client(&dir, None);

    // client certificate only
    let res = a
        .get(format!("https://localhost:{port}/mtls/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let headers = json(res).await;
    assert!(headers["client-cert"].as_str().unwrap().starts_with(':'));
    let res = none
        .get(format!("https://localhost:{port}/mtls/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(json(res).await["error"], "client_certificate_required");

    // the phantom-token flow: token with the cert, call the API; the upstream sees an
    // RFC 9068 token Gatehouse signed for it, with cnf
    let res = a
        .post(format!("https://localhost:{auth}/oauth/token"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let token = json(res).await["access_token"].as_str().unwrap().to_owned();
    let res = a
        .get(format!("https://localhost:{port}/api/echo"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let headers = json(res).await;
    let jwt = headers["authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    assert_ne!(jwt, token);
    let claims = jwt_payload(&jwt);
    assert_eq!(claims["client_id"], "partner-a");
    assert_eq!(claims["aud"], "https://api.demo");
    assert_eq!(claims["iss"], "https://gatehouse.demo");
    assert!(claims["cnf"]["x5t#S256"].is_string(), "{claims}");
    assert_eq!(headers["x-client-id"], "partner-a");
    let b = client(&dir, Some("partner-b"));
    let res = b
        .get(format!("https://localhost:{port}/api/echo"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // issue 15's walk-around (curl --path-as-is): /public/ must not lead into /api/
    for target in ["/public/../api/echo", "/public/%2e%2e/api/echo"] {
        let (dir, req) = (
            dir.to_path_buf(),
            format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
        );
        let resp = tokio::task::spawn_blocking(move || {
            raw_tls_pem(port, &dir, "partner-a", req.as_bytes(), true)
        })
        .await
        .unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 401")
                && resp
                    .to_ascii_lowercase()
                    .contains("www-authenticate: bearer"),
            "{target}: the /api/ route's answer (a token is required), got {resp}"
        );
    }

    // a second start reuses the PKI
    let before = std::fs::read(dir.join("root-ca.pem")).unwrap();
    drop(_demo);
    let child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["demo", "--dir"])
        .arg(&dir)
        .args([
            "--port",
            &free_port().to_string(),
            "--admin-port",
            &admin.to_string(),
            "--auth-port",
            &free_port().to_string(),
        ])
        .env("GATEHOUSE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _again = Demo(child);
    for _ in 0..200 {
        if reqwest::get(format!("http://127.0.0.1:{admin}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read(dir.join("root-ca.pem")).unwrap(), before);
}
