//! Chain verification with OpenSSL against a CA bundle, optionally with CRLs.
//!
//! The listener asks for a certificate but accepts any during the handshake (so a bad one
//! gets an HTTP 403 with a reason instead of a bare TLS alert); the real verification is
//! done here, right after the handshake, and again per route when a route has its own
//! trust anchors or revocation policy.

use gatehouse_core::CertFailure;
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509Crl, X509StoreContext, X509VerifyResult, X509};
use std::time::{SystemTime, UNIX_EPOCH};

/// Error building a trust store.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no certificate found")]
    Empty { path: String },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: openssl::error::ErrorStack,
    },
}

/// Load every certificate of a PEM bundle.
pub fn load_pem_bundle(path: &str) -> Result<Vec<X509>, TrustError> {
    let bytes = std::fs::read(path).map_err(|source| TrustError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs = X509::stack_from_pem(&bytes).map_err(|source| TrustError::Parse {
        path: path.to_owned(),
        source,
    })?;
    if certs.is_empty() {
        return Err(TrustError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Load a CRL file, PEM or DER.
pub fn load_crl(path: &str) -> Result<X509Crl, TrustError> {
    let bytes = std::fs::read(path).map_err(|source| TrustError::Read {
        path: path.to_owned(),
        source,
    })?;
    X509Crl::from_pem(&bytes)
        .or_else(|_| X509Crl::from_der(&bytes))
        .map_err(|source| TrustError::Parse {
            path: path.to_owned(),
            source,
        })
}

/// Trust anchors, CRLs and limits for one verification policy.
pub struct TrustStore {
    store: X509Store,
    /// Store without CRLs, for `soft` revocation when a CRL is missing.
    store_no_crl: Option<X509Store>,
    /// The parsed CRLs, for `soft` revocation (every CRL that is present is still checked
    /// when another one is missing or stale) and for [`TrustStore::with_own_revocation`].
    crls: Vec<X509Crl>,
    max_depth: u32,
    soft_revocation: bool,
    /// CRLs are checked (here or by the caller): a verdict may change while the store lives.
    revocation: bool,
}

/// Whether each certificate of a verified path (leaf first, anchor last) is revoked by one
/// of `crls`: `Err(Revoked)` if any CRL signed by its issuer lists it (even an expired CRL:
/// revocation is final), else `Ok(unknown)` where `unknown` says that some link had no
/// current CRL from its issuer.
pub fn revocation_status(path: &[X509], crls: &[&X509Crl]) -> Result<bool, CertFailure> {
    let now = openssl::asn1::Asn1Time::days_from_now(0).map_err(|_| CertFailure::Invalid)?;
    let mut unknown = false;
    for pair in path.windows(2) {
        let (cert, issuer) = (&pair[0], &pair[1]);
        let Ok(issuer_key) = issuer.public_key() else {
            unknown = true;
            continue;
        };
        let mut current = false;
        for crl in crls {
            let same_issuer = crl
                .issuer_name()
                .try_cmp(issuer.subject_name())
                .is_ok_and(|o| o == std::cmp::Ordering::Equal);
            if !same_issuer || !crl.verify(&issuer_key).unwrap_or(false) {
                continue;
            }
            if matches!(crl.get_by_cert(cert), openssl::x509::CrlStatus::Revoked(_)) {
                return Err(CertFailure::Revoked);
            }
            let fresh = crl.last_update() <= now && crl.next_update().is_none_or(|n| n >= now);
            current |= fresh;
        }
        unknown |= !current;
    }
    Ok(unknown)
}

/// What verification established.
#[derive(Debug, Clone)]
pub struct Verified {
    /// A CRL was missing and `soft` revocation let the certificate pass.
    pub revocation_unknown: bool,
    /// The verified path, leaf first, trust anchor last.
    pub path: Vec<X509>,
}

impl Verified {
    /// DER of the certificates the leaf was validated with: the verified path without the
    /// leaf, trust anchor included (RFC 9440 §2.3 `Client-Cert-Chain`: "the certificate
    /// chain used for validation", which may differ from what the client sent).
    /// Empty if a certificate cannot be encoded: no chain rather than one with a gap.
    pub fn validation_chain_der(&self) -> Vec<Vec<u8>> {
        self.path
            .iter()
            .skip(1)
            .map(|c| c.to_der())
            .collect::<Result<_, _>>()
            .unwrap_or_default()
    }
}

fn build_store(cas: &[X509], crl_files: &[String]) -> Result<X509Store, TrustError> {
    let err = |source| TrustError::Parse {
        path: "trust store".to_owned(),
        source,
    };
    let mut b = X509StoreBuilder::new().map_err(err)?;
    for ca in cas {
        b.add_cert(ca.clone()).map_err(err)?;
    }
    if !crl_files.is_empty() {
        let lookup = b
            .add_lookup(openssl::x509::store::X509Lookup::file())
            .map_err(err)?;
        for path in crl_files {
            // parse first for a precise error; the lookup then loads it into the store
            let der_or_pem = std::fs::read(path).map_err(|source| TrustError::Read {
                path: path.clone(),
                source,
            })?;
            let kind = if X509Crl::from_pem(&der_or_pem).is_ok() {
                openssl::ssl::SslFiletype::PEM
            } else {
                load_crl(path)?;
                openssl::ssl::SslFiletype::ASN1
            };
            lookup
                .load_crl_file(path, kind)
                .map_err(|source| TrustError::Parse {
                    path: path.clone(),
                    source,
                })?;
        }
        b.set_flags(X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL)
            .map_err(err)?;
    }
    Ok(b.build())
}

impl TrustStore {
    /// A store over `cas` and the CRLs in `crl_files` (PEM or DER). `soft_revocation`: a missing CRL does not fail.
    pub fn new(
        cas: &[X509],
        crl_files: &[String],
        max_depth: u32,
        soft_revocation: bool,
    ) -> Result<Self, TrustError> {
        let soft_with_crls = soft_revocation && !crl_files.is_empty();
        Ok(Self {
            store: build_store(cas, crl_files)?,
            store_no_crl: if soft_with_crls {
                Some(build_store(cas, &[])?)
            } else {
                None
            },
            crls: if soft_with_crls {
                crl_files
                    .iter()
                    .map(|p| load_crl(p))
                    .collect::<Result<_, _>>()?
            } else {
                Vec::new()
            },
            max_depth,
            soft_revocation,
            revocation: !crl_files.is_empty(),
        })
    }

    /// A store that verifies chains only; revocation is the caller's, with
    /// [`revocation_status`] over [`TrustStore::crls`] and whatever CRLs it fetched.
    pub fn with_own_revocation(
        cas: &[X509],
        crl_files: &[String],
        max_depth: u32,
    ) -> Result<Self, TrustError> {
        Ok(Self {
            store: build_store(cas, &[])?,
            store_no_crl: None,
            crls: crl_files
                .iter()
                .map(|p| load_crl(p))
                .collect::<Result<_, _>>()?,
            max_depth,
            soft_revocation: false,
            revocation: true,
        })
    }

    /// Whether revocation is checked against this store (by it or by its caller).
    pub fn checks_revocation(&self) -> bool {
        self.revocation
    }

    /// The CRLs loaded from files.
    pub fn crls(&self) -> &[X509Crl] {
        &self.crls
    }

    /// Verify the chain against the store as it is (no CRL check by OpenSSL for a store
    /// made with [`TrustStore::with_own_revocation`]; no soft-revocation fallback).
    pub fn verify_path(
        &self,
        leaf: &X509,
        chain: &[X509],
        skew_secs: i64,
    ) -> Result<Verified, CertFailure> {
        self.verify_with(&self.store, leaf, chain, skew_secs)
    }

    /// Verify `leaf` with the intermediates the client sent. `skew_secs` widens the leaf's
    /// validity window on both sides.
    pub fn verify(
        &self,
        leaf: &X509,
        chain: &[X509],
        skew_secs: i64,
    ) -> Result<Verified, CertFailure> {
        match self.verify_with(&self.store, leaf, chain, skew_secs) {
            Err(CertFailure::RevocationUnknown) if self.soft_revocation => {
                // Some CRL is missing or stale. Verify the chain without OpenSSL's CRL check,
                // then check every link against the CRLs we do have: a CRL that is present
                // (even an expired one: revocation is final) still revokes.
                let store = self.store_no_crl.as_ref().unwrap_or(&self.store);
                let v = self.verify_with(store, leaf, chain, skew_secs)?;
                let crls: Vec<&X509Crl> = self.crls.iter().collect();
                revocation_status(&v.path, &crls)?;
                Ok(Verified {
                    revocation_unknown: true,
                    ..v
                })
            }
            other => other,
        }
    }

    fn verify_with(
        &self,
        store: &X509Store,
        leaf: &X509,
        chain: &[X509],
        skew_secs: i64,
    ) -> Result<Verified, CertFailure> {
        let fail = |_| CertFailure::Invalid;
        let mut stack = Stack::new().map_err(fail)?;
        for c in chain {
            stack.push(c.clone()).map_err(fail)?;
        }
        let mut ctx = X509StoreContext::new().map_err(fail)?;
        let (ok, err, depth, path) = ctx
            .init(store, leaf, &stack, |c| {
                let ok = c.verify_cert()?;
                let path: Vec<X509> = c
                    .chain()
                    .map(|ch| ch.iter().map(|x| x.to_owned()).collect())
                    .unwrap_or_default();
                Ok((ok, c.error(), c.error_depth(), path))
            })
            .map_err(fail)?;
        if !ok {
            // OpenSSL checks each certificate's time after its signature, walking from the
            // anchor down to the leaf, and after revocation: a time error at depth 0 means
            // everything else passed, so the skew only ever relaxes the leaf's own dates.
            let within_skew = skew_secs > 0
                && depth == 0
                && is_time_error(err)
                && validity(leaf).is_some_and(|(nb, na)| {
                    let now = unix_now();
                    now + skew_secs >= nb && now - skew_secs <= na
                });
            if !within_skew {
                return Err(map_error(err));
            }
        }
        // the verified chain holds leaf and anchor; what lies between are intermediates
        if path.len() >= 2 && (path.len() as u32 - 2) > self.max_depth {
            return Err(CertFailure::ChainTooLong);
        }
        Ok(Verified {
            revocation_unknown: false,
            path,
        })
    }
}

fn is_time_error(e: X509VerifyResult) -> bool {
    matches!(
        e.as_raw(),
        v::X509_V_ERR_CERT_NOT_YET_VALID | v::X509_V_ERR_CERT_HAS_EXPIRED
    )
}

/// OpenSSL's `X509_V_ERR_*` verify results (x509_vfy.h) by name: openssl-sys's, and the
/// ones it lacks or names differently by OpenSSL version.
mod v {
    pub use openssl_sys::{
        X509_V_ERR_CA_KEY_TOO_SMALL, X509_V_ERR_CA_MD_TOO_WEAK, X509_V_ERR_CERT_CHAIN_TOO_LONG,
        X509_V_ERR_CERT_HAS_EXPIRED, X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_REVOKED,
        X509_V_ERR_CERT_SIGNATURE_FAILURE, X509_V_ERR_CERT_UNTRUSTED, X509_V_ERR_CRL_HAS_EXPIRED,
        X509_V_ERR_CRL_NOT_YET_VALID, X509_V_ERR_CRL_SIGNATURE_FAILURE,
        X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, X509_V_ERR_EE_KEY_TOO_SMALL,
        X509_V_ERR_KEYUSAGE_NO_CERTSIGN, X509_V_ERR_PATH_LENGTH_EXCEEDED,
        X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN, X509_V_ERR_UNABLE_TO_GET_CRL,
        X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE,
    };
    use std::ffi::c_int;
    /// `X509_V_ERR_INVALID_CA` before OpenSSL 3 (`X509_V_ERR_NO_ISSUER_PUBLIC_KEY` in 3.x,
    /// reported for an issuer that cannot sign either way).
    pub const INVALID_CA_BEFORE_3: c_int = 24;
    /// `X509_V_ERR_INVALID_CA` in OpenSSL 3 (a CA:FALSE issuer).
    pub const INVALID_CA_3: c_int = 79;
    /// `X509_V_ERR_PATH_LOOP` (not in openssl-sys).
    pub const PATH_LOOP: c_int = 55;
}

fn validity(c: &X509) -> Option<(i64, i64)> {
    let der = c.to_der().ok()?;
    let (_, x) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some((
        x.validity().not_before.timestamp(),
        x.validity().not_after.timestamp(),
    ))
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// OpenSSL `X509_V_ERR_*` → our reason.
fn map_error(e: X509VerifyResult) -> CertFailure {
    match e.as_raw() {
        v::X509_V_ERR_CERT_NOT_YET_VALID => CertFailure::NotYetValid,
        v::X509_V_ERR_CERT_HAS_EXPIRED => CertFailure::Expired,
        v::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
        | v::X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
        | v::X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
        | v::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        | v::X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
        | v::X509_V_ERR_CERT_UNTRUSTED => CertFailure::UnknownCa,
        v::X509_V_ERR_UNABLE_TO_GET_CRL
        | v::X509_V_ERR_CRL_NOT_YET_VALID
        | v::X509_V_ERR_CRL_HAS_EXPIRED => CertFailure::RevocationUnknown,
        v::X509_V_ERR_CERT_REVOKED => CertFailure::Revoked,
        v::INVALID_CA_BEFORE_3
        | v::INVALID_CA_3
        | v::PATH_LOOP
        | v::X509_V_ERR_KEYUSAGE_NO_CERTSIGN => CertFailure::InvalidCa,
        v::X509_V_ERR_PATH_LENGTH_EXCEEDED | v::X509_V_ERR_CERT_CHAIN_TOO_LONG => {
            CertFailure::ChainTooLong
        }
        v::X509_V_ERR_CERT_SIGNATURE_FAILURE
        | v::X509_V_ERR_CRL_SIGNATURE_FAILURE
        | v::X509_V_ERR_CA_MD_TOO_WEAK => CertFailure::BadSignature,
        v::X509_V_ERR_EE_KEY_TOO_SMALL | v::X509_V_ERR_CA_KEY_TOO_SMALL => CertFailure::WeakKey,
        _ => CertFailure::Invalid,
    }
}
