//! `gatehouse check`: exit codes and messages, run as the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn check(path: &std::path::Path, env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "-c"])
        .arg(path)
        .envs(env.iter().copied())
        .env("GATEHOUSE_LOG", "error")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_names_the_path_and_line_of_a_typo_and_exits_64() {
    let dir = gatehouse_testkit::TempDir::new("cli");
    let file = dir.join("typo.yaml");
    std::fs::write(
        &file,
        "version: 1\nlisteners:\n  - name: a\n    listen: 127.0.0.1:1\nupstreams:\n  app:\n    peers: [127.0.0.1:2]\n    conect_timeout: 1s\nroutes: []\n",
    )
    .unwrap();
    let (code, text) = check(&file, &[]);
    assert_eq!(code, 64, "{text}");
    assert!(
        text.contains("upstreams.app.conect_timeout (line 8)"),
        "{text}"
    );
    assert!(text.contains("unknown field `conect_timeout`"), "{text}");
    assert_eq!(
        text.matches("upstreams.app").count(),
        1,
        "path once: {text}"
    );
}

#[test]
fn check_accepts_every_example_in_conf() {
    let pki = gatehouse_testkit::TestPki::new();
    let cert_dir = pki.dir.display().to_string();
    std::fs::write(pki.dir.join("gateway-secret"), "x").unwrap();
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conf");
    let mut n = 0;
    for entry in std::fs::read_dir(&conf).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let (code, text) = check(
            &path,
            &[
                ("CERT_DIR", &cert_dir),
                ("PROXY_ADDR", "127.0.0.1:18443"),
                ("ADMIN_ADDR", "127.0.0.1:19100"),
                ("UPSTREAM_ADDR", "127.0.0.1:18080"),
                ("AUTH_PORT", "19443"),
                ("GATEHOUSE_INTROSPECT_SECRET", "test"),
            ],
        );
        assert_eq!(code, 0, "{}: {text}", path.display());
        n += 1;
    }
    assert!(n >= 1);
}

/// `gatehouse run` on an address that is taken: a clear message and exit 69 (EX_UNAVAILABLE)
/// at once, never a panic or a process that stays up serving nothing. Every `threads`
/// setting, a listener or only the admin address taken.
#[test]
fn run_on_a_taken_address_exits_69() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let dir = gatehouse_testkit::TempDir::new("taken");
    for (threads, admin_taken) in [(1, false), (2, false), (4, false), (1, true), (2, true)] {
        let free = gatehouse_testkit::free_port();
        let (listen, admin) = if admin_taken {
            (format!("127.0.0.1:{free}"), busy.to_string())
        } else {
            (busy.to_string(), format!("127.0.0.1:{free}"))
        };
        let file = dir.join(format!("taken-{threads}-{admin_taken}.yaml"));
        std::fs::write(
            &file,
            format!(
                "version: 1\nserver: {{ threads: {threads} }}\nadmin: {{ listen: \"{admin}\" }}\nlisteners:\n  - name: a\n    listen: \"{listen}\"\nupstreams:\n  app:\n    peers: [127.0.0.1:2]\nroutes: []\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["run", "-c"])
            .arg(&file)
            .env("GATEHOUSE_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // a readiness poll on the process, not a timing assertion: it must end by itself
        let mut status = None;
        for _ in 0..400 {
            if let Some(s) = child.try_wait().unwrap() {
                status = Some(s);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        let Some(status) = status else {
            let _ = child.kill();
            panic!(
                "threads {threads}, admin taken {admin_taken}: still running on a taken address"
            );
        };
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(status.code(), Some(69), "threads {threads}: {text}");
        assert!(text.contains(&format!("cannot listen on {busy}")), "{text}");
        let what = if admin_taken {
            "admin"
        } else {
            "listener \"a\""
        };
        assert!(text.contains(what), "{text}");
        assert!(!text.contains("panicked"), "{text}");
    }
    drop(taken);
}

/// A configuration that validates but cannot be built (a certificate file that holds no
/// certificate, a key file that holds no key) is the same error from `check` and `run`:
/// every unusable file, each with its field and line; exit 64. A valid one gets `ok`
/// from `check` and nothing of the server's start-up chatter.
#[test]
fn check_and_run_agree_on_a_broken_certificate_and_check_is_quiet_when_valid() {
    let dir = gatehouse_testkit::TempDir::new("cert");
    let pem = dir.join("server.pem");
    std::fs::write(
        &pem,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(dir.join("server.key"), "not a key\n").unwrap();
    let port = gatehouse_testkit::free_port();
    let file = dir.join("broken.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nlisteners:\n  - name: a\n    listen: 127.0.0.1:{port}\n    tls:\n      cert_file: {d}/server.pem\n      key_file: {d}/server.key\nupstreams:\n  app:\n    peers: [127.0.0.1:2]\nroutes: []\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let (code, text) = check(&file, &[]);
    assert_eq!(code, 64, "{text}");
    // both files are wrong: both are named, each with the field and line that names it
    assert!(
        text.contains("listeners[0].tls.cert_file (line 6): ")
            && text.contains("listeners[0].tls.key_file (line 7): ")
            && text.contains("not a PEM private key"),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["run", "-c"])
        .arg(&file)
        .env("GATEHOUSE_LOG", "warn")
        .output()
        .unwrap();
    let run_text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{run_text}");
    assert_eq!(run_text.trim(), text.trim(), "run and check say the same");

    let good = dir.join("good.yaml");
    std::fs::write(
        &good,
        format!("version: 1\nlisteners:\n  - name: a\n    listen: 127.0.0.1:{port}\nupstreams:\n  app:\n    peers: [127.0.0.1:2]\nroutes: []\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "-c"])
        .arg(&good)
        .env_remove("GATEHOUSE_LOG")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(text.trim(), format!("{}: ok", good.display()));
}

/// `GATEHOUSE_LOG_FORMAT=json`: process logs are one JSON object per line.
#[test]
fn process_logs_can_be_json() {
    use std::io::BufRead;
    let dir = gatehouse_testkit::TempDir::new("json");
    let file = dir.join("j.yaml");
    let port = gatehouse_testkit::free_port();
    std::fs::write(
        &file,
        format!("version: 1\nlisteners:\n  - name: a\n    listen: 127.0.0.1:{port}\nupstreams:\n  app:\n    peers: [127.0.0.1:2]\nroutes: []\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["run", "-c"])
        .arg(&file)
        .env("GATEHOUSE_LOG_FORMAT", "json")
        .env_remove("GATEHOUSE_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["level"], "INFO", "{line}");
    assert!(v["fields"]["message"].is_string(), "{line}");
}

/// `check` says so when a listener's server certificate expired or expires soon (it still
/// passes: the file may be rotated in place before use).
#[test]
fn check_warns_about_an_expired_or_expiring_server_certificate() {
    use gatehouse_testkit::gatehouse_devauth::pki::CertSpec;
    let pki = gatehouse_testkit::TestPki::new();
    let run = |name: &str, not_after_offset: i64| {
        let spec = CertSpec {
            not_before_offset: -400 * 86_400,
            not_after_offset,
            ..CertSpec::localhost()
        };
        let cert = pki.issue(&spec, None);
        let (pem, key) = pki.save(name, &cert);
        let file = pki.dir.join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!("version: 1\nlisteners:\n  - name: edge\n    listen: 127.0.0.1:1\n    tls: {{ cert_file: \"{pem}\", key_file: \"{key}\" }}\nupstreams:\n  app:\n    peers: [127.0.0.1:2]\nroutes: []\n"),
        )
        .unwrap();
        check(&file, &[])
    };
    let (code, text) = run("expired", -10 * 86_400);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("warning: listener \"edge\"") && text.contains("expired 10 days ago"),
        "{text}"
    );
    let (code, text) = run("soon", 5 * 86_400 + 3600);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("expires in 5 days"), "{text}");
    let (code, text) = run("fine", 300 * 86_400);
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("warning"), "{text}");
}

/// Forwarding an RFC 9701 introspection response as the upstream's bearer token: refused
/// when written `as_issued`, accepted with a warning (path and line) when asked for by name.
#[test]
fn check_refuses_an_introspection_response_as_access_token_and_warns_when_opted_in() {
    let pki = gatehouse_testkit::TestPki::new();
    std::fs::write(pki.dir.join("gateway-secret"), "x").unwrap();
    let config = |forward: &str| {
        format!(
            "version: 1
listeners: [ {{ name: a, listen: 127.0.0.1:1 }} ]
authorization_servers:
  as:
    issuer: https://as.example
    jwks_uri: https://as.example/jwks
    introspection:
      url: https://as.example/introspect
      accept: token-introspection+jwt
      client_auth: {{ method: client_secret_basic, client_id: gh, client_secret_file: {}/gateway-secret }}
upstreams: {{ app: {{ peers: [127.0.0.1:2] }} }}
routes:
  - name: api
    upstream: app
    filters:
      - kind: phantom_token
        authorization_server: as
        forward_jwt: {forward}
",
            pki.dir.display()
        )
    };
    let file = pki.dir.join("forward.yaml");
    std::fs::write(&file, config("as_issued")).unwrap();
    let (code, text) = check(&file, &[]);
    assert_eq!(code, 64, "{text}");
    assert!(
        text.contains("routes[0].filters[0].forward_jwt (line 18)")
            && text.contains("not an access token"),
        "{text}"
    );
    std::fs::write(&file, config("introspection_response")).unwrap();
    let (code, text) = check(&file, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("warning: routes[0].filters[0].forward_jwt (line 18)"),
        "{text}"
    );
    assert_eq!(text.matches("warning").count(), 1, "printed once: {text}");
}

/// Relative file paths name files beside the config file, whatever the working directory
/// (a Kubernetes pod, a systemd unit and a shell in the repository start in different ones).
#[test]
fn relative_paths_resolve_against_the_config_files_directory() {
    let pki = gatehouse_testkit::TestPki::new();
    let file = pki.dir.join("relative.yaml");
    std::fs::write(
        &file,
        "version: 1
listeners:
  - name: a
    listen: 127.0.0.1:1
    tls:
      cert_file: server.pem
      key_file: ./server.key
      client_auth: { mode: required, ca_files: [root-ca.pem] }
upstreams: { app: { peers: [127.0.0.1:2] } }
routes: [ { name: all, upstream: app } ]
",
    )
    .unwrap();
    let check_from = |cwd: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["check", "-c"])
            .arg(&file)
            .current_dir(cwd)
            .env("GATEHOUSE_LOG", "error")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for cwd in [std::path::Path::new("/"), pki.dir.as_path()] {
        let (code, err) = check_from(cwd);
        assert_eq!(code, Some(0), "from {}: {err}", cwd.display());
    }
    // a missing file is named by the path it was looked for at
    std::fs::remove_file(pki.dir.join("root-ca.pem")).unwrap();
    let (code, err) = check_from(std::path::Path::new("/"));
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains(&format!("{}/root-ca.pem", pki.dir.display())),
        "{err}"
    );
}
