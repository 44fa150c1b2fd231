//! Server-side TLS for a listener: certificates, versions, groups, ALPN, resumption, and
//! the client-certificate request. Bad client certificates do not abort the handshake:
//! they are verified right after it and answered with an HTTP 403 naming the reason.

use crate::runtime::Runtime;
use crate::BuildError;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use gatehouse_config::{Alpn, ClientCertMode, ListenerTls, TlsVersion};
use gatehouse_metrics::Metrics;
use gatehouse_mtls::{inspect_memo, load_pem_bundle, TrustStore, VerifiedLeaves};
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslOptions, SslSessionCacheMode, SslVerifyMode, SslVersion};
use openssl::stack::Stack;
use openssl::x509::{X509Name, X509};
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{TlsAccept, ALPN};
use pingora_core::protocols::tls::TlsRef;
use pingora_core::tls::ext;
use std::any::Any;
use std::sync::Arc;

/// What a listener's TLS uses that a reload may replace: the server certificate and the
/// client-certificate trust store.
pub struct TlsMaterial {
    leaf: X509,
    chain: Vec<X509>,
    key: PKey<Private>,
    trust: Option<TrustStore>,
    /// Client certificates `trust` has verified (reconnects skip the chain's signature
    /// checks); starts empty with every new trust store.
    verified: VerifiedLeaves,
    /// `session_ticket_key_files`, read (the first encrypts, all decrypt).
    pub(crate) ticket_keys: Option<Arc<[crate::listeners::tickets::TicketKey]>>,
    /// Subject names of the client CAs, sent in the CertificateRequest (clients that pick
    /// their certificate by them find one of a newly added CA after a reload).
    ca_names: Vec<X509Name>,
}

/// The CAs a listener trusts for client certificates (none when it asks for none).
fn client_cas(t: &ListenerTls) -> Result<Vec<X509>, BuildError> {
    let mut cas = Vec::new();
    if t.client_auth.mode != ClientCertMode::Off {
        for f in &t.client_auth.ca_files {
            cas.extend(load_pem_bundle(f).map_err(|e| BuildError::Tls(e.to_string()))?);
        }
    }
    Ok(cas)
}

impl TlsMaterial {
    /// Load certificate, key and CA bundles from the listener's config.
    pub fn load(t: &ListenerTls) -> Result<Self, BuildError> {
        Self::with_cas(t, &client_cas(t)?)
    }

    /// Like [`TlsMaterial::load`], with the client CAs already loaded.
    fn with_cas(t: &ListenerTls, cas: &[X509]) -> Result<Self, BuildError> {
        let pem = std::fs::read(&t.cert_file)
            .map_err(|e| BuildError::Tls(format!("{}: {e}", t.cert_file)))?;
        let mut certs = X509::stack_from_pem(&pem)
            .map_err(err(&t.cert_file))?
            .into_iter();
        let leaf = certs
            .next()
            .ok_or_else(|| BuildError::Tls(format!("{}: no certificate", t.cert_file)))?;
        let chain: Vec<X509> = certs.collect();
        let key_pem = std::fs::read(&t.key_file)
            .map_err(|e| BuildError::Tls(format!("{}: {e}", t.key_file)))?;
        let key = PKey::private_key_from_pem(&key_pem).map_err(err(&t.key_file))?;
        let matches = leaf
            .public_key()
            .map(|p| p.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(BuildError::Tls(format!(
                "{}: the key does not match the certificate",
                t.key_file
            )));
        }
        let trust = if t.client_auth.mode == ClientCertMode::Off {
            None
        } else {
            Some(
                TrustStore::new(cas, &[], t.client_auth.max_depth, false)
                    .map_err(|e| BuildError::Tls(e.to_string()))?,
            )
        };
        let ca_names = cas
            .iter()
            .map(|ca| ca.subject_name().to_owned().map_err(err("client CA list")))
            .collect::<Result<Vec<_>, _>>()?;
        let ticket_keys = if t.session_resumption {
            crate::listeners::tickets::load(&t.session_ticket_key_files)?
        } else {
            None
        };
        Ok(Self {
            leaf,
            chain,
            key,
            trust,
            verified: VerifiedLeaves::default(),
            ticket_keys,
            ca_names,
        })
    }
}

/// Where a listener finds its current TLS material: in the running [`Runtime`] (which a
/// reload swaps whole, routes and certificates at once), at the listener's position.
#[derive(Clone)]
pub struct TlsSource {
    runtime: Arc<ArcSwap<Runtime>>,
    index: usize,
}

impl TlsSource {
    pub fn new(runtime: Arc<ArcSwap<Runtime>>, index: usize) -> Self {
        Self { runtime, index }
    }

    /// The listener's material now (`None` only for a listener without TLS).
    pub fn load(&self) -> Option<Arc<TlsMaterial>> {
        self.runtime.load().tls.get(self.index).cloned().flatten()
    }
}

/// Intermediates clients sent in full handshakes, by SHA-256 of their leaf: a resumed
/// TLS 1.3 session (a stateless ticket) brings back the leaf but not its chain, and the
/// chain is needed to verify the leaf again against root-only CA bundles. One table per
/// listener, shared by its shards (a session may resume on any of them).
pub(crate) type Chains = Arc<gatehouse_core::Bounded<[u8; 32], Arc<Vec<X509>>>>;

struct Acceptor {
    listener: String,
    material: TlsSource,
    metrics: Metrics,
    chains: Chains,
}

/// Most leaf → chain entries kept for resumed sessions (when full, an eighth goes).
const MAX_CHAINS: usize = 10_000;

impl Acceptor {
    /// The intermediates to verify `leaf` with: those sent in this handshake (`true`: to
    /// be remembered once verified) or, for a resumed session (which brings back the leaf
    /// only), those remembered from its full handshake.
    fn chain_for(&self, ssl: &TlsRef, leaf: &X509) -> (Vec<X509>, bool) {
        let sent: Vec<X509> = ssl
            .peer_cert_chain()
            .map(|s| s.iter().map(|c| c.to_owned()).collect())
            .unwrap_or_default();
        if !sent.is_empty() {
            return (sent, true);
        }
        if ssl.session_reused() {
            // only here is the leaf hashed for the table: a full handshake's key is the
            // SHA-256 its certificate parse computes anyway
            let remembered = leaf
                .digest(openssl::hash::MessageDigest::sha256())
                .ok()
                .and_then(|d| <[u8; 32]>::try_from(&d[..]).ok())
                .and_then(|key| self.chains.get(&key, |c| Some(c.clone())));
            if let Some(c) = remembered {
                return (c.as_ref().clone(), false);
            }
        }
        (sent, false)
    }
}

/// Remember the chain a leaf came with (verified in this process, or carried in a session
/// ticket from a full handshake a replica verified), for its resumed sessions.
pub(crate) fn remember_chain(chains: &Chains, key: [u8; 32], chain: Vec<X509>) {
    // a chain never expires by itself: when full, the shared rule makes room
    chains.insert(key, Arc::new(chain), |_| false);
}

#[async_trait]
impl TlsAccept for Acceptor {
    /// Runs during every handshake: installs the current server certificate (so a reload
    /// can replace it without dropping connections).
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        self.metrics
            .tls_handshakes_started
            .with_label_values(&[&self.listener])
            .inc();
        let Some(m) = self.material.load() else {
            tracing::error!(listener = %self.listener, "no TLS material");
            return;
        };
        let ok = ext::ssl_use_certificate(ssl, &m.leaf).is_ok()
            && m.chain
                .iter()
                .all(|c| ext::ssl_add_chain_cert(ssl, c).is_ok())
            && ext::ssl_use_private_key(ssl, &m.key).is_ok();
        if !ok {
            tracing::error!(listener = %self.listener, "cannot install the server certificate");
        }
        if m.trust.is_some() {
            // the CertificateRequest names the CAs of the current material: a reload that
            // adds one is advertised at once
            match ca_name_stack(&m.ca_names) {
                Ok(names) => ssl.set_client_ca_list(names),
                Err(e) => tracing::error!(listener = %self.listener, "client CA list: {e}"),
            }
        }
    }

    /// Runs once per handshake (also for resumed sessions): parse and verify the peer
    /// certificate here so requests only read the result.
    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let m = self.material.load()?;
        let Some(trust) = &m.trust else {
            self.metrics
                .tls_handshakes
                .with_label_values(&[&self.listener, "not_requested"])
                .inc();
            return None;
        };
        let conn = ssl.peer_certificate().and_then(|leaf| {
            let (chain, sent) = self.chain_for(ssl, &leaf);
            let kept = sent.then(|| chain.clone());
            let conn = inspect_memo(leaf, chain, trust, Some(&m.verified), gatehouse_jwt::now());
            if let (Some(chain), Some(c)) = (kept, &conn) {
                if c.failure.is_none() {
                    remember_chain(&self.chains, c.cert.sha256, chain);
                }
            }
            conn
        });
        let state = match &conn {
            None => "none",
            Some(c) => match c.failure {
                None => "verified",
                Some(f) => {
                    self.metrics
                        .tls_client_cert_failures
                        .with_label_values(&[&self.listener, f.reason()])
                        .inc();
                    "failed"
                }
            },
        };
        self.metrics
            .tls_handshakes
            .with_label_values(&[&self.listener, state])
            .inc();
        conn.map(|c| Arc::new(c) as Arc<dyn Any + Send + Sync>)
    }
}

/// The CertificateRequest's CA list (OpenSSL takes ownership of a fresh stack each time).
fn ca_name_stack(names: &[X509Name]) -> Result<Stack<X509Name>, openssl::error::ErrorStack> {
    let mut stack = Stack::new()?;
    for n in names {
        stack.push(openssl::x509::X509NameRef::to_owned(n)?)?;
    }
    Ok(stack)
}

fn err(what: &str) -> impl Fn(openssl::error::ErrorStack) -> BuildError + '_ {
    move |e| BuildError::Tls(format!("{what}: {e}"))
}

/// One listener's TLS state, shared by the shards that accept on its address: where its
/// reloadable material is, the leaf → chain table for resumed sessions and the fallback
/// session-ticket key.
pub struct ListenerTlsState {
    name: String,
    material: TlsSource,
    chains: Chains,
    /// Whether the listener asks for client certificates (fixed for its lifetime).
    wants_certs: bool,
    /// The key tickets use when no files are configured: random, one per listener and
    /// process, shared by its shards.
    fallback_ticket_key: crate::listeners::tickets::TicketKey,
}

impl ListenerTlsState {
    /// The state of listener `name`, whose material `material` finds.
    pub fn new(name: &str, t: &ListenerTls, material: TlsSource) -> Result<Self, BuildError> {
        Ok(Self {
            name: name.to_owned(),
            material,
            chains: Arc::new(gatehouse_core::Bounded::new(MAX_CHAINS)),
            wants_certs: t.client_auth.mode != ClientCertMode::Off,
            fallback_ticket_key: crate::listeners::tickets::TicketKey::random()?,
        })
    }

    /// Pingora's TLS settings for one shard of this listener. Every shard has its own
    /// OpenSSL context; they all use the listener's session-ticket keys, so a ticket issued
    /// by one shard resumes on any other.
    pub fn settings(&self, t: &ListenerTls, metrics: &Metrics) -> Result<TlsSettings, BuildError> {
        let wants_certs = self.wants_certs;
        let acceptor = Acceptor {
            listener: self.name.clone(),
            material: self.material.clone(),
            metrics: metrics.clone(),
            chains: self.chains.clone(),
        };
        let mut s = TlsSettings::with_callbacks(Box::new(acceptor))
            .map_err(|e| BuildError::Tls(e.to_string()))?;
        if t.session_resumption {
            crate::listeners::tickets::install(
                &mut s,
                self.material.clone(),
                self.fallback_ticket_key.clone(),
                self.chains.clone(),
            )?;
        }
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
            // TLS 1.3 would still send (stateful) tickets nobody can redeem: none at all
            s.set_num_tickets(0).map_err(err("session tickets"))?;
        }
        if wants_certs {
            // Ask for a certificate but accept any: verification happens after the handshake
            // (see Acceptor) so the client gets an HTTP 403 with a reason.
            // (the CA names go out per handshake, from the current material)
            s.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
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
}

/// A TLS listener's server certificate: the leaf (first in `cert_file`) and its `notAfter`
/// in Unix seconds.
pub struct ServerCertExpiry {
    pub listener: String,
    pub file: String,
    pub not_after: i64,
}

/// The server certificate of every TLS listener (unreadable files are left out: building
/// the listener reports them).
pub fn server_cert_expiry(c: &gatehouse_config::Config) -> Vec<ServerCertExpiry> {
    c.listeners
        .iter()
        .filter_map(|l| {
            let t = l.tls.as_ref()?;
            let leaf = load_pem_bundle(&t.cert_file).ok()?.into_iter().next()?;
            let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
            let d = epoch.diff(leaf.not_after()).ok()?;
            Some(ServerCertExpiry {
                listener: l.name.clone(),
                file: t.cert_file.clone(),
                not_after: i64::from(d.days) * 86_400 + i64::from(d.secs),
            })
        })
        .collect()
}

/// Sets `gatehouse_tls_server_cert_expiry_timestamp_seconds` for the config's listeners.
pub(crate) fn publish_server_cert_expiry(m: &Metrics, c: &gatehouse_config::Config) {
    for e in server_cert_expiry(c) {
        m.tls_server_cert_expiry
            .with_label_values(&[&e.listener])
            .set(e.not_after);
    }
}
