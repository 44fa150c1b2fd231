//! Turn a peer certificate (DER) into a [`ClientCert`], once per handshake.

use gatehouse_core::ClientCert;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

/// A DN as (upper-case attribute name, value) pairs in DER order.
pub type Dn = Vec<(String, String)>;

/// Short names for the attribute types seen in client certificates.
fn attr_name(oid: &x509_parser::der_parser::oid::Oid<'_>) -> String {
    match oid.to_id_string().as_str() {
        "2.5.4.3" => "CN".into(),
        "2.5.4.6" => "C".into(),
        "2.5.4.7" => "L".into(),
        "2.5.4.8" => "ST".into(),
        "2.5.4.9" => "STREET".into(),
        "2.5.4.10" => "O".into(),
        "2.5.4.11" => "OU".into(),
        "2.5.4.5" => "SERIALNUMBER".into(),
        "2.5.4.97" => "ORGANIZATIONIDENTIFIER".into(),
        "1.2.840.113549.1.9.1" => "EMAILADDRESS".into(),
        "0.9.2342.19200300.100.1.25" => "DC".into(),
        "0.9.2342.19200300.100.1.1" => "UID".into(),
        other => other.to_owned(),
    }
}

/// The attributes of an X.509 name.
pub fn dn_of(name: &X509Name<'_>) -> Dn {
    let mut out = Vec::new();
    for rdn in name.iter() {
        for atv in rdn.iter() {
            let value = atv
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|_| hex::encode(atv.attr_value().data));
            out.push((attr_name(atv.attr_type()), value));
        }
    }
    out
}

/// RFC 4514-style string (most specific first): `CN=partner-a, O=Partner A, C=DE`.
pub fn dn_string(dn: &Dn) -> String {
    dn.iter()
        .rev()
        .map(|(k, v)| format!("{k}={}", escape_dn_value(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn escape_dn_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// Why a certificate could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("cannot parse certificate: {0}")]
pub struct ParseError(String);

/// Extract everything the filters need from the leaf DER and the DERs the client sent.
/// `issuer_der` is the certificate that issued the leaf, when verification found it.
pub fn parse(
    der: &[u8],
    chain_der: Vec<Vec<u8>>,
    issuer_der: Option<&[u8]>,
) -> Result<ClientCert, ParseError> {
    let (_, x) = X509Certificate::from_der(der).map_err(|e| ParseError(e.to_string()))?;
    let subject = dn_of(x.subject());
    let issuer = dn_of(x.issuer());
    let common_name = subject
        .iter()
        .rev()
        .find(|(k, _)| k == "CN")
        .map(|(_, v)| v.clone());
    let mut san_dns = Vec::new();
    let mut san_uri = Vec::new();
    let mut san_email = Vec::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => san_dns.push((*d).to_owned()),
                GeneralName::URI(u) => san_uri.push((*u).to_owned()),
                GeneralName::RFC822Name(e) => san_email.push((*e).to_owned()),
                _ => {}
            }
        }
    }
    let eku_client_auth = match x.extended_key_usage() {
        Ok(Some(e)) => Some(e.value.client_auth || e.value.any),
        Ok(None) => None,
        // a malformed EKU extension grants nothing
        Err(_) => Some(false),
    };
    let (key_bits, key_is_rsa) = match x.public_key().parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(r)) => (r.key_size() as u32, true),
        Ok(x509_parser::public_key::PublicKey::EC(e)) => (e.key_size() as u32, false),
        _ => (0, false),
    };
    let serial_hex = {
        let raw = x.raw_serial();
        let trimmed: &[u8] = match raw.iter().position(|b| *b != 0) {
            Some(i) => &raw[i..],
            None => &raw[raw.len().saturating_sub(1)..],
        };
        hex::encode_upper(trimmed)
    };
    Ok(ClientCert {
        der: der.to_vec(),
        chain_der,
        validated_chain_der: Vec::new(),
        subject: dn_string(&subject),
        issuer: dn_string(&issuer),
        common_name,
        serial_hex,
        sha256: Sha256::digest(der).into(),
        sha1: Sha1::digest(der).into(),
        issuer_sha256: issuer_der.map(|d| Sha256::digest(d).into()),
        san_dns,
        san_uri,
        san_email,
        not_before: x.validity().not_before.timestamp(),
        not_after: x.validity().not_after.timestamp(),
        eku_client_auth,
        key_bits,
        key_is_rsa,
        memo: Default::default(),
    })
}

/// The DN attributes of a DER certificate's subject and issuer.
pub fn subject_and_issuer(der: &[u8]) -> Option<(Dn, Dn)> {
    let (_, x) = X509Certificate::from_der(der).ok()?;
    Some((dn_of(x.subject()), dn_of(x.issuer())))
}
