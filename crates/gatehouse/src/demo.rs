//! `gatehouse demo`: everything on loopback with one command.

use gatehouse_devauth::pki::Pki;
use std::path::PathBuf;
use std::process::ExitCode;

/// The embedded default configuration.
const DEMO_YAML: &str = include_str!("../../../conf/demo.yaml");

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the dev PKI is written (reused if present).
    #[arg(long, default_value = "certs/out")]
    dir: PathBuf,
    /// Proxy port (https://localhost:PORT).
    #[arg(long, default_value_t = 8443)]
    port: u16,
    /// Admin port (http://127.0.0.1:PORT).
    #[arg(long, default_value_t = 9100)]
    admin_port: u16,
    /// Demo upstream port (0: any free port).
    #[arg(long, default_value_t = 0)]
    upstream_port: u16,
}

pub fn run(args: DemoArgs) -> ExitCode {
    let pki = match Pki::load_or_generate(&args.dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "demo: cannot create the dev PKI in {}: {e}",
                args.dir.display()
            );
            return ExitCode::from(1);
        }
    };
    let _ = pki;
    let dir = std::fs::canonicalize(&args.dir).unwrap_or(args.dir.clone());

    // the echo upstream on its own small runtime
    let std_listener = match std::net::TcpListener::bind(("127.0.0.1", args.upstream_port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo: cannot bind the demo upstream: {e}");
            return ExitCode::from(1);
        }
    };
    let upstream_addr = std_listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _ = std_listener.set_nonblocking(true);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            rt.block_on(async move {
                if let Ok(l) = tokio::net::TcpListener::from_std(std_listener) {
                    gatehouse_devauth::serve::serve(
                        l,
                        None,
                        gatehouse_devauth::serve::echo_handler(),
                    )
                    .await;
                }
            });
        }
    });

    let vars = [
        ("CERT_DIR", dir.display().to_string()),
        ("PROXY_ADDR", format!("127.0.0.1:{}", args.port)),
        ("ADMIN_ADDR", format!("127.0.0.1:{}", args.admin_port)),
        ("UPSTREAM_ADDR", upstream_addr.clone()),
    ];
    let loaded = gatehouse_config::load_str_with_env(DEMO_YAML, |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    });
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo: embedded config is invalid:\n{e}");
            return ExitCode::from(70);
        }
    };
    let gatehouse = match gatehouse_app::Gatehouse::build(&loaded) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(70);
        }
    };
    let d = dir.display();
    let p = args.port;
    println!(
        "Gatehouse demo\n\
         \x20 proxy     https://localhost:{p}  (mutual TLS; /api/ needs a partner certificate)\n\
         \x20 admin     http://127.0.0.1:{}  (/healthz /readyz /metrics)\n\
         \x20 upstream  http://{upstream_addr}  (echoes the request headers it receives)\n\
         \x20 PKI       {d}\n\n\
         Try:\n\
         \x20 curl --cacert {d}/root-ca.pem --cert {d}/partner-a.pem --key {d}/partner-a.key https://localhost:{p}/api/echo\n\
         \x20 curl --cacert {d}/root-ca.pem https://localhost:{p}/api/echo        # no certificate: 403\n\
         \x20 curl http://127.0.0.1:{}/metrics\n",
        args.admin_port, args.admin_port
    );
    gatehouse.run(None);
    ExitCode::SUCCESS
}
