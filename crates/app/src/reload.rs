//! Hot reload (SIGHUP) and the process's signal handling.
//!
//! A reload re-reads the YAML, CA bundles, CRLs, server certificates and keys, builds a
//! complete new runtime, and only then swaps it in atomically: requests in flight finish
//! on the old one, new requests use the new one. Any error leaves everything as it was.
//! Listener sockets cannot change on reload (addresses, TLS on/off, client-cert mode):
//! that needs a restart or a graceful upgrade (`--upgrade`).

use crate::admin::Readiness;
use crate::runtime::Runtime;
use crate::services::Services;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use gatehouse_config::{ClientCertMode, Config};
use gatehouse_metrics::Metrics;
use parking_lot::Mutex;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The listener facts a reload may not change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListenerShape {
    name: String,
    addr: SocketAddr,
    tls: bool,
    mode: ClientCertMode,
    /// Session resumption (its callbacks are installed in the OpenSSL contexts at start).
    resumption: bool,
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
            resumption: l.tls.as_ref().is_some_and(|t| t.session_resumption),
        })
        .collect()
}

/// Re-reads the configuration file and swaps the new state in.
pub struct Reloader {
    path: Option<PathBuf>,
    runtime: Arc<ArcSwap<Runtime>>,
    listeners: Vec<ListenerShape>,
    admin: Option<SocketAddr>,
    metrics: Metrics,
    lock: Mutex<()>,
    /// The services of the running configuration (their caches and key stores carry over).
    services: Mutex<Arc<Services>>,
    /// The certificate, key and CA files the running configuration names, with their
    /// SHA-256 when last seen: a change reloads (see [`FileWatch`]).
    watched: Mutex<Vec<(PathBuf, Option<[u8; 32]>)>>,
}

/// The key files of a configuration: every listener's certificate, key, client CA bundles
/// and session-ticket keys, the CA bundles of `client_cert` filters and TLS upstreams, and
/// Gatehouse's JWT signing key.
fn tls_files(c: &Config) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = Vec::new();
    for l in &c.listeners {
        if let Some(t) = &l.tls {
            files.push(t.cert_file.clone().into());
            files.push(t.key_file.clone().into());
            files.extend(t.client_auth.ca_files.iter().map(PathBuf::from));
            files.extend(t.session_ticket_key_files.iter().map(PathBuf::from));
        }
    }
    for r in &c.routes {
        for f in &r.filters {
            if let gatehouse_config::FilterConfig::ClientCert(cc) = f {
                files.extend(cc.ca_files.iter().flatten().map(PathBuf::from));
            }
        }
    }
    for u in c.upstreams.values() {
        if let Some(ca) = u.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
            files.push(ca.into());
        }
    }
    if let Some(s) = &c.token_signing {
        files.push(s.key_file.clone().into());
    }
    files.sort();
    files.dedup();
    files
}

fn digest(path: &std::path::Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| openssl::sha::sha256(&b))
}

fn fingerprints(c: &Config) -> Vec<(PathBuf, Option<[u8; 32]>)> {
    tls_files(c)
        .into_iter()
        .map(|p| {
            let d = digest(&p);
            (p, d)
        })
        .collect()
}

impl Reloader {
    pub(crate) fn new(
        path: Option<PathBuf>,
        c: &Config,
        runtime: Arc<ArcSwap<Runtime>>,
        metrics: Metrics,
        services: Services,
    ) -> Self {
        Self {
            services: Mutex::new(Arc::new(services)),
            path,
            runtime,
            listeners: shapes(c),
            admin: c.admin.as_ref().map(|a| a.listen),
            metrics,
            lock: Mutex::new(()),
            watched: Mutex::new(fingerprints(c)),
        }
    }

    /// Whether a watched file's content changed since the last look (a file that cannot be
    /// read right now, e.g. in the middle of a Secret update, counts as unchanged). The new
    /// contents become the ones compared against next time, whether or not the reload
    /// they cause succeeds: a broken file is reported once, not every interval.
    fn files_changed(&self) -> bool {
        let mut watched = self.watched.lock();
        let mut changed = false;
        for (path, seen) in watched.iter_mut() {
            if let Some(now) = digest(path) {
                if Some(now) != *seen {
                    *seen = Some(now);
                    changed = true;
                }
            }
        }
        changed
    }

    /// Reload from the file. On error nothing changes; the errors are returned (and
    /// logged, and counted in `gatehouse_config_reloads_total{result="failure"}`).
    pub fn reload(&self) -> Result<(), Vec<String>> {
        let _one_at_a_time = self.lock.lock();
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
        for w in &loaded.warnings {
            tracing::warn!("configuration: {w}");
        }
        let c = &loaded.config;
        if shapes(c) != self.listeners || c.admin.as_ref().map(|a| a.listen) != self.admin {
            return Err(vec![
                "listeners (names, addresses, TLS, client_auth.mode, session_resumption) and the admin address cannot change on reload: restart or upgrade".to_owned(),
            ]);
        }
        let prev = self.services.lock().clone();
        let services = Services::new(c, Some(&prev), prev.clock(), &self.metrics)
            .map_err(|e| vec![e.to_string()])?;
        let runtime = Runtime::build(c, &self.metrics, &services, Some(&self.runtime.load()))
            .map_err(|e| vec![e.to_string()])?;
        // everything built: swap
        self.runtime.store(Arc::new(runtime));
        {
            let mut f = self.services.lock();
            *f = Arc::new(services);
        }
        crate::listeners::tls::publish_server_cert_expiry(&self.metrics, &loaded.config);
        *self.watched.lock() = fingerprints(c);
        Ok(loaded.hash)
    }
}

/// Reloads when a certificate, key or CA file changes (Kubernetes updates mounted
/// Secrets in place; cert-manager renews them), as `SIGHUP` would: the whole configuration
/// is re-read and swapped in only if all of it builds.
pub struct FileWatch {
    pub reloader: Arc<Reloader>,
    pub interval: Duration,
}

#[async_trait]
impl pingora_core::services::background::BackgroundService for FileWatch {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => return,
            }
            if self.reloader.files_changed() {
                tracing::info!("a certificate, key or CA file changed: reloading");
                // blocking file reads and builds: off the async workers
                let r = self.reloader.clone();
                let _ = tokio::task::spawn_blocking(move || r.reload()).await;
            }
        }
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
