//! The request target, made canonical once: the path Gatehouse routes on is the path the
//! upstream receives.
//!
//! The path is normalised as RFC 3986 §6.2.2 says: percent-encoded unreserved characters
//! are decoded, the remaining percent-encodings are upper-cased, characters a URI may not
//! carry are percent-encoded, and dot segments are removed (§5.2.4). Empty segments are
//! merged when asked (`merge_slashes`, as NGINX does by default). What cannot be made
//! canonical safely is refused: an encoded `/` or `\` inside a segment (the upstream could
//! decode it into a separator the router never saw), a backslash (some servers read it as
//! `/`), an encoded NUL, a broken percent-encoding, and a dot segment carrying parameters
//! (`..;x`, which servlet containers resolve as `..`).

use std::borrow::Cow;

/// Why a request target was refused. Every variant is the client's fault: 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the request target must be origin-form (/path) or absolute-form (http://host/path)")]
    Form,
    #[error("the path has an invalid percent-encoding")]
    BadPercent,
    #[error("the path has an encoded '/' or '\\' inside a segment")]
    EncodedSlash,
    #[error("the path has a backslash")]
    Backslash,
    #[error("the path has a NUL (raw or %00)")]
    EncodedNul,
    #[error("the path has a dot segment with parameters ('..;')")]
    DotSegmentParameters,
    #[error("the host is not a valid host[:port]")]
    InvalidHost,
    #[error("an HTTP/1.1 request must carry a Host header")]
    MissingHost,
    #[error("the Host header and the request target name different hosts")]
    HostMismatch,
}

impl TargetError {
    /// Machine-readable reason (a bounded metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Form => "invalid_target",
            Self::BadPercent => "invalid_percent_encoding",
            Self::EncodedSlash => "encoded_slash",
            Self::Backslash => "backslash",
            Self::EncodedNul => "encoded_nul",
            Self::DotSegmentParameters => "dot_segment_parameters",
            Self::InvalidHost => "invalid_host",
            Self::MissingHost => "missing_host",
            Self::HostMismatch => "host_mismatch",
        }
    }
}

/// A request target split into its parts (RFC 9112 §3.2), nothing decoded yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitTarget<'a> {
    /// The authority of an absolute-form target.
    pub authority: Option<&'a [u8]>,
    /// The path, starting with `/`.
    pub path: &'a [u8],
    /// The query without its `?`.
    pub query: Option<&'a [u8]>,
}

/// Splits origin-form (`/p?q`) and absolute-form (`http://host/p?q`, `https://…`) targets.
/// Anything else (asterisk-form, authority-form, a relative path such as `admin/x`) is
/// refused: an API edge has no use for them, and a relative path would otherwise be
/// routed as `/` and forwarded as written.
pub fn split_target(raw: &[u8]) -> Result<SplitTarget<'_>, TargetError> {
    let raw = match raw.iter().position(|&b| b == b'#') {
        Some(i) => &raw[..i],
        None => raw,
    };
    let (authority, rest) = if raw.first() == Some(&b'/') {
        (None, raw)
    } else {
        let after_scheme = strip_prefix_ignore_case(raw, b"http://")
            .or_else(|| strip_prefix_ignore_case(raw, b"https://"))
            .ok_or(TargetError::Form)?;
        let end = after_scheme
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(after_scheme.len());
        (Some(&after_scheme[..end]), &after_scheme[end..])
    };
    let (path, query) = match rest.iter().position(|&b| b == b'?') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    // `http://host?q` has an empty path: origin-form needs at least "/"
    let path: &[u8] = if path.is_empty() { b"/" } else { path };
    Ok(SplitTarget {
        authority,
        path,
        query,
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// RFC 3986 §2.3 unreserved.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// What a path may carry as it is (RFC 3986 pchar without `%`, plus `/`).
fn path_char(b: u8) -> bool {
    unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
        || b == b'/'
}

/// What a query may carry as it is (RFC 3986 query, `%` left alone).
fn query_char(b: u8) -> bool {
    path_char(b) || matches!(b, b'?' | b'%')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn push_encoded(out: &mut Vec<u8>, b: u8) {
    out.push(b'%');
    out.push(HEX_UPPER[usize::from(b >> 4)]);
    out.push(HEX_UPPER[usize::from(b & 15)]);
}

/// The byte a `%XX` at the start of `s` encodes, refusing what may not be decoded or kept.
fn percent_at(s: &[u8], keep_slashes: bool) -> Result<u8, TargetError> {
    let (Some(h), Some(l)) = (
        s.get(1).copied().and_then(hex),
        s.get(2).copied().and_then(hex),
    ) else {
        return Err(TargetError::BadPercent);
    };
    match (h << 4) | l {
        0 => Err(TargetError::EncodedNul),
        b'/' | b'\\' if !keep_slashes => Err(TargetError::EncodedSlash),
        v => Ok(v),
    }
}

/// A segment that is a dot segment once its `;` parameters are removed.
fn is_dot_with_params(seg: &[u8]) -> bool {
    match seg.iter().position(|&b| b == b';') {
        Some(i) => matches!(&seg[..i], b"." | b".."),
        None => false,
    }
}

/// Whether `path` is already canonical: then it is forwarded as it came, without a copy
/// (the common case, checked in one pass).
fn is_canonical(path: &[u8], merge_slashes: bool, keep_slashes: bool) -> Result<bool, TargetError> {
    if path.first() != Some(&b'/') {
        return Err(TargetError::Form);
    }
    // one pass: characters, escapes and segments (a request's path is read once per
    // request; most are canonical and leave here borrowed)
    let mut canonical = true;
    let mut seg_start = 1;
    let mut i = 1;
    while i < path.len() {
        match path[i] {
            b'/' => {
                // an empty segment before the last: "//"
                canonical &= !(merge_slashes && i == seg_start);
                canonical &= segment_is_canonical(&path[seg_start..i])?;
                seg_start = i + 1;
                i += 1;
            }
            b'%' => {
                let v = percent_at(&path[i..], keep_slashes)?;
                if unreserved(v)
                    || path[i + 1].is_ascii_lowercase()
                    || path[i + 2].is_ascii_lowercase()
                {
                    canonical = false;
                }
                i += 3;
            }
            b'\\' => return Err(TargetError::Backslash),
            0 => return Err(TargetError::EncodedNul),
            b => {
                canonical &= path_char(b);
                i += 1;
            }
        }
    }
    Ok(canonical && segment_is_canonical(&path[seg_start.min(path.len())..])?)
}

/// A raw segment is canonical unless it is a dot segment; a dot segment with parameters
/// is refused.
fn segment_is_canonical(seg: &[u8]) -> Result<bool, TargetError> {
    if seg.first() != Some(&b'.') {
        return Ok(true);
    }
    if is_dot_with_params(seg) {
        return Err(TargetError::DotSegmentParameters);
    }
    Ok(!matches!(seg, b"." | b".."))
}

/// The canonical form of a path (RFC 3986 §6.2.2 and §5.2.4, see the module docs).
/// Borrowed when the path is canonical already. Idempotent:
/// `normalize_path(normalize_path(p)) == normalize_path(p)`.
pub fn normalize_path(path: &[u8], merge_slashes: bool) -> Result<Cow<'_, str>, TargetError> {
    normalize(path, merge_slashes, false)
}

/// [`normalize_path`], except that an encoded `/` or `\` is kept (upper-cased) as a
/// character of its segment instead of refused: what a `forward_raw_path` route is matched
/// on, so that the dot segments around it cannot lead out of its prefix.
pub fn normalize_path_keeping_encoded_slashes(
    path: &[u8],
    merge_slashes: bool,
) -> Result<Cow<'_, str>, TargetError> {
    normalize(path, merge_slashes, true)
}

fn normalize(
    path: &[u8],
    merge_slashes: bool,
    keep_slashes: bool,
) -> Result<Cow<'_, str>, TargetError> {
    if is_canonical(path, merge_slashes, keep_slashes)? {
        // only ASCII passed the check
        return std::str::from_utf8(path)
            .map(Cow::Borrowed)
            .map_err(|_| TargetError::Form);
    }
    // 1. percent-encodings: decode unreserved, upper-case the rest, encode what a path
    //    may not carry (non-ASCII, controls, space, '"', '<', …)
    let mut bytes = Vec::with_capacity(path.len() + 8);
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            b'%' => {
                let v = percent_at(&path[i..], keep_slashes)?;
                if unreserved(v) {
                    bytes.push(v);
                } else {
                    push_encoded(&mut bytes, v);
                }
                i += 3;
            }
            b'\\' => return Err(TargetError::Backslash),
            0 => return Err(TargetError::EncodedNul),
            b if path_char(b) => {
                bytes.push(b);
                i += 1;
            }
            b => {
                push_encoded(&mut bytes, b);
                i += 1;
            }
        }
    }
    // 2. segments: remove dot segments (RFC 3986 §5.2.4), merge empty ones if asked
    let rest = &bytes[1..];
    let count = rest.iter().filter(|&&b| b == b'/').count() + 1;
    let mut out: Vec<&[u8]> = Vec::with_capacity(count);
    for (n, seg) in rest.split(|&b| b == b'/').enumerate() {
        let last = n + 1 == count;
        if is_dot_with_params(seg) {
            return Err(TargetError::DotSegmentParameters);
        }
        match seg {
            b"." => {}
            b".." => {
                out.pop();
            }
            b"" if merge_slashes && !last => continue,
            _ => {
                out.push(seg);
                continue;
            }
        }
        // a dot segment at the end leaves a trailing slash ("/a/b/.." is "/a/")
        if last {
            out.push(b"");
        }
    }
    let mut s = String::with_capacity(bytes.len());
    for seg in out {
        s.push('/');
        // only ASCII was pushed above
        s.push_str(std::str::from_utf8(seg).map_err(|_| TargetError::Form)?);
    }
    if s.is_empty() {
        s.push('/');
    }
    Ok(Cow::Owned(s))
}

/// The query as forwarded: as received, with the bytes a URI may not carry (non-ASCII,
/// controls, space, `"`, `<`, …) percent-encoded. Percent-encodings are left as they are
/// (decoding `%26` would change what the query means).
pub fn normalize_query(query: &[u8]) -> Cow<'_, str> {
    if query.iter().all(|&b| query_char(b)) {
        if let Ok(s) = std::str::from_utf8(query) {
            return Cow::Borrowed(s);
        }
    }
    let mut out = Vec::with_capacity(query.len() + 8);
    for &b in query {
        if query_char(b) {
            out.push(b);
        } else {
            push_encoded(&mut out, b);
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The canonical host: ASCII lower case, one trailing dot of the name removed, the port
/// kept as written. Refused: anything but a DNS name, an IPv4 address or a bracketed IPv6
/// literal, optionally with a numeric port. The empty host (HTTP/1.1 allows `Host:` with
/// no value) stays empty.
pub fn normalize_host(host: &[u8]) -> Result<Cow<'_, str>, TargetError> {
    let (name, port) = if host.first() == Some(&b'[') {
        let close = host
            .iter()
            .position(|&b| b == b']')
            .ok_or(TargetError::InvalidHost)?;
        let literal = &host[1..close];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(TargetError::InvalidHost);
        }
        (&host[..=close], &host[close + 1..])
    } else {
        match host.iter().position(|&b| b == b':') {
            Some(i) => (&host[..i], &host[i..]),
            None => (host, &host[host.len()..]),
        }
    };
    if !port.is_empty() {
        let digits = &port[1..];
        if port[0] != b':' || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(TargetError::InvalidHost);
        }
    }
    if name.first() != Some(&b'[') {
        if name.is_empty() && !port.is_empty() {
            return Err(TargetError::InvalidHost);
        }
        if !name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(TargetError::InvalidHost);
        }
    }
    let trailing_dot = name.len() > 1 && name.last() == Some(&b'.');
    if !trailing_dot && !host.iter().any(u8::is_ascii_uppercase) {
        return std::str::from_utf8(host)
            .map(Cow::Borrowed)
            .map_err(|_| TargetError::InvalidHost);
    }
    let name = if trailing_dot {
        &name[..name.len() - 1]
    } else {
        name
    };
    if name.ends_with(b".") {
        // "a.." is not a name
        return Err(TargetError::InvalidHost);
    }
    let mut s = String::with_capacity(host.len());
    for &b in name.iter().chain(port) {
        s.push(char::from(b.to_ascii_lowercase()));
    }
    Ok(Cow::Owned(s))
}

/// The name part of a canonical `host[:port]`.
pub fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map(|i| &host[..=i]).unwrap_or(host);
    }
    host.split_once(':').map(|(h, _)| h).unwrap_or(host)
}
