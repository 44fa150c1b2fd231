//! `gatehouse` — the command line: `run`, `check`, `demo`.

mod demo;

/// mimalloc instead of glibc malloc: the proxy allocates per request (headers, buffers) on
/// several threads, where glibc's allocator costs markedly more CPU (the profile is in
/// benches/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// EX_USAGE (sysexits.h): the configuration is wrong.
const EX_USAGE: u8 = 64;
/// EX_CANTCREAT (sysexits.h): the access log file cannot be opened.
const EX_CANTCREAT: u8 = 73;
/// sysexits EX_UNAVAILABLE: a listen address is taken.
const EX_UNAVAILABLE: u8 = 69;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "mTLS + phantom-token edge proxy for B2B APIs",
    after_help = "Exit codes: 0 stopped cleanly (or `check`: valid); 64 the configuration is wrong \
(every problem printed with its path and line; the same for `check` and `run`); 69 a listen \
address (listener or admin) is in use; 73 the access log cannot be opened.\n\
Signals (`run`): SIGHUP reloads the configuration; SIGTERM drains (readyz 503, drain_delay, \
listeners close, in-flight requests finish within grace_period) and exits; SIGQUIT hands the \
listening sockets to a new process started with `run --upgrade`, then drains.\n\
Logs go to stderr; GATEHOUSE_LOG sets the level (EnvFilter syntax, default info), \
GATEHOUSE_LOG_FORMAT=json writes one JSON object per line."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy with a configuration file.
    Run {
        /// The YAML configuration file (relative paths inside it are relative to the
        /// working directory).
        #[arg(short, long)]
        config: PathBuf,
        /// Take the listening sockets over from a running Gatehouse (graceful binary
        /// upgrade): start this, then send the old process SIGQUIT.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a configuration file: prints every problem, exits 64 on error, 0 if valid.
    Check {
        /// The YAML configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run the demo: dev PKI, echo upstream and the proxy on fixed loopback ports.
    Demo(demo::DemoArgs),
}

/// `GATEHOUSE_LOG` (EnvFilter syntax, default `info`), with third-party crates capped
/// whatever is asked: at trace level Pingora prints whole request headers and hyper/h2/reqwest
/// print header blocks — that would put access tokens in the logs.
fn log_filter(default: &str) -> tracing_subscriber::EnvFilter {
    let mut f = tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // the caps are at most `info`, and no more than the default level (`check`: warn)
    let cap_level = if default == "info" { "info" } else { "warn" };
    for target in [
        "pingora_proxy",
        "pingora_core",
        "pingora_cache",
        "hyper",
        "hyper_util",
        "h2",
        "reqwest",
        "rustls",
        "tokio_openssl",
    ] {
        if let Ok(d) = format!("{target}={cap_level}").parse() {
            f = f.add_directive(d);
        }
    }
    f
}

/// Counts the TLS handshakes Pingora reports as failed (it has no hook for them, only its
/// log line `Downstream handshake error …`), whatever the log level.
struct HandshakeFailures;

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_owned();
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for HandshakeFailures {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(message) = client_noise(event) {
            gatehouse_metrics::count_handshake_failure(&message);
        }
    }
}

/// Keeps what a client can trigger at will out of the ERROR log: Pingora's
/// `Downstream handshake error/timeout` and `H2 handshake error` lines (one per bad
/// connection). They are counted instead (`gatehouse_tls_handshake_failures_total`, by
/// reason), and shown with `GATEHOUSE_LOG=pingora_core=debug`.
struct ClientNoise {
    show: bool,
}

/// The message of a Pingora ERROR line a client triggers with a bad connection
/// (`Downstream handshake error/timeout`, `H2 handshake error`), if `event` is one.
fn client_noise(event: &tracing::Event<'_>) -> Option<String> {
    if *event.metadata().level() != tracing::Level::ERROR {
        return None;
    }
    let mut m = Message(String::new());
    event.record(&mut m);
    (m.0.starts_with("Downstream handshake") || m.0.starts_with("H2 handshake error"))
        .then_some(m.0)
}

impl<S: tracing::Subscriber> tracing_subscriber::layer::Filter<S> for ClientNoise {
    fn enabled(
        &self,
        _meta: &tracing::Metadata<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        self.show || client_noise(event).is_none()
    }

    /// No level of its own: without this hint the combined filter would have none either,
    /// and every `trace!`/`debug!` callsite (Pingora has dozens per request) would be
    /// evaluated at run time (a cost per request that benches/README.md records).
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }
}

/// `check` still accepts a server certificate that expired or expires within 30 days (the
/// file may be rotated in place before it is used), but says so on stderr.
fn warn_on_expiring_server_certificates(c: &gatehouse_config::Config) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for e in gatehouse_app::server_cert_expiry(c) {
        let left = e.not_after - now;
        if left <= 0 {
            eprintln!(
                "warning: listener {:?}: the server certificate in {} expired {} days ago",
                e.listener,
                e.file,
                (-left) / 86_400
            );
        } else if left < 30 * 86_400 {
            eprintln!(
                "warning: listener {:?}: the server certificate in {} expires in {} days",
                e.listener,
                e.file,
                left / 86_400
            );
        }
    }
}

/// Why `run` could not start: the file, or what it names.
enum Loading {
    Config(gatehouse_config::ConfigErrors),
    Build(gatehouse_app::BuildError),
}

/// Say why the configuration could not be built (one line per unusable file, each with
/// its field and line) and exit as [`build_exit_code`] says.
fn build_failed(config: &std::path::Path, e: &gatehouse_app::BuildError) -> ExitCode {
    match e {
        gatehouse_app::BuildError::Files(errors) => {
            for e in &errors.0 {
                eprintln!("{}: {e}", config.display());
            }
        }
        e => eprintln!("{}: {e}", config.display()),
    }
    ExitCode::from(build_exit_code(e))
}

/// A configuration that validated but cannot be built (a certificate that does not parse,
/// a key that does not match) is as wrong as one that did not validate: 64, from `check`
/// and `run` alike.
fn build_exit_code(e: &gatehouse_app::BuildError) -> u8 {
    match e {
        gatehouse_app::BuildError::AccessLog(_) => EX_CANTCREAT,
        gatehouse_app::BuildError::Config(_)
        | gatehouse_app::BuildError::Tls(_)
        | gatehouse_app::BuildError::Files(_) => EX_USAGE,
    }
}

/// Pingora binds its listeners inside each service's thread and, when an address is taken
/// after all (a race with [`gatehouse_app::Gatehouse::check_addresses_free`]), panics that
/// thread, which leaves a process that serves nothing and exits 0. That one panic ends the
/// process with [`EX_UNAVAILABLE`] instead; every other panic keeps the default hook.
fn exit_when_a_listener_cannot_be_built() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Failed to build listeners") {
            eprintln!("gatehouse: a listen address is not available: {msg}");
            std::process::exit(i32::from(EX_UNAVAILABLE));
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `check` prints its verdict, not the server's start-up chatter (Pingora's
    // "Bootstrap starting/done")
    let default_level = if matches!(cli.cmd, Cmd::Check { .. }) {
        "warn"
    } else {
        "info"
    };
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    // GATEHOUSE_LOG_FORMAT=json: one JSON object per line, for log collectors
    let json = std::env::var("GATEHOUSE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let filter = || {
        log_filter(default_level).and(ClientNoise {
            show: std::env::var("GATEHOUSE_LOG").is_ok_and(|v| v.contains("pingora_core=debug")),
        })
    };
    type Boxed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;
    let fmt: Boxed = if json {
        Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .with_filter(filter()),
        )
    } else {
        Box::new(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // no colour codes in what a log collector reads
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter()),
        )
    };
    tracing_subscriber::registry()
        .with(fmt)
        // ERROR only: an unfiltered layer would switch every trace! callsite on
        .with(HandshakeFailures.with_filter(tracing_subscriber::filter::LevelFilter::ERROR))
        .init();
    match cli.cmd {
        Cmd::Check { config } => match gatehouse_config::load_file(&config) {
            Ok(loaded) => match gatehouse_app::Gatehouse::build(&loaded, Default::default()) {
                Ok(_) => {
                    for w in &loaded.warnings {
                        eprintln!("{}: warning: {w}", config.display());
                    }
                    warn_on_expiring_server_certificates(&loaded.config);
                    println!("{}: ok", config.display());
                    ExitCode::SUCCESS
                }
                Err(e) => build_failed(&config, &e),
            },
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("{}: {e}", config.display());
                }
                ExitCode::from(EX_USAGE)
            }
        },
        Cmd::Run { config, upgrade } => {
            let options = gatehouse_app::BuildOptions {
                path: Some(config.clone()),
                upgrade,
                ..Default::default()
            };
            let built = gatehouse_config::load_file(&config)
                .map_err(Loading::Config)
                .and_then(|l| gatehouse_app::Gatehouse::build(&l, options).map_err(Loading::Build));
            match built {
                Ok(g) => {
                    if let Err(e) = g.check_addresses_free() {
                        eprintln!("{}: {e}", config.display());
                        return ExitCode::from(EX_UNAVAILABLE);
                    }
                    exit_when_a_listener_cannot_be_built();
                    g.run(None);
                    ExitCode::SUCCESS
                }
                Err(Loading::Config(errors)) => {
                    for e in &errors.0 {
                        eprintln!("{}: {e}", config.display());
                    }
                    ExitCode::from(EX_USAGE)
                }
                Err(Loading::Build(e)) => build_failed(&config, &e),
            }
        }
        Cmd::Demo(args) => demo::run(args),
    }
}
