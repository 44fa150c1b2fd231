//! Every YAML block of the README passes `gatehouse check`, so the documentation cannot
//! drift from the code (`conf/` is checked by `cli.rs`).
//!
//! How a block is completed (the README says so under "Configuration reference"):
//! - a whole file (`version: 1` …) is checked as it is;
//! - a filter (`- kind: …`) goes into a route after the filters it needs (a token filter
//!   before `cert_bound_token` and `claims`, a client certificate before those), of a file
//!   that has a TLS listener, an upstream and a dev authorization server;
//! - top-level sections (`authorization_servers:`, `routes:` …) get the sections they do not
//!   define from that same file.
//!
//! Files a block names by relative path (`internal-ca.pem`, `partners.crl`, …) are made in
//! the directory `check` runs in, from the test PKI; `${CERT_DIR}` is that PKI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

const BASE_LISTENERS: &str = "listeners:
  - name: partners
    listen: 127.0.0.1:8443
    tls:
      cert_file: ${CERT_DIR}/server.pem
      key_file: ${CERT_DIR}/server.key
      client_auth: { mode: required, ca_files: [\"${CERT_DIR}/root-ca.pem\"] }
";
const BASE_UPSTREAMS: &str = "upstreams:
  api: { peers: [127.0.0.1:3000] }
";
const BASE_AUTHZ: &str = "authorization_servers:
  dev:
    issuer: https://127.0.0.1:9443
    jwks_uri: https://127.0.0.1:9443/oauth/jwks
    ca_file: ${CERT_DIR}/root-ca.pem
    algorithms: [ES256]
    introspection:
      url: https://127.0.0.1:9443/oauth/introspect
      accept: jwt
      client_auth: { method: client_secret_basic, client_id: gateway, client_secret_env: GATEHOUSE_INTROSPECT_SECRET }
  entra:
    issuer: https://login.microsoftonline.com/tenant/v2.0
    jwks_uri: https://login.microsoftonline.com/tenant/discovery/v2.0/keys
    algorithms: [RS256]
";

fn yaml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((i, l)) = lines.next() {
        if l.trim_start() != "```yaml" {
            continue;
        }
        let mut block = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            block.push_str(l);
            block.push('\n');
        }
        out.push((i + 1, block));
    }
    out
}

/// The filters a filter needs before it in a route.
fn prerequisites(kind: &str) -> &'static str {
    match kind {
        "client_cert" => "",
        "phantom_token" | "jwt" => "      - kind: client_cert\n",
        _ => "      - kind: client_cert\n      - kind: phantom_token\n        authorization_server: dev\n",
    }
}

fn complete(block: &str) -> String {
    if block.lines().any(|l| l.starts_with("version:")) {
        return block.to_owned();
    }
    if let Some(kind) = block.trim_start().strip_prefix("- kind:") {
        let kind = kind.split_whitespace().next().unwrap_or_default();
        let filter: String = block.lines().map(|l| format!("      {l}\n")).collect();
        return format!(
            "version: 1\n{BASE_LISTENERS}{BASE_AUTHZ}{BASE_UPSTREAMS}routes:\n  - name: r\n    upstream: api\n    filters:\n{}{filter}",
            prerequisites(kind)
        );
    }
    let defines = |key: &str| block.lines().any(|l| l.starts_with(&format!("{key}:")));
    let mut out = String::from("version: 1\n");
    for (key, base) in [
        ("listeners", BASE_LISTENERS),
        ("authorization_servers", BASE_AUTHZ),
        ("upstreams", BASE_UPSTREAMS),
    ] {
        if !defines(key) {
            out.push_str(base);
        }
    }
    if !defines("routes") {
        out.push_str("routes: []\n");
    }
    out.push_str(block);
    out
}

#[test]
fn every_yaml_block_of_the_readme_passes_check() {
    let pki = gatehouse_testkit::TestPki::new();
    let dir = &pki.dir;
    // the relative files the README's blocks name
    let root = std::fs::read(dir.join("root-ca.pem")).unwrap();
    for name in ["internal-ca.pem", "partners-b2b.pem"] {
        std::fs::write(dir.join(name), &root).unwrap();
    }
    let crl = pki.crl("partners.crl", &pki.pki.intermediate, &[]);
    assert!(Path::new(&crl).exists());
    let key = openssl::ec::EcKey::generate(
        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("gatehouse-signing.pem"),
        openssl::pkey::PKey::from_ec_key(key)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap(),
    )
    .unwrap();

    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let blocks = yaml_blocks(&readme);
    assert!(blocks.len() >= 6, "found {} yaml blocks", blocks.len());
    let mut failures = Vec::new();
    for (line, block) in &blocks {
        let file = dir.join(format!("readme-{line}.yaml"));
        std::fs::write(&file, complete(block)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["check", "-c"])
            .arg(&file)
            .current_dir(dir)
            .env("CERT_DIR", dir)
            .env("GATEHOUSE_INTROSPECT_SECRET", "test")
            .env("GATEHOUSE_LOG", "error")
            .output()
            .unwrap();
        if out.status.code() != Some(0) {
            failures.push(format!(
                "README.md line {line}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
