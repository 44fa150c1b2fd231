//! One Gatehouse instance: the Pingora server with its proxy shards on the configured
//! listeners, the admin listener, readiness, the background services, and shutdown.

use crate::admin::{Admin, Readiness};
use crate::error::BuildError;
use crate::listeners::shard_address;
use crate::listeners::tls;
use crate::proxy::Chain;
use crate::reload::{self, Reloader};
use crate::runtime::Runtime;
use crate::services::Services;
use crate::{access_log, files, upstreams};
use arc_swap::ArcSwap;
use gatehouse_config::Loaded;
use gatehouse_core::SharedClock;
use gatehouse_metrics::Metrics;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::listeners::TcpSocketOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownSignalWatch};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use std::path::PathBuf;
use std::sync::Arc;

/// How to build a [`Gatehouse`] beyond its configuration.
#[derive(Clone)]
pub struct BuildOptions {
    /// The file the configuration came from: SIGHUP and the file watch re-read it.
    pub path: Option<PathBuf>,
    /// Take the listening sockets over from a running Gatehouse (Pingora's graceful
    /// upgrade: start this one, then send the old one SIGQUIT; it hands its sockets over
    /// `server.upgrade_sock` and drains).
    pub upgrade: bool,
    /// The time token caches, breakers and key stores read.
    pub clock: SharedClock,
}

/// Largest decoded HTTP/2 header list a request may carry to reach the chain (Pingora's
/// default is 64 KiB). Above it the h2 layer answers 431 by itself, before Gatehouse sees
/// the request, so nothing is logged or counted. With 256 KiB, oversized headers that
/// clients really send (a 64 KiB token) reach the filters and get Gatehouse's own answer
/// (400 `authorization_too_long`, counted) as over HTTP/1.1, whose header limit is 1 MiB.
const H2_MAX_HEADER_LIST: u32 = 256 * 1024;

/// Pingora's bounded HTTP/2 defaults (concurrent streams) with Gatehouse's header limit.
fn h2_options() -> pingora_core::protocols::http::v2::server::H2Options {
    let mut o = pingora_core::protocols::http::v2::server::default_h2_options();
    o.max_header_list_size(H2_MAX_HEADER_LIST);
    o
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            path: None,
            upgrade: false,
            clock: gatehouse_core::system_clock(),
        }
    }
}

/// A Gatehouse instance ready to run.
pub struct Gatehouse {
    server: Server,
    pub metrics: Metrics,
    pub runtime: Arc<ArcSwap<Runtime>>,
    reloader: Arc<Reloader>,
    ready: Readiness,
    drain: std::time::Duration,
    /// Every address this instance binds, listeners and admin (none when taking sockets
    /// over in an upgrade): see [`Gatehouse::check_addresses_free`].
    listen_addrs: Vec<(String, std::net::SocketAddr)>,
}

impl Gatehouse {
    /// Whether every address this instance will bind (listeners and admin) is free. Call
    /// before [`Gatehouse::run`]: Pingora binds inside its service threads, where an
    /// address in use is retried for a while and then panics the thread, leaving a process
    /// that serves nothing. And with one shard per thread every shard binds its listeners
    /// with `SO_REUSEPORT`, as would a second Gatehouse started on the same addresses by
    /// mistake: the kernel would split the connections between both without an error.
    /// Binding each address once here, without `SO_REUSEPORT`, turns both into a clear
    /// error. `run --upgrade` takes the sockets over and skips this.
    pub fn check_addresses_free(&self) -> Result<(), String> {
        for (what, a) in &self.listen_addrs {
            if a.port() == 0 {
                continue;
            }
            std::net::TcpListener::bind(a)
                .map_err(|e| format!("{what}: cannot listen on {a}: {e}"))?;
        }
        Ok(())
    }

    /// Build everything from a validated configuration: read every file it names, build
    /// the shared services and the routes, bind nothing yet (Pingora binds when it runs).
    pub fn build(loaded: &Loaded, options: BuildOptions) -> Result<Self, BuildError> {
        let BuildOptions {
            path,
            upgrade,
            clock,
        } = options;
        let c = &loaded.config;
        let unusable = files::problems(c);
        if !unusable.is_empty() {
            return Err(BuildError::Files(loaded.locate(unusable)));
        }
        for w in &loaded.warnings {
            tracing::warn!("configuration: {w}");
        }
        let metrics = Metrics::new();
        metrics.set_config_hash(&loaded.hash);
        metrics.config_reloads.with_label_values(&["success"]).inc();
        tls::publish_server_cert_expiry(&metrics, c);
        let factory = Services::new(c, None, clock, &metrics)?;
        let runtime = Arc::new(ArcSwap::from_pointee(Runtime::build(
            c, &metrics, &factory, None,
        )?));

        let mut conf = ServerConf {
            threads: c.server.threads,
            grace_period_seconds: Some(c.server.grace_period.0.as_secs()),
            graceful_shutdown_timeout_seconds: Some(c.server.shutdown_timeout.0.as_secs()),
            upstream_keepalive_pool_size: c.server.upstream_keepalive_pool,
            work_stealing: c.server.work_stealing,
            ..ServerConf::default()
        };
        // the old and the new process must agree on this path: it comes from the config
        conf.upgrade_sock = c.server.upgrade_sock.clone().unwrap_or_else(|| {
            std::env::temp_dir()
                .join("gatehouse-upgrade.sock")
                .display()
                .to_string()
        });
        let opt = upgrade.then(|| pingora_core::server::configuration::Opt {
            upgrade,
            ..Default::default()
        });
        let mut server = Server::new_with_opt_and_conf(opt, conf);
        server.bootstrap();

        let access_log = access_log::AccessLog::open(c.log.access_log.as_deref())
            .map_err(|e| BuildError::AccessLog(e.to_string()))?;
        let chain = Chain::new(runtime.clone(), metrics.clone(), access_log);
        // (port 0 would give each shard a different port)
        let shards =
            if c.server.shard_per_thread && c.listeners.iter().all(|l| l.listen.port() != 0) {
                c.server.threads.max(1)
            } else {
                1
            };
        let mut listen_addrs = Vec::new();
        if !upgrade {
            for l in &c.listeners {
                listen_addrs.push((format!("listener {:?}", l.name), l.listen));
            }
            if let Some(a) = &c.admin {
                listen_addrs.push(("admin".to_owned(), a.listen));
            }
        }
        let mut listener_tls = Vec::new();
        for (index, l) in c.listeners.iter().enumerate() {
            listener_tls.push(match &l.tls {
                None => None,
                Some(t) => Some(tls::ListenerTlsState::new(
                    &l.name,
                    t,
                    tls::TlsSource::new(runtime.clone(), index),
                )?),
            });
        }
        for shard in 0..shards {
            let name = if shards > 1 {
                format!("gatehouse proxy {shard}")
            } else {
                "gatehouse proxy".to_owned()
            };
            let mut proxy = pingora_proxy::http_proxy_service_with_name(
                &server.configuration,
                chain.clone(),
                &name,
            );
            if let Some(app) = proxy.app_logic_mut() {
                app.h2_options = Some(h2_options());
            }
            let mut sock = None;
            if shards > 1 {
                proxy.threads = Some(1);
                let mut o = TcpSocketOptions::default();
                o.so_reuseport = Some(true);
                sock = Some(o);
            }
            for (l, state) in c.listeners.iter().zip(listener_tls.iter_mut()) {
                let addr = shard_address(l.listen, shard);
                match (&l.tls, state) {
                    (Some(t), Some(state)) => {
                        let settings = state.settings(t, &metrics)?;
                        proxy.add_tls_with_settings(&addr, sock.clone(), settings);
                    }
                    _ => match &sock {
                        Some(o) => proxy.add_tcp_with_settings(&addr, o.clone()),
                        None => proxy.add_tcp(&addr),
                    },
                }
            }
            server.add_service(proxy);
        }

        let ready = Readiness::default();
        server.add_service(background_service("readiness", ready.clone()));
        server.add_service(background_service(
            "upstream upkeep",
            upstreams::UpstreamUpkeep {
                runtime: runtime.clone(),
            },
        ));
        if let Some(a) = &c.admin {
            let app = Admin {
                metrics: metrics.clone(),
                ready: ready.clone(),
                runtime: runtime.clone(),
            };
            let mut svc = Service::new("gatehouse admin".to_owned(), HttpServer::new_app(app));
            svc.add_tcp(&a.listen.to_string());
            svc.threads = Some(1);
            server.add_service(svc);
        }
        let from_file = path.is_some();
        let reloader = Arc::new(Reloader::new(
            path,
            c,
            runtime.clone(),
            metrics.clone(),
            factory,
        ));
        if !c.server.file_watch_interval.0.is_zero() && from_file {
            server.add_service(background_service(
                "certificate file watch",
                reload::FileWatch {
                    reloader: reloader.clone(),
                    interval: c.server.file_watch_interval.0,
                },
            ));
        }
        Ok(Self {
            server,
            metrics,
            runtime,
            reloader,
            ready,
            drain: c.server.drain_delay.0,
            listen_addrs,
        })
    }

    /// The reloader (what SIGHUP calls).
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// Run until the shutdown signal (Unix signals by default). Returns when every service
    /// stopped; never calls `process::exit`.
    pub fn run(self, shutdown: Option<Box<dyn ShutdownSignalWatch>>) {
        let args = match shutdown {
            Some(shutdown_signal) => RunArgs { shutdown_signal },
            None => RunArgs {
                shutdown_signal: Box::new(reload::Signals {
                    reloader: self.reloader.clone(),
                    ready: self.ready.clone(),
                    drain: self.drain,
                }),
            },
        };
        self.server.run(args);
    }
}
