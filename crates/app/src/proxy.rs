//! The chain: one `ProxyHttp` implementation that runs each route's filters in Pingora's
//! request phases and is the only place that writes rejection responses.
//!
//! The one pipeline diagram (the others were removed; docs/design.md points here):
//!
//! ```text
//! TLS handshake (tls.rs) ─ server certificate of the current Runtime; client certificate
//!        │ verified once against the listener's trust, kept in the connection's digest
//! request_filter ─ canonical target ─ route match ─ the route's chain for this listener:
//!        │   [listener policy] ─ filters[0..n]                                  ─┐
//!        │ Reject: JSON 4xx/5xx written here, Ok(true)                           │ Continue
//!        │ (the upstream request gets the normalised target and host: target.rs) │
//! upstream_peer ◀────────────────────────────────────────────────────────────────┘
//!        │ a peer of the upstream's pool (balance, health, retries elsewhere)
//! upstream_request_filter ─ strip owned headers, add ctx headers, one Content-Length
//!        │
//! fail_to_proxy (upstream down/slow: 502/503/504 JSON; the client's errors, including
//!                requests the HTTP parser refused: 400/408 JSON) · logging (metrics, log)
//! ```

use crate::access_log::AccessLog;
use crate::runtime::{RouteRt, Runtime};
use crate::target::{canonical_content_length, drop_upgrade, route, Routed};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use gatehouse_config::ForwardedHeaders;
use gatehouse_config::{HashOn, UpstreamProtocol};
use gatehouse_core::{Rejection, RequestCtx, Verdict};
use gatehouse_metrics::{status_class, Metrics};
use gatehouse_mtls::ConnCert;
use gatehouse_upstream::Pick;
use http::StatusCode;
use pingora_core::modules::http::HttpModules;
use pingora_core::protocols::http::HttpTask;
use pingora_core::upstreams::peer::{HttpPeer, HttpUpstreamRequestPolicy, Peer as _};
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::Instant;

/// No peer to send a request to (all failing, or none resolved).
const NO_HEALTHY_PEER: ErrorType = ErrorType::ConnectNoRoute;
/// Concurrent streams on one HTTP/2 upstream connection.
const H2_STREAMS: usize = 100;

/// The key of `balance: consistent_hash`.
fn hash_key(on: HashOn, session: &Session, req: &RequestCtx) -> Vec<u8> {
    let cert = || req.presented_cert.as_ref().map(|c| c.sha256.to_vec());
    let ip = || {
        session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string().into_bytes())
            .unwrap_or_default()
    };
    match on {
        HashOn::ClientCert => cert().unwrap_or_else(ip),
        HashOn::ClientId => req
            .token
            .as_ref()
            .and_then(|t| t.claim_str("client_id"))
            .map(|c| c.as_bytes().to_vec())
            .or_else(cert)
            .unwrap_or_else(ip),
        HashOn::ClientIp => ip(),
    }
}

/// Per-request context: the filters' shared [`RequestCtx`] plus the route it matched.
pub struct Ctx {
    /// What the route's filters see and fill.
    pub req: RequestCtx,
    runtime: Option<Arc<Runtime>>,
    route: Option<usize>,
    /// When the request started (the duration histogram, the access log).
    started: Instant,
    /// The filter that refused the request, and why (metrics, the access log).
    pub(crate) rejected_by: Option<(&'static str, Rejection)>,
    /// The upstream peer the request went to (the access log).
    pub(crate) upstream_addr: Option<std::net::SocketAddr>,
    status: u16,
    upstream_started: Option<Instant>,
    /// Peers a connection to failed for this request (a retry goes elsewhere).
    tried: Vec<std::net::SocketAddr>,
    /// Requests sent again after a failure on a connection they had been sent on.
    resent: u32,
}

impl Ctx {
    fn route(&self) -> Option<&RouteRt> {
        self.runtime.as_ref()?.routes.get(self.route?)
    }
}

/// The Gatehouse proxy.
#[derive(Clone)]
pub struct Chain {
    runtime: Arc<ArcSwap<Runtime>>,
    metrics: Metrics,
    access_log: AccessLog,
}

impl Chain {
    pub fn new(runtime: Arc<ArcSwap<Runtime>>, metrics: Metrics, access_log: AccessLog) -> Self {
        Self {
            runtime,
            metrics,
            access_log,
        }
    }

    async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        filter: &'static str,
        r: Rejection,
    ) -> Result<bool> {
        self.count_rejection(ctx, filter, &r);
        // boxed: the write's future is large, and request_filter's own future (moved into
        // its box on every request, rejected or not) would otherwise carry its size
        let grpc = is_grpc(session.req_header());
        let written = Box::pin(write_json(session, &r, grpc)).await;
        ctx.rejected_by = Some((filter, r));
        written.map(|()| true)
    }

    /// Counts a refusal (by route, filter and reason) and records its status.
    fn count_rejection(&self, ctx: &mut Ctx, filter: &'static str, r: &Rejection) {
        self.metrics
            .rejections
            .with_label_values(&[&ctx.req.route_name, filter, r.reason])
            .inc();
        ctx.status = r.status.as_u16();
    }

    /// The client's fault: a request the HTTP parser refused (malformed header block,
    /// ambiguous framing), a body that is not valid chunked encoding, a client too slow to
    /// send its body, or a connection it closed.
    async fn client_failed(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let r = match e.etype() {
            ErrorType::InvalidHTTPHeader => {
                Rejection::invalid_request(parse_failure_reason(e), "the request is malformed")
            }
            // pingora_core::protocols::http::v1::body's INVALID_CHUNK, INVALID_TRAILER_END
            ErrorType::Custom("InvalidChunk" | "InvalidTrailerEnd") => Rejection::invalid_request(
                "invalid_chunked_body",
                "the request body is not valid chunked encoding",
            ),
            ErrorType::ReadTimedout => Rejection::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request was not received in time",
            ),
            // gone: nobody to answer
            ErrorType::WriteError
            | ErrorType::ReadError
            | ErrorType::ConnectionClosed
            | ErrorType::Custom("PrematureBodyEnd") => {
                tracing::debug!(error = ?e.etype(), "client connection closed or broken");
                return FailToProxy {
                    error_code: 0,
                    can_reuse_downstream: false,
                };
            }
            _ => Rejection::invalid_request("bad_request", "the request could not be read"),
        };
        tracing::debug!(reason = r.reason, "request refused by the HTTP layer");
        if ctx.req.route_name.is_empty() {
            ctx.req.route_name = "none".into();
        }
        if ctx.req.presented_cert.is_none() {
            // for the access log: who sent it, even when the request itself is unreadable
            ctx.req.presented_cert = presented_cert(session).map(|c| c.cert.clone());
        }
        self.count_rejection(ctx, "http", &r);
        answer_failure(session, ctx, &r).await;
        let error_code = r.status.as_u16();
        ctx.rejected_by = Some(("http", r));
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }
}

/// Which framing rule refused a request, from Pingora's error context (a bounded metric
/// label; the context itself is never logged, it can quote the request's bytes).
fn parse_failure_reason(e: &Error) -> &'static str {
    let context = e.context.as_ref().map(|c| c.as_str()).unwrap_or("");
    if context.starts_with("buf:") {
        // the header block did not parse; what follows is the request's own bytes
        "malformed_request"
    } else if context.contains("Content-Length") {
        "invalid_content_length"
    } else if context.contains("Transfer-Encoding") {
        "invalid_transfer_encoding"
    } else if context.contains("Host") || context.contains("authority") {
        "invalid_host"
    } else if context.contains("larger than") {
        "header_too_large"
    } else {
        "malformed_request"
    }
}

/// Writes `r` as the JSON answer to a request that failed, unless an answer has begun;
/// the connection closes after it (the request may not have been read to its end).
async fn answer_failure(session: &mut Session, ctx: &mut Ctx, r: &Rejection) {
    if session.response_written().is_some() {
        return;
    }
    session.set_keepalive(None);
    // the client may be gone: nothing more to do about a failed write
    // no header to look at when the parser refused the request (request_filter never ran)
    let grpc = ctx.runtime.is_some() && is_grpc(session.req_header());
    let _ = write_json(session, r, grpc).await;
    ctx.status = r.status.as_u16();
}

/// Writes `r` as Gatehouse's answer: JSON, or for a gRPC request a gRPC status (gRPC
/// clients read no JSON bodies). Header and body go out as one batch, which Pingora
/// (patch 0002) writes with a single write: one TLS record.
async fn write_json(session: &mut Session, r: &Rejection, grpc: bool) -> Result<()> {
    if grpc {
        return write_grpc(session, r).await;
    }
    let body = r.body();
    let mut resp = ResponseHeader::build(r.status, Some(4))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    if let Some(w) = &r.www_authenticate {
        resp.insert_header("www-authenticate", w.as_str())?;
    }
    session
        .write_response_tasks(vec![
            HttpTask::Header(Box::new(resp), false),
            HttpTask::Body(Some(Bytes::from(body)), true),
        ])
        .await?;
    Ok(())
}

/// A gRPC request (`content-type: application/grpc`, `application/grpc+proto`, …).
fn is_grpc(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            let v = v.as_bytes();
            v.len() >= 16
                && v[..16].eq_ignore_ascii_case(b"application/grpc")
                && matches!(v.get(16), None | Some(b'+' | b';'))
        })
}

/// The gRPC status for a refusal (gRPC's status codes; `grpc/doc/statuscodes.md`).
fn grpc_status(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 3,             // INVALID_ARGUMENT
        401 => 16,            // UNAUTHENTICATED
        403 => 7,             // PERMISSION_DENIED
        404 => 12,            // UNIMPLEMENTED
        408 | 504 => 4,       // DEADLINE_EXCEEDED
        413 | 429 | 431 => 8, // RESOURCE_EXHAUSTED
        502 | 503 => 14,      // UNAVAILABLE
        500 => 13,            // INTERNAL
        _ => 2,               // UNKNOWN
    }
}

/// `grpc-message`: percent-encoded as the gRPC HTTP/2 protocol asks (bytes outside
/// printable ASCII, and `%`).
fn grpc_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A gRPC "Trailers-Only" answer: HTTP 200, the status in `grpc-status` and
/// `grpc-message`, no body. The error code goes in `grpc-message` before the description,
/// as the JSON answer's `error` does; `WWW-Authenticate` stays (RFC 6750).
async fn write_grpc(session: &mut Session, r: &Rejection) -> Result<()> {
    let mut resp = ResponseHeader::build(StatusCode::OK, Some(5))?;
    resp.insert_header("content-type", "application/grpc")?;
    resp.insert_header("grpc-status", grpc_status(r.status).to_string())?;
    resp.insert_header(
        "grpc-message",
        grpc_message(&format!("{}: {}", r.error_code(), r.description)),
    )?;
    if let Some(w) = &r.www_authenticate {
        resp.insert_header("www-authenticate", w.as_str())?;
    }
    // (only called for a request whose header was read)
    if session.req_header().version != http::Version::HTTP_2 {
        resp.insert_header("content-length", "0")?;
    }
    session
        .write_response_tasks(vec![HttpTask::Header(Box::new(resp), true)])
        .await?;
    Ok(())
}

fn presented_cert(session: &Session) -> Option<&ConnCert> {
    session
        .digest()?
        .ssl_digest
        .as_ref()?
        .extension
        .get::<ConnCert>()
}

#[async_trait]
impl ProxyHttp for Chain {
    type CTX = Ctx;

    /// No downstream modules. Pingora's default adds its response-compression module
    /// (disabled), which still costs every request a module context and a call per
    /// header and body task; Gatehouse passes the upstream's bodies through as they are.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx {
            req: RequestCtx::default(),
            runtime: None,
            route: None,
            started: Instant::now(),
            rejected_by: None,
            upstream_addr: None,
            status: 0,
            upstream_started: None,
            tried: Vec::new(),
            resent: 0,
        }
    }

    /// Reads the canonical target, routes on it and makes the upstream request carry it,
    /// then runs the route's filters; a rejection is answered here and ends the request.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let rt = self.runtime.load_full();
        let local = session.server_addr().and_then(|a| a.as_inet()).copied();
        let listener = rt.listener_index(local);
        ctx.runtime = Some(rt.clone());
        let routed = route(
            &rt,
            session.req_header(),
            listener.and_then(|i| rt.listeners.get(i)).map(|l| &*l.name),
        );
        let Routed {
            index: idx,
            name,
            websocket,
            rewrite,
        } = match routed {
            Ok(Some(found)) => found,
            Ok(None) => {
                ctx.req.route_name = "none".into();
                let r = Rejection::new(
                    StatusCode::NOT_FOUND,
                    "no_route",
                    "no route matches this request",
                );
                return self.respond(session, ctx, "router", r).await;
            }
            Err(e) => {
                ctx.req.route_name = "none".into();
                session.set_keepalive(None);
                let r = Rejection::invalid_request(e.reason(), e.to_string());
                return self.respond(session, ctx, "request", r).await;
            }
        };
        if let Some(rw) = rewrite {
            rw.apply(session.req_header_mut())?;
        }
        if !websocket {
            drop_upgrade(session.req_header_mut());
        }
        ctx.route = Some(idx);
        ctx.req.route_name = name;

        if let Some(c) = presented_cert(session) {
            ctx.req.presented_cert = Some(c.cert.clone());
            ctx.req.presented_cert_failure = c.failure;
        }
        let Some(route) = rt.routes.get(idx) else {
            return Ok(false);
        };
        // the listener's certificate policy is the first filter of its chain
        let chain = listener
            .and_then(|i| route.chains.get(i))
            .unwrap_or(&route.filters);
        let mut rejected = None;
        {
            let parts: &http::request::Parts = session.req_header();
            for f in chain {
                if let Verdict::Reject(r) = f.check(parts, &mut ctx.req).await {
                    debug_assert!(
                        f.reasons().contains(&r.reason),
                        "{} refused with the undeclared reason {}",
                        f.name(),
                        r.reason
                    );
                    rejected = Some((f.name(), r));
                    break;
                }
            }
        }
        match rejected {
            Some((name, r)) => self.respond(session, ctx, name, r).await,
            None => Ok(false),
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route() else {
            return Error::e_explain(ErrorType::InternalError, "no route");
        };
        let up = route.upstream.clone();
        let websocket = route.websocket;
        let key = match up.pool.hash_on {
            Some(on) => hash_key(on, session, &ctx.req),
            None => Vec::new(),
        };
        let addr = match up.pool.select(&key, &ctx.tried, Instant::now()) {
            Pick::Peer(a) => a,
            Pick::NoHealthyPeer => {
                return Err(Error::explain(NO_HEALTHY_PEER, "no healthy upstream peer").into_up())
            }
            Pick::NoPeer => {
                return Err(Error::explain(NO_HEALTHY_PEER, "the upstream has no peers").into_up())
            }
        };
        let (tls, sni) = match &up.tls {
            Some(t) => (true, t.sni.clone()),
            None => (false, String::new()),
        };
        let mut peer = HttpPeer::new(addr, tls, sni);
        peer.options.connection_timeout = Some(up.connect_timeout);
        peer.options.total_connection_timeout = Some(up.connect_timeout);
        peer.options.read_timeout = Some(up.read_timeout);
        peer.options.write_timeout = Some(up.read_timeout);
        if let Some(t) = &up.tls {
            t.apply(&mut peer.options);
        }
        if up.protocol != UpstreamProtocol::H1 {
            // h2 (ALPN) over TLS, h2c with prior knowledge over TCP; one connection
            // carries many streams
            peer.options.set_http_version(2, 2);
            peer.options.max_h2_streams = H2_STREAMS;
        }
        peer.group_key = up.pool_key;
        if !websocket {
            // no upgrade handshake reaches the upstream (Pingora's default forwards
            // WebSocket ones)
            peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::deny_upgrades();
        }
        ctx.upstream_addr = Some(addr);
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    /// A connection to a peer failed: the peer is noted (passive health) and the request
    /// goes to another peer while the upstream's `retries` allow and one is left. Nothing
    /// was sent, so any method may go again.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(up) = ctx.route().map(|r| r.upstream.clone()) else {
            return e;
        };
        if let Some(a) = peer.address().as_inet() {
            up.pool.failed(*a, Instant::now());
            ctx.tried.push(*a);
        }
        let retry = ctx.tried.len() <= up.pool.retries as usize && up.pool.has_untried(&ctx.tried);
        if retry {
            let reason = match e.etype() {
                ErrorType::ConnectTimedout => "connect_timeout",
                _ => "connect",
            };
            up.pool.count_retry(reason);
        }
        e.set_retry(retry);
        e
    }

    /// A failure after the request was (partly) sent. Sent again only when the connection
    /// came from the pool (the upstream may have closed it while idle), the method is
    /// idempotent (RFC 9110 §9.2.2), the body is still at hand and the upstream allows it.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let pool = ctx.route().map(|r| r.upstream.pool.clone());
        if let (Some(p), ErrorType::ReadTimedout | ErrorType::WriteTimedout) = (&pool, e.etype()) {
            // a peer that does not answer in time counts against its passive health
            if let Some(a) = peer.address().as_inet() {
                p.failed(*a, Instant::now());
            }
        }
        let allowed = pool
            .as_ref()
            .is_some_and(|p| p.retry_idempotent && ctx.resent < p.retries.max(1))
            && session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        if allowed {
            e.retry.decide_reuse(client_reused);
        } else {
            e.set_retry(false);
        }
        if e.retry() {
            ctx.resent += 1;
            if let Some(p) = pool {
                p.count_retry("reused_connection");
            }
        }
        e
    }

    /// Removes every header Gatehouse owns from the client's request, then adds the ones
    /// the filters produced.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let mut set_forwarded = false;
        if let Some(route) = ctx.route() {
            // one pass over the client's few headers, not a removal per owned name (a
            // removal hashes the name and updates the case map even when it is absent)
            let present: Vec<http::HeaderName> = upstream
                .headers
                .keys()
                .filter(|name| route.owned_headers.contains(name))
                .cloned()
                .collect();
            for h in &present {
                upstream.remove_header(h);
            }
            set_forwarded = route.forwarded_headers == ForwardedHeaders::Set;
        }
        // cloned, not drained: a request sent again (another connection) needs them again
        for (name, value) in &ctx.req.upstream_headers {
            upstream.append_header(name.clone(), value.clone())?;
        }
        // one canonical Content-Length, never a list or a repeat as the client wrote it
        if let Some(cl) = canonical_content_length(upstream) {
            upstream.insert_header(http::header::CONTENT_LENGTH, cl)?;
        }
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if let Some(ip) = client {
            // we are the edge: whatever the client claims is replaced
            upstream.insert_header("x-forwarded-for", ip.to_string())?;
        }
        let https = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let proto = if https { "https" } else { "http" };
        upstream.insert_header("x-forwarded-proto", proto)?;
        if set_forwarded {
            let host = upstream
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned);
            let port = session
                .server_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.port());
            if let Some(v) = forwarded_value(client, proto, host.as_deref()) {
                upstream.insert_header("forwarded", v)?;
            }
            if let Some(ip) = client {
                upstream.insert_header("x-real-ip", ip.to_string())?;
            }
            if let Some(h) = host {
                upstream.insert_header("x-forwarded-host", h)?;
            }
            if let Some(p) = port {
                upstream.insert_header("x-forwarded-port", p.to_string())?;
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if resp.status == StatusCode::SWITCHING_PROTOCOLS
            && !ctx.route().is_some_and(|r| r.websocket)
        {
            // an upgrade nobody asked for: never let it turn into an unfiltered pipe
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "unrequested 101 from the upstream",
            )
            .into_up());
        }
        if let (Some(route), Some(addr)) = (ctx.route(), ctx.upstream_addr) {
            route.upstream.pool.answered(addr);
        }
        if let Some(t) = ctx.upstream_started.take() {
            self.metrics
                .upstream_duration
                .with_label_values(&[&ctx.req.route_name])
                .observe(t.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Upstream unreachable or slow: a JSON 502/504, never a hang.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if e.esource() == &ErrorSource::Downstream {
            return self.client_failed(session, e, ctx).await;
        }
        let (status, reason, kind, text) = match e.etype() {
            &NO_HEALTHY_PEER => (
                502,
                "upstream_unavailable",
                "no_healthy_peer",
                "no upstream peer is available",
            ),
            ErrorType::ConnectTimedout => (
                504,
                "upstream_timeout",
                "connect_timeout",
                "the upstream did not accept the connection in time",
            ),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => (
                504,
                "upstream_timeout",
                "timeout",
                "the upstream did not answer in time",
            ),
            ErrorType::HTTPStatus(code) => (
                *code,
                "bad_request",
                "none",
                "the request could not be processed",
            ),
            _ => match e.esource() {
                ErrorSource::Upstream => (
                    502,
                    "upstream_unavailable",
                    "connect",
                    "the upstream is unavailable",
                ),
                _ => (500, "internal_error", "none", "internal error"),
            },
        };
        if status >= 502 {
            self.metrics
                .upstream_errors
                .with_label_values(&[&ctx.req.route_name, kind])
                .inc();
        }
        let status_code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        let r = Rejection::new(status_code, reason, text);
        answer_failure(session, ctx, &r).await;
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    /// Errors Gatehouse's chain does not log as its own: the client's (a request the
    /// parser refused, a broken body, a connection gone) are answered, counted and written
    /// to the access log, never logged at ERROR (a client could write ERROR lines at will;
    /// and Pingora's error text can quote request bytes, tokens included).
    ///
    /// Nor, per request, an upstream that refuses, times out or has no fit peer: during an
    /// outage that would be an ERROR line per request. Those are counted
    /// (`gatehouse_upstream_errors_total`), in the access log, and a peer taken out or
    /// brought back is logged once, at WARN/INFO.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        match e.esource() {
            ErrorSource::Downstream => true,
            ErrorSource::Upstream => matches!(
                e.etype(),
                ErrorType::ConnectNoRoute
                    | ErrorType::ConnectRefused
                    | ErrorType::ConnectTimedout
                    | ErrorType::ConnectError
                    | ErrorType::ReadTimedout
                    | ErrorType::WriteTimedout
            ),
            _ => false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(ctx.status);
        let outcome = if ctx.rejected_by.is_some() {
            "rejected"
        } else if e.is_some() || status >= 500 {
            "error"
        } else {
            "allowed"
        };
        let route = if ctx.req.route_name.is_empty() {
            "none"
        } else {
            &*ctx.req.route_name
        };
        self.metrics
            .requests
            .with_label_values(&[route, status_class(status), outcome])
            .inc();
        let elapsed = ctx.started.elapsed().as_secs_f64();
        self.metrics
            .request_duration
            .with_label_values(&[route, outcome])
            .observe(elapsed);
        // no request_filter, no header to trust (there may be none: a parser refusal)
        let req = ctx.runtime.is_some().then(|| session.req_header());
        self.access_log.write(session, req, ctx, status, elapsed);
    }
}

/// RFC 7239 `Forwarded: for=…;proto=…;host=…` (IPv6 addresses bracketed and quoted, the
/// host quoted: a port's `:` is not a token character).
fn forwarded_value(
    client: Option<std::net::IpAddr>,
    proto: &str,
    host: Option<&str>,
) -> Option<String> {
    let mut v = match client? {
        std::net::IpAddr::V4(ip) => format!("for={ip}"),
        std::net::IpAddr::V6(ip) => format!("for=\"[{ip}]\""),
    };
    v.push_str(";proto=");
    v.push_str(proto);
    if let Some(h) = host.filter(|h| !h.is_empty()) {
        // a canonical host has no '"' or '\\' to escape
        v.push_str(";host=\"");
        v.push_str(h);
        v.push('"');
    }
    Some(v)
}

#[cfg(test)]
mod grpc_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn req(content_type: &str) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/pkg.Svc/Call", None).unwrap();
        r.insert_header("content-type", content_type).unwrap();
        r
    }

    #[test]
    fn grpc_requests_are_told_by_their_content_type() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC;x=1",
        ] {
            assert!(is_grpc(&req(yes)), "{yes}");
        }
        for no in [
            "application/json",
            "application/grpc-web",
            "application/grpcx",
        ] {
            assert!(!is_grpc(&req(no)), "{no}");
        }
    }

    #[test]
    fn grpc_statuses_and_messages() {
        assert_eq!(grpc_status(StatusCode::UNAUTHORIZED), 16);
        assert_eq!(grpc_status(StatusCode::FORBIDDEN), 7);
        assert_eq!(grpc_status(StatusCode::SERVICE_UNAVAILABLE), 14);
        assert_eq!(grpc_status(StatusCode::GATEWAY_TIMEOUT), 4);
        assert_eq!(grpc_message("50% off: caf\u{e9}"), "50%25 off: caf%C3%A9");
    }
}
