//! DEV ONLY: a throwaway PKI made with OpenSSL — root CA, intermediate, a `localhost`
//! server certificate and partner client certificates — for the demo and the tests.

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use std::path::Path;

/// Errors while making or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("openssl: {0}")]
    Ssl(#[from] openssl::error::ErrorStack),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Key algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EcP256,
    Rsa(u32),
}

/// What to put in a certificate.
#[derive(Debug, Clone)]
pub struct CertSpec {
    pub common_name: String,
    pub organization: Option<String>,
    pub ca: bool,
    /// pathlen for CAs
    pub path_len: Option<u32>,
    pub dns: Vec<String>,
    pub ips: Vec<String>,
    pub uris: Vec<String>,
    pub emails: Vec<String>,
    pub client_auth: bool,
    pub server_auth: bool,
    /// validity window relative to now, in seconds
    pub not_before_offset: i64,
    pub not_after_offset: i64,
    pub key: KeyKind,
    /// Explicit serial (random if None).
    pub serial: Option<u32>,
    /// CRL distribution point URIs.
    pub crl_dp: Vec<String>,
}

impl CertSpec {
    /// A one-year client certificate (EKU clientAuth).
    pub fn client(cn: &str) -> Self {
        Self {
            common_name: cn.to_owned(),
            organization: Some(format!("{cn} Ltd")),
            ca: false,
            path_len: None,
            dns: Vec::new(),
            ips: Vec::new(),
            uris: Vec::new(),
            emails: Vec::new(),
            client_auth: true,
            server_auth: false,
            not_before_offset: -3600,
            not_after_offset: 365 * 86400,
            key: KeyKind::EcP256,
            serial: None,
            crl_dp: Vec::new(),
        }
    }

    /// A CA certificate.
    pub fn ca(cn: &str) -> Self {
        Self {
            ca: true,
            client_auth: false,
            organization: Some("Gatehouse Dev".to_owned()),
            not_after_offset: 10 * 365 * 86400,
            ..Self::client(cn)
        }
    }

    /// A server certificate for `localhost` / 127.0.0.1.
    pub fn localhost() -> Self {
        Self {
            dns: vec!["localhost".to_owned()],
            ips: vec!["127.0.0.1".to_owned()],
            client_auth: false,
            server_auth: true,
            organization: Some("Gatehouse Dev".to_owned()),
            ..Self::client("localhost")
        }
    }
}

/// A certificate with its key and the intermediates that lead to the root (not the root).
#[derive(Clone)]
pub struct Issued {
    pub cert: X509,
    pub key: PKey<Private>,
    pub chain: Vec<X509>,
}

/// The password of `partner-a.p12` (development only).
pub const P12_PASSWORD: &str = "gatehouse";

impl Issued {
    /// PKCS#12 of the key, the certificate and its intermediates (what Postman and most
    /// HTTP clients import), protected with `password`.
    pub fn pkcs12(&self, name: &str, password: &str) -> Result<Vec<u8>, PkiError> {
        let mut chain = openssl::stack::Stack::new()?;
        for c in &self.chain {
            chain.push(c.clone())?;
        }
        Ok(openssl::pkcs12::Pkcs12::builder()
            .name(name)
            .pkey(&self.key)
            .cert(&self.cert)
            .ca(chain)
            .build2(password)?
            .to_der()?)
    }

    /// PEM of the certificate followed by its intermediates (what a TLS peer sends).
    pub fn chain_pem(&self) -> Result<Vec<u8>, PkiError> {
        let mut out = self.cert.to_pem()?;
        for c in &self.chain {
            out.extend(c.to_pem()?);
        }
        Ok(out)
    }

    /// PKCS#8 PEM private key.
    pub fn key_pem(&self) -> Result<Vec<u8>, PkiError> {
        Ok(self.key.private_key_to_pem_pkcs8()?)
    }

    /// Certificate alone, PEM.
    pub fn cert_pem(&self) -> Result<Vec<u8>, PkiError> {
        Ok(self.cert.to_pem()?)
    }

    /// Certificate alone, DER.
    pub fn der(&self) -> Vec<u8> {
        self.cert.to_der().unwrap_or_default()
    }
}

/// The file name of the key Gatehouse signs upstream JWTs with (`token_signing`).
pub const SIGNING_KEY_FILE: &str = "gatehouse-signing.key";

/// Write a fresh EC P-256 signing key (PKCS#8 PEM) to `dir/gatehouse-signing.key` unless
/// one is there: the demo's and the tests' `token_signing.key_file`.
pub fn ensure_signing_key(dir: &Path) -> Result<(), PkiError> {
    let path = dir.join(SIGNING_KEY_FILE);
    if path.is_file() {
        return Ok(());
    }
    let pem = new_key(KeyKind::EcP256)?.private_key_to_pem_pkcs8()?;
    std::fs::write(&path, pem).map_err(|source| PkiError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn new_key(kind: KeyKind) -> Result<PKey<Private>, PkiError> {
    Ok(match kind {
        KeyKind::EcP256 => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
            PKey::from_ec_key(EcKey::generate(&group)?)?
        }
        KeyKind::Rsa(bits) => PKey::from_rsa(Rsa::generate(bits)?)?,
    })
}

fn time(offset: i64) -> Result<Asn1Time, PkiError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok(Asn1Time::from_unix(now + offset)?)
}

/// Issue a certificate for `spec`, signed by `issuer` (self-signed when `None`).
pub fn issue(spec: &CertSpec, issuer: Option<&Issued>) -> Result<Issued, PkiError> {
    let key = new_key(spec.key)?;
    let mut name = X509NameBuilder::new()?;
    if let Some(o) = &spec.organization {
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, o)?;
    }
    name.append_entry_by_nid(Nid::COMMONNAME, &spec.common_name)?;
    let name = name.build();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = match spec.serial {
        Some(s) => BigNum::from_u32(s)?,
        None => {
            let mut bn = BigNum::new()?;
            bn.rand(120, MsbOption::MAYBE_ZERO, false)?;
            bn
        }
    };
    let serial = Asn1Integer::from_bn(&serial)?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(issuer.map(|i| i.cert.subject_name()).unwrap_or(&name))?;
    b.set_pubkey(&key)?;
    let not_before = time(spec.not_before_offset)?;
    b.set_not_before(&not_before)?;
    let not_after = time(spec.not_after_offset)?;
    b.set_not_after(&not_after)?;
    let mut bc = BasicConstraints::new();
    bc.critical();
    if spec.ca {
        bc.ca();
        if let Some(p) = spec.path_len {
            bc.pathlen(p);
        }
    }
    b.append_extension(bc.build()?)?;
    let mut ku = KeyUsage::new();
    ku.critical();
    if spec.ca {
        ku.key_cert_sign().crl_sign();
    } else {
        ku.digital_signature();
        if matches!(spec.key, KeyKind::Rsa(_)) {
            ku.key_encipherment();
        }
    }
    b.append_extension(ku.build()?)?;
    if spec.client_auth || spec.server_auth {
        let mut eku = ExtendedKeyUsage::new();
        if spec.client_auth {
            eku.client_auth();
        }
        if spec.server_auth {
            eku.server_auth();
        }
        b.append_extension(eku.build()?)?;
    } else if !spec.ca {
        // a leaf without clientAuth: codeSigning only (the wrong_key_usage case)
        b.append_extension(ExtendedKeyUsage::new().code_signing().build()?)?;
    }
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))?;
    b.append_extension(ski)?;
    if issuer.is_some() {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(false)
            .build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))?;
        b.append_extension(aki)?;
    }
    if !(spec.dns.is_empty()
        && spec.ips.is_empty()
        && spec.uris.is_empty()
        && spec.emails.is_empty())
    {
        let mut san = SubjectAlternativeName::new();
        for d in &spec.dns {
            san.dns(d);
        }
        for i in &spec.ips {
            san.ip(i);
        }
        for u in &spec.uris {
            san.uri(u);
        }
        for e in &spec.emails {
            san.email(e);
        }
        let ext = san.build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))?;
        b.append_extension(ext)?;
    }
    if !spec.crl_dp.is_empty() {
        let value = spec
            .crl_dp
            .iter()
            .map(|u| format!("URI:{u}"))
            .collect::<Vec<_>>()
            .join(",");
        // the openssl crate has no builder for this extension; the config-string form is
        // deprecated in OpenSSL's API but fine for a dev PKI
        #[allow(deprecated)]
        let ext = openssl::x509::X509Extension::new_nid(
            None,
            Some(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None)),
            Nid::CRL_DISTRIBUTION_POINTS,
            &value,
        )?;
        b.append_extension(ext)?;
    }
    let signer = issuer.map(|i| &i.key).unwrap_or(&key);
    b.sign(signer, MessageDigest::sha256())?;
    let cert = b.build();
    let chain = match issuer {
        // the issuer itself travels with the leaf unless it is self-signed (a root)
        Some(i) if !is_self_signed(&i.cert) => {
            let mut c = vec![i.cert.clone()];
            c.extend(i.chain.iter().cloned());
            c
        }
        _ => Vec::new(),
    };
    Ok(Issued { cert, key, chain })
}

fn is_self_signed(c: &X509) -> bool {
    c.issuer_name().to_der().ok() == c.subject_name().to_der().ok()
}

/// The demo/test PKI: root → intermediate → {server, partner-a, partner-b}.
#[derive(Clone)]
pub struct Pki {
    pub root: Issued,
    pub intermediate: Issued,
    pub server: Issued,
    pub partner_a: Issued,
    pub partner_b: Issued,
}

impl Pki {
    /// A fresh PKI (ECDSA P-256).
    pub fn generate() -> Result<Self, PkiError> {
        let root = issue(&CertSpec::ca("Gatehouse Dev Root CA"), None)?;
        let intermediate = issue(
            &CertSpec {
                path_len: Some(0),
                ..CertSpec::ca("Gatehouse Dev Intermediate CA")
            },
            Some(&root),
        )?;
        let server = issue(&CertSpec::localhost(), Some(&intermediate))?;
        let partner_a = issue(
            &CertSpec {
                uris: vec!["spiffe://partner-a.example/ns/prod/sa/billing".to_owned()],
                dns: vec!["api.partner-a.example".to_owned()],
                ..CertSpec::client("partner-a")
            },
            Some(&intermediate),
        )?;
        let partner_b = issue(&CertSpec::client("partner-b"), Some(&intermediate))?;
        Ok(Self {
            root,
            intermediate,
            server,
            partner_a,
            partner_b,
        })
    }

    /// Write the demo contract's files to `dir`: `root-ca.pem`/`.key`, `server.pem`/`.key`
    /// (chain), `partner-a.pem`/`.key`, `partner-b.pem`/`.key` (leaf + intermediate), and
    /// Gatehouse's JWT signing key `gatehouse-signing.key` when there is none.
    pub fn write(&self, dir: &Path) -> Result<(), PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("root-ca.pem", self.root.cert_pem()?),
            ("root-ca.key", self.root.key_pem()?),
            ("intermediate-ca.pem", self.intermediate.cert_pem()?),
            ("intermediate-ca.key", self.intermediate.key_pem()?),
            ("server.pem", self.server.chain_pem()?),
            ("server.key", self.server.key_pem()?),
            ("partner-a.pem", self.partner_a.chain_pem()?),
            ("partner-a.key", self.partner_a.key_pem()?),
            // for Postman and other clients that import PKCS#12 (certs/gen-certs.sh makes
            // the same file, with the same password)
            (
                "partner-a.p12",
                self.partner_a.pkcs12("partner-a", P12_PASSWORD)?,
            ),
            ("partner-b.pem", self.partner_b.chain_pem()?),
            ("partner-b.key", self.partner_b.key_pem()?),
        ];
        for (name, bytes) in files {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(|source| PkiError::Io {
                path: path.display().to_string(),
                source,
            })?;
        }
        ensure_signing_key(dir)
    }

    /// Read a PKI written by [`Pki::write`].
    pub fn read(dir: &Path) -> Result<Self, PkiError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| PkiError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let load = |cert: &str, key: &str| -> Result<Issued, PkiError> {
            let mut certs = X509::stack_from_pem(&read(cert)?)?;
            if certs.is_empty() {
                return Err(PkiError::Io {
                    path: cert.to_owned(),
                    source: std::io::Error::other("no certificate"),
                });
            }
            let leaf = certs.remove(0);
            Ok(Issued {
                cert: leaf,
                key: PKey::private_key_from_pem(&read(key)?)?,
                chain: certs,
            })
        };
        Ok(Self {
            root: load("root-ca.pem", "root-ca.key")?,
            intermediate: load("intermediate-ca.pem", "intermediate-ca.key")?,
            server: load("server.pem", "server.key")?,
            partner_a: load("partner-a.pem", "partner-a.key")?,
            partner_b: load("partner-b.pem", "partner-b.key")?,
        })
    }

    /// Reuse the PKI in `dir` if complete, else generate and write a new one.
    pub fn load_or_generate(dir: &Path) -> Result<Self, PkiError> {
        match Self::read(dir) {
            Ok(p) => Ok(p),
            Err(_) => {
                let p = Self::generate()?;
                p.write(dir)?;
                Ok(p)
            }
        }
    }
}
