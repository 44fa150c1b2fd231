//! Route selection: the first route, in specificity order, whose listener, host and path
//! prefix match.

/// What a route matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteKey {
    /// Only on these listeners (by name); `None`: all.
    pub listeners: Option<Vec<String>>,
    /// Host name without port, in canonical form (see [`crate::normalize_host`]); `None`:
    /// any host.
    pub host: Option<String>,
    /// Path prefix, matched against the normalised path.
    pub path_prefix: String,
    /// Compare the prefix byte for byte. Off by default: `/ADMIN/x` is under `/admin/`,
    /// so a case-insensitive upstream cannot be reached around a stricter route.
    pub case_sensitive: bool,
    /// Forward the path exactly as received, not normalised (see [`Self::matches`]).
    pub raw_path: bool,
}

impl RouteKey {
    /// A key from its config values; the host is made canonical here.
    pub fn new(
        listeners: Option<Vec<String>>,
        host: Option<&str>,
        path_prefix: &str,
        case_sensitive: bool,
        raw_path: bool,
    ) -> Self {
        // the canonical form requests are matched in (config validation refuses hosts
        // that have none)
        let host = host.map(|h| {
            crate::normalize_host(h.as_bytes())
                .map(|c| c.into_owned())
                .unwrap_or_else(|_| h.to_ascii_lowercase())
        });
        Self {
            listeners,
            host,
            path_prefix: path_prefix.to_owned(),
            case_sensitive,
            raw_path,
        }
    }

    /// Most specific first: routes with a host, then longer prefixes (a stable sort keeps
    /// the config order among equals).
    pub fn specificity(&self, other: &Self) -> std::cmp::Ordering {
        other
            .host
            .is_some()
            .cmp(&self.host.is_some())
            .then(other.path_prefix.len().cmp(&self.path_prefix.len()))
    }

    /// Whether this route takes `req`: its path prefix against the normalised path. A
    /// raw-path route (which forwards the path as received) is matched on the normalised
    /// form that keeps encoded slashes, never on the raw bytes: dot segments cannot lead
    /// into or out of it (`/files/../admin/x` is not its, `/x/../files/a` is).
    pub fn matches(&self, req: &RouteRequest<'_>) -> bool {
        let path = if self.raw_path {
            req.path.or(req.path_with_encoded_slashes)
        } else {
            req.path
        };
        path.is_some_and(|p| self.prefix_of(p.as_bytes()))
            && self
                .listeners
                .as_ref()
                .is_none_or(|ls| req.listener.is_some_and(|l| ls.iter().any(|x| x == l)))
            && self
                .host
                .as_ref()
                .is_none_or(|h| req.host.is_some_and(|x| x == h))
    }

    fn prefix_of(&self, path: &[u8]) -> bool {
        let prefix = self.path_prefix.as_bytes();
        path.len() >= prefix.len()
            && if self.case_sensitive {
                &path[..prefix.len()] == prefix
            } else {
                path[..prefix.len()].eq_ignore_ascii_case(prefix)
            }
    }
}

/// What a request offers the router.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// The listener's name.
    pub listener: Option<&'a str>,
    /// Canonical host name without port (`None`: the request named no host).
    pub host: Option<&'a str>,
    /// The normalised path; `None` when it could not be normalised.
    pub path: Option<&'a str>,
    /// When `path` is `None` because of an encoded `/` or `\`: the normalised form that
    /// keeps them (see [`crate::normalize_path_keeping_encoded_slashes`]).
    pub path_with_encoded_slashes: Option<&'a str>,
}

/// The first of `routes` (already in specificity order) that takes `req`.
pub fn select<'r, T>(
    routes: &'r [T],
    key: impl Fn(&T) -> &RouteKey,
    req: &RouteRequest<'_>,
) -> Option<(usize, &'r T)> {
    routes.iter().enumerate().find(|(_, r)| key(r).matches(req))
}
