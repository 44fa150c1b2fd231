//! What the listener learns about a connection's client certificate, once per handshake.

use crate::verify::{unix_now, TrustStore};
use gatehouse_core::{CertFailure, ClientCert};
use sha2::{Digest, Sha256};
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
    inspect_memo(leaf, chain, trust, None, unix_now())
}

/// Like [`inspect`], reusing an earlier successful verification of the very same leaf and
/// chain from `memo` (see [`VerifiedLeaves`]). `now`: seconds since the Unix epoch.
pub fn inspect_memo(
    leaf: openssl::x509::X509,
    chain: Vec<openssl::x509::X509>,
    trust: &TrustStore,
    memo: Option<&VerifiedLeaves>,
    now: i64,
) -> Option<ConnCert> {
    let der = leaf.to_der().ok()?;
    let all_der: Result<Vec<Vec<u8>>, _> = chain.iter().map(|c| c.to_der()).collect();
    let complete = all_der.is_ok();
    let chain_der: Vec<Vec<u8>> = match all_der {
        Ok(d) => d,
        Err(_) => chain.iter().filter_map(|c| c.to_der().ok()).collect(),
    };
    let chain_bytes: usize = chain_der.iter().map(Vec::len).sum();
    // memoized only when the key covers exactly what is verified, never for a store whose
    // verdict may change at any time (revocation), and not for oversized chains (memory)
    let memo = memo
        .filter(|_| complete && chain_bytes <= MAX_MEMO_CHAIN_BYTES && !trust.checks_revocation());
    let key = memo.map(|_| VerifiedLeaves::key(&der, &chain_der));
    if let (Some(m), Some(k)) = (memo, &key) {
        if let Some(cert) = m.get(k, now) {
            return Some(ConnCert {
                // a fresh copy: the per-connection route memo starts empty
                cert: Arc::new(cert.as_ref().clone()),
                failure: None,
            });
        }
    }
    let verdict = trust.verify(&leaf, &chain, 0);
    // the verified path without the leaf (RFC 9440's validation chain): its first
    // certificate is the leaf's issuer, encoded once for both
    let validated = verdict
        .as_ref()
        .map(|v| v.validation_chain_der())
        .unwrap_or_default();
    // (a path whose other certificates would not encode still names the issuer)
    let unlisted = match (&verdict, validated.is_empty()) {
        (Ok(v), true) => v.path.get(1).and_then(|i| i.to_der().ok()),
        _ => None,
    };
    let issuer = validated.first().or(unlisted.as_ref()).map(Vec::as_slice);
    match crate::parse::parse(&der, chain_der, issuer) {
        Ok(mut cert) => {
            let failure = verdict.as_ref().err().copied();
            cert.validated_chain_der = validated;
            let cert = Arc::new(cert);
            if let (Some(m), Some(k), Ok(v)) = (memo, key, &verdict) {
                if let Some(window) = validity_window(&v.path) {
                    // a copy: this connection's route-verdict memo must not live on in the
                    // listener's memo after the connection closes
                    m.put(k, window, Arc::new(cert.as_ref().clone()), now);
                }
            }
            Some(ConnCert { cert, failure })
        }
        Err(_) => Some(ConnCert {
            cert: Arc::new(ClientCert {
                der,
                ..Default::default()
            }),
            failure: Some(CertFailure::Invalid),
        }),
    }
}

/// Most verified certificates remembered per listener (when full, the expired go, then an
/// eighth of the rest).
const MAX_VERIFIED: usize = 4096;
/// Intermediates (DER bytes) beyond which a verification is not remembered.
const MAX_MEMO_CHAIN_BYTES: usize = 16 * 1024;

/// Client certificates a listener has verified, so a partner that reconnects without
/// resuming its TLS session does not pay for the chain's signature checks (and the parse)
/// again. Keyed by SHA-256 over the leaf and the intermediates exactly as the client sent
/// them, so the same leaf with another chain is verified afresh. An entry is used only
/// until the earliest `notAfter` on its verified path, only for verifications that passed,
/// and only for trust stores without revocation checks (whose verdict cannot change while
/// the store lives). It belongs to one trust store: a reload builds a new one. The client
/// still proves possession of the leaf's key in every handshake (TLS CertificateVerify).
pub struct VerifiedLeaves {
    map: gatehouse_core::Bounded<[u8; 32], Remembered>,
}

impl Default for VerifiedLeaves {
    fn default() -> Self {
        Self {
            map: gatehouse_core::Bounded::new(MAX_VERIFIED),
        }
    }
}

/// From when until when (seconds since the Unix epoch: the latest `notBefore` and the
/// earliest `notAfter` on its verified path) a verified certificate may be reused.
type Remembered = ((i64, i64), Arc<ClientCert>);

impl VerifiedLeaves {
    fn key(leaf_der: &[u8], chain_der: &[Vec<u8>]) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in std::iter::once(leaf_der).chain(chain_der.iter().map(Vec::as_slice)) {
            // length-prefixed, so no two different lists hash the same byte stream
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }

    fn get(&self, key: &[u8; 32], now: i64) -> Option<Arc<ClientCert>> {
        self.map.get(key, |((from, until), c)| {
            (*from <= now && now < *until).then(|| c.clone())
        })
    }

    fn put(&self, key: [u8; 32], window: (i64, i64), cert: Arc<ClientCert>, now: i64) {
        // an entry past its window is dead
        self.map
            .insert(key, (window, cert), |((_, until), _)| *until <= now);
    }

    /// Certificates remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// When every certificate of `path` is valid: the latest `notBefore` and the earliest
/// `notAfter`, in seconds since the Unix epoch (the clock may also step back).
fn validity_window(path: &[openssl::x509::X509]) -> Option<(i64, i64)> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let secs = |t: &openssl::asn1::Asn1TimeRef| {
        let d = epoch.diff(t).ok()?;
        Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
    };
    let mut window = (i64::MIN, i64::MAX);
    for c in path {
        window.0 = window.0.max(secs(c.not_before())?);
        window.1 = window.1.min(secs(c.not_after())?);
    }
    (!path.is_empty()).then_some(window)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use gatehouse_devauth::pki::{issue, CertSpec, Pki};

    fn root_only(pki: &Pki) -> TrustStore {
        TrustStore::new(std::slice::from_ref(&pki.root.cert), &[], 4, false).unwrap()
    }

    fn inspect_at(
        pki: &Pki,
        chain: &[openssl::x509::X509],
        trust: &TrustStore,
        memo: &VerifiedLeaves,
        now: i64,
    ) -> ConnCert {
        inspect_memo(
            pki.partner_a.cert.clone(),
            chain.to_vec(),
            trust,
            Some(memo),
            now,
        )
        .unwrap()
    }

    #[test]
    fn a_verified_certificate_is_remembered_with_its_chain_and_until_its_path_expires() {
        let pki = Pki::generate().unwrap();
        let trust = root_only(&pki);
        let memo = VerifiedLeaves::default();
        let chain = pki.partner_a.chain.clone();
        let now = unix_now();

        let first = inspect_at(&pki, &chain, &trust, &memo, now);
        assert_eq!(first.failure, None);
        assert_eq!(memo.len(), 1);
        let again = inspect_at(&pki, &chain, &trust, &memo, now);
        assert_eq!(again.failure, None);
        assert_eq!(again.cert.sha256, first.cert.sha256);
        assert_eq!(again.cert.issuer_sha256, first.cert.issuer_sha256);
        assert_eq!(again.cert.subject, first.cert.subject);
        assert!(
            !Arc::ptr_eq(&again.cert, &first.cert),
            "each connection gets its own copy (its own route memo)"
        );

        // the same leaf without the intermediate is another key: verified afresh, and it
        // does not chain to the root alone
        let bare = inspect_at(&pki, &[], &trust, &memo, now);
        assert_eq!(bare.failure, Some(CertFailure::UnknownCa));
        assert_eq!(memo.len(), 1, "failures are not remembered");

        // past the earliest notAfter on the path (the leaf's, one year), the entry is not
        // used: OpenSSL verifies again, with the real clock, and the entry is replaced
        let key = VerifiedLeaves::key(
            &pki.partner_a.cert.to_der().unwrap(),
            &[chain[0].to_der().unwrap()],
        );
        let (from, until) = memo.map.get(&key, |(w, _)| Some(*w)).unwrap();
        let (leaf_from, leaf_until) =
            validity_window(std::slice::from_ref(&pki.partner_a.cert)).unwrap();
        assert_eq!(until, leaf_until);
        // the leaf was issued last: its notBefore is the latest on the path
        assert_eq!(from, leaf_from);
        assert!(memo.get(&key, until).is_none());
        assert!(memo.get(&key, until - 1).is_some());
        // nor before the path became valid (a clock stepped back)
        assert!(memo.get(&key, from - 1).is_none());
        assert!(memo.get(&key, from).is_some());
    }

    #[test]
    fn an_entry_never_outlives_the_earliest_expiry_on_the_path() {
        let pki = Pki::generate().unwrap();
        // an intermediate that expires long before the leaf it issues
        let short_ca = issue(
            &CertSpec {
                not_after_offset: 600,
                ..CertSpec::ca("Short-lived Intermediate")
            },
            Some(&pki.root),
        )
        .unwrap();
        let leaf = issue(&CertSpec::client("partner-c"), Some(&short_ca)).unwrap();
        let trust = root_only(&pki);
        let memo = VerifiedLeaves::default();
        let now = unix_now();
        let c = inspect_memo(
            leaf.cert.clone(),
            vec![short_ca.cert.clone()],
            &trust,
            Some(&memo),
            now,
        )
        .unwrap();
        assert_eq!(c.failure, None);
        let key = VerifiedLeaves::key(
            &leaf.cert.to_der().unwrap(),
            &[short_ca.cert.to_der().unwrap()],
        );
        let (_, until) = memo.map.get(&key, |(w, _)| Some(*w)).unwrap();
        assert!(
            until <= now + 600 + 5 && until >= now + 600 - 5,
            "{until} vs {now}"
        );
    }

    #[test]
    fn oversized_chains_are_verified_every_time() {
        let pki = Pki::generate().unwrap();
        let trust = root_only(&pki);
        let memo = VerifiedLeaves::default();
        // the intermediate sent over and over: valid, but kept out of the memo
        let padded: Vec<_> = (0..64).map(|_| pki.partner_a.chain[0].clone()).collect();
        let bytes: usize = padded.iter().map(|c| c.to_der().unwrap().len()).sum();
        assert!(bytes > MAX_MEMO_CHAIN_BYTES);
        let c = inspect_at(&pki, &padded, &trust, &memo, unix_now());
        assert_eq!(c.failure, None);
        assert!(memo.is_empty());
    }

    #[test]
    fn stores_that_check_revocation_are_never_memoized() {
        let pki = Pki::generate().unwrap();
        // revocation checked by the caller: the verdict may change while the store lives
        let with_crls =
            TrustStore::with_own_revocation(std::slice::from_ref(&pki.root.cert), &[], 4).unwrap();
        assert!(with_crls.checks_revocation());
        assert!(!root_only(&pki).checks_revocation());
        let memo = VerifiedLeaves::default();
        for _ in 0..2 {
            let c = inspect_at(&pki, &pki.partner_a.chain, &with_crls, &memo, unix_now());
            assert_eq!(c.failure, None);
            assert!(memo.is_empty());
        }
    }
}
