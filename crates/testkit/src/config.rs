//! Test configurations from the parts the test files share: the server, admin and log
//! sections and the TLS listener every suite runs behind, with what a test changes set by
//! name instead of string-replaced into a copy of the YAML.

use std::fmt::Write as _;

/// A configuration under construction. `${PROXY_ADDR}`, `${ADMIN_ADDR}` and `${CERT_DIR}`
/// are filled in by [`crate::Proxy::start`].
#[derive(Debug, Clone)]
pub struct TestConfig {
    threads: String,
    grace: String,
    server_extra: Vec<String>,
    access_log: String,
    /// `None`: a plain-HTTP listener named `plain`.
    tls: Option<Tls>,
    sections: Vec<String>,
}

#[derive(Debug, Clone)]
struct Tls {
    mode: String,
    ca_file: String,
    client_auth_extra: Vec<String>,
    tls_extra: Vec<String>,
}

impl TestConfig {
    /// A TLS listener `edge` with the test PKI's server certificate, asking for client
    /// certificates in `mode` (`required`, `optional`, `off`) from the test root; one
    /// thread, no grace period, no access log.
    pub fn edge(mode: &str) -> Self {
        Self {
            threads: "1".into(),
            grace: "0s".into(),
            server_extra: Vec::new(),
            access_log: "off".into(),
            tls: Some(Tls {
                mode: mode.into(),
                ca_file: "${CERT_DIR}/root-ca.pem".into(),
                client_auth_extra: Vec::new(),
                tls_extra: Vec::new(),
            }),
            sections: Vec::new(),
        }
    }

    /// A plain-HTTP listener `plain`.
    pub fn plain() -> Self {
        Self {
            tls: None,
            ..Self::edge("off")
        }
    }

    /// Worker threads (a number, or a `${VAR}`).
    pub fn threads(mut self, n: impl std::fmt::Display) -> Self {
        self.threads = n.to_string();
        self
    }

    /// `grace_period` and `shutdown_timeout`.
    pub fn grace(mut self, d: &str) -> Self {
        self.grace = d.into();
        self
    }

    /// Another `server:` key (`drain_delay: 2s`).
    pub fn server(mut self, kv: &str) -> Self {
        self.server_extra.push(kv.into());
        self
    }

    /// `log.access_log`.
    pub fn access_log(mut self, v: &str) -> Self {
        self.access_log = v.into();
        self
    }

    /// The listener's client CA bundle (default: the test root).
    pub fn client_ca(mut self, file: &str) -> Self {
        if let Some(t) = &mut self.tls {
            t.ca_file = file.into();
        }
        self
    }

    /// Another `client_auth:` key (`max_depth: 3`).
    pub fn client_auth(mut self, kv: &str) -> Self {
        if let Some(t) = &mut self.tls {
            t.client_auth_extra.push(kv.into());
        }
        self
    }

    /// Another key of the listener's `tls:` (`session_resumption: false`).
    pub fn tls(mut self, kv: &str) -> Self {
        if let Some(t) = &mut self.tls {
            t.tls_extra.push(kv.into());
        }
        self
    }

    /// A top-level section, as written (`upstreams:\n  app: …`).
    pub fn section(mut self, yaml: &str) -> Self {
        self.sections.push(yaml.trim_end().to_owned());
        self
    }

    /// `routes:` with `routes` (the entries, as written).
    pub fn routes(self, routes: &str) -> Self {
        self.section(&format!("routes:\n{}", routes.trim_end()))
    }

    /// The YAML.
    pub fn build(&self) -> String {
        let mut server = format!(
            "threads: {}, grace_period: {}, shutdown_timeout: {}",
            self.threads, self.grace, self.grace
        );
        for kv in &self.server_extra {
            let _ = write!(server, ", {kv}");
        }
        let mut y = format!(
            "version: 1\nserver: {{ {server} }}\nadmin: {{ listen: \"${{ADMIN_ADDR}}\" }}\nlog: {{ access_log: {} }}\nlisteners:\n",
            self.access_log
        );
        match &self.tls {
            None => y.push_str("  - name: plain\n    listen: \"${PROXY_ADDR}\"\n"),
            Some(t) => {
                let mut auth = format!("mode: {}, ca_files: [\"{}\"]", t.mode, t.ca_file);
                for kv in &t.client_auth_extra {
                    let _ = write!(auth, ", {kv}");
                }
                y.push_str("  - name: edge\n    listen: \"${PROXY_ADDR}\"\n    tls:\n      cert_file: ${CERT_DIR}/server.pem\n      key_file: ${CERT_DIR}/server.key\n");
                for kv in &t.tls_extra {
                    let _ = writeln!(y, "      {kv}");
                }
                let _ = writeln!(y, "      client_auth: {{ {auth} }}");
            }
        }
        for s in &self.sections {
            y.push_str(s);
            y.push('\n');
        }
        y
    }
}

/// The `dev` entry of `authorization_servers:` for the test authorization server at
/// `${ISSUER}` (its JWKS and introspection endpoints, trusted through the test root).
#[derive(Debug, Clone)]
pub struct DevAuthorizationServer {
    url: String,
    accept: String,
    client_auth: String,
    keys: Vec<String>,
    introspection: Vec<String>,
}

impl DevAuthorizationServer {
    /// Introspection in format `accept`, Gatehouse authenticating with `client_auth`.
    pub fn new(accept: &str, client_auth: &str) -> Self {
        Self {
            url: "${ISSUER}/oauth/introspect".into(),
            accept: accept.into(),
            client_auth: client_auth.into(),
            keys: Vec::new(),
            introspection: vec!["timeout: 2s".into()],
        }
    }

    /// Another introspection URL (a dead one, a variable).
    pub fn url(mut self, url: &str) -> Self {
        self.url = url.into();
        self
    }

    /// Another key of the entry (`jwks_min_refresh: 1s`, `cache: { … }`).
    pub fn key(mut self, kv: &str) -> Self {
        self.keys.push(kv.into());
        self
    }

    /// Another key of its `introspection:` (`timeout: 10s` replaces the 2 s default).
    pub fn introspection(mut self, kv: &str) -> Self {
        if kv.starts_with("timeout:") {
            self.introspection.retain(|k| !k.starts_with("timeout:"));
        }
        self.introspection.push(kv.into());
        self
    }

    /// The entry, as `authorization_servers:` lists it.
    pub fn build(&self) -> String {
        let mut s = String::from(
            "  dev:\n    issuer: ${ISSUER}\n    jwks_uri: ${ISSUER}/oauth/jwks\n    ca_file: ${CERT_DIR}/root-ca.pem\n    algorithms: [ES256]\n",
        );
        for kv in &self.keys {
            let _ = writeln!(s, "    {kv}");
        }
        let _ = write!(
            s,
            "    introspection:\n      url: {}\n      accept: {}\n      client_auth: {}\n",
            self.url, self.accept, self.client_auth
        );
        for kv in &self.introspection {
            let _ = writeln!(s, "      {kv}");
        }
        s
    }
}

impl std::fmt::Display for TestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_make_a_valid_configuration() {
        let y = TestConfig::edge("required")
            .threads(2)
            .server("drain_delay: 2s")
            .client_auth("max_depth: 3")
            .tls("session_resumption: false")
            .section("upstreams:\n  app: { peers: [\"127.0.0.1:1\"] }")
            .routes("  - { name: all, upstream: app }")
            .build();
        let env = |v: &str| match v {
            "CERT_DIR" => Some("/nonexistent".to_owned()),
            "ADMIN_ADDR" => Some("127.0.0.1:2".to_owned()),
            _ => Some("127.0.0.1:1".to_owned()),
        };
        // files do not exist here: only their paths may be wrong, nothing else
        let errors = match gatehouse_config::load_str_with_env(&y, env) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        };
        assert!(
            errors.iter().all(|e| e.message.contains("does not exist")),
            "{y}\n{errors:#?}"
        );
        assert!(y.contains("max_depth: 3") && y.contains("session_resumption: false"));
    }
}
