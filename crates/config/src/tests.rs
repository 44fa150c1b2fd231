use super::*;

const MINIMAL: &str = "version: 1
listeners:
  - name: plain
    listen: 127.0.0.1:8080
upstreams:
  app:
    peers: [127.0.0.1:3000]
routes:
  - name: all
    upstream: app
";

fn env_none(_: &str) -> Option<String> {
    None
}

fn errors(text: &str) -> Vec<ConfigError> {
    match load_str_with_env(text, env_none) {
        Ok(_) => Vec::new(),
        Err(e) => e.0,
    }
}

#[test]
fn minimal_config_loads_with_defaults() {
    let loaded = load_str_with_env(MINIMAL, env_none).map_err(|e| e.to_string());
    let c = loaded.as_ref().map(|l| &l.config);
    let Ok(c) = c else { panic!("{loaded:?}") };
    assert_eq!(c.server.threads, 2);
    assert_eq!(c.server.grace_period, Dur::secs(10));
    assert_eq!(c.routes[0].matches.path_prefix, "/");
    assert!(c.listeners[0].tls.is_none());
    assert_eq!(c.upstreams["app"].connect_timeout, Dur::secs(2));
}

#[test]
fn typo_names_path_and_line() {
    let text = MINIMAL.replace("    upstream: app", "    upstream: app\n    filterz: []");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].path, "routes[0].filterz");
    assert_eq!(errs[0].line, Some(11));
    assert!(
        errs[0].message.contains("unknown field `filterz`"),
        "{}",
        errs[0]
    );
}

#[test]
fn typo_inside_a_filter_is_located_too() {
    let text = MINIMAL.replace(
        "    upstream: app",
        "    upstream: app\n    filters:\n      - kind: claims\n        scopes: [a]",
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].path.starts_with("routes[0].filters[0]"),
        "{}",
        errs[0]
    );
    assert!(errs[0].message.contains("scopes"), "{}", errs[0]);
    assert!(
        errs[0].line.is_some_and(|l| (12..=14).contains(&l)),
        "{}",
        errs[0]
    );
}

#[test]
fn bad_enum_value_names_the_field() {
    let text = "version: 1
listeners:
  - name: tls
    listen: 127.0.0.1:8443
    tls:
      cert_file: /nonexistent
      key_file: /nonexistent
      client_auth:
        mode: require
upstreams: {}
routes: []
";
    let errs = errors(text);
    assert_eq!(errs[0].path, "listeners[0].tls.client_auth.mode");
    assert_eq!(errs[0].line, Some(9));
    assert!(
        errs[0].message.contains("unknown variant `require`"),
        "{}",
        errs[0]
    );
}

#[test]
fn validation_collects_every_problem() {
    let text = "version: 2
listeners:
  - name: a
    listen: 127.0.0.1:8080
  - name: a
    listen: 127.0.0.1:8080
upstreams:
  app:
    peers: [\"not a host\"]
routes:
  - name: r
    upstream: nope
    filters:
      - kind: cert_bound_token
      - kind: claims
        scope: [x]
";
    let errs = errors(text);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "version",
        "listeners[1].name",
        "listeners[1].listen",
        "upstreams.app.peers[0]",
        "routes[0].upstream",
        "routes[0].filters[0]",
        "routes[0].filters[1]",
    ] {
        assert!(paths.contains(&want), "missing {want} in {errs:#?}");
    }
    let order = errs
        .iter()
        .find(|e| e.path == "routes[0].filters[0]" && e.message.contains("token source"))
        .map(|e| e.to_string());
    assert_eq!(
        order.as_deref(),
        Some("routes[0].filters[0] (line 14): route \"r\": cert_bound_token needs a token source (phantom_token or jwt) earlier in the chain")
    );
}

#[test]
fn unset_env_var_is_an_error_with_line() {
    let text = MINIMAL.replace("127.0.0.1:3000", "${UPSTREAM_ADDR}");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1);
    assert_eq!(
        errs[0].message,
        "line 7: environment variable UPSTREAM_ADDR is not set"
    );
    let ok = load_str_with_env(&text, |n| {
        (n == "UPSTREAM_ADDR").then(|| "127.0.0.1:9".into())
    });
    assert!(ok.is_ok_and(|l| l.config.upstreams["app"].peers[0].address() == "127.0.0.1:9"));
}

#[test]
fn hash_changes_with_the_text() {
    let a = load_str_with_env(MINIMAL, env_none).map(|l| l.hash);
    let b = load_str_with_env(&format!("{MINIMAL}\n# comment\n"), env_none).map(|l| l.hash);
    assert!(a.is_ok() && b.is_ok() && a != b);
}

/// Every example in `conf/` parses and validates (with `CERT_DIR` pointing at a directory
/// holding files of the names they reference).
#[test]
fn every_conf_example_is_valid() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conf");
    let dir = std::env::temp_dir().join(format!("gatehouse-conf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok();
    let mut n = 0;
    let entries = std::fs::read_dir(&conf).map(|d| d.flatten().collect::<Vec<_>>());
    for entry in entries.unwrap_or_default() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // create every ${CERT_DIR}/name the file mentions
        for part in text.split("${CERT_DIR}/").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .collect();
            std::fs::write(dir.join(name), b"x").ok();
        }
        let d = dir.display().to_string();
        let res = load_str_with_env(&text, |n| match n {
            "CERT_DIR" => Some(d.clone()),
            "PROXY_ADDR" => Some("127.0.0.1:18443".into()),
            "ADMIN_ADDR" => Some("127.0.0.1:19100".into()),
            n if n.ends_with("_ADDR") => Some("127.0.0.1:18080".into()),
            n if n.ends_with("_PORT") => Some("19443".into()),
            _ => Some("test".into()),
        });
        assert!(
            res.is_ok(),
            "{}: {}",
            path.display(),
            res.err().map(|e| e.to_string()).unwrap_or_default()
        );
        n += 1;
    }
    assert!(n >= 2, "expected example configs in {}", conf.display());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn revocation_without_any_crl_source_is_an_error() {
    let text = MINIMAL.replace(
        "    upstream: app",
        "    upstream: app\n    filters:\n      - kind: client_cert\n        revocation: { mode: hard }",
    );
    let errs = errors(&text);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    // hard revocation without any CRL would check nothing
    assert!(
        paths.contains(&"routes[0].filters[0].revocation"),
        "{errs:#?}"
    );
    let ok = MINIMAL.replace(
        "    upstream: app",
        "    upstream: app\n    filters:\n      - kind: client_cert\n        revocation: { mode: hard, fetch_distribution_points: true, refresh: 10m }",
    );
    assert!(
        !errors(&ok).iter().any(|e| e.path.contains("revocation")),
        "{:#?}",
        errors(&ok)
    );
}

#[test]
fn the_jwt_filter_requires_an_issuer_and_an_audience() {
    let text = MINIMAL
        .replace(
            "upstreams:",
            "authorization_servers:\n  as:\n    jwks_uri: https://as.example/jwks\nupstreams:",
        )
        .replace(
            "    upstream: app",
            "    upstream: app\n    filters:\n      - kind: jwt\n        authorization_server: as",
        );
    let errs = errors(&text);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert!(
        paths.contains(&"routes[0].filters[0].audience"),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.path == "routes[0].filters[0].authorization_server"
                && e.message.contains("no issuer")),
        "{errs:#?}"
    );
}

#[test]
fn route_prefixes_and_hosts_must_be_in_the_form_requests_are_matched_in() {
    let text = MINIMAL.replace(
        "  - name: all\n    upstream: app\n",
        "  - { name: dots, upstream: app, match: { path_prefix: /a/../b/ } }
  - { name: slash, upstream: app, match: { path_prefix: /a%2Fb/ } }
  - { name: escape, upstream: app, match: { path_prefix: /%61pi/ } }
  - { name: host, upstream: app, match: { host: \"a b\" } }
  - { name: port, upstream: app, match: { host: \"api.example:443\" } }
  - { name: raw, upstream: app, match: { path_prefix: /files/a%2Fb/ }, forward_raw_path: true }
  - { name: fine, upstream: app, match: { host: API.Example., path_prefix: /api/v1/ } }
  - { name: rawlower, upstream: app, match: { path_prefix: /files/a%2fb/ }, forward_raw_path: true }
",
    );
    let errs = errors(&text);
    let msg = |path: &str| {
        errs.iter()
            .find(|e| e.path == path)
            .map(|e| e.message.clone())
            .unwrap_or_default()
    };
    assert!(
        msg("routes[0].match.path_prefix").contains("\"/b/\""),
        "{errs:#?}"
    );
    assert!(
        msg("routes[1].match.path_prefix").contains("encoded"),
        "{errs:#?}"
    );
    assert!(
        msg("routes[2].match.path_prefix").contains("\"/api/\""),
        "{errs:#?}"
    );
    assert!(!msg("routes[3].match.host").is_empty(), "{errs:#?}");
    assert!(!msg("routes[4].match.host").is_empty(), "{errs:#?}");
    // a raw route is matched on the normalised form that keeps encoded slashes
    assert!(
        msg("routes[7].match.path_prefix").contains("\"/files/a%2Fb/\""),
        "{errs:#?}"
    );
    // ... so an encoded slash in its prefix is fine; a host is matched in canonical form
    assert!(
        errs.iter()
            .all(|e| !e.path.starts_with("routes[5]") && !e.path.starts_with("routes[6]")),
        "{errs:#?}"
    );
}

#[test]
fn upstream_resilience_settings_are_checked_with_paths_and_lines() {
    let text = MINIMAL.replace(
        "  app:\n    peers: [127.0.0.1:3000]\n",
        "  app:
    peers: [127.0.0.1:3000, \"api.default.svc.cluster.local:8080\", { address: \"10.0.0.7:80\", weight: 3 }]
    balance: consistent_hash
    hash_on: client_id
    health_check: { path: /healthz, interval: 2s, timeout: 500ms, healthy_threshold: 2 }
    resolve_interval: 5s
  grpc:
    peers: [127.0.0.1:50051]
    protocol: h2c
    tls: { sni: grpc.internal }
  bad:
    peers: [\"no port\", \"x:0\", { address: \"10.0.0.8:80\", weight: 0 }]
    hash_on: client_ip
    retries: 11
    resolve_interval: 100ms
    health_check:
      path: healthz
      timeout: 10s
  tcp:
    peers: [127.0.0.1:1]
    health_check: { type: tcp, path: /x }
  h2:
    peers: [127.0.0.1:1]
    protocol: h2
",
    );
    let errs = errors(&text);
    let find = |path: &str| errs.iter().find(|e| e.path == path);
    let msg = |path: &str| find(path).map(|e| e.message.clone()).unwrap_or_default();
    // the good upstream passes: a name is not resolved by `check` (a headless Service may
    // have no ready pod yet), weights and consistent hashing on client_id are fine
    assert!(
        errs.iter().all(|e| !e.path.starts_with("upstreams.app")),
        "{errs:#?}"
    );
    assert!(msg("upstreams.grpc.protocol").contains("h2c is cleartext"));
    assert!(msg("upstreams.h2.protocol").contains("ALPN"));
    assert!(msg("upstreams.bad.peers[0]").contains("host:port"));
    assert!(msg("upstreams.bad.peers[1]").contains("port 0"));
    assert!(msg("upstreams.bad.peers[2].weight").contains("between 1 and 1000"));
    assert!(msg("upstreams.bad.hash_on").contains("consistent_hash"));
    assert!(msg("upstreams.bad.retries").contains("at most 10"));
    assert!(msg("upstreams.bad.resolve_interval").contains("at least 1s"));
    assert!(msg("upstreams.bad.health_check.path").contains("starting with /"));
    assert!(msg("upstreams.bad.health_check.timeout").contains("at most the interval"));
    assert!(msg("upstreams.tcp.health_check.path").contains("tcp health check"));
    // each names its line in the file
    let line = find("upstreams.bad.health_check.path").and_then(|e| e.line);
    let expected = text
        .lines()
        .position(|l| l.contains("path: healthz"))
        .map(|i| i + 1);
    assert_eq!(line, expected, "{errs:#?}");
    // an unknown balance is a typo with its path
    let typo = MINIMAL.replace(
        "    peers: [127.0.0.1:3000]\n",
        "    peers: [127.0.0.1:3000]\n    balance: least_conn\n",
    );
    let errs = errors(&typo);
    assert!(
        errs.iter()
            .any(|e| e.path == "upstreams.app.balance" && e.line == Some(8)),
        "{errs:#?}"
    );
}

#[test]
fn syntax_errors_name_no_bogus_path_and_tabs_are_named() {
    let text = MINIMAL.replace("    peers: [127.0.0.1:3000]", "\tpeers: [127.0.0.1:3000]");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(!errs[0].path.contains('?'), "{errs:#?}");
    assert_eq!(errs[0].line, Some(7), "{errs:#?}");
    assert!(errs[0].message.contains("tab"), "{errs:#?}");
    // a type error names its path once
    let text = MINIMAL.replace(
        "    upstream: app",
        "    upstream: app\n    filters: [ oops ]",
    );
    let errs = errors(&text);
    let shown = errs[0].to_string();
    assert_eq!(shown.matches("routes[0].filters[0]").count(), 1, "{shown}");
}

/// The token the API receives: an authorization server's own JWT only from an
/// `application/jwt` introspection, an RFC 9068 token Gatehouse signs (with an audience)
/// otherwise, and an RFC 9701 introspection response only when asked for, with a warning.
#[test]
fn the_upstream_token_contract_is_checked() {
    // any regular file stands in for the secret and the key: nothing here reads them
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let with = |accept: &str, filter: &str, top: &str| {
        MINIMAL
            .replace(
                "upstreams:",
                &format!(
                    "{top}authorization_servers:\n  as:\n    issuer: https://as.example\n    jwks_uri: https://as.example/jwks\n    introspection:\n      url: https://as.example/introspect\n      accept: {accept}\n      client_auth: {{ method: client_secret_basic, client_id: gh, client_secret_file: {file} }}\nupstreams:"
                ),
            )
            .replace(
                "    upstream: app",
                &format!("    upstream: app\n    filters:\n      - kind: phantom_token\n        authorization_server: as\n{filter}"),
            )
    };
    let signing = format!("token_signing: {{ key_file: {file}, key_id: k, issuer: https://gh }}\n");
    let messages = |text: &str| {
        errors(text)
            .into_iter()
            .map(|e| format!("{} (line {:?}): {}", e.path, e.line, e.message))
            .collect::<Vec<_>>()
    };
    // RFC 9701 and no forward_jwt: Gatehouse signs, so it needs a key and an audience
    let errs = messages(&with("token-introspection+jwt", "", ""));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("routes[0].filters[0].forward_jwt")
                && e.contains("needs token_signing")),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("routes[0].filters[0].audience") && e.contains("required")),
        "{errs:#?}"
    );
    let ok = with(
        "token-introspection+jwt",
        "        audience: https://api.example\n",
        &signing,
    );
    let loaded = load_str_with_env(&ok, env_none).map_err(|e| e.to_string());
    let Ok(loaded) = loaded else {
        panic!("{loaded:?}")
    };
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let FilterConfig::PhantomToken(pt) = &loaded.config.routes[0].filters[0] else {
        panic!("not a phantom_token filter")
    };
    assert_eq!(
        pt.forward(Some(IntrospectionFormat::TokenIntrospectionJwt)),
        ForwardJwt::SignedByGatehouse
    );
    // an introspection response is not an access token
    let errs = messages(&with(
        "token-introspection+jwt",
        "        forward_jwt: as_issued\n",
        "",
    ));
    assert!(
        errs.iter().any(
            |e| e.starts_with("routes[0].filters[0].forward_jwt (line Some(")
                && e.contains("not an access token")
        ),
        "{errs:#?}"
    );
    // ...unless asked for, knowingly: valid, with a warning naming the path and line
    let text = with(
        "token-introspection+jwt",
        "        forward_jwt: introspection_response\n",
        "",
    );
    let loaded = load_str_with_env(&text, env_none).map_err(|e| e.to_string());
    let Ok(loaded) = loaded else {
        panic!("{loaded:?}")
    };
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert_eq!(loaded.warnings[0].path, "routes[0].filters[0].forward_jwt");
    assert!(loaded.warnings[0].line.is_some());
    assert!(loaded.warnings[0].message.contains("not an access token"));
    // Curity-style application/jwt: the body is the access token, forwarded as issued by
    // default; an audience there would be ignored, so it is refused
    assert!(errors(&with("jwt", "", "")).is_empty());
    let errs = messages(&with("jwt", "        audience: https://api.example\n", ""));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("routes[0].filters[0].audience") && e.contains("only")),
        "{errs:#?}"
    );
    let errs = messages(&with(
        "json",
        "        forward_jwt: introspection_response\n",
        "",
    ));
    assert!(
        errs.iter()
            .any(|e| e.contains("needs accept: token-introspection+jwt")),
        "{errs:#?}"
    );
}

/// Syntax errors point at the line to fix: the second of two equal keys (in a struct or in
/// a map such as `upstreams`, where the last would otherwise silently win), and the line
/// where a never-closed quote opens rather than the end of the file.
#[test]
fn duplicate_keys_and_unclosed_quotes_are_reported_where_they_are() {
    let errs = errors(&format!("version: 1\n{MINIMAL}"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].line, Some(2), "{errs:#?}");
    assert!(
        errs[0].message.contains("duplicate key `version`"),
        "{errs:#?}"
    );

    let text = MINIMAL.replace(
        "    peers: [127.0.0.1:3000]\n",
        "    peers: [127.0.0.1:3000]\n  app:\n    peers: [127.0.0.1:4000]\n",
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].line, Some(8), "{errs:#?}");
    assert_eq!(errs[0].path, "upstreams.app", "{errs:#?}");
    assert!(errs[0].message.contains("duplicate key `app`"), "{errs:#?}");

    let text = MINIMAL.replace("  - name: plain", "  - name: \"plain");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].line, Some(3), "{errs:#?}");
    assert!(errs[0].message.contains("never closed"), "{errs:#?}");
    // quotes that do close, an apostrophe inside a word and a quote in a comment are fine
    assert_eq!(
        locate::unclosed_quote_line("a: \"x\"\nb: it's\nc: 'y''s' # don't\nd: [\"p\", 'q']\n"),
        None
    );
}

/// `check` reads secrets with the reader the build uses: an empty secret file is refused
/// at its field, as a missing one is.
#[test]
fn secrets_are_checked_by_the_reader_the_build_uses() {
    let dir = std::env::temp_dir().join(format!("gatehouse-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok();
    let empty = dir.join("empty-secret");
    std::fs::write(&empty, "\n").ok();
    let text = MINIMAL.replace(
        "upstreams:",
        &format!(
            "authorization_servers:\n  as:\n    issuer: https://as.example\n    jwks_uri: https://as.example/jwks\n    introspection:\n      url: https://as.example/introspect\n      accept: jwt\n      client_auth: {{ method: client_secret_basic, client_id: gh, client_secret_file: {} }}\nupstreams:",
            empty.display()
        ),
    );
    let errs = errors(&text);
    assert!(
        errs.iter().any(|e| e.path
            == "authorization_servers.as.introspection.client_auth.client_secret_file"
            && e.message.contains("is empty")),
        "{errs:#?}"
    );
    assert_eq!(
        read_secret(Some(&empty.display().to_string()), None).ok(),
        None
    );
    std::fs::write(&empty, "s3cret\n").ok();
    assert_eq!(
        read_secret(Some(&empty.display().to_string()), None).ok(),
        Some("s3cret".to_owned())
    );
    let _ = std::fs::remove_dir_all(&dir);
}
