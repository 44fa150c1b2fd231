//! Test harness: a PKI generated at test time, real upstreams on loopback, and the real
//! Gatehouse (in-process, real TLS, real HTTP) on OS-assigned ports with a shutdown the
//! test controls.
//!
//! ```ignore
//! let pki = TestPki::new();
//! let up = Upstream::start().await;
//! let gh = Proxy::start(&Proxy::mtls_yaml(&pki, "required", &up, "")).await;
//! let res = pki.client(Some(&pki.pki.partner_a)).get(gh.url("/api/x")).send().await?;
//! ```
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use async_trait::async_trait;
use gatehouse_devauth::pki::{issue, CertSpec, Issued, Pki};
use gatehouse_devauth::serve::{self, Req};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use gatehouse_devauth;

mod config;
mod dns;
mod raw;
pub use config::{DevAuthorizationServer, TestConfig};
pub use dns::DnsServer;
pub use raw::{RawRequest, RawUpstream, OK};

/// A PKI written to a temporary directory (config files need paths).
pub struct TestPki {
    pub pki: Pki,
    /// Its files; removed with it.
    pub dir: PathBuf,
}

/// A directory for one test, removed with it.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty directory named after `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self(temp_dir(prefix))
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn temp_dir(prefix: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "gatehouse-{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

impl TestPki {
    /// A fresh PKI: root → intermediate → server (localhost), partner-a, partner-b.
    pub fn new() -> Self {
        let pki = Pki::generate().expect("pki");
        let dir = temp_dir("pki");
        pki.write(&dir).expect("write pki");
        Self { pki, dir }
    }

    /// Path of a file in the PKI directory.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Issue another certificate from `issuer` (the intermediate when `None`).
    pub fn issue(&self, spec: &CertSpec, issuer: Option<&Issued>) -> Issued {
        issue(spec, Some(issuer.unwrap_or(&self.pki.intermediate))).expect("issue")
    }

    /// Write a certificate (with chain) and key under `name`.pem / `name`.key.
    pub fn save(&self, name: &str, c: &Issued) -> (String, String) {
        let cert = self.path(&format!("{name}.pem"));
        let key = self.path(&format!("{name}.key"));
        std::fs::write(&cert, c.chain_pem().unwrap()).unwrap();
        std::fs::write(&key, c.key_pem().unwrap()).unwrap();
        (cert, key)
    }

    /// An HTTPS client trusting the root, presenting `cert` if given (HTTP/1.1).
    pub fn client(&self, cert: Option<&Issued>) -> reqwest::Client {
        self.client_builder(cert).build().expect("client")
    }

    /// Like [`TestPki::client`], for further settings.
    pub fn client_builder(&self, cert: Option<&Issued>) -> reqwest::ClientBuilder {
        let root = reqwest::Certificate::from_pem(&self.pki.root.cert_pem().unwrap()).unwrap();
        let mut b = reqwest::Client::builder()
            .add_root_certificate(root)
            .tls_built_in_root_certs(false)
            .timeout(Duration::from_secs(20))
            .http1_only();
        if let Some(c) = cert {
            let id =
                reqwest::Identity::from_pkcs8_pem(&c.chain_pem().unwrap(), &c.key_pem().unwrap())
                    .unwrap();
            b = b.identity(id);
        }
        b
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// What an upstream saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: http::HeaderMap,
}

/// A real HTTP upstream on loopback that records every request and echoes its headers.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Start an echo upstream.
    pub async fn start() -> Self {
        Self::start_with_delay(Duration::ZERO).await
    }

    /// Start an echo upstream over HTTPS with `cert` (chain + key; no client certificate).
    pub async fn start_tls(cert: &Issued) -> Self {
        use openssl::ssl::{SslAcceptor, SslMethod};
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        b.set_certificate(&cert.cert).unwrap();
        for c in &cert.chain {
            b.add_extra_chain_cert(c.clone()).unwrap();
        }
        b.set_private_key(&cert.key).unwrap();
        Self::start_inner(Duration::ZERO, Some(b.build())).await
    }

    /// Start an upstream that waits `delay` before answering.
    pub async fn start_with_delay(delay: Duration) -> Self {
        Self::start_inner(delay, None).await
    }

    /// Start an echo upstream on `addr` (e.g. again on the port of one that was dropped,
    /// or on another loopback address). Dropping an upstream closes its connections.
    pub async fn start_at(addr: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        Self::serve_on(listener, Duration::ZERO, None)
    }

    async fn start_inner(delay: Duration, tls: Option<openssl::ssl::SslAcceptor>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve_on(listener, delay, tls)
    }

    fn serve_on(
        listener: tokio::net::TcpListener,
        delay: Duration,
        tls: Option<openssl::ssl::SslAcceptor>,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = seen.clone();
        let echo = serve::echo_handler();
        let h = serve::handler(move |r: Req| {
            let rec = rec.clone();
            let echo = echo.clone();
            async move {
                rec.lock().unwrap().push(Seen {
                    path: r.parts.uri.path().to_owned(),
                    headers: r.parts.headers.clone(),
                });
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                echo(r).await
            }
        });
        let task = tokio::spawn(serve::serve(listener, tls, h));
        Self { addr, seen, task }
    }

    /// Number of requests received.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The last request received.
    pub fn last(&self) -> Option<Seen> {
        self.seen.lock().unwrap().last().cloned()
    }

    /// The token of `Authorization: Bearer <token>` in the last request received (panics
    /// when there was none, or another scheme).
    pub fn last_bearer(&self) -> String {
        let seen = self.last().expect("a request reached the upstream");
        let auth = seen.headers["authorization"].to_str().unwrap();
        auth.strip_prefix("Bearer ")
            .unwrap_or_else(|| panic!("not a Bearer header: {auth}"))
            .to_owned()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Replace `${NAME}` by its value (test configs; the real loader does this with errors).
fn expand(yaml: &str, vars: &[(String, String)]) -> String {
    let mut out = yaml.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

/// A loopback port nobody listens on right now, and never handed out before in this
/// process. Proxies listen with `SO_REUSEPORT` (one socket per shard), so two tests given
/// the same port would both bind it and the kernel would spread each test's connections
/// over both proxies; the kernel may well return a port again once it is closed.
///
/// The port is drawn from below the kernel's ephemeral range: between this call and the
/// proxy's own bind, a server of another test binding port 0 (upstreams, authorization
/// servers) could otherwise be given the very same port, and the proxy's clients would
/// reach that server instead (seen once: a TLS client answered by a plain HTTP server).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let (lo, hi) = below_ephemeral();
    let seed = std::hash::RandomState::new();
    for n in 0u64.. {
        let port = if hi > lo && n < 10_000 {
            let span = u64::from(hi - lo);
            lo + (std::hash::BuildHasher::hash_one(&seed, n) % span) as u16
        } else {
            // no room below the ephemeral range: let the kernel choose
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.contains(&port) || std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        given.push(port);
        return port;
    }
    unreachable!("u64 ran out")
}

/// Ports below the kernel's ephemeral range (`ip_local_port_range`) and above the
/// well-known ones: `(lo, hi)`, empty if there is no such room.
fn below_ephemeral() -> (u16, u16) {
    let first = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    (first.saturating_sub(12_000).max(10_000), first)
}

struct TestShutdown(Arc<tokio::sync::Notify>);

#[async_trait]
impl gatehouse_app::ShutdownSignalWatchExt for TestShutdown {
    async fn recv(&self) -> gatehouse_app::ShutdownSignal {
        self.0.notified().await;
        gatehouse_app::ShutdownSignal::FastShutdown
    }
}

/// The real Gatehouse, running in this process on loopback.
pub struct Proxy {
    /// The first listener's address.
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Its clock: move it forward (token TTLs, breakers, key refresh limits) instead of
    /// sleeping.
    pub clock: Arc<gatehouse_core::ManualClock>,
    /// The config file it runs (already expanded).
    pub config_path: PathBuf,
    vars: Vec<(String, String)>,
    reloader: Arc<gatehouse_app::Reloader>,
    stop: Arc<tokio::sync::Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Start from YAML in which `${PROXY_ADDR}` and `${ADMIN_ADDR}` are replaced with free
    /// loopback ports (other `${VAR}`s come from `vars`). Waits until it accepts.
    pub async fn start(yaml: &str, vars: &[(&str, String)]) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut all: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        all.push(("PROXY_ADDR".into(), addr.to_string()));
        all.push(("ADMIN_ADDR".into(), admin.to_string()));
        let config_path = temp_dir("config").join("gatehouse.yaml");
        std::fs::write(&config_path, expand(yaml, &all)).unwrap();
        let loaded = gatehouse_config::load_file(&config_path)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let clock = Arc::new(gatehouse_core::ManualClock::new());
        let options = gatehouse_app::BuildOptions {
            path: Some(config_path.clone()),
            upgrade: false,
            clock: clock.clone(),
        };
        let gh = gatehouse_app::Gatehouse::build(&loaded, options)
            .unwrap_or_else(|e| panic!("test config cannot be built:\n{e}"));
        gh.check_addresses_free().unwrap();
        let reloader = gh.reloader();
        let stop = Arc::new(tokio::sync::Notify::new());
        let signal = TestShutdown(stop.clone());
        let thread = std::thread::spawn(move || gh.run(Some(Box::new(signal))));
        let proxy = Self {
            addr,
            admin,
            clock,
            config_path,
            vars: all,
            reloader,
            stop,
            thread: Some(thread),
        };
        proxy.wait_ready().await;
        proxy
    }

    /// Replace the config file with `yaml` (same variables as at start) and reload it, as
    /// SIGHUP does.
    pub fn reload_with(&self, yaml: &str) -> Result<(), Vec<String>> {
        std::fs::write(&self.config_path, expand(yaml, &self.vars)).unwrap();
        self.reloader.reload()
    }

    async fn wait_ready(&self) {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok()
                && tokio::net::TcpStream::connect(self.admin).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("gatehouse did not start listening on {}", self.addr);
    }

    /// `https://localhost:PORT/path` on the first listener.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// `http://127.0.0.1:PORT/path` on the first listener (plain-HTTP configs).
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The admin `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one metric series (exact name with labels as rendered), 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(dir) = self.config_path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The status of a GET of `url` with `Authorization: Bearer <token>` (panics when no
/// answer comes).
pub async fn bearer_status(
    c: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    token: impl std::fmt::Display,
) -> reqwest::StatusCode {
    c.get(url).bearer_auth(token).send().await.unwrap().status()
}

/// A JSON body.
pub async fn json(res: reqwest::Response) -> serde_json::Value {
    res.json().await.unwrap_or(serde_json::Value::Null)
}

/// The dev authorization server on loopback (HTTPS with optional client certificates).
pub struct AuthServer {
    pub addr: SocketAddr,
    pub state: Arc<gatehouse_devauth::authz::DevAuth>,
    task: tokio::task::JoinHandle<()>,
    tls: openssl::ssl::SslAcceptor,
}

impl AuthServer {
    /// Start with these clients; `issuer` is `https://localhost:PORT`.
    pub async fn start(pki: &TestPki, clients: Vec<gatehouse_devauth::authz::DevClient>) -> Self {
        Self::start_with_audience(pki, clients, None).await
    }

    /// Like [`AuthServer::start`], issuing tokens with this `aud`.
    pub async fn start_with_audience(
        pki: &TestPki,
        clients: Vec<gatehouse_devauth::authz::DevClient>,
        audience: Option<&str>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = gatehouse_devauth::authz::DevAuthConfig {
            issuer: format!("https://localhost:{}", addr.port()),
            token_ttl: 300,
            audience: audience.map(str::to_owned),
            clients,
        };
        let state = gatehouse_devauth::authz::DevAuth::new(cfg).unwrap();
        let tls = gatehouse_devauth::authz::acceptor(
            &pki.pki.server.chain_pem().unwrap(),
            &pki.pki.server.key_pem().unwrap(),
            &pki.pki.root.cert_pem().unwrap(),
        )
        .unwrap();
        let task = tokio::spawn(state.clone().serve(listener, Some(tls.clone())));
        Self {
            addr,
            state,
            task,
            tls,
        }
    }

    /// Take the server down: the listener and every open connection close (clients see
    /// refused connections and resets).
    pub fn stop(&mut self) {
        self.task.abort();
    }

    /// Bring it back on the same address with the same state (tokens, keys).
    pub async fn restart(&mut self) {
        self.task.abort();
        let mut listener = None;
        for _ in 0..100 {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let listener = listener.expect("rebind the authorization server's port");
        self.task = tokio::spawn(self.state.clone().serve(listener, Some(self.tls.clone())));
    }

    /// `https://localhost:PORT`.
    pub fn issuer(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Get a token with `client_credentials` + `tls_client_auth` using `cert`.
    pub async fn token(&self, pki: &TestPki, cert: &Issued) -> String {
        let res = pki
            .client(Some(cert))
            .post(format!("{}/oauth/token", self.issuer()))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "token endpoint refused the client");
        json(res).await["access_token"].as_str().unwrap().to_owned()
    }

    /// Introspection calls received so far.
    pub fn introspections(&self) -> usize {
        self.state.introspections.load(Ordering::SeqCst)
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A registered partner client (tls_client_auth by subject).
pub fn partner_client(id: &str, scope: &str) -> gatehouse_devauth::authz::DevClient {
    gatehouse_devauth::authz::DevClient {
        client_id: id.to_owned(),
        subject: Some(format!("CN={id}, O={id} Ltd")),
        scope: scope.to_owned(),
        roles: vec!["service-api".to_owned()],
        ..Default::default()
    }
}

/// The gateway client allowed to introspect (secret `gateway-secret`).
pub fn gateway_client() -> gatehouse_devauth::authz::DevClient {
    gatehouse_devauth::authz::DevClient {
        client_id: "gateway".to_owned(),
        secret: Some("gateway-secret".to_owned()),
        introspect: true,
        ..Default::default()
    }
}

/// Decode a JWT's payload without verifying it (to look at what the upstream got).
/// What an API does with the RFC 9068 token Gatehouse forwards (the README's "What your
/// API receives"): fetch Gatehouse's JWKS from the admin listener at `admin`, require
/// `typ: at+jwt` and key id `kid`, verify the ES256 signature, `iss`, `aud`, `exp` and
/// `sub`. The claims, or why not.
pub async fn verify_as_api(
    admin: SocketAddr,
    jwt: &str,
    kid: &str,
    issuer: &str,
    audience: &str,
) -> Result<serde_json::Value, String> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| e.to_string())?;
    if header.typ.as_deref() != Some("at+jwt") || header.kid.as_deref() != Some(kid) {
        return Err(format!("header {header:?}"));
    }
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(format!("http://{admin}/jwks"))
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let jwk = jwks.find(kid).ok_or(format!("no key {kid} in /jwks"))?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

pub fn jwt_payload(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let p = jwt.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p)
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
}

impl TestPki {
    /// A CRL issued by `issuer` revoking `revoked`, made with the `openssl ca` CLI (the
    /// openssl crate cannot sign CRLs). Written to `name` in the PKI directory; returns
    /// its path.
    pub fn crl(&self, name: &str, issuer: &Issued, revoked: &[&Issued]) -> String {
        let work = temp_dir("crl");
        let mut index = String::new();
        for r in revoked {
            let serial = r
                .cert
                .serial_number()
                .to_bn()
                .unwrap()
                .to_hex_str()
                .unwrap()
                .to_string();
            let serial = if serial.len() % 2 == 1 {
                format!("0{serial}")
            } else {
                serial
            };
            index.push_str(&format!(
                "R\t491231235959Z\t200101000000Z\t{serial}\tunknown\t/CN=revoked\n"
            ));
        }
        std::fs::write(work.join("index.txt"), index).unwrap();
        std::fs::write(work.join("crlnumber"), "01\n").unwrap();
        std::fs::write(work.join("ca.pem"), issuer.cert_pem().unwrap()).unwrap();
        std::fs::write(work.join("ca.key"), issuer.key_pem().unwrap()).unwrap();
        let cnf = format!(
            "[ca]\ndefault_ca = d\n[d]\ndatabase = {0}/index.txt\ncrlnumber = {0}/crlnumber\ndefault_md = sha256\ndefault_crl_days = 30\n",
            work.display()
        );
        std::fs::write(work.join("ca.cnf"), cnf).unwrap();
        let out = self.path(name);
        let status = std::process::Command::new("openssl")
            .args(["ca", "-gencrl", "-batch", "-config"])
            .arg(work.join("ca.cnf"))
            .arg("-keyfile")
            .arg(work.join("ca.key"))
            .arg("-cert")
            .arg(work.join("ca.pem"))
            .arg("-out")
            .arg(&out)
            .output()
            .expect("the openssl CLI is needed to make test CRLs (scripts/setup.sh installs it)");
        assert!(
            status.status.success(),
            "openssl ca -gencrl: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let _ = std::fs::remove_dir_all(&work);
        out
    }
}

/// Send raw bytes over TLS (OpenSSL, security level 0 so that deliberately weak test
/// certificates can be presented) and return the raw response text. For requests an HTTP
/// library would refuse to send. Blocking: call from `spawn_blocking` or sync tests.
pub fn raw_tls(addr: SocketAddr, root: &Issued, cert: Option<&Issued>, request: &[u8]) -> String {
    use openssl::ssl::{SslConnector, SslMethod};
    use std::io::{Read, Write};
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_security_level(0);
    b.cert_store_mut().add_cert(root.cert.clone()).unwrap();
    if let Some(c) = cert {
        b.set_certificate(&c.cert).unwrap();
        for i in &c.chain {
            b.add_extra_chain_cert(i.clone()).unwrap();
        }
        b.set_private_key(&c.key).unwrap();
    }
    let conn = b.build();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = conn.connect("localhost", tcp).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Raw bytes over mTLS to `127.0.0.1:port` with PEM files from `dir` (`root-ca.pem`,
/// `<who>.pem`, `<who>.key`: the demo's layout), for requests an HTTP library would
/// normalise (`--path-as-is`). With `read_answer` the response text until the server
/// closes; without, the client closes its side right after sending (a request cut short).
/// Blocking.
pub fn raw_tls_pem(
    port: u16,
    dir: &std::path::Path,
    who: &str,
    request: &[u8],
    read_answer: bool,
) -> String {
    use openssl::ssl::{SslConnector, SslFiletype, SslMethod};
    use std::io::{Read, Write};
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_ca_file(dir.join("root-ca.pem")).unwrap();
    b.set_certificate_chain_file(dir.join(format!("{who}.pem")))
        .unwrap();
    b.set_private_key_file(dir.join(format!("{who}.key")), SslFiletype::PEM)
        .unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = b.build().connect("localhost", tcp).unwrap();
    s.write_all(request).unwrap();
    if !read_answer {
        let _ = s.shutdown();
        return String::new();
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The leaf certificate a TLS server presents (blocking).
pub fn peer_cert(addr: SocketAddr, root: &Issued) -> openssl::x509::X509 {
    use openssl::ssl::{SslConnector, SslMethod};
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.cert_store_mut().add_cert(root.cert.clone()).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    let s = b.build().connect("localhost", tcp).unwrap();
    s.ssl().peer_certificate().unwrap()
}

/// `promtool check metrics` on a /metrics text: `Err(report)` on any error or lint finding.
/// promtool is required (Debian package `prometheus`; scripts/setup.sh installs it).
pub fn promtool_check(text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool is required (Debian package `prometheus`): {e}"))?;
    promtool
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = promtool.wait_with_output().map_err(|e| e.to_string())?;
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() && report.trim().is_empty() {
        Ok(())
    } else {
        Err(report)
    }
}
