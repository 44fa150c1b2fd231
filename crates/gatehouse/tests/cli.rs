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
    let dir = std::env::temp_dir().join(format!("gatehouse-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
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
