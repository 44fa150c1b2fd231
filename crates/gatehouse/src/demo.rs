//! `gatehouse demo`: the proxy, the echo upstream and the dev authorization server on
//! loopback, with one command.

use gatehouse_devauth::authz::{acceptor, DevAuth, DevAuthConfig};
use gatehouse_devauth::pki::Pki;
use std::path::PathBuf;
use std::process::ExitCode;

/// The embedded default configuration.
const DEMO_YAML: &str = include_str!("../../../conf/demo.yaml");
/// The dev authorization server's client registry.
const DEVAUTH_YAML: &str = include_str!("demo-clients.yaml");
/// The gateway's introspection secret (dev only, written next to the PKI).
const GATEWAY_SECRET: &str = "demo-gateway-secret";

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
    /// Dev authorization server port (https://localhost:PORT).
    #[arg(long, default_value_t = 9443)]
    auth_port: u16,
    /// Demo upstream port (0: any free port).
    #[arg(long, default_value_t = 0)]
    upstream_port: u16,
}

fn fail(msg: String) -> ExitCode {
    eprintln!("demo: {msg}");
    ExitCode::from(1)
}

pub fn run(args: DemoArgs) -> ExitCode {
    let pki = match Pki::load_or_generate(&args.dir) {
        Ok(p) => p,
        Err(e) => {
            return fail(format!(
                "cannot create the dev PKI in {}: {e}",
                args.dir.display()
            ))
        }
    };
    let dir = std::fs::canonicalize(&args.dir).unwrap_or(args.dir.clone());
    // a PKI written by an older demo has no signing key yet
    if let Err(e) = gatehouse_devauth::pki::ensure_signing_key(&dir) {
        return fail(format!(
            "cannot write the signing key in {}: {e}",
            dir.display()
        ));
    }
    if let Err(e) = std::fs::write(dir.join("gateway-secret"), GATEWAY_SECRET) {
        return fail(format!(
            "cannot write {}/gateway-secret: {e}",
            dir.display()
        ));
    }
    let bind = |port: u16, what: &str| {
        std::net::TcpListener::bind(("127.0.0.1", port))
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .map_err(|e| format!("cannot bind the {what} on 127.0.0.1:{port}: {e}"))
    };
    let upstream = match bind(args.upstream_port, "demo upstream") {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let auth = match bind(args.auth_port, "dev authorization server") {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let upstream_addr = upstream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let auth_port = args.auth_port.to_string();
    let env = |name: &str| match name {
        "AUTH_PORT" => Some(auth_port.clone()),
        "GATEWAY_SECRET" => Some(GATEWAY_SECRET.to_owned()),
        _ => None,
    };
    let devauth_cfg: DevAuthConfig = match gatehouse_config::parse_yaml(DEVAUTH_YAML, env) {
        Ok(c) => c,
        Err(e) => return fail(format!("embedded dev authorization server config:\n{e}")),
    };
    let devauth = match DevAuth::new(devauth_cfg) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let tls = match (
        pki.server.chain_pem(),
        pki.server.key_pem(),
        pki.root.cert_pem(),
    ) {
        (Ok(c), Ok(k), Ok(r)) => acceptor(&c, &k, &r).map_err(|e| e.to_string()),
        _ => Err("cannot encode the dev PKI".to_owned()),
    };
    let tls = match tls {
        Ok(t) => t,
        Err(e) => return fail(format!("dev authorization server TLS: {e}")),
    };

    // the echo upstream and the dev authorization server share one small runtime
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            rt.block_on(async move {
                let (Ok(up), Ok(auth)) = (
                    tokio::net::TcpListener::from_std(upstream),
                    tokio::net::TcpListener::from_std(auth),
                ) else {
                    return;
                };
                tokio::spawn(devauth.serve(auth, Some(tls)));
                gatehouse_devauth::serve::serve(up, None, gatehouse_devauth::serve::echo_handler())
                    .await;
            });
        }
    });

    let vars = [
        ("CERT_DIR", dir.display().to_string()),
        ("PROXY_ADDR", format!("127.0.0.1:{}", args.port)),
        ("ADMIN_ADDR", format!("127.0.0.1:{}", args.admin_port)),
        ("AUTH_PORT", auth_port.clone()),
        ("UPSTREAM_ADDR", upstream_addr.clone()),
    ];
    let loaded = gatehouse_config::load_str_with_env(DEMO_YAML, |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    });
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => return fail(format!("embedded config is invalid:\n{e}")),
    };
    let gatehouse = match gatehouse_app::Gatehouse::build(&loaded, Default::default()) {
        Ok(g) => g,
        Err(e) => return fail(e.to_string()),
    };
    if let Err(e) = gatehouse.check_addresses_free() {
        return fail(e);
    }
    let d = dir.display();
    let p = args.port;
    let a = args.auth_port;
    let cert = format!("--cacert {d}/root-ca.pem --cert {d}/partner-a.pem --key {d}/partner-a.key");
    println!(
        "Gatehouse demo (dev only)
  proxy      https://localhost:{p}   /api/ (cert + phantom token + binding + scope), /mtls/ (cert only), /public/
  auth       https://localhost:{a}   token /oauth/token · introspection /oauth/introspect · JWKS /oauth/jwks · revocation /oauth/revoke
  admin      http://127.0.0.1:{adm}   /healthz /readyz /metrics /jwks
  upstream   http://{upstream_addr}  (echoes the request headers it receives)
  PKI        {d}

The phantom-token flow, step by step:
  # 1. get an opaque access token with partner-a's certificate (tls_client_auth, bound to the cert)
  TOKEN=$(curl -s {cert} -d grant_type=client_credentials https://localhost:{a}/oauth/token | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/')
  # 2. call the API with it: the upstream sees a JWT Gatehouse signed for it (aud https://api.demo,
  #    verifiable with http://127.0.0.1:{adm}/jwks), never the opaque token
  curl -s {cert} -H \"Authorization: Bearer $TOKEN\" https://localhost:{p}/api/echo
  curl -s {cert} -H \"Authorization: Bearer $TOKEN\" https://localhost:{p}/api/claims
  # 3. the same token over partner-b's connection: 401, certificate binding mismatch
  curl -s --cacert {d}/root-ca.pem --cert {d}/partner-b.pem --key {d}/partner-b.key -H \"Authorization: Bearer $TOKEN\" https://localhost:{p}/api/echo
Client certificate only:
  curl -s {cert} https://localhost:{p}/mtls/echo
  curl -s --cacert {d}/root-ca.pem https://localhost:{p}/mtls/echo      # no certificate: 403
  curl -s http://127.0.0.1:{adm}/metrics
",
        adm = args.admin_port
    );
    gatehouse.run(None);
    ExitCode::SUCCESS
}
