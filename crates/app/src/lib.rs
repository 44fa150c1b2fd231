//! Wires a validated configuration into a running Pingora server: the proxy chain on the
//! configured listeners, the admin listener, readiness, and shutdown.
#![forbid(unsafe_code)]

pub mod access_log;
mod admin;
mod proxy;
mod runtime;
mod tls;

use admin::{Admin, Readiness};
use arc_swap::ArcSwap;
use gatehouse_config::{Config, FilterConfig, Loaded};
use gatehouse_core::Filter;
use gatehouse_metrics::Metrics;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownSignalWatch};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use std::sync::Arc;

pub use pingora_core::server::ShutdownSignal;
pub use proxy::Chain;
pub use runtime::Runtime;

/// Why a configuration could not be turned into a running server (after it validated:
/// unreadable keys, bad PEM, and the like).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Config(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("access log: {0}")]
    AccessLog(String),
}

/// Builds filters from their config. Holds what filters of several routes share.
pub struct FilterFactory {
    listener_ca_files: Vec<String>,
    listener_max_depth: u32,
}

impl FilterFactory {
    fn new(c: &Config) -> Self {
        let mut files = Vec::new();
        let mut depth = 0;
        for l in &c.listeners {
            if let Some(t) = &l.tls {
                files.extend(t.client_auth.ca_files.iter().cloned());
                depth = depth.max(t.client_auth.max_depth);
            }
        }
        Self {
            listener_ca_files: files,
            listener_max_depth: depth,
        }
    }

    /// One filter instance for one route.
    pub fn build(
        &self,
        _c: &Config,
        f: &FilterConfig,
        metrics: &Metrics,
    ) -> Result<Box<dyn Filter>, String> {
        match f {
            FilterConfig::ClientCert(cfg) => gatehouse_mtls::ClientCertFilter::new(
                cfg,
                &self.listener_ca_files,
                self.listener_max_depth,
                metrics.clone(),
            )
            .map(|f| Box::new(f) as Box<dyn Filter>)
            .map_err(|e| e.to_string()),
            other => Err(format!(
                "the {} filter is not available in this build",
                other.kind()
            )),
        }
    }
}

/// A Gatehouse instance ready to run.
pub struct Gatehouse {
    server: Server,
    pub metrics: Metrics,
    pub runtime: Arc<ArcSwap<Runtime>>,
}

impl Gatehouse {
    /// Build everything from a validated config: load certificates, build filters, bind
    /// nothing yet (Pingora binds when it runs).
    pub fn build(loaded: &Loaded) -> Result<Self, BuildError> {
        let c = &loaded.config;
        let metrics = Metrics::new();
        metrics.set_config_hash(&loaded.hash);
        metrics.config_reloads.with_label_values(&["success"]).inc();
        let factory = FilterFactory::new(c);
        let runtime = Arc::new(ArcSwap::from_pointee(Runtime::build(
            c, &metrics, &factory,
        )?));

        let mut conf = ServerConf {
            threads: c.server.threads,
            grace_period_seconds: Some(c.server.grace_period.0.as_secs()),
            graceful_shutdown_timeout_seconds: Some(c.server.shutdown_timeout.0.as_secs()),
            upstream_keepalive_pool_size: c.server.upstream_keepalive_pool,
            ..ServerConf::default()
        };
        conf.upgrade_sock = std::env::temp_dir()
            .join(format!("gatehouse-upgrade-{}.sock", std::process::id()))
            .display()
            .to_string();
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();

        let access_log = access_log::AccessLog::open(c.log.access_log.as_deref())
            .map_err(|e| BuildError::AccessLog(e.to_string()))?;
        let chain = Chain::new(runtime.clone(), metrics.clone(), access_log);
        let mut proxy = pingora_proxy::http_proxy_service_with_name(
            &server.configuration,
            chain,
            "gatehouse proxy",
        );
        for l in &c.listeners {
            let addr = l.listen.to_string();
            match &l.tls {
                None => proxy.add_tcp(&addr),
                Some(t) => {
                    let settings = tls::settings(&l.name, t, &metrics)?;
                    proxy.add_tls_with_settings(&addr, None, settings);
                }
            }
        }
        server.add_service(proxy);

        let ready = Readiness::default();
        server.add_service(background_service("readiness", ready.clone()));
        if let Some(a) = &c.admin {
            let app = Admin {
                metrics: metrics.clone(),
                ready,
                jwks: None,
            };
            let mut svc = Service::new("gatehouse admin".to_owned(), HttpServer::new_app(app));
            svc.add_tcp(&a.listen.to_string());
            server.add_service(svc);
        }
        Ok(Self {
            server,
            metrics,
            runtime,
        })
    }

    /// Run until the shutdown signal (Unix signals by default). Returns when every service
    /// stopped; never calls `process::exit`.
    pub fn run(self, shutdown: Option<Box<dyn ShutdownSignalWatch>>) {
        let args = match shutdown {
            Some(shutdown_signal) => RunArgs { shutdown_signal },
            None => RunArgs::default(),
        };
        self.server.run(args);
    }
}

/// Re-export of Pingora's shutdown-signal trait, for embedding Gatehouse with a shutdown
/// you control (tests).
pub use pingora_core::server::ShutdownSignalWatch as ShutdownSignalWatchExt;
