//! Gatehouse's Prometheus metric families on an explicit [`Registry`] (never the global
//! one), so every proxy instance — and every test — has its own.
//!
//! Label values are bounded: route and listener names from the config, filter kinds, fixed
//! reason strings, status classes. Never tokens, subjects, client ids or paths.
#![forbid(unsafe_code)]

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric family Gatehouse exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by route, status class (`2xx`…) and outcome (`allowed`, `rejected`, `error`).
    pub requests: IntCounterVec,
    /// End-to-end request duration by route and outcome.
    pub request_duration: HistogramVec,
    /// Time to the upstream's response header, by route.
    pub upstream_duration: HistogramVec,
    /// Upstream failures by route and kind (`connect`, `timeout`, `other`).
    pub upstream_errors: IntCounterVec,
    /// Rejections by route, filter and reason (every filter).
    pub rejections: IntCounterVec,
    /// `notAfter` (Unix seconds) of each TLS listener's server certificate.
    pub tls_server_cert_expiry: IntGaugeVec,
    /// 1 while a configured peer of an upstream has an address that takes requests
    /// (label `peer` as configured: bounded).
    pub upstream_peer_up: IntGaugeVec,
    /// Addresses of a configured peer by state (`up`, `down`).
    pub upstream_peer_addresses: IntGaugeVec,
    /// Active health checks by upstream and result (`success`, `failure`).
    pub upstream_health_checks: IntCounterVec,
    /// Peers taken out by upstream and cause (`active`, `passive`).
    pub upstream_ejections: IntCounterVec,
    /// Requests sent to another peer or connection, by upstream and reason (`connect`,
    /// `connect_timeout`, `reused_connection`).
    pub upstream_retries: IntCounterVec,
    /// Peer name resolutions by upstream and result (`changed`, `unchanged`, `failed`).
    pub upstream_resolutions: IntCounterVec,
    /// Client-certificate rejections by route and reason.
    pub client_cert_rejections: IntCounterVec,
    /// Time until expiry of accepted client certificates, by issuer CN of a trusted CA
    /// (seconds, per Prometheus base units; buckets from 1 day to 2 years).
    pub client_cert_expiry: HistogramVec,
    /// Soonest `notAfter` (Unix seconds) among client certificates accepted in the last
    /// 24 hours.
    pub client_cert_soonest_expiry: std::sync::Arc<SoonestExpiry>,
    /// TLS handshakes completed by listener and client-certificate state.
    pub tls_handshakes: IntCounterVec,
    pub tls_handshakes_started: IntCounterVec,
    pub tls_client_cert_failures: IntCounterVec,
    /// CRL loads/fetches by source and result.
    pub crl_updates: IntCounterVec,
    /// Introspection calls by result (`active`, `inactive`, `timeout`, `error`, `bad_response`).
    pub introspection_requests: IntCounterVec,
    /// Introspection call latency.
    pub introspection_duration: Histogram,
    /// Token cache lookups by result (`hit`, `miss`, `coalesced`, `negative_hit`, `stale`).
    pub token_cache: IntCounterVec,
    /// Entries in the token caches.
    pub token_cache_entries: IntGaugeVec,
    /// JWKS fetches by authorization server and result.
    pub jwks_refreshes: IntCounterVec,
    /// RFC 8705 binding failures by route and reason.
    pub cert_binding_failures: IntCounterVec,
    /// Config (re)loads by result.
    pub config_reloads: IntCounterVec,
    /// 1, labelled with the loaded config's SHA-256.
    pub config_info: IntGaugeVec,
}

/// TLS handshakes that failed before completing, by reason: process-wide, because Pingora
/// reports them only through its log (`Downstream handshake error …`), which the binary's
/// log layer hands to [`count_handshake_failure`]. Every instance's registry exports it.
fn tls_handshake_failures() -> &'static IntCounterVec {
    static C: std::sync::OnceLock<IntCounterVec> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        IntCounterVec::new(
            Opts::new(
                "gatehouse_tls_handshake_failures_total",
                "TLS handshakes that failed before completing, by reason (from the TLS layer: not_tls, protocol_version, no_shared_cipher, client_alert, eof, timeout, h2_handshake, other).",
            ),
            &["reason"],
        )
        .unwrap_or_else(|e| unreachable_metric("gatehouse_tls_handshake_failures_total", e))
    })
}

/// The reason label for a failed handshake, from Pingora's error text (bounded set).
pub fn classify_handshake_failure(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.starts_with("h2 handshake") {
        "h2_handshake"
    } else if m.contains("timeout") || m.contains("timed out") {
        "timeout"
    } else if m.contains("http request")
        || m.contains("wrong version number")
        || m.contains("packet length too long")
    {
        "not_tls"
    } else if m.contains("unsupported protocol")
        || m.contains("protocol version")
        || m.contains("version too low")
    {
        "protocol_version"
    } else if m.contains("no shared cipher")
        || m.contains("no suitable")
        || m.contains("no shared group")
    {
        "no_shared_cipher"
    } else if m.contains("alert") {
        "client_alert"
    } else if m.contains("eof")
        || m.contains("reset")
        || m.contains("closed")
        || m.contains("broken pipe")
    {
        "eof"
    } else {
        "other"
    }
}

/// Count one failed handshake whose error text is `message`.
pub fn count_handshake_failure(message: &str) {
    tls_handshake_failures()
        .with_label_values(&[classify_handshake_failure(message)])
        .inc();
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable_metric(name, e));
    register(r, Box::new(c.clone()));
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable_metric(name, e));
    register(r, Box::new(g.clone()));
    g
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|e| unreachable_metric(name, e));
    register(r, Box::new(h.clone()));
    h
}

fn register(r: &Registry, c: Box<dyn prometheus::core::Collector>) {
    // Registration only fails for duplicate or malformed names: fixed at compile time here.
    if let Err(e) = r.register(c) {
        tracing_free_log(&format!("metric registration failed: {e}"));
    }
}

fn tracing_free_log(msg: &str) {
    eprintln!("gatehouse-metrics: {msg}");
}

#[allow(clippy::panic)]
fn unreachable_metric<T>(name: &str, e: prometheus::Error) -> T {
    // Names and label sets are literals in this file; a failure is a programming error
    // caught by the unit test below, never by a request or a config file.
    panic!("invalid metric {name}: {e}")
}

const LATENCY: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    /// Create every family on a fresh registry.
    pub fn new() -> Self {
        let r = Registry::new();
        register(&r, Box::new(tls_handshake_failures().clone()));
        let requests = counter(
            &r,
            "gatehouse_requests_total",
            "Requests by route, status class and outcome.",
            &["route", "status_class", "outcome"],
        );
        let request_duration = histogram(
            &r,
            "gatehouse_request_duration_seconds",
            "Request duration from first byte to response end.",
            &["route", "outcome"],
            LATENCY.to_vec(),
        );
        let upstream_duration = histogram(
            &r,
            "gatehouse_upstream_duration_seconds",
            "Time from sending the request upstream to its response header.",
            &["route"],
            LATENCY.to_vec(),
        );
        let upstream_errors = counter(
            &r,
            "gatehouse_upstream_errors_total",
            "Upstream failures by route and kind.",
            &["route", "kind"],
        );
        let rejections = counter(
            &r,
            "gatehouse_rejections_total",
            "Requests rejected by a filter.",
            &["route", "filter", "reason"],
        );
        let tls_server_cert_expiry = gauge(
            &r,
            "gatehouse_tls_server_cert_expiry_timestamp_seconds",
            "notAfter (Unix seconds) of each TLS listener's server certificate.",
            &["listener"],
        );
        let upstream_peer_up = gauge(
            &r,
            "gatehouse_upstream_peer_up",
            "1 while a configured upstream peer has an address that takes requests.",
            &["upstream", "peer"],
        );
        let upstream_peer_addresses = gauge(
            &r,
            "gatehouse_upstream_peer_addresses",
            "Addresses of a configured upstream peer by state (up, down).",
            &["upstream", "peer", "state"],
        );
        let upstream_health_checks = counter(
            &r,
            "gatehouse_upstream_health_checks_total",
            "Active upstream health checks by result (success, failure).",
            &["upstream", "result"],
        );
        let upstream_ejections = counter(
            &r,
            "gatehouse_upstream_ejections_total",
            "Upstream peers taken out of rotation, by cause (active, passive).",
            &["upstream", "cause"],
        );
        let upstream_retries = counter(
            &r,
            "gatehouse_upstream_retries_total",
            "Requests retried on another peer or connection, by reason.",
            &["upstream", "reason"],
        );
        let upstream_resolutions = counter(
            &r,
            "gatehouse_upstream_resolutions_total",
            "Upstream peer name resolutions by result (changed, unchanged, failed).",
            &["upstream", "result"],
        );
        let client_cert_rejections = counter(
            &r,
            "gatehouse_client_cert_rejections_total",
            "Client-certificate rejections.",
            &["route", "reason"],
        );
        const DAY: f64 = 86400.0;
        let client_cert_expiry = histogram(
            &r,
            "gatehouse_client_cert_expiry_seconds",
            "Time until expiry of accepted client certificates, by issuer (buckets: 1 day to 2 years).",
            &["issuer"],
            [1.0, 7.0, 14.0, 30.0, 60.0, 90.0, 180.0, 365.0, 730.0].iter().map(|d| d * DAY).collect(),
        );
        let soonest_gauge = IntGauge::new(
            "gatehouse_client_cert_soonest_expiry_timestamp_seconds",
            "Soonest notAfter among client certificates accepted in the last 24 hours.",
        )
        .unwrap_or_else(|e| unreachable_metric("soonest", e));
        register(&r, Box::new(soonest_gauge.clone()));
        let client_cert_soonest_expiry = std::sync::Arc::new(SoonestExpiry::new(soonest_gauge));
        let tls_handshakes = counter(
            &r,
            "gatehouse_tls_handshakes_total",
            "Completed TLS handshakes by listener and client-certificate state.",
            &["listener", "client_cert"],
        );
        let tls_handshakes_started = counter(
            &r,
            "gatehouse_tls_handshakes_started_total",
            "TLS handshakes that reached certificate selection, by listener; started minus completed = handshakes that failed at the TLS layer (alerts, no shared group, timeouts).",
            &["listener"],
        );
        let tls_client_cert_failures = counter(
            &r,
            "gatehouse_tls_client_cert_failures_total",
            "Completed handshakes whose client certificate failed verification, by listener and reason (answered with 403 at the HTTP layer).",
            &["listener", "reason"],
        );
        let crl_updates = counter(
            &r,
            "gatehouse_crl_updates_total",
            "CRL loads and fetches by source and result.",
            &["source", "result"],
        );
        let introspection_requests = counter(
            &r,
            "gatehouse_introspection_requests_total",
            "Introspection calls by result.",
            &["result"],
        );
        let introspection_duration = Histogram::with_opts(
            HistogramOpts::new(
                "gatehouse_introspection_duration_seconds",
                "Introspection call latency.",
            )
            .buckets(LATENCY.to_vec()),
        )
        .unwrap_or_else(|e| unreachable_metric("introspection", e));
        register(&r, Box::new(introspection_duration.clone()));
        let token_cache = counter(
            &r,
            "gatehouse_token_cache_total",
            "Token cache lookups by result.",
            &["result"],
        );
        let token_cache_entries = gauge(
            &r,
            "gatehouse_token_cache_entries",
            "Entries in the token cache.",
            &["authorization_server"],
        );
        let jwks_refreshes = counter(
            &r,
            "gatehouse_jwks_refreshes_total",
            "JWKS fetches by authorization server and result.",
            &["authorization_server", "result"],
        );
        let cert_binding_failures = counter(
            &r,
            "gatehouse_cert_binding_failures_total",
            "RFC 8705 certificate-binding failures.",
            &["route", "reason"],
        );
        let config_reloads = counter(
            &r,
            "gatehouse_config_reloads_total",
            "Configuration loads by result.",
            &["result"],
        );
        let config_info = gauge(
            &r,
            "gatehouse_config_info",
            "The loaded configuration's SHA-256.",
            &["sha256"],
        );
        // families whose label values are fixed start with every series at 0, so an alert
        // on `rate(...)` sees 0 rather than "no data" before the first event
        for result in [
            "active",
            "inactive",
            "timeout",
            "unreachable",
            "error_status",
            "bad_response",
            "bad_signature",
            "circuit_open",
            "unforwardable",
        ] {
            introspection_requests.with_label_values(&[result]);
        }
        for result in ["hit", "miss", "coalesced", "negative_hit", "stale"] {
            token_cache.with_label_values(&[result]);
        }
        for result in ["success", "failure"] {
            config_reloads.with_label_values(&[result]);
        }
        Self {
            registry: r,
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            rejections,
            tls_server_cert_expiry,
            upstream_peer_up,
            upstream_peer_addresses,
            upstream_health_checks,
            upstream_ejections,
            upstream_retries,
            upstream_resolutions,
            client_cert_rejections,
            client_cert_expiry,
            client_cert_soonest_expiry,
            tls_handshakes,
            tls_handshakes_started,
            tls_client_cert_failures,
            crl_updates,
            introspection_requests,
            introspection_duration,
            token_cache,
            token_cache_entries,
            jwks_refreshes,
            cert_binding_failures,
            config_reloads,
            config_info,
        }
    }

    /// The registry (to add more collectors).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing_free_log(&format!("metrics encoding failed: {e}"));
        }
        out
    }

    /// Record the loaded config's hash as the only `gatehouse_config_info` series.
    pub fn set_config_hash(&self, sha256: &str) {
        self.config_info.reset();
        self.config_info.with_label_values(&[sha256]).set(1);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `2xx`, `4xx`, … for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// The soonest `notAfter` among the client certificates accepted in the last
/// [`SoonestExpiry::WINDOW`] seconds. A partner that rotated its certificate stops holding
/// the gauge (and the alert on it) at the old one's expiry once the window has passed.
pub struct SoonestExpiry {
    gauge: IntGauge,
    /// SHA-256 of a certificate → (its notAfter, when it was last accepted).
    seen: gatehouse_core::Bounded<[u8; 32], (i64, i64)>,
    /// When the gauge is recomputed next (Unix seconds) unless a new certificate comes.
    next_recompute: std::sync::atomic::AtomicI64,
}

impl SoonestExpiry {
    /// How long an accepted certificate counts, in seconds.
    pub const WINDOW: i64 = 86_400;
    /// Certificates tracked at most.
    const MAX_TRACKED: usize = 4096;
    /// The gauge is recomputed when a new certificate arrives and otherwise at most this
    /// often, in seconds.
    const RECOMPUTE_EVERY: i64 = 60;

    fn new(gauge: IntGauge) -> Self {
        Self {
            gauge,
            seen: gatehouse_core::Bounded::new(Self::MAX_TRACKED),
            next_recompute: Default::default(),
        }
    }

    /// A certificate (by SHA-256) with this `notAfter` was accepted at `now` (Unix seconds).
    pub fn observe(&self, sha256: [u8; 32], not_after: i64, now: i64) {
        use std::sync::atomic::Ordering::Relaxed;
        let new = self.seen.get(&sha256, |_| Some(())).is_none();
        // out of the window is dead
        self.seen.insert(sha256, (not_after, now), |(_, seen)| {
            now - *seen > Self::WINDOW
        });
        if !new && now < self.next_recompute.load(Relaxed) {
            return;
        }
        // computed and published under the table's lock: a recomputation that began before
        // a newer certificate came cannot overwrite the value that includes it
        self.seen.with(|m| {
            m.retain(|_, (_, seen)| now - *seen <= Self::WINDOW);
            self.gauge
                .set(m.values().map(|(n, _)| *n).min().unwrap_or(0));
        });
        self.next_recompute
            .store(now + Self::RECOMPUTE_EVERY, Relaxed);
    }

    /// The gauge's value (0: none accepted in the window).
    pub fn get(&self) -> i64 {
        self.gauge.get()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn soonest_expiry_forgets_certificates_not_seen_for_a_day() {
        let m = Metrics::new();
        let s = &m.client_cert_soonest_expiry;
        let t0 = 1_800_000_000;
        s.observe([1; 32], t0 + 10 * 86_400, t0); // old certificate, expires soon
        s.observe([2; 32], t0 + 300 * 86_400, t0); // its replacement
        assert_eq!(s.get(), t0 + 10 * 86_400);
        // only the replacement connects from now on
        s.observe([2; 32], t0 + 300 * 86_400, t0 + 3600);
        assert_eq!(s.get(), t0 + 10 * 86_400, "still within the day");
        s.observe([2; 32], t0 + 300 * 86_400, t0 + SoonestExpiry::WINDOW + 61);
        assert_eq!(s.get(), t0 + 300 * 86_400);
        // a new certificate that expires sooner shows at once
        s.observe([3; 32], t0 + 86_400, t0 + SoonestExpiry::WINDOW + 62);
        assert_eq!(s.get(), t0 + 86_400);
        let text = String::from_utf8(m.render()).unwrap_or_default();
        let line = format!(
            "gatehouse_client_cert_soonest_expiry_timestamp_seconds {}",
            t0 + 86_400
        );
        assert!(text.contains(&line), "{text}");
    }

    use super::*;

    #[test]
    fn families_register_and_render() {
        let m = Metrics::new();
        m.requests.with_label_values(&["r", "2xx", "allowed"]).inc();
        m.set_config_hash("abc");
        m.set_config_hash("def");
        let text = String::from_utf8(m.render()).unwrap_or_default();
        assert!(text.contains(
            "gatehouse_requests_total{outcome=\"allowed\",route=\"r\",status_class=\"2xx\"} 1"
        ));
        assert!(text.contains("gatehouse_config_info{sha256=\"def\"} 1"));
        assert!(!text.contains("sha256=\"abc\""));
        // the unlabelled families, the two given series here, and the three whose fixed
        // label values start at 0 (introspection results, token cache results, reloads)
        assert_eq!(m.registry().gather().len(), 7);
        assert!(text.contains("gatehouse_token_cache_total{result=\"stale\"} 0"));
        assert_eq!(status_class(503), "5xx");
    }
}
