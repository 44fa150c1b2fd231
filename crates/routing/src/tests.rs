#![allow(clippy::unwrap_used)]

use crate::*;

fn norm(p: &str) -> Result<String, TargetError> {
    normalize_path(p.as_bytes(), true).map(|c| c.into_owned())
}

#[test]
fn canonical_paths_are_borrowed() {
    for p in [
        "/",
        "/api/echo",
        "/a/b/",
        "/a%20b",
        "/x;y=1/z",
        "/~u/_a-b.c",
    ] {
        assert!(
            matches!(
                normalize_path(p.as_bytes(), true).unwrap(),
                std::borrow::Cow::Borrowed(_)
            ),
            "{p}"
        );
    }
}

#[test]
fn dot_segments_are_removed() {
    let cases = [
        ("/public/../api/echo", "/api/echo"),
        ("/public/%2e%2e/api/echo", "/api/echo"),
        ("/public/%2E%2e/api/echo", "/api/echo"),
        ("/x/./../admin/y", "/admin/y"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("/..", "/"),
        ("/../../x", "/x"),
        ("/a/./b/../../c/", "/c/"),
        ("/.%2e/admin", "/admin"),
    ];
    for (raw, want) in cases {
        assert_eq!(norm(raw).unwrap(), want, "{raw}");
    }
}

#[test]
fn percent_encodings_are_made_canonical() {
    assert_eq!(norm("/%61dmin/x").unwrap(), "/admin/x");
    assert_eq!(norm("/a%7eb").unwrap(), "/a~b");
    assert_eq!(norm("/a%3fb").unwrap(), "/a%3Fb");
    assert_eq!(norm("/a%c3%a9").unwrap(), "/a%C3%A9");
    // what a URI may not carry is encoded
    assert_eq!(norm("/a b\"<").unwrap(), "/a%20b%22%3C");
    assert_eq!(
        normalize_path("/caf\u{e9}".as_bytes(), true).unwrap(),
        "/caf%C3%A9"
    );
}

#[test]
fn slashes_are_merged_when_asked() {
    assert_eq!(norm("//admin/x").unwrap(), "/admin/x");
    assert_eq!(norm("/a//b///c//").unwrap(), "/a/b/c/");
    assert_eq!(
        normalize_path(b"//admin/x", false).unwrap(),
        "//admin/x",
        "kept without merge_slashes"
    );
    // without merging, ".." removes the empty segment, as RFC 3986 says
    assert_eq!(normalize_path(b"/a//../b", false).unwrap(), "/a/b");
    assert_eq!(normalize_path(b"/a//../b", true).unwrap(), "/b");
}

#[test]
fn unsafe_paths_are_refused() {
    let cases = [
        ("/a%2fb", TargetError::EncodedSlash),
        ("/a%2Fb", TargetError::EncodedSlash),
        ("/a%5cb", TargetError::EncodedSlash),
        ("/a\\..\\b", TargetError::Backslash),
        ("/a%00b", TargetError::EncodedNul),
        ("/a\0b", TargetError::EncodedNul),
        ("/a%zz", TargetError::BadPercent),
        ("/a%2", TargetError::BadPercent),
        ("/public/..;/api/x", TargetError::DotSegmentParameters),
        ("/public/.;x=1/api", TargetError::DotSegmentParameters),
        ("/public/%2e%2e;/api", TargetError::DotSegmentParameters),
        ("admin/x", TargetError::Form),
    ];
    for (raw, want) in cases {
        assert_eq!(norm(raw), Err(want), "{raw}");
    }
}

#[test]
fn encoded_slashes_can_be_kept_for_raw_routes() {
    let keep = |p: &str| {
        normalize_path_keeping_encoded_slashes(p.as_bytes(), true).map(|c| c.into_owned())
    };
    assert_eq!(keep("/files/a%2fb/./c").unwrap(), "/files/a%2Fb/c");
    assert_eq!(keep("/files/a%5Cb/../../x").unwrap(), "/x");
    assert_eq!(keep("/a%00"), Err(TargetError::EncodedNul));
    assert_eq!(keep("/a\\b"), Err(TargetError::Backslash));
}

#[test]
fn normalisation_is_idempotent() {
    for p in [
        "/a/../b/./c//d/%2e%2E/e%41",
        "/%7e/..",
        "/x/y/z/../../..",
        "//",
        "/a b/%c3%a9/",
    ] {
        for merge in [true, false] {
            let once = normalize_path(p.as_bytes(), merge).unwrap().into_owned();
            let twice = normalize_path(once.as_bytes(), merge).unwrap().into_owned();
            assert_eq!(once, twice, "{p} merge={merge}");
        }
    }
}

#[test]
fn targets_are_split_by_form() {
    let t = split_target(b"/a/b?x=1").unwrap();
    assert_eq!(
        (t.authority, t.path, t.query),
        (None, &b"/a/b"[..], Some(&b"x=1"[..]))
    );
    let t = split_target(b"HTTP://Secure.Example:8443/x?q").unwrap();
    assert_eq!(t.authority, Some(&b"Secure.Example:8443"[..]));
    assert_eq!((t.path, t.query), (&b"/x"[..], Some(&b"q"[..])));
    let t = split_target(b"https://h?q").unwrap();
    assert_eq!((t.path, t.query), (&b"/"[..], Some(&b"q"[..])));
    for bad in [&b"admin/x"[..], b"*", b"h:443", b"ftp://h/x", b""] {
        assert_eq!(split_target(bad), Err(TargetError::Form));
    }
}

#[test]
fn queries_keep_their_encodings() {
    assert_eq!(normalize_query(b"a=%2F&b=c"), "a=%2F&b=c");
    assert_eq!(normalize_query(b"a=x y\"\xff"), "a=x%20y%22%FF");
}

#[test]
fn hosts_are_made_canonical() {
    let ok = [
        ("api.example.com", "api.example.com"),
        ("API.Example.COM:8443", "api.example.com:8443"),
        ("secure.example.", "secure.example"),
        ("secure.example.:443", "secure.example:443"),
        ("127.0.0.1:80", "127.0.0.1:80"),
        ("[::1]:8443", "[::1]:8443"),
        ("[FE80::1]", "[fe80::1]"),
        ("", ""),
    ];
    for (raw, want) in ok {
        assert_eq!(normalize_host(raw.as_bytes()).unwrap(), want, "{raw}");
    }
    for bad in [
        "a b", "a/b", "u@h", "h:x", "h:123456", ":80", "[::1", "[zz]", "a..", "h%41",
    ] {
        assert_eq!(
            normalize_host(bad.as_bytes()),
            Err(TargetError::InvalidHost),
            "{bad}"
        );
    }
    assert_eq!(host_name("api.example.com:8443"), "api.example.com");
    assert_eq!(host_name("[::1]:8443"), "[::1]");
    assert_eq!(host_name("h"), "h");
}

fn key(host: Option<&str>, prefix: &str) -> RouteKey {
    RouteKey::new(None, host, prefix, false, false)
}

fn pick(keys: &[RouteKey], host: Option<&str>, raw: &str) -> Option<usize> {
    let path = normalize_path(raw.as_bytes(), true).ok();
    let kept = normalize_path_keeping_encoded_slashes(raw.as_bytes(), true).ok();
    let req = RouteRequest {
        listener: None,
        host,
        path: path.as_deref(),
        path_with_encoded_slashes: kept.as_deref(),
    };
    select(keys, |k| k, &req).map(|(i, _)| i)
}

#[test]
fn routes_match_the_normalised_path() {
    let mut keys = vec![key(None, "/public/"), key(None, "/admin/"), key(None, "/")];
    keys.sort_by(RouteKey::specificity);
    let admin = keys.iter().position(|k| k.path_prefix == "/admin/");
    for p in [
        "/admin/x",
        "/x/../admin/x",
        "/public/%2e%2e/admin/x",
        "//admin/x",
        "/%61dmin/x",
        "/ADMIN/x",
    ] {
        assert_eq!(pick(&keys, None, p), admin, "{p}");
    }
}

#[test]
fn case_sensitive_and_raw_routes() {
    let mut keys = vec![
        RouteKey::new(None, None, "/Admin/", true, false),
        RouteKey::new(None, None, "/files/", false, true),
        key(None, "/"),
    ];
    keys.sort_by(RouteKey::specificity);
    let at = |p: &str| keys.iter().position(|k| k.path_prefix == p);
    assert_eq!(pick(&keys, None, "/admin/x"), at("/"));
    assert_eq!(pick(&keys, None, "/Admin/x"), at("/Admin/"));
    // a raw route takes encoded slashes, and nothing else does
    assert_eq!(pick(&keys, None, "/files/a%2Fb"), at("/files/"));
    assert_eq!(pick(&keys, None, "/other/a%2Fb"), None);
    // dot segments lead neither out of it nor into it
    assert_eq!(pick(&keys, None, "/files/../admin/x"), at("/"));
    assert_eq!(pick(&keys, None, "/files/a%2Fb/../../admin/x"), None);
    // ... and on their normalised form: nothing routed elsewhere is forwarded as a path
    // that the upstream resolves into it
    assert_eq!(pick(&keys, None, "/x/../files/a"), at("/files/"));
}

#[test]
fn hosts_route_without_port_and_case() {
    let mut keys = vec![key(Some("Secure.Example."), "/"), key(None, "/")];
    keys.sort_by(RouteKey::specificity);
    let host = normalize_host(b"SECURE.example.:8443").unwrap();
    assert_eq!(pick(&keys, Some(host_name(&host)), "/x"), Some(0));
    assert_eq!(pick(&keys, None, "/x"), Some(1));
}
