//! The request as the router sees it, decided once from the request header, and the
//! rewrite that makes the upstream receive exactly that (see `gatehouse-routing`).

use crate::runtime::Runtime;
use gatehouse_routing::{
    host_name, normalize_host, normalize_path, normalize_path_keeping_encoded_slashes,
    normalize_query, split_target, RouteRequest, TargetError,
};
use http::header::HOST;
use http::Version;
use pingora_http::RequestHeader;
use std::borrow::Cow;
use std::sync::Arc;

/// Where a request goes, and what must change for the upstream to receive what the route
/// matched.
pub struct Routed {
    /// Index into [`Runtime::routes`].
    pub index: usize,
    pub name: Arc<str>,
    pub websocket: bool,
    pub rewrite: Option<Rewrite>,
}

/// Reads the canonical target of `req` and picks its route. `Ok(None)`: no route matches
/// (404); `Err`: the request cannot be routed safely (400).
pub fn route(
    rt: &Runtime,
    req: &RequestHeader,
    listener: Option<&str>,
) -> Result<Option<Routed>, TargetError> {
    let target = Target::read(req, rt.merge_slashes)?;
    match rt.route(&target.route_request(listener)) {
        Some((index, r)) => Ok(Some(Routed {
            index,
            name: r.name.clone(),
            websocket: r.websocket,
            rewrite: target.rewrite(r.key.raw_path)?,
        })),
        // nothing takes a path that could not be normalised: say why
        None => target.path.as_ref().map(|_| None).map_err(|e| *e),
    }
}

/// The canonical target of one request.
pub struct Target<'a> {
    /// Canonical `host[:port]` (`None`: an HTTP/1.0 request that named no host).
    pub host: Option<Cow<'a, str>>,
    /// The normalised path, or why it could not be normalised.
    pub path: Result<Cow<'a, str>, TargetError>,
    /// With an encoded `/` or `\` in the path: the normalised form that keeps them (only
    /// `forward_raw_path` routes match on it).
    with_encoded_slashes: Option<Cow<'a, str>>,
    /// The path as received.
    pub raw_path: &'a [u8],
    pub query: Option<&'a [u8]>,
    /// The target was not origin-form (absolute-form, or an HTTP/2 `:authority`).
    absolute: bool,
    /// The `Host` header as received.
    host_header: Option<&'a [u8]>,
}

impl<'a> Target<'a> {
    /// Reads the target and host of `req`. Fails on what no route may take: a target that
    /// is not origin- or absolute-form, a bad host, an HTTP/1.1 request without `Host`, a
    /// `Host` that disagrees with the target's authority.
    pub fn read(req: &'a RequestHeader, merge_slashes: bool) -> Result<Self, TargetError> {
        let split = split_target(req.raw_path())?;
        let host_header = req.headers.get(HOST).map(|h| h.as_bytes());
        if host_header.is_none() && req.version == Version::HTTP_11 {
            // RFC 9112 §3.2, even for an absolute-form target
            return Err(TargetError::MissingHost);
        }
        // an absolute-form target (HTTP/1) or :authority (HTTP/2, kept in the URI)
        let authority = split
            .authority
            .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()));
        let host = match (authority, host_header) {
            (Some(a), Some(h)) => {
                let a = normalize_host(a)?;
                if normalize_host(h)? != a {
                    return Err(TargetError::HostMismatch);
                }
                Some(a)
            }
            (Some(a), None) => Some(normalize_host(a)?),
            (None, Some(h)) => Some(normalize_host(h)?),
            (None, None) if req.version == Version::HTTP_10 => None,
            (None, None) => return Err(TargetError::MissingHost),
        };
        let path = normalize_path(split.path, merge_slashes);
        let with_encoded_slashes = match path {
            Err(TargetError::EncodedSlash) => {
                normalize_path_keeping_encoded_slashes(split.path, merge_slashes).ok()
            }
            _ => None,
        };
        Ok(Self {
            host,
            path,
            with_encoded_slashes,
            raw_path: split.path,
            query: split.query,
            absolute: authority.is_some(),
            host_header,
        })
    }

    /// What the router matches on.
    pub fn route_request<'r>(&'r self, listener: Option<&'r str>) -> RouteRequest<'r> {
        RouteRequest {
            listener,
            host: self.host.as_deref().map(host_name),
            path: self.path.as_deref().ok(),
            path_with_encoded_slashes: self.with_encoded_slashes.as_deref(),
        }
    }

    /// What must change in the request header so that the upstream receives what the
    /// route matched: `None` when it already does (the common case costs no copy).
    pub fn rewrite(&self, raw_route: bool) -> Result<Option<Rewrite>, TargetError> {
        let host = match (&self.host, self.host_header) {
            (Some(h), Some(sent)) if h.as_bytes() == sent => None,
            (Some(h), _) => Some(h.to_string()),
            (None, _) => None,
        };
        let target = if raw_route {
            // the bytes as received, in origin-form
            self.absolute.then(|| {
                let mut t = self.raw_path.to_vec();
                if let Some(q) = self.query {
                    t.push(b'?');
                    t.extend_from_slice(q);
                }
                TargetBytes::Raw(t)
            })
        } else {
            let path = self.path.as_ref().map_err(|e| *e)?;
            let query = self.query.map(normalize_query);
            let changed = matches!(path, Cow::Owned(_)) || matches!(query, Some(Cow::Owned(_)));
            (changed || self.absolute).then(|| {
                let mut t =
                    String::with_capacity(path.len() + query.as_ref().map_or(0, |q| q.len() + 1));
                t.push_str(path);
                if let Some(q) = &query {
                    t.push('?');
                    t.push_str(q);
                }
                TargetBytes::Normalised(t)
            })
        };
        Ok((host.is_some() || target.is_some()).then_some(Rewrite { host, target }))
    }
}

enum TargetBytes {
    Normalised(String),
    Raw(Vec<u8>),
}

/// A change to the request header, computed while it is borrowed, applied after.
pub struct Rewrite {
    host: Option<String>,
    target: Option<TargetBytes>,
}

impl Rewrite {
    /// Applies it: the upstream gets this target in origin-form and this `Host`.
    pub fn apply(self, req: &mut RequestHeader) -> pingora_core::Result<()> {
        match self.target {
            Some(TargetBytes::Normalised(t)) => match http::Uri::try_from(t) {
                Ok(uri) => req.set_uri(uri),
                Err(_) => {
                    return pingora_core::Error::e_explain(
                        pingora_core::ErrorType::InternalError,
                        "normalised target is not a URI",
                    )
                }
            },
            Some(TargetBytes::Raw(t)) => req.set_raw_path(&t)?,
            None => {}
        }
        if let Some(h) = self.host {
            req.insert_header(HOST, h)?;
        }
        Ok(())
    }
}

/// `Content-Length` as one canonical value when the client sent a list (`93, 93`), the
/// field twice, or leading zeros; `None` when it is canonical already. Pingora has
/// refused values that differ, and dropped the field when `Transfer-Encoding` is present.
pub fn canonical_content_length(req: &RequestHeader) -> Option<String> {
    let mut values = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    let first = values.next()?;
    let single = values.next().is_none();
    let b = first.as_bytes();
    if single && !b.is_empty() && b.iter().all(u8::is_ascii_digit) && (b[0] != b'0' || b.len() == 1)
    {
        return None;
    }
    // the first number of the first field: Pingora checked that all are equal
    let digits = std::str::from_utf8(b).ok()?.split(',').next()?.trim();
    digits.parse::<u64>().ok().map(|n| n.to_string())
}

/// Removes `Upgrade` (and its `Connection` nomination) from the client's request, so that
/// neither the upstream nor Pingora's downstream session treats it as an upgrade.
pub fn drop_upgrade(req: &mut RequestHeader) {
    if req.headers.contains_key(http::header::UPGRADE) {
        req.remove_header(&http::header::UPGRADE);
        req.remove_header(&http::header::CONNECTION);
    }
}
