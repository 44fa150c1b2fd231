//! The client certificate of a TLS connection, parsed once per handshake.

use base64::Engine;

/// Why a client certificate is not acceptable. Each variant maps to one machine reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertFailure {
    /// No certificate was presented where one is required.
    Missing,
    /// `notAfter` has passed.
    Expired,
    /// `notBefore` is in the future.
    NotYetValid,
    /// The chain does not lead to a trusted CA (includes self-signed leaves and missing
    /// intermediates).
    UnknownCa,
    /// An issuer in the chain is not a CA (basicConstraints) or may not sign certificates.
    InvalidCa,
    /// The certificate or an issuer in its chain is revoked.
    Revoked,
    /// Revocation could not be checked and the policy is `hard`.
    RevocationUnknown,
    /// The chain is longer than the configured maximum depth.
    ChainTooLong,
    /// The certificate may not be used for TLS client authentication (EKU).
    WrongKeyUsage,
    /// The certificate is trusted but matches none of the route's identities.
    IdentityNotAllowed,
    /// The certificate's key is weaker than the policy allows.
    WeakKey,
    /// The signature on the certificate or an issuer is invalid.
    BadSignature,
    /// Any other verification error.
    Invalid,
}

impl CertFailure {
    /// Every failure.
    pub const ALL: [CertFailure; 13] = [
        Self::Missing,
        Self::Expired,
        Self::NotYetValid,
        Self::UnknownCa,
        Self::InvalidCa,
        Self::Revoked,
        Self::RevocationUnknown,
        Self::ChainTooLong,
        Self::WrongKeyUsage,
        Self::IdentityNotAllowed,
        Self::WeakKey,
        Self::BadSignature,
        Self::Invalid,
    ];

    /// The machine reason used in the JSON body and the metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "client_certificate_required",
            Self::Expired => "certificate_expired",
            Self::NotYetValid => "certificate_not_yet_valid",
            Self::UnknownCa => "unknown_ca",
            Self::InvalidCa => "invalid_ca",
            Self::Revoked => "certificate_revoked",
            Self::RevocationUnknown => "revocation_unknown",
            Self::ChainTooLong => "chain_too_long",
            Self::WrongKeyUsage => "wrong_key_usage",
            Self::IdentityNotAllowed => "identity_not_allowed",
            Self::WeakKey => "weak_key",
            Self::BadSignature => "bad_certificate_signature",
            Self::Invalid => "certificate_invalid",
        }
    }

    /// A human description for `error_description`.
    pub fn description(self) -> &'static str {
        match self {
            Self::Missing => "a client certificate is required",
            Self::Expired => "the client certificate has expired",
            Self::NotYetValid => "the client certificate is not yet valid",
            Self::UnknownCa => "the client certificate does not chain to a trusted CA",
            Self::InvalidCa => "an issuer in the client certificate chain is not a CA",
            Self::Revoked => "the client certificate or an issuer has been revoked",
            Self::RevocationUnknown => "the revocation status of the client certificate is unknown",
            Self::ChainTooLong => "the client certificate chain is longer than allowed",
            Self::WrongKeyUsage => {
                "the client certificate is not valid for TLS client authentication"
            }
            Self::IdentityNotAllowed => "the client certificate is not allowed on this route",
            Self::WeakKey => "the client certificate key is too weak",
            Self::BadSignature => "a signature in the client certificate chain is invalid",
            Self::Invalid => "the client certificate is invalid",
        }
    }
}

/// Everything the filters and the access log need to know about a client certificate,
/// extracted once when the handshake completes (never per request).
#[derive(Debug, Clone, Default)]
pub struct ClientCert {
    /// DER of the leaf.
    pub der: Vec<u8>,
    /// DER of the intermediates the client sent (leaf excluded), in the order sent.
    pub chain_der: Vec<Vec<u8>>,
    /// DER of the certificates the listener validated the leaf with: the verified path
    /// without the leaf, trust anchor last (RFC 9440 `Client-Cert-Chain`). Empty unless the
    /// listener's verification passed.
    pub validated_chain_der: Vec<Vec<u8>>,
    /// Subject DN in RFC 4514 form as printed by OpenSSL (`CN=partner-a,O=Partner A`).
    pub subject: String,
    /// Issuer DN, same form.
    pub issuer: String,
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// Serial number, upper-case hex without separators or leading zeros.
    pub serial_hex: String,
    /// SHA-256 over the leaf DER.
    pub sha256: [u8; 32],
    /// SHA-1 over the leaf DER (APIM thumbprints are SHA-1).
    pub sha1: [u8; 20],
    /// SHA-256 over the DER of the issuing certificate, when the issuer is known.
    pub issuer_sha256: Option<[u8; 32]>,
    /// DNS subjectAltNames.
    pub san_dns: Vec<String>,
    /// URI subjectAltNames (SPIFFE IDs live here).
    pub san_uri: Vec<String>,
    /// rfc822Name subjectAltNames.
    pub san_email: Vec<String>,
    /// notBefore, seconds since the Unix epoch.
    pub not_before: i64,
    /// notAfter, seconds since the Unix epoch.
    pub not_after: i64,
    /// `Some(true)` if the EKU extension lists clientAuth (or anyExtendedKeyUsage),
    /// `Some(false)` if it exists without it, `None` if there is no EKU extension.
    pub eku_client_auth: Option<bool>,
    /// Public key size in bits (RSA modulus or EC field size).
    pub key_bits: u32,
    /// `true` for RSA keys (the weak-key policy applies its RSA minimum to them).
    pub key_is_rsa: bool,
    /// Per-connection memo of route-specific verification results, so a route with its
    /// own trust anchors or CRLs verifies once per connection (and store generation), not
    /// once per request.
    pub memo: VerdictMemo,
}

/// Result of a route-specific verification.
pub type RouteVerdict = Result<RoutePass, CertFailure>;

/// A route-specific verification that passed.
#[derive(Debug, Clone)]
pub struct RoutePass {
    /// A CRL was missing and soft revocation let the certificate pass.
    pub revocation_unknown: bool,
    /// The certificates the route validated the leaf with (see
    /// [`ClientCert::validated_chain_der`]).
    pub chain_der: std::sync::Arc<[Vec<u8>]>,
}

/// A small per-connection memo keyed by policy id (one entry per route policy, with the
/// policy's generation), plus a flag for things done once per connection.
pub struct VerdictMemo(
    crate::Bounded<u64, (u64, RouteVerdict)>,
    std::sync::atomic::AtomicBool,
);

impl Default for VerdictMemo {
    fn default() -> Self {
        Self(crate::Bounded::new(64), Default::default())
    }
}

impl VerdictMemo {
    /// `true` the first time it is called for this connection's certificate.
    pub fn first_acceptance(&self) -> bool {
        !self.1.swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    /// The memoized verdict for `(id, generation)`, if any.
    pub fn peek(&self, id: u64, generation: u64) -> Option<RouteVerdict> {
        self.0
            .get(&id, |(g, v)| (*g == generation).then(|| v.clone()))
    }

    /// Remember the verdict for `(id, generation)` (replacing older generations of `id`).
    pub fn put(&self, id: u64, generation: u64, v: RouteVerdict) {
        // an older generation of the same policy is as good as dead
        self.0.insert(id, (generation, v), |(g, _)| *g < generation);
    }
}

impl Clone for VerdictMemo {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for VerdictMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerdictMemo")
    }
}

impl ClientCert {
    /// RFC 8705 `x5t#S256`: base64url (no padding) of the leaf's SHA-256.
    pub fn x5t_s256(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.sha256)
    }

    /// Lower-case hex SHA-256 thumbprint (Envoy's XFCC `Hash`).
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x5t_is_unpadded_base64url_of_sha256() {
        let c = ClientCert {
            sha256: [0xfb; 32],
            ..Default::default()
        };
        // 0xfb bytes use both url-safe characters and would need padding in std base64.
        assert_eq!(c.x5t_s256(), "-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_s");
        assert_eq!(c.sha256_hex(), "fb".repeat(32));
    }
}
