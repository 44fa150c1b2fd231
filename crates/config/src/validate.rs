//! Semantic checks that serde cannot express. Collects every problem (Linkerd's env.rs
//! style) instead of stopping at the first.

use crate::model::*;
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

type Problems = Vec<(String, String)>;

fn file_exists(p: &mut Problems, path: String, file: &str) {
    if !Path::new(file).is_file() {
        p.push((
            path,
            format!("file {file} does not exist or is not a regular file"),
        ));
    }
}

fn secret_ref(
    p: &mut Problems,
    path: &str,
    file: &Option<String>,
    env: &Option<String>,
    what: &str,
) {
    match (file, env) {
        (Some(_), None) | (None, Some(_)) => {
            // read as the build will (crate::read_secret), and forgotten at once
            if let Err(e) = crate::read_secret(file.as_deref(), env.as_deref()) {
                let field = if file.is_some() { "file" } else { "env" };
                p.push((format!("{path}.{what}_{field}"), e));
            }
        }
        (Some(_), Some(_)) => p.push((
            path.to_owned(),
            format!("give either {what}_file or {what}_env, not both"),
        )),
        (None, None) => p.push((
            path.to_owned(),
            format!("{what}_file or {what}_env is required"),
        )),
    }
}

/// Every problem in `c`, as (field path, message).
pub fn validate(c: &Config) -> Problems {
    let mut p = Problems::new();
    if c.version != 1 {
        p.push((
            "version".into(),
            format!("unsupported version {}, expected 1", c.version),
        ));
    }
    if c.server.threads == 0 {
        p.push(("server.threads".into(), "must be at least 1".into()));
    }
    if c.listeners.is_empty() {
        p.push((
            "listeners".into(),
            "at least one listener is required".into(),
        ));
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    if let Some(a) = &c.admin {
        addrs.insert(a.listen);
    }
    for (i, l) in c.listeners.iter().enumerate() {
        let at = format!("listeners[{i}]");
        if !names.insert(l.name.as_str()) {
            p.push((
                format!("{at}.name"),
                format!("duplicate listener name {:?}", l.name),
            ));
        }
        if !addrs.insert(l.listen) {
            p.push((
                format!("{at}.listen"),
                format!("address {} is used twice", l.listen),
            ));
        }
        if let Some(tls) = &l.tls {
            file_exists(&mut p, format!("{at}.tls.cert_file"), &tls.cert_file);
            file_exists(&mut p, format!("{at}.tls.key_file"), &tls.key_file);
            if tls.protocols.is_empty() {
                p.push((
                    format!("{at}.tls.protocols"),
                    "at least one protocol is required".into(),
                ));
            }
            if tls.alpn.is_empty() {
                p.push((
                    format!("{at}.tls.alpn"),
                    "at least one protocol is required".into(),
                ));
            }
            let ca = &tls.client_auth;
            if ca.mode != ClientCertMode::Off && ca.ca_files.is_empty() {
                p.push((
                    format!("{at}.tls.client_auth.ca_files"),
                    "client certificates are requested but no CA bundle is configured".into(),
                ));
            }
            for (j, f) in ca.ca_files.iter().enumerate() {
                file_exists(&mut p, format!("{at}.tls.client_auth.ca_files[{j}]"), f);
            }
        }
    }

    for (name, a) in &c.authorization_servers {
        let at = format!("authorization_servers.{name}");
        if a.jwks_uri.is_some() && a.jwks_file.is_some() {
            p.push((
                at.clone(),
                "give either jwks_uri or jwks_file, not both".into(),
            ));
        }
        if let Some(f) = &a.jwks_file {
            file_exists(&mut p, format!("{at}.jwks_file"), f);
        }
        if let Some(f) = &a.ca_file {
            file_exists(&mut p, format!("{at}.ca_file"), f);
        }
        if let Some(u) = &a.jwks_uri {
            check_url(&mut p, format!("{at}.jwks_uri"), u);
        }
        for (j, alg) in a.algorithms.iter().enumerate() {
            let ok = matches!(
                alg.as_str(),
                "RS256"
                    | "RS384"
                    | "RS512"
                    | "PS256"
                    | "PS384"
                    | "PS512"
                    | "ES256"
                    | "ES384"
                    | "EdDSA"
                    | "HS256"
                    | "HS384"
                    | "HS512"
            );
            if !ok {
                p.push((
                    format!("{at}.algorithms[{j}]"),
                    format!("unsupported algorithm {alg:?} (\"none\" is never accepted)"),
                ));
            } else if alg.starts_with("HS")
                && a.hmac_secret_file.is_none()
                && a.hmac_secret_env.is_none()
            {
                p.push((
                    format!("{at}.algorithms[{j}]"),
                    format!("{alg} needs hmac_secret_file or hmac_secret_env"),
                ));
            }
        }
        if a.hmac_secret_file.is_some() || a.hmac_secret_env.is_some() {
            secret_ref(
                &mut p,
                &at,
                &a.hmac_secret_file,
                &a.hmac_secret_env,
                "hmac_secret",
            );
        }
        if let Some(i) = &a.introspection {
            let at = format!("{at}.introspection");
            check_url(&mut p, format!("{at}.url"), &i.url);
            let ca = &i.client_auth;
            let cat = format!("{at}.client_auth");
            match ca.method {
                ClientAuthMethod::ClientSecretBasic | ClientAuthMethod::ClientSecretPost => {
                    secret_ref(
                        &mut p,
                        &cat,
                        &ca.client_secret_file,
                        &ca.client_secret_env,
                        "client_secret",
                    )
                }
                ClientAuthMethod::PrivateKeyJwt => match &ca.private_key_file {
                    Some(f) => file_exists(&mut p, format!("{cat}.private_key_file"), f),
                    None => p.push((cat.clone(), "private_key_jwt needs private_key_file".into())),
                },
                ClientAuthMethod::TlsClientAuth => match (&ca.cert_file, &ca.key_file) {
                    (Some(c), Some(k)) => {
                        file_exists(&mut p, format!("{cat}.cert_file"), c);
                        file_exists(&mut p, format!("{cat}.key_file"), k);
                    }
                    _ => p.push((
                        cat.clone(),
                        "tls_client_auth needs cert_file and key_file".into(),
                    )),
                },
            }
            if i.accept != IntrospectionFormat::Json
                && a.jwks_uri.is_none()
                && a.jwks_file.is_none()
            {
                p.push((
                    format!("{at}.accept"),
                    "JWT introspection responses are verified: jwks_uri or jwks_file is required"
                        .into(),
                ));
            }
        }
        if a.cache.max_entries == 0 {
            p.push((
                format!("{at}.cache.max_entries"),
                "must be at least 1".into(),
            ));
        }
    }

    if let Some(s) = &c.token_signing {
        file_exists(&mut p, "token_signing.key_file".into(), &s.key_file);
    }

    for (name, u) in &c.upstreams {
        let at = format!("upstreams.{name}");
        if u.peers.is_empty() {
            p.push((
                format!("{at}.peers"),
                "at least one peer is required".into(),
            ));
        }
        for (j, peer) in u.peers.iter().enumerate() {
            // names are resolved when the proxy starts and again every
            // `resolve_interval` (a headless Service may have no ready pod yet): only the
            // form is checked here
            if let Err(e) = parse_peer_address(peer.address()) {
                p.push((format!("{at}.peers[{j}]"), e));
            }
            if peer.weight() == 0 || peer.weight() > 1000 {
                p.push((
                    format!("{at}.peers[{j}].weight"),
                    "must be between 1 and 1000".into(),
                ));
            }
        }
        match (u.protocol, &u.tls) {
            (UpstreamProtocol::H2, None) => p.push((
                format!("{at}.protocol"),
                "h2 is negotiated in TLS (ALPN): add tls, or use h2c for cleartext HTTP/2".into(),
            )),
            (UpstreamProtocol::H2c, Some(_)) => p.push((
                format!("{at}.protocol"),
                "h2c is cleartext HTTP/2: remove tls, or use h2 for HTTP/2 over TLS".into(),
            )),
            _ => {}
        }
        if u.retries > 10 {
            p.push((format!("{at}.retries"), "at most 10".into()));
        }
        if u.balance != Balance::ConsistentHash && u.hash_on != HashOn::default() {
            p.push((
                format!("{at}.hash_on"),
                "only balance: consistent_hash uses a hash key".into(),
            ));
        }
        if !u.resolve_interval.0.is_zero() && u.resolve_interval.0 < Duration::from_secs(1) {
            p.push((
                format!("{at}.resolve_interval"),
                "at least 1s (or 0s: resolve once at load)".into(),
            ));
        }
        if u.passive.max_fails > 0 && u.passive.fail_timeout.0.is_zero() {
            p.push((
                format!("{at}.passive.fail_timeout"),
                "must be more than 0s (or set max_fails: 0 to turn passive checks off)".into(),
            ));
        }
        if let Some(hc) = &u.health_check {
            let hat = format!("{at}.health_check");
            match (hc.kind(), &hc.path) {
                (HealthCheckKind::Http, Some(path)) => {
                    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                        p.push((
                            format!("{hat}.path"),
                            format!("{path:?} must be an origin-form path starting with /"),
                        ));
                    }
                }
                (HealthCheckKind::Http, None) => p.push((
                    format!("{hat}.path"),
                    "an http health check needs a path".into(),
                )),
                (HealthCheckKind::Tcp, Some(_)) => p.push((
                    format!("{hat}.path"),
                    "a tcp health check sends no request: remove path or use type: http".into(),
                )),
                (HealthCheckKind::Tcp, None) => {}
            }
            if !(100..=599).contains(&hc.expect_status) {
                p.push((
                    format!("{hat}.expect_status"),
                    "must be an HTTP status (100-599)".into(),
                ));
            }
            if hc.interval.0 < Duration::from_millis(100) {
                p.push((format!("{hat}.interval"), "at least 100ms".into()));
            }
            if hc.timeout.0.is_zero() || hc.timeout.0 > hc.interval.0 {
                p.push((
                    format!("{hat}.timeout"),
                    "must be more than 0s and at most the interval".into(),
                ));
            }
            for (k, v) in [
                ("healthy_threshold", hc.healthy_threshold),
                ("unhealthy_threshold", hc.unhealthy_threshold),
            ] {
                if !(1..=100).contains(&v) {
                    p.push((format!("{hat}.{k}"), "must be between 1 and 100".into()));
                }
            }
            if let Some(h) = &hc.host {
                if http::HeaderValue::from_str(h).is_err() || h.is_empty() {
                    p.push((format!("{hat}.host"), format!("{h:?} is not a host")));
                }
            }
        }
        if let Some(f) = u.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
            file_exists(&mut p, format!("{at}.tls.ca_file"), f);
        }
    }

    for (j, ns) in c.server.resolver.nameservers.iter().enumerate() {
        if parse_nameserver(ns).is_none() {
            p.push((
                format!("server.resolver.nameservers[{j}]"),
                format!("{ns:?} is not an IP address or ip:port"),
            ));
        }
    }
    if c.server.resolver.timeout.0.is_zero() {
        p.push((
            "server.resolver.timeout".into(),
            "must be more than 0s".into(),
        ));
    }

    let mut route_names = HashSet::new();
    for (i, r) in c.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        if !route_names.insert(r.name.as_str()) {
            p.push((
                format!("{at}.name"),
                format!("duplicate route name {:?}", r.name),
            ));
        }
        if !c.upstreams.contains_key(&r.upstream) {
            p.push((
                format!("{at}.upstream"),
                format!("unknown upstream {:?}", r.upstream),
            ));
        }
        if !r.matches.path_prefix.starts_with('/') {
            p.push((
                format!("{at}.match.path_prefix"),
                "must start with /".into(),
            ));
        } else {
            // requests are routed on their normalised path (a forward_raw_path route: the
            // normalised form that keeps encoded slashes): a prefix that is not in that
            // form could never match
            let prefix = r.matches.path_prefix.as_bytes();
            let normalised = if r.forward_raw_path {
                gatehouse_routing::normalize_path_keeping_encoded_slashes(
                    prefix,
                    c.server.merge_slashes,
                )
            } else {
                gatehouse_routing::normalize_path(prefix, c.server.merge_slashes)
            };
            match normalised {
                Ok(n) if n.as_bytes() == prefix => {}
                Ok(n) => p.push((
                    format!("{at}.match.path_prefix"),
                    format!("requests are matched on their normalised path: write {n:?}"),
                )),
                Err(e) => p.push((format!("{at}.match.path_prefix"), e.to_string())),
            }
        }
        if let Some(h) = &r.matches.host {
            if h.is_empty()
                || gatehouse_routing::host_name(h) != h
                || gatehouse_routing::normalize_host(h.as_bytes()).is_err()
            {
                p.push((
                    format!("{at}.match.host"),
                    "must be a host name or address without port".into(),
                ));
            }
        }
        if let Some(ls) = &r.matches.listeners {
            for (j, l) in ls.iter().enumerate() {
                if !c.listeners.iter().any(|x| &x.name == l) {
                    p.push((
                        format!("{at}.match.listeners[{j}]"),
                        format!("unknown listener {l:?}"),
                    ));
                }
            }
        }
        validate_filters(&mut p, c, i, r);
    }
    p
}

fn check_url(p: &mut Problems, path: String, u: &str) {
    if !(u.starts_with("http://") || u.starts_with("https://")) {
        p.push((path, format!("{u:?} is not an http(s) URL")));
    }
}

fn validate_filters(p: &mut Problems, c: &Config, i: usize, r: &Route) {
    let mut seen_cert = false;
    let mut seen_token = false;
    let mut kinds = HashSet::new();
    for (j, f) in r.filters.iter().enumerate() {
        let at = format!("routes[{i}].filters[{j}]");
        if !kinds.insert(f.kind()) {
            p.push((
                at.clone(),
                format!("route {:?}: {} appears twice", r.name, f.kind()),
            ));
        }
        match f {
            FilterConfig::ClientCert(cc) => {
                seen_cert = true;
                if let Some(files) = &cc.ca_files {
                    for (k, file) in files.iter().enumerate() {
                        file_exists(p, format!("{at}.ca_files[{k}]"), file);
                    }
                }
                for (k, file) in cc.revocation.crl_files.iter().enumerate() {
                    file_exists(p, format!("{at}.revocation.crl_files[{k}]"), file);
                }
                if cc.revocation.mode == RevocationMode::Off
                    && (!cc.revocation.crl_files.is_empty()
                        || cc.revocation.fetch_distribution_points)
                {
                    p.push((
                        format!("{at}.revocation.mode"),
                        "CRLs are configured but mode is off".into(),
                    ));
                }
                if cc.revocation.mode != RevocationMode::Off
                    && cc.revocation.crl_files.is_empty()
                    && !cc.revocation.fetch_distribution_points
                {
                    p.push((
                        format!("{at}.revocation"),
                        "revocation is on but there are no crl_files and fetch_distribution_points is false".into(),
                    ));
                }
                if cc.revocation.refresh.is_some_and(|d| d.0.is_zero())
                    || cc.revocation.max_cached_crls == Some(0)
                {
                    p.push((
                        format!("{at}.revocation"),
                        "refresh and max_cached_crls must be positive".into(),
                    ));
                }
                for (k, id) in cc.identities.iter().enumerate() {
                    if *id == Identity::default() {
                        p.push((
                            format!("{at}.identities[{k}]"),
                            "an identity needs at least one field".into(),
                        ));
                    }
                    for (field, v, len) in [
                        ("thumbprint_sha256", &id.thumbprint_sha256, 64),
                        ("thumbprint_sha1", &id.thumbprint_sha1, 40),
                        ("issuer_thumbprint_sha256", &id.issuer_thumbprint_sha256, 64),
                    ] {
                        if let Some(v) = v {
                            let hex: String = v.chars().filter(|c| *c != ':').collect();
                            if hex.len() != len || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                                p.push((
                                    format!("{at}.identities[{k}].{field}"),
                                    format!("expected {len} hex digits (colons allowed)"),
                                ));
                            }
                        }
                    }
                }
                if cc.forward.format != CertForwardFormat::Pem && cc.forward.header.is_some() {
                    p.push((
                        format!("{at}.forward.header"),
                        "only the pem format takes a header name".into(),
                    ));
                }
            }
            FilterConfig::PhantomToken(pt) => {
                seen_token = true;
                let accept = match c.authorization_servers.get(&pt.authorization_server) {
                    None => {
                        p.push((
                            format!("{at}.authorization_server"),
                            format!("unknown authorization server {:?}", pt.authorization_server),
                        ));
                        None
                    }
                    Some(a) => match &a.introspection {
                        None => {
                            p.push((
                                format!("{at}.authorization_server"),
                                format!(
                                    "{:?} has no introspection endpoint",
                                    pt.authorization_server
                                ),
                            ));
                            None
                        }
                        Some(i) => Some(i.accept),
                    },
                };
                let forward = pt.forward(accept);
                let mismatch = match (forward, accept) {
                    (ForwardJwt::AsIssued, Some(IntrospectionFormat::TokenIntrospectionJwt)) => Some(
                        "an RFC 9701 introspection response is not an access token: use signed_by_gatehouse (an RFC 9068 token for the API) or, knowingly, introspection_response",
                    ),
                    (ForwardJwt::AsIssued, Some(IntrospectionFormat::Json)) => Some(
                        "a JSON introspection response has no JWT to forward: use signed_by_gatehouse",
                    ),
                    (ForwardJwt::IntrospectionResponse, Some(a))
                        if a != IntrospectionFormat::TokenIntrospectionJwt =>
                    {
                        Some("introspection_response needs accept: token-introspection+jwt")
                    }
                    _ => None,
                };
                if let Some(m) = mismatch {
                    p.push((format!("{at}.forward_jwt"), m.into()));
                }
                if forward == ForwardJwt::SignedByGatehouse {
                    if c.token_signing.is_none() {
                        p.push((
                            format!("{at}.forward_jwt"),
                            "signed_by_gatehouse needs token_signing (the key Gatehouse signs the upstream JWT with)".into(),
                        ));
                    }
                    match pt.audience.as_deref() {
                        None => p.push((
                            format!("{at}.audience"),
                            "required with signed_by_gatehouse: the aud of the JWT the API receives (its identifier, e.g. https://api.example.com)".into(),
                        )),
                        Some(a) if a.trim().is_empty() => {
                            p.push((format!("{at}.audience"), "must not be empty".into()))
                        }
                        _ => {}
                    }
                } else if pt.audience.is_some() {
                    p.push((
                        format!("{at}.audience"),
                        "only signed_by_gatehouse sets an audience (the authorization server's JWT carries its own)".into(),
                    ));
                }
            }
            FilterConfig::Jwt(jf) => {
                seen_token = true;
                match c.authorization_servers.get(&jf.authorization_server) {
                    None => p.push((
                        format!("{at}.authorization_server"),
                        format!("unknown authorization server {:?}", jf.authorization_server),
                    )),
                    Some(a) if a.jwks_uri.is_none() && a.jwks_file.is_none() => p.push((
                        format!("{at}.authorization_server"),
                        format!("{:?} has no jwks_uri or jwks_file", jf.authorization_server),
                    )),
                    // a JWT access token is only as good as the issuer and audience it was
                    // checked for (RFC 9068 §4): both are required, never silently skipped
                    Some(a) if a.issuer.is_none() => p.push((
                        format!("{at}.authorization_server"),
                        format!(
                            "{:?} has no issuer: the jwt filter checks iss",
                            jf.authorization_server
                        ),
                    )),
                    Some(_) => {}
                }
                if jf.audience.is_empty() {
                    p.push((
                        format!("{at}.audience"),
                        "required: the aud values this API accepts (RFC 9068 §4)".into(),
                    ));
                }
            }
            FilterConfig::CertBoundToken(cb) => {
                if cb.mode != BindingMode::Off {
                    if !seen_token {
                        p.push((
                            at.clone(),
                            format!("route {:?}: cert_bound_token needs a token source (phantom_token or jwt) earlier in the chain", r.name),
                        ));
                    }
                    if !seen_cert {
                        p.push((
                            at.clone(),
                            format!("route {:?}: cert_bound_token needs client_cert earlier in the chain", r.name),
                        ));
                    }
                }
            }
            FilterConfig::Claims(cl) => {
                if !seen_token {
                    p.push((
                        at.clone(),
                        format!("route {:?}: claims needs a token source (phantom_token or jwt) earlier in the chain", r.name),
                    ));
                }
                for (claim, h) in &cl.to_headers {
                    if http::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                        p.push((
                            format!("{at}.to_headers.{claim}"),
                            format!("{h:?} is not a valid header name"),
                        ));
                    }
                }
            }
        }
    }
    if seen_cert {
        let listener_off = c.listeners.iter().all(|l| {
            l.tls
                .as_ref()
                .is_none_or(|t| t.client_auth.mode == ClientCertMode::Off)
        });
        if listener_off {
            p.push((
                format!("routes[{i}]"),
                format!(
                    "route {:?} checks client certificates but no listener requests them",
                    r.name
                ),
            ));
        }
    }
}

/// A peer's `host:port`: the host a name (RFC 1123 labels) or an IP address (`[v6]`), the
/// port a number.
pub fn parse_peer_address(a: &str) -> Result<(String, u16), String> {
    let bad = || format!("{a:?} is not host:port");
    let (host, port) = a.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(format!("{a:?}: port 0"));
    }
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => {
            v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            v6
        }
        None => host,
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok((host.to_owned(), port));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("{a:?}: {host:?} is not a host name or IP address"));
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// A name server: `ip` (port 53) or `ip:port` (`[v6]:port`).
pub fn parse_nameserver(s: &str) -> Option<std::net::SocketAddr> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Some(std::net::SocketAddr::new(ip, 53));
    }
    s.parse().ok()
}

/// What is valid but deserves a second look (printed by `check`, logged at start and
/// reload), as (field path, message).
pub fn warnings(c: &Config) -> Problems {
    let mut w = Problems::new();
    for (ri, r) in c.routes.iter().enumerate() {
        for (fi, f) in r.filters.iter().enumerate() {
            if let FilterConfig::PhantomToken(pt) = f {
                if pt.forward_jwt == Some(ForwardJwt::IntrospectionResponse) {
                    w.push((
                        format!("routes[{ri}].filters[{fi}].forward_jwt"),
                        "the upstream receives the RFC 9701 introspection response as its bearer token: it is not an access token (aud is Gatehouse's client id, the claims sit under token_introspection); prefer signed_by_gatehouse".into(),
                    ));
                }
            }
        }
    }
    w
}
