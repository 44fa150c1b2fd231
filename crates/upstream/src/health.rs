//! Active health checks: Pingora's TCP and HTTP checks, counted, and bringing a passively
//! ejected peer back as soon as a check passes.

use crate::passive::Passive;
use async_trait::async_trait;
use gatehouse_config::{HealthCheck as HealthConfig, HealthCheckKind, UpstreamProtocol};
use pingora_error::{Error, ErrorType};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::Backend;
use prometheus::IntCounterVec;
use std::sync::Arc;

/// TLS towards the upstream, as its requests and its health checks use it.
#[derive(Clone)]
pub struct TlsTo {
    pub sni: String,
    pub verify: bool,
    /// Trust anchors for the upstream's certificate (`None`: the system's).
    pub ca: Option<Arc<Box<[openssl::x509::X509]>>>,
}

impl TlsTo {
    /// Verification as configured, with the upstream's CA bundle.
    pub fn apply(&self, o: &mut pingora_core::upstreams::peer::PeerOptions) {
        o.verify_cert = self.verify;
        o.verify_hostname = self.verify;
        o.ca = self.ca.clone();
    }
}

/// The check for one upstream.
pub(crate) struct Checked {
    inner: Box<dyn HealthCheck + Send + Sync>,
    upstream: String,
    passive: Arc<Passive>,
    checks: IntCounterVec,
    ejections: IntCounterVec,
    /// Bound on one check, whatever the connector does.
    limit: std::time::Duration,
}

impl Checked {
    pub(crate) fn new(
        upstream: &str,
        c: &HealthConfig,
        tls: Option<&TlsTo>,
        protocol: UpstreamProtocol,
        passive: Arc<Passive>,
        checks: IntCounterVec,
        ejections: IntCounterVec,
    ) -> Result<Self, String> {
        let timeout = c.timeout.0;
        let success = c.healthy_threshold.max(1) as usize;
        let failure = c.unhealthy_threshold.max(1) as usize;
        let inner: Box<dyn HealthCheck + Send + Sync> = match c.kind() {
            HealthCheckKind::Tcp => {
                let mut t = match tls {
                    Some(t) => TcpHealthCheck::new_tls(&t.sni),
                    None => TcpHealthCheck::new(),
                };
                t.consecutive_success = success;
                t.consecutive_failure = failure;
                t.peer_template.options.connection_timeout = Some(timeout);
                t.peer_template.options.total_connection_timeout = Some(timeout);
                if let Some(tls) = tls {
                    tls.apply(&mut t.peer_template.options);
                }
                t
            }
            HealthCheckKind::Http => {
                let path = c.path.as_deref().unwrap_or("/");
                let host = c
                    .host
                    .clone()
                    .or_else(|| tls.map(|t| t.sni.clone()))
                    .unwrap_or_else(|| "localhost".to_owned());
                let mut h = HttpHealthCheck::new(&host, tls.is_some());
                let mut req = RequestHeader::build("GET", path.as_bytes(), None)
                    .map_err(|e| format!("health_check.path: {e}"))?;
                req.insert_header(http::header::HOST, host.as_str())
                    .map_err(|e| format!("health_check.host: {e}"))?;
                req.insert_header(http::header::USER_AGENT, "gatehouse-health-check")
                    .map_err(|e| e.to_string())?;
                h.req = req;
                h.consecutive_success = success;
                h.consecutive_failure = failure;
                let o = &mut h.peer_template.options;
                o.connection_timeout = Some(timeout);
                o.total_connection_timeout = Some(timeout);
                o.read_timeout = Some(timeout);
                o.write_timeout = Some(timeout);
                if let Some(tls) = tls {
                    h.peer_template.sni = tls.sni.clone();
                    tls.apply(&mut h.peer_template.options);
                }
                if protocol != UpstreamProtocol::H1 {
                    h.peer_template.options.set_http_version(2, 2);
                }
                let expect = c.expect_status;
                h.validator = Some(Box::new(move |resp| {
                    if resp.status.as_u16() == expect {
                        Ok(())
                    } else {
                        Error::e_explain(
                            ErrorType::CustomCode("unexpected status", resp.status.as_u16()),
                            "during the health check",
                        )
                    }
                }));
                Box::new(h)
            }
        };
        Ok(Self {
            inner,
            upstream: upstream.to_owned(),
            passive,
            checks,
            ejections,
            limit: timeout * 2,
        })
    }
}

#[async_trait]
impl HealthCheck for Checked {
    async fn check(&self, target: &Backend) -> pingora_error::Result<()> {
        let r = match tokio::time::timeout(self.limit, self.inner.check(target)).await {
            Ok(r) => r,
            Err(_) => Error::e_explain(ErrorType::ConnectTimedout, "health check timed out"),
        };
        let result = if r.is_ok() { "success" } else { "failure" };
        self.checks
            .with_label_values(&[&self.upstream, result])
            .inc();
        if r.is_ok() {
            if let Some(a) = target.addr.as_inet() {
                self.passive.success(*a);
            }
        }
        r
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if healthy {
            tracing::info!(upstream = %self.upstream, peer = %target.addr, "upstream peer passes its health check again");
        } else {
            self.ejections
                .with_label_values(&[&self.upstream, "active"])
                .inc();
            tracing::warn!(upstream = %self.upstream, peer = %target.addr, "upstream peer fails its health check: taken out");
        }
    }

    fn backend_summary(&self, target: &Backend) -> String {
        format!("upstream {} peer {}", self.upstream, target.addr)
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}
