//! Server-side TLS for a listener: certificates, versions, groups, ALPN, resumption, and
//! the client-certificate request. Bad client certificates do not abort the handshake:
//! they are verified right after it and answered with an HTTP 403 naming the reason.

use crate::BuildError;
use async_trait::async_trait;
use gatehouse_config::{Alpn, ClientCertMode, ListenerTls, TlsVersion};
use gatehouse_metrics::Metrics;
use gatehouse_mtls::{inspect_peer, load_pem_bundle, TrustStore};
use openssl::ssl::{SslFiletype, SslOptions, SslSessionCacheMode, SslVerifyMode, SslVersion};
use openssl::stack::Stack;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{TlsAccept, ALPN};
use pingora_core::protocols::tls::TlsRef;
use std::any::Any;
use std::sync::Arc;

struct Acceptor {
    listener: String,
    trust: Option<TrustStore>,
    metrics: Metrics,
}

#[async_trait]
impl TlsAccept for Acceptor {
    /// Runs once per handshake (also for resumed sessions): parse and verify the peer
    /// certificate here so requests only read the result.
    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let Some(trust) = &self.trust else {
            self.metrics
                .tls_handshakes
                .with_label_values(&[&self.listener, "not_requested"])
                .inc();
            return None;
        };
        let conn = inspect_peer(ssl, trust);
        let state = match &conn {
            None => "none",
            Some(c) if c.failure.is_none() => "verified",
            Some(_) => "failed",
        };
        self.metrics
            .tls_handshakes
            .with_label_values(&[&self.listener, state])
            .inc();
        conn.map(|c| Arc::new(c) as Arc<dyn Any + Send + Sync>)
    }
}

fn err(what: &str) -> impl Fn(openssl::error::ErrorStack) -> BuildError + '_ {
    move |e| BuildError::Tls(format!("{what}: {e}"))
}

/// Build Pingora's TLS settings for one listener.
pub fn settings(name: &str, t: &ListenerTls, metrics: &Metrics) -> Result<TlsSettings, BuildError> {
    let wants_certs = t.client_auth.mode != ClientCertMode::Off;
    let mut cas = Vec::new();
    if wants_certs {
        for f in &t.client_auth.ca_files {
            cas.extend(load_pem_bundle(f).map_err(|e| BuildError::Tls(e.to_string()))?);
        }
    }
    let trust = if wants_certs {
        Some(
            TrustStore::new(&cas, &[], t.client_auth.max_depth, false)
                .map_err(|e| BuildError::Tls(e.to_string()))?,
        )
    } else {
        None
    };
    let acceptor = Acceptor {
        listener: name.to_owned(),
        trust,
        metrics: metrics.clone(),
    };
    let mut s = TlsSettings::with_callbacks(Box::new(acceptor))
        .map_err(|e| BuildError::Tls(e.to_string()))?;
    s.set_certificate_chain_file(&t.cert_file)
        .map_err(err(&t.cert_file))?;
    s.set_private_key_file(&t.key_file, SslFiletype::PEM)
        .map_err(err(&t.key_file))?;
    s.check_private_key()
        .map_err(err("server key does not match certificate"))?;
    let min = t
        .protocols
        .iter()
        .min()
        .copied()
        .unwrap_or(TlsVersion::Tls12);
    let max = t
        .protocols
        .iter()
        .max()
        .copied()
        .unwrap_or(TlsVersion::Tls13);
    let v = |x: TlsVersion| match x {
        TlsVersion::Tls12 => SslVersion::TLS1_2,
        TlsVersion::Tls13 => SslVersion::TLS1_3,
    };
    s.set_min_proto_version(Some(v(min)))
        .map_err(err("protocols"))?;
    s.set_max_proto_version(Some(v(max)))
        .map_err(err("protocols"))?;
    if let Some(groups) = &t.groups {
        s.set_groups_list(&groups.join(":"))
            .map_err(err("groups"))?;
    }
    // a session id context is required with peer verification, or resumption fails
    s.set_session_id_context(b"gatehouse")
        .map_err(err("session id context"))?;
    if !t.session_resumption {
        s.set_options(SslOptions::NO_TICKET);
        s.set_session_cache_mode(SslSessionCacheMode::OFF);
    }
    if wants_certs {
        // Ask for a certificate but accept any: verification happens after the handshake
        // (see Acceptor) so the client gets an HTTP 403 with a reason.
        s.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
        let mut names = Stack::new().map_err(err("client CA list"))?;
        for ca in &cas {
            names
                .push(
                    ca.subject_name()
                        .to_owned()
                        .map_err(err("client CA list"))?,
                )
                .map_err(err("client CA list"))?;
        }
        s.set_client_ca_list(names);
    }
    let h2 = t.alpn.contains(&Alpn::H2);
    let h1 = t.alpn.contains(&Alpn::Http11);
    s.set_alpn(match (h2, h1) {
        (true, true) => ALPN::H2H1,
        (true, false) => ALPN::H2,
        _ => ALPN::H1,
    });
    Ok(s)
}
