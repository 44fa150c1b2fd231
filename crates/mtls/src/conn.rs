//! What the listener learns about a connection's client certificate, once per handshake.

use crate::verify::TrustStore;
use gatehouse_core::{CertFailure, ClientCert};
use std::sync::Arc;

/// Stored in Pingora's `SslDigest.extension` for every TLS connection that presented a
/// client certificate.
#[derive(Debug, Clone)]
pub struct ConnCert {
    /// The parsed leaf.
    pub cert: Arc<ClientCert>,
    /// The listener-level verification verdict (`None` = verified).
    pub failure: Option<CertFailure>,
}

/// Inspect the client certificate of a finished handshake: parse the leaf and verify it,
/// with the intermediates the client sent (or, for a resumed TLS 1.3 session, which carries
/// the leaf but not the chain, those it sent in the full handshake), against the
/// listener's trust store.
pub fn inspect(
    leaf: openssl::x509::X509,
    chain: Vec<openssl::x509::X509>,
    trust: &TrustStore,
) -> Option<ConnCert> {
    let verdict = trust.verify(&leaf, &chain, 0);
    let der = leaf.to_der().ok()?;
    let chain_der: Vec<Vec<u8>> = chain.iter().filter_map(|c| c.to_der().ok()).collect();
    let issuer = verdict.as_ref().ok().and_then(|v| v.issuer_der.clone());
    match crate::parse::parse(&der, chain_der, issuer.as_deref()) {
        Ok(cert) => Some(ConnCert {
            cert: Arc::new(cert),
            failure: verdict.err(),
        }),
        Err(_) => Some(ConnCert {
            cert: Arc::new(ClientCert {
                der,
                ..Default::default()
            }),
            failure: Some(CertFailure::Invalid),
        }),
    }
}
