//! `gatehouse` — the command line: `run`, `check`, `demo`.

mod demo;

/// mimalloc instead of glibc malloc: the proxy allocates per request (headers, buffers) on
/// several threads, and glibc's allocator showed up as ~12% of CPU in `perf` under load
/// (see benches/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// EX_USAGE (sysexits.h): the configuration is wrong.
const EX_USAGE: u8 = 64;
/// EX_SOFTWARE: the configuration validated but could not be started.
const EX_SOFTWARE: u8 = 70;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "mTLS + phantom-token edge proxy for B2B APIs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy with a configuration file.
    Run {
        #[arg(short, long)]
        config: PathBuf,
        /// Take the listening sockets over from a running Gatehouse (graceful binary
        /// upgrade): start this, then send the old process SIGQUIT.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a configuration file: prints every problem, exits 64 on error, 0 if valid.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run the demo: dev PKI, echo upstream and the proxy on fixed loopback ports.
    Demo(demo::DemoArgs),
}

/// `GATEHOUSE_LOG` (EnvFilter syntax, default `info`), with third-party crates capped
/// whatever is asked: at trace level Pingora prints whole request headers and hyper/h2/reqwest
/// print header blocks — that would put access tokens in the logs.
fn log_filter() -> tracing_subscriber::EnvFilter {
    let mut f = tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for cap in [
        "pingora_proxy=info",
        "pingora_core=info",
        "pingora_cache=info",
        "hyper=info",
        "hyper_util=info",
        "h2=info",
        "reqwest=info",
        "rustls=info",
        "tokio_openssl=info",
    ] {
        if let Ok(d) = cap.parse() {
            f = f.add_directive(d);
        }
    }
    f
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Check { config } => match gatehouse_config::load_file(&config) {
            Ok(loaded) => match gatehouse_app::Gatehouse::build(&loaded) {
                Ok(_) => {
                    println!("{}: ok", config.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    ExitCode::from(EX_USAGE)
                }
            },
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("{}: {e}", config.display());
                }
                ExitCode::from(EX_USAGE)
            }
        },
        Cmd::Run { config, upgrade } => {
            match gatehouse_app::Gatehouse::build_from_file_upgrading(&config, upgrade) {
                Ok(g) => {
                    g.run(None);
                    ExitCode::SUCCESS
                }
                Err(gatehouse_app::LoadError::Config(errors)) => {
                    for e in &errors.0 {
                        eprintln!("{}: {e}", config.display());
                    }
                    ExitCode::from(EX_USAGE)
                }
                Err(gatehouse_app::LoadError::Build(e)) => {
                    eprintln!("{}: {e}", config.display());
                    ExitCode::from(EX_SOFTWARE)
                }
            }
        }
        Cmd::Demo(args) => demo::run(args),
    }
}
