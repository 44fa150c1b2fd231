//! The admin listener (plain HTTP, keep it off the public network): `/healthz`,
//! `/readyz`, `/metrics`, `/upstreams` (each upstream's peers, addresses and their
//! state), and `/jwks` when Gatehouse signs JWTs.

use async_trait::async_trait;
use gatehouse_metrics::Metrics;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Readiness: true once the services started, false again as soon as shutdown begins (so
/// Kubernetes removes the pod from its endpoints while in-flight requests drain).
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
}

#[async_trait]
impl BackgroundService for Readiness {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.0.store(true, Ordering::Release);
        let _ = shutdown.changed().await;
        self.0.store(false, Ordering::Release);
    }
}

/// The admin HTTP app.
pub struct Admin {
    pub metrics: Metrics,
    pub ready: Readiness,
    /// The running configuration (for the public JWKS of Gatehouse's signing key).
    pub runtime: Arc<arc_swap::ArcSwap<crate::runtime::Runtime>>,
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = r.body().len();
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    r
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/healthz" => reply(200, "text/plain", b"ok\n".to_vec()),
            "/readyz" if self.ready.is_ready() => reply(200, "text/plain", b"ready\n".to_vec()),
            "/readyz" => reply(503, "text/plain", b"not ready\n".to_vec()),
            "/metrics" => reply(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            "/upstreams" => {
                let now = std::time::Instant::now();
                let all: Vec<serde_json::Value> = self
                    .runtime
                    .load()
                    .upstreams
                    .iter()
                    .map(|u| u.pool.status(now))
                    .collect();
                let body = serde_json::to_vec_pretty(&serde_json::json!({ "upstreams": all }))
                    .unwrap_or_default();
                reply(200, "application/json", body)
            }
            "/jwks" => match &self.runtime.load().jwks {
                Some(j) => reply(200, "application/jwk-set+json", j.as_bytes().to_vec()),
                None => reply(
                    404,
                    "application/json",
                    br#"{"error":"not_found"}"#.to_vec(),
                ),
            },
            _ => reply(
                404,
                "application/json",
                br#"{"error":"not_found"}"#.to_vec(),
            ),
        }
    }
}
