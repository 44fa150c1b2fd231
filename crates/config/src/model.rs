//! The external YAML model. Every struct denies unknown fields so a typo is an error that
//! names its path, never a silently ignored key.

use crate::Dur;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Schema version; only `1` exists.
    pub version: u32,
    #[serde(default)]
    pub server: ServerSection,
    pub admin: Option<Admin>,
    #[serde(default)]
    pub log: LogSection,
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub authorization_servers: BTreeMap<String, AuthorizationServer>,
    /// Key Gatehouse signs JWTs with when a route uses `forward_jwt: signed_by_gatehouse`.
    pub token_signing: Option<TokenSigning>,
    pub upstreams: BTreeMap<String, Upstream>,
    pub routes: Vec<Route>,
}

/// Process-wide settings (Pingora's `ServerConf` is built from these).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Worker threads per service.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// SIGTERM: how long to keep serving in-flight requests after listeners close.
    #[serde(default = "default_grace")]
    pub grace_period: Dur,
    /// After the grace period, how long runtimes get to stop.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: Dur,
    /// SIGTERM: how long `/readyz` reports 503 while listeners still accept, before they
    /// close (lets Kubernetes remove the pod from its endpoints first).
    #[serde(default = "default_drain_delay")]
    pub drain_delay: Dur,
    /// Pingora's work-stealing runtime (one multi-threaded runtime per service; the
    /// default) or, with `false`, one single-threaded runtime per thread (NGINX-like
    /// workers, fewer cross-thread wake-ups). Pingora keeps the per-thread runtimes in a
    /// process-wide table, so `false` supports one Gatehouse per process only (fine for the
    /// binary, not for in-process tests that start several).
    #[serde(default = "default_true")]
    pub work_stealing: bool,
    /// One proxy shard per worker thread (the default, with `threads` > 1): each thread
    /// has its own runtime, its own listening socket on every listener address
    /// (`SO_REUSEPORT`: the kernel spreads new connections over them) and its own upstream
    /// keep-alive pool, so a request never waits on another thread, as with NGINX's
    /// workers. TLS session tickets are shared by all shards. `false`: one runtime of
    /// `threads` threads and one socket per listener (Pingora's layout).
    #[serde(default = "default_true")]
    pub shard_per_thread: bool,
    /// Unix socket over which a running Gatehouse hands its listening sockets to a new one
    /// started with `gatehouse run --upgrade` (default: `$TMPDIR/gatehouse-upgrade.sock`).
    #[serde(default)]
    pub upgrade_sock: Option<String>,
    /// Upstream keep-alive pool size (connections).
    #[serde(default = "default_pool")]
    pub upstream_keepalive_pool: usize,
    /// Largest accepted `Authorization` header, bytes.
    #[serde(default = "default_max_auth")]
    pub max_authorization_header: usize,
    /// Merge repeated slashes in request paths before routing and forwarding (`//a` is
    /// `/a`), as NGINX does by default.
    #[serde(default = "default_true")]
    pub merge_slashes: bool,
    /// How upstream peer names are resolved.
    #[serde(default)]
    pub resolver: ResolverSection,
    /// How often the certificate, key and CA files are looked at: a change reloads the
    /// configuration as SIGHUP does (`0s`: only on SIGHUP).
    #[serde(default = "default_file_watch")]
    pub file_watch_interval: Dur,
}

fn default_file_watch() -> Dur {
    Dur::secs(10)
}

fn default_threads() -> usize {
    2
}
fn default_grace() -> Dur {
    Dur::secs(10)
}
fn default_shutdown_timeout() -> Dur {
    Dur::secs(5)
}
/// Long enough for Kubernetes to see `/readyz` fail and take the pod out of the Service's
/// endpoints (and kube-proxy and load balancers to follow) before the listeners close, so
/// no new connection is refused; 0 when a preStop hook already waits.
fn default_drain_delay() -> Dur {
    Dur::secs(5)
}
fn default_true() -> bool {
    true
}

fn default_pool() -> usize {
    128
}
fn default_max_auth() -> usize {
    8192
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            threads: default_threads(),
            grace_period: default_grace(),
            shutdown_timeout: default_shutdown_timeout(),
            drain_delay: default_drain_delay(),
            work_stealing: true,
            shard_per_thread: true,
            upgrade_sock: None,
            upstream_keepalive_pool: default_pool(),
            max_authorization_header: default_max_auth(),
            merge_slashes: true,
            resolver: ResolverSection::default(),
            file_watch_interval: default_file_watch(),
        }
    }
}

/// The plain-HTTP admin listener: `/healthz`, `/readyz`, `/metrics`, `/jwks`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub listen: SocketAddr,
}

/// Logging.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `stdout` (default), `off`, or a file path for the JSON access log.
    #[serde(default)]
    pub access_log: Option<String>,
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    pub listen: SocketAddr,
    /// Absent: plain HTTP.
    pub tls: Option<ListenerTls>,
}

/// TLS protocol versions.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    #[serde(rename = "tls1.2")]
    Tls12,
    #[serde(rename = "tls1.3")]
    Tls13,
}

/// ALPN protocols.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum Alpn {
    #[serde(rename = "h2")]
    H2,
    #[serde(rename = "http/1.1")]
    Http11,
}

/// Server-side TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM chain, leaf first.
    pub cert_file: String,
    pub key_file: String,
    #[serde(default = "default_protocols")]
    pub protocols: Vec<TlsVersion>,
    /// Key-exchange groups in preference order (OpenSSL names: `x25519`, `p256`/`P-256`, …).
    pub groups: Option<Vec<String>>,
    #[serde(default = "default_alpn")]
    pub alpn: Vec<Alpn>,
    /// TLS session tickets / ids (resumption).
    #[serde(default = "yes")]
    pub session_resumption: bool,
    /// Session-ticket key files (80 or 48 random bytes each, NGINX's
    /// `ssl_session_ticket_key` format): the first encrypts new tickets, every one decrypts.
    /// Give every replica the same files and a partner resumes on any of them; rotate by
    /// putting a new file first. Reloaded when they change. Empty: random keys per process.
    #[serde(default)]
    pub session_ticket_key_files: Vec<String>,
    #[serde(default)]
    pub client_auth: ClientAuthTls,
}

fn default_protocols() -> Vec<TlsVersion> {
    vec![TlsVersion::Tls12, TlsVersion::Tls13]
}
fn default_alpn() -> Vec<Alpn> {
    vec![Alpn::H2, Alpn::Http11]
}
fn yes() -> bool {
    true
}

/// Whether a listener asks for a client certificate.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertMode {
    /// Ask for a certificate; requests without a valid one get 403.
    Required,
    /// Ask for a certificate; requests without one continue without an identity.
    Optional,
    /// Don't ask.
    #[default]
    Off,
}

/// Client-certificate request and verification at the listener.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthTls {
    #[serde(default)]
    pub mode: ClientCertMode,
    /// PEM bundles of trusted CAs.
    #[serde(default)]
    pub ca_files: Vec<String>,
    /// Maximum number of intermediates between leaf and trust anchor.
    #[serde(default = "default_depth")]
    pub max_depth: u32,
}

fn default_depth() -> u32 {
    4
}

/// An OAuth authorization server Gatehouse talks to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationServer {
    /// Expected `iss` of JWTs it signs.
    pub issuer: Option<String>,
    /// Where its signing keys are published.
    pub jwks_uri: Option<String>,
    /// Alternatively, a JWKS file.
    pub jwks_file: Option<String>,
    /// PEM bundle to trust for HTTPS calls to this server (default: system roots).
    pub ca_file: Option<String>,
    /// Allowed JWS algorithms.
    #[serde(default = "default_algs")]
    pub algorithms: Vec<String>,
    /// Clock leeway for `exp`/`nbf`/`iat`.
    #[serde(default = "default_leeway")]
    pub leeway: Dur,
    /// Shortest time between two JWKS refreshes triggered by unknown `kid`s.
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh: Dur,
    /// HMAC key for HS* algorithms (only then are HS* accepted).
    pub hmac_secret_file: Option<String>,
    pub hmac_secret_env: Option<String>,
    pub introspection: Option<Introspection>,
    #[serde(default)]
    pub cache: TokenCache,
}

fn default_algs() -> Vec<String> {
    ["PS256", "RS256", "ES256", "EdDSA"]
        .into_iter()
        .map(String::from)
        .collect()
}
fn default_leeway() -> Dur {
    Dur::secs(30)
}
fn default_jwks_min_refresh() -> Dur {
    Dur::secs(10)
}

/// Response format asked for with `Accept`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum IntrospectionFormat {
    /// RFC 9701 `application/token-introspection+jwt`.
    #[serde(rename = "token-introspection+jwt")]
    TokenIntrospectionJwt,
    /// Curity-style `application/jwt`: the body is the JWT to forward.
    #[serde(rename = "jwt")]
    Jwt,
    /// RFC 7662 JSON.
    #[serde(rename = "json")]
    Json,
}

/// RFC 7662 introspection endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Introspection {
    pub url: String,
    #[serde(default = "default_accept")]
    pub accept: IntrospectionFormat,
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    pub client_auth: IntrospectionClientAuth,
    /// After a failed call, how long no call goes out (doubling with each further failure,
    /// up to 30 s): cached tokens are served stale at once, new ones refused at once, then
    /// one probe. `0s`: every request that needs a call makes one.
    #[serde(default = "default_backoff")]
    pub backoff: Dur,
}

fn default_backoff() -> Dur {
    Dur::secs(1)
}
fn default_accept() -> IntrospectionFormat {
    IntrospectionFormat::TokenIntrospectionJwt
}
fn default_timeout() -> Dur {
    Dur::secs(2)
}

/// How Gatehouse authenticates to the introspection endpoint.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
    TlsClientAuth,
}

/// Client credentials for introspection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionClientAuth {
    pub method: ClientAuthMethod,
    pub client_id: String,
    pub client_secret_file: Option<String>,
    pub client_secret_env: Option<String>,
    /// private_key_jwt: PEM private key (RSA or EC P-256) and its `kid`.
    pub private_key_file: Option<String>,
    pub key_id: Option<String>,
    /// private_key_jwt: `RS256`, `PS256` or `ES256` (default: from the key type).
    pub algorithm: Option<String>,
    /// tls_client_auth: Gatehouse's own client certificate and key (PEM).
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

/// The introspection result cache.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCache {
    /// Where tokens are kept in this process: `moka` (default) or `compact`.
    #[serde(default)]
    pub store: CacheStore,
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    #[serde(default = "default_max_ttl")]
    pub max_ttl: Dur,
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl: Dur,
    /// Keep serving a cached active token this long past its cache TTL while the
    /// authorization server fails (never beyond the token's `exp`).
    #[serde(default)]
    pub stale_if_error: Option<Dur>,
}

/// The in-process token store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheStore {
    /// moka: TinyLFU admission, LRU eviction, per-entry expiry.
    #[default]
    Moka,
    /// Gatehouse's compact table for many tokens: a fraction of moka's bookkeeping per
    /// token (figures in benches/README.md), CLOCK eviction, per-entry expiry.
    Compact,
}

fn default_max_entries() -> u64 {
    100_000
}
fn default_max_ttl() -> Dur {
    Dur::secs(300)
}
fn default_negative_ttl() -> Dur {
    Dur::secs(5)
}

impl Default for TokenCache {
    fn default() -> Self {
        Self {
            store: CacheStore::default(),
            max_entries: default_max_entries(),
            max_ttl: default_max_ttl(),
            negative_ttl: default_negative_ttl(),
            stale_if_error: None,
        }
    }
}

/// Gatehouse's own JWT signing key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSigning {
    /// PEM private key (EC P-256 → ES256, RSA → PS256).
    pub key_file: String,
    pub key_id: String,
    /// `iss` of the JWTs Gatehouse signs.
    pub issuer: String,
    /// Lifetime cap of those JWTs (also capped by the token's `exp`).
    #[serde(default = "default_max_ttl")]
    pub max_ttl: Dur,
}

/// A pool of upstream servers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `host:port` entries (or `{ address: host:port, weight: N }`). A name is resolved at
    /// load and again every `resolve_interval`; each of its addresses is a peer (a
    /// Kubernetes headless Service gives one per ready pod).
    pub peers: Vec<PeerSpec>,
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// `h1` (default), `h2` (TLS with ALPN `h2` only) or `h2c` (cleartext HTTP/2 with
    /// prior knowledge), e.g. for gRPC.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    #[serde(default = "default_read_timeout")]
    pub read_timeout: Dur,
    /// How a peer is chosen.
    #[serde(default)]
    pub balance: Balance,
    /// With `balance: consistent_hash`: what the hash is taken over.
    #[serde(default)]
    pub hash_on: HashOn,
    /// Further peers tried after a failed connection (each a different peer).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// After request bytes were sent on a connection that then failed (e.g. a pooled
    /// connection the upstream had closed), retry the request on another connection if
    /// its method is idempotent (RFC 9110 §9.2.2). Other methods are never retried once
    /// sent.
    #[serde(default = "default_true")]
    pub retry_idempotent: bool,
    /// Re-resolve peers given by name this often (`0s`: resolve once at load).
    #[serde(default = "default_resolve_interval")]
    pub resolve_interval: Dur,
    /// Active health checks (off when absent).
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Passive health: failures in live traffic take a peer out for a while (NGINX's
    /// `max_fails` / `fail_timeout`).
    #[serde(default)]
    pub passive: PassiveHealth,
}

/// One configured peer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PeerSpec {
    /// `host:port`.
    Address(String),
    /// `{ address: host:port, weight: N }`.
    Weighted {
        address: String,
        #[serde(default = "default_weight")]
        weight: u32,
    },
}

impl PeerSpec {
    /// `host:port` as configured.
    pub fn address(&self) -> &str {
        match self {
            PeerSpec::Address(a) | PeerSpec::Weighted { address: a, .. } => a,
        }
    }

    /// Relative share of new requests (default 1).
    pub fn weight(&self) -> u32 {
        match self {
            PeerSpec::Address(_) => 1,
            PeerSpec::Weighted { weight, .. } => *weight,
        }
    }
}

fn default_weight() -> u32 {
    1
}

/// The HTTP version spoken to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    #[default]
    H1,
    H2,
    H2c,
}

/// Peer selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Round robin, in proportion to the peers' weights.
    #[default]
    RoundRobin,
    /// Random, in proportion to the peers' weights.
    Random,
    /// Ketama consistent hashing on `hash_on`: the same key keeps reaching the same peer
    /// while the peer set is stable (for upstream caches).
    ConsistentHash,
}

/// The key of `balance: consistent_hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    /// The SHA-256 of the client certificate (no certificate: the client address).
    #[default]
    ClientCert,
    /// The token's `client_id` (no token: the client certificate, then the address).
    ClientId,
    /// The client's IP address.
    ClientIp,
}

/// An active health check.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `http` (default when `path` is set) or `tcp` (a connection, with TLS when the
    /// upstream has `tls`).
    #[serde(default, rename = "type")]
    pub kind: Option<HealthCheckKind>,
    /// HTTP: the path of the `GET`.
    #[serde(default)]
    pub path: Option<String>,
    /// HTTP: the status a healthy peer answers with.
    #[serde(default = "default_expect_status")]
    pub expect_status: u16,
    /// HTTP: the `Host` header (default: the upstream's `tls.sni`, else `localhost`).
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "default_hc_interval")]
    pub interval: Dur,
    #[serde(default = "default_hc_timeout")]
    pub timeout: Dur,
    /// Consecutive successes that bring an unhealthy peer back.
    #[serde(default = "default_one")]
    pub healthy_threshold: u32,
    /// Consecutive failures that take a healthy peer out.
    #[serde(default = "default_one")]
    pub unhealthy_threshold: u32,
}

/// The kind of active health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    Tcp,
    Http,
}

impl HealthCheck {
    /// The check's kind: explicit, else `http` with a path and `tcp` without.
    pub fn kind(&self) -> HealthCheckKind {
        self.kind.unwrap_or(if self.path.is_some() {
            HealthCheckKind::Http
        } else {
            HealthCheckKind::Tcp
        })
    }
}

/// Passive health (failures seen in live traffic).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealth {
    /// Failed connections (refused, reset, timed out) that take a peer out (`0`: off).
    #[serde(default = "default_one")]
    pub max_fails: u32,
    /// How long a failed peer stays out (an active check that passes brings it back
    /// sooner); also the window `max_fails` is counted in.
    #[serde(default = "default_fail_timeout")]
    pub fail_timeout: Dur,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self {
            max_fails: 1,
            fail_timeout: default_fail_timeout(),
        }
    }
}

fn default_connect_timeout() -> Dur {
    Dur::secs(2)
}
fn default_read_timeout() -> Dur {
    Dur::secs(30)
}
fn default_retries() -> u32 {
    1
}
fn default_resolve_interval() -> Dur {
    Dur::secs(10)
}
fn default_expect_status() -> u16 {
    200
}
fn default_hc_interval() -> Dur {
    Dur::secs(5)
}
fn default_hc_timeout() -> Dur {
    Dur::secs(1)
}
fn default_one() -> u32 {
    1
}
fn default_fail_timeout() -> Dur {
    Dur::secs(10)
}

/// Where names are resolved.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverSection {
    /// DNS servers (`ip` or `ip:port`) asked directly. Empty (default): the system's
    /// resolver (`/etc/hosts`, `/etc/resolv.conf` with its search domains, as every
    /// other program on the host).
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Per query, with `nameservers`.
    #[serde(default = "default_resolver_timeout")]
    pub timeout: Dur,
}

impl Default for ResolverSection {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: default_resolver_timeout(),
        }
    }
}

fn default_resolver_timeout() -> Dur {
    Dur::secs(2)
}

/// TLS to the upstream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// SNI and the name verified in the upstream certificate.
    pub sni: String,
    /// Verify the upstream certificate (default true).
    #[serde(default = "yes")]
    pub verify: bool,
    /// PEM bundle of the CAs the upstream certificate must chain to (default: the
    /// system's trust store).
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// A route: which requests, which filters, which upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matches: RouteMatch,
    pub upstream: String,
    /// Run in this order.
    #[serde(default)]
    pub filters: Vec<FilterConfig>,
    /// Forward the path exactly as received instead of normalised (for upstreams that need
    /// encoded slashes or dot segments). The route then matches the path as received as
    /// well as its normalised form, and its upstream must resolve paths no more loosely
    /// than Gatehouse does (`/files/../admin/x` reaches it as written).
    #[serde(default)]
    pub forward_raw_path: bool,
    /// Let WebSocket upgrades through to the upstream. Off: `Upgrade` is removed and the
    /// connection never becomes an unfiltered pipe.
    #[serde(default)]
    pub websocket: bool,
    /// What the client said about forwarding (`Forwarded`, `X-Real-IP`,
    /// `X-Forwarded-Host`, `X-Forwarded-Port`): `strip` (default) or `set` (replaced with
    /// what Gatehouse saw; `Forwarded` per RFC 7239). `X-Forwarded-For` and
    /// `X-Forwarded-Proto` are always replaced.
    #[serde(default)]
    pub forwarded_headers: ForwardedHeaders,
}

/// See [`Route::forwarded_headers`].
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ForwardedHeaders {
    #[default]
    Strip,
    Set,
}

/// What a route matches. Longest path prefix wins; a route with a host beats one without.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Exact host (port ignored), case-insensitive. Absent: any host.
    pub host: Option<String>,
    #[serde(default = "root")]
    pub path_prefix: String,
    /// Only on these listeners (by name). Absent: all.
    pub listeners: Option<Vec<String>>,
    /// Compare `path_prefix` byte for byte. Default `false`: ASCII letter case is ignored,
    /// so `/ADMIN/x` cannot reach a case-insensitive upstream around the `/admin/` route.
    #[serde(default)]
    pub case_sensitive: bool,
}

fn root() -> String {
    "/".to_owned()
}

impl Default for RouteMatch {
    fn default() -> Self {
        Self {
            host: None,
            path_prefix: root(),
            listeners: None,
            case_sensitive: false,
        }
    }
}

/// The filters, tagged by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FilterConfig {
    ClientCert(ClientCertFilter),
    PhantomToken(PhantomTokenFilter),
    Jwt(JwtFilter),
    CertBoundToken(CertBoundFilter),
    Claims(ClaimsFilter),
}

impl FilterConfig {
    /// The `kind` as written.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ClientCert(_) => "client_cert",
            Self::PhantomToken(_) => "phantom_token",
            Self::Jwt(_) => "jwt",
            Self::CertBoundToken(_) => "cert_bound_token",
            Self::Claims(_) => "claims",
        }
    }
}

/// Per-route client-certificate mode.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RouteCertMode {
    #[default]
    Required,
    Optional,
}

/// The `client_cert` filter.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClientCertFilter {
    #[serde(default)]
    pub mode: RouteCertMode,
    /// Route-specific trust anchors (default: the listener's).
    pub ca_files: Option<Vec<String>>,
    pub max_depth: Option<u32>,
    /// Any one must match; all fields inside one must match. Empty: any trusted cert.
    #[serde(default)]
    pub identities: Vec<Identity>,
    #[serde(default = "yes")]
    pub require_eku_client_auth: bool,
    #[serde(default)]
    pub clock_skew: Option<Dur>,
    /// Reject RSA keys shorter than this.
    pub min_rsa_bits: Option<u32>,
    #[serde(default)]
    pub revocation: Revocation,
    #[serde(default)]
    pub forward: CertForward,
}

/// One allowed identity (APIM's `certificate-identity`).
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub thumbprint_sha256: Option<String>,
    pub thumbprint_sha1: Option<String>,
    pub serial: Option<String>,
    pub subject: Option<String>,
    pub common_name: Option<String>,
    pub issuer_subject: Option<String>,
    pub issuer_thumbprint_sha256: Option<String>,
    pub san_dns: Option<String>,
    pub san_uri: Option<String>,
    pub san_email: Option<String>,
}

/// Revocation checking.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RevocationMode {
    #[default]
    Off,
    /// A CRL that cannot be obtained passes (counted in a metric).
    Soft,
    /// A CRL that cannot be obtained fails.
    Hard,
}

/// CRL settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    #[serde(default)]
    pub mode: RevocationMode,
    /// PEM or DER CRL files; reloaded when they change.
    #[serde(default)]
    pub crl_files: Vec<String>,
    /// Fetch CRLs from the certificates' CRL distribution points (http only), in addition
    /// to `crl_files`.
    #[serde(default)]
    pub fetch_distribution_points: bool,
    /// How long a fetched CRL is used before it is fetched again (default 1h).
    #[serde(default)]
    pub refresh: Option<Dur>,
    /// Timeout of one CRL fetch (default 2s).
    #[serde(default)]
    pub fetch_timeout: Option<Dur>,
    /// Most CRLs kept from distribution points (default 1000).
    #[serde(default)]
    pub max_cached_crls: Option<u64>,
}

/// How the verified certificate is passed upstream.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum CertForwardFormat {
    #[default]
    None,
    /// RFC 9440 `Client-Cert: :<base64 DER>:`.
    Rfc9440,
    /// Envoy's `X-Forwarded-Client-Cert`.
    Xfcc,
    /// URL-escaped PEM in a header of your choice (NGINX `$ssl_client_escaped_cert`).
    Pem,
}

/// Forwarding settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CertForward {
    #[serde(default)]
    pub format: CertForwardFormat,
    /// RFC 9440 `Client-Cert-Chain` too: the chain used for validation (the verified path
    /// without the leaf, trust anchor included), not the chain as sent.
    #[serde(default)]
    pub chain: bool,
    /// Header name for `pem` (default `X-SSL-Client-Cert`).
    pub header: Option<String>,
}

/// Which JWT the phantom-token filter forwards upstream.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ForwardJwt {
    /// The authorization server's own JWT access token: the body of an `application/jwt`
    /// introspection response (`accept: jwt`, Curity's phantom token).
    AsIssued,
    /// An RFC 9068 access token (`typ: at+jwt`) Gatehouse signs from the introspected
    /// claims with `token_signing`'s key, `aud` = the route's `audience`.
    SignedByGatehouse,
    /// The RFC 9701 introspection response JWT itself (`typ: token-introspection+jwt`,
    /// `aud` = Gatehouse's client id, claims under `token_introspection`). Not an access
    /// token: an explicit opt-in for APIs that already read it; `check` warns.
    IntrospectionResponse,
}

/// The `phantom_token` filter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhantomTokenFilter {
    pub authorization_server: String,
    /// Absent: `as_issued` when the authorization server answers `accept: jwt`,
    /// `signed_by_gatehouse` otherwise ([`PhantomTokenFilter::forward`]).
    pub forward_jwt: Option<ForwardJwt>,
    /// `aud` of the JWT Gatehouse signs for this route's API (`signed_by_gatehouse`).
    pub audience: Option<String>,
}

impl PhantomTokenFilter {
    /// What this route forwards, given its authorization server's introspection format.
    pub fn forward(&self, accept: Option<IntrospectionFormat>) -> ForwardJwt {
        self.forward_jwt.unwrap_or(match accept {
            Some(IntrospectionFormat::Jwt) => ForwardJwt::AsIssued,
            _ => ForwardJwt::SignedByGatehouse,
        })
    }
}

/// The `jwt` filter (JWT access tokens verified locally).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtFilter {
    pub authorization_server: String,
    /// Accepted `aud` values (any one must be present). Required.
    #[serde(default)]
    pub audience: Vec<String>,
    /// Require this `typ` header (e.g. `at+jwt`, RFC 9068).
    pub typ: Option<String>,
}

/// RFC 8705 binding mode.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BindingMode {
    #[default]
    Strict,
    Optional,
    Off,
}

/// The `cert_bound_token` filter.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CertBoundFilter {
    #[serde(default)]
    pub mode: BindingMode,
}

/// The `claims` filter.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClaimsFilter {
    /// Required values of the space-separated `scope` claim.
    #[serde(default)]
    pub scope: Vec<String>,
    /// Required members of the `roles` array claim.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Claims that must equal these values exactly (strings compare to strings; numbers and
    /// booleans as written).
    #[serde(default)]
    pub equals: BTreeMap<String, ClaimValue>,
    /// Copy a claim to an upstream header (`client_id: X-Client-Id`).
    #[serde(default)]
    pub to_headers: BTreeMap<String, String>,
}

impl ClaimsFilter {
    /// Whether the rule reads claims beyond the granted scopes (which every cached token
    /// keeps): a cache whose routes have such a rule must keep every claim.
    pub fn reads_other_claims(&self) -> bool {
        !self.roles.is_empty() || !self.equals.is_empty() || !self.to_headers.is_empty()
    }
}

/// A claim value in an `equals` rule.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ClaimValue {
    Bool(bool),
    Int(i64),
    Str(String),
}
