//! Hot reload (SIGHUP) and the process's signal handling.
//!
//! A reload re-reads the YAML, CA bundles, CRLs, server certificates and keys, builds a
//! complete new runtime, and only then swaps it in atomically: requests in flight finish
//! on the old one, new requests use the new one. Any error leaves everything as it was.
//! Listener sockets cannot change on reload (addresses, TLS on/off, client-cert mode):
//! that needs a restart or a graceful upgrade (`--upgrade`).

use crate::runtime::Runtime;
use crate::tls::{SharedTls, TlsMaterial};
use crate::{FilterFactory, Readiness};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use gatehouse_config::{ClientCertMode, Config};
use gatehouse_metrics::Metrics;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The listener facts a reload may not change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListenerShape {
    name: String,
    addr: SocketAddr,
    tls: bool,
    mode: ClientCertMode,
}

fn shapes(c: &Config) -> Vec<ListenerShape> {
    c.listeners
        .iter()
        .map(|l| ListenerShape {
            name: l.name.clone(),
            addr: l.listen,
            tls: l.tls.is_some(),
            mode: l
                .tls
                .as_ref()
                .map(|t| t.client_auth.mode)
                .unwrap_or(ClientCertMode::Off),
        })
        .collect()
}

/// Re-reads the configuration file and swaps the new state in.
pub struct Reloader {
    path: Option<PathBuf>,
    runtime: Arc<ArcSwap<Runtime>>,
    tls: Vec<(String, SharedTls)>,
    listeners: Vec<ListenerShape>,
    admin: Option<SocketAddr>,
    metrics: Metrics,
    lock: Mutex<()>,
    /// The factory of the running configuration (its caches and key stores carry over).
    factory: Mutex<Arc<FilterFactory>>,
}

impl Reloader {
    pub(crate) fn new(
        path: Option<PathBuf>,
        c: &Config,
        runtime: Arc<ArcSwap<Runtime>>,
        tls: Vec<(String, SharedTls)>,
        metrics: Metrics,
        factory: FilterFactory,
    ) -> Self {
        Self {
            factory: Mutex::new(Arc::new(factory)),
            path,
            runtime,
            tls,
            listeners: shapes(c),
            admin: c.admin.as_ref().map(|a| a.listen),
            metrics,
            lock: Mutex::new(()),
        }
    }

    /// Reload from the file. On error nothing changes; the errors are returned (and
    /// logged, and counted in `gatehouse_config_reloads_total{result="failure"}`).
    pub fn reload(&self) -> Result<(), Vec<String>> {
        let _one_at_a_time = self
            .lock
            .lock()
            .map_err(|_| vec!["reload lock poisoned".to_owned()])?;
        let res = self.try_reload();
        match &res {
            Ok(hash) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["success"])
                    .inc();
                self.metrics.set_config_hash(hash);
                tracing::info!(sha256 = %hash, "configuration reloaded");
            }
            Err(errors) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["failure"])
                    .inc();
                for e in errors {
                    tracing::error!(
                        "configuration reload rejected, the previous configuration stays: {e}"
                    );
                }
            }
        }
        res.map(|_| ())
    }

    fn try_reload(&self) -> Result<String, Vec<String>> {
        let path = self
            .path
            .as_ref()
            .ok_or_else(|| vec!["this instance was not started from a file".to_owned()])?;
        let loaded = gatehouse_config::load_file(path)
            .map_err(|e| e.0.iter().map(|x| x.to_string()).collect::<Vec<_>>())?;
        let c = &loaded.config;
        if shapes(c) != self.listeners || c.admin.as_ref().map(|a| a.listen) != self.admin {
            return Err(vec![
                "listeners (names, addresses, TLS, client_auth.mode) and the admin address cannot change on reload: restart or upgrade".to_owned(),
            ]);
        }
        let prev = self
            .factory
            .lock()
            .map(|f| f.clone())
            .map_err(|_| vec!["factory lock poisoned".to_owned()])?;
        let factory = FilterFactory::new_after(c, &prev).map_err(|e| vec![e.to_string()])?;
        let runtime = Runtime::build(c, &self.metrics, &factory, Some(&self.runtime.load()))
            .map_err(|e| vec![e.to_string()])?;
        let mut materials = Vec::new();
        for (name, _) in &self.tls {
            let Some(t) = c
                .listeners
                .iter()
                .find(|l| &l.name == name)
                .and_then(|l| l.tls.as_ref())
            else {
                return Err(vec![format!("listener {name} lost its tls section")]);
            };
            materials
                .push(TlsMaterial::load(t).map_err(|e| vec![format!("listeners.{name}: {e}")])?);
        }
        // everything built: swap
        self.runtime.store(Arc::new(runtime));
        if let Ok(mut f) = self.factory.lock() {
            *f = Arc::new(factory);
        }
        for ((_, shared), m) in self.tls.iter().zip(materials) {
            shared.store(Arc::new(m));
        }
        crate::tls::publish_server_cert_expiry(&self.metrics, &loaded.config);
        Ok(loaded.hash)
    }
}

/// Unix signals for the real process:
/// - SIGHUP: reload the configuration (the process keeps running);
/// - SIGTERM: `/readyz` turns 503, listeners keep accepting for `drain_delay`, then close;
///   in-flight requests get `grace_period` (Kubernetes: SIGTERM, then
///   `terminationGracePeriodSeconds`);
/// - SIGQUIT: graceful upgrade (hand the listening sockets to a new process started with
///   `--upgrade`);
/// - SIGINT: fast shutdown.
pub struct Signals {
    pub(crate) reloader: Arc<Reloader>,
    pub(crate) ready: Readiness,
    pub(crate) drain: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut hup), Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    let _ = self.reloader.reload();
                }
                _ = term.recv() => {
                    tracing::info!(drain = ?self.drain, "SIGTERM: not ready, draining before closing listeners");
                    self.ready.set(false);
                    tokio::time::sleep(self.drain).await;
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = int.recv() => return ShutdownSignal::FastShutdown,
                _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
            }
        }
    }
}
