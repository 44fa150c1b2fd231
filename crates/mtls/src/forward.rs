//! Passing the verified certificate to the upstream: RFC 9440 `Client-Cert`, Envoy's
//! `X-Forwarded-Client-Cert`, or a URL-escaped PEM header.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use gatehouse_config::{CertForward, CertForwardFormat};
use gatehouse_core::{ClientCert, UpstreamHeaders};
use http::{HeaderName, HeaderValue};

/// Headers that carry a client certificate upstream. Client-supplied copies of all of them
/// are always removed.
pub const CERT_HEADERS: &[&str] = &[
    "client-cert",
    "client-cert-chain",
    "x-forwarded-client-cert",
    "x-ssl-client-cert",
];

/// Add the forwarding headers for `c` to `out`; `chain`: the certificates `c` was
/// validated with (leaf excluded, trust anchor last), for RFC 9440 `Client-Cert-Chain`.
pub fn forward_headers(
    cfg: &CertForward,
    pem_header: &HeaderName,
    c: &ClientCert,
    chain: &[Vec<u8>],
    out: &mut UpstreamHeaders,
) {
    let mut push = |name: HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            out.push((name, v));
        }
    };
    match cfg.format {
        CertForwardFormat::None => {}
        CertForwardFormat::Rfc9440 => {
            push(HeaderName::from_static("client-cert"), sf_binary(&c.der));
            if cfg.chain && !chain.is_empty() {
                let chain: Vec<String> = chain.iter().map(|d| sf_binary(d)).collect();
                push(
                    HeaderName::from_static("client-cert-chain"),
                    chain.join(", "),
                );
            }
        }
        CertForwardFormat::Xfcc => {
            push(HeaderName::from_static("x-forwarded-client-cert"), xfcc(c))
        }
        CertForwardFormat::Pem => push(pem_header.clone(), url_escape(&pem(&c.der))),
    }
}

/// RFC 8941 byte sequence: `:<base64>:`.
fn sf_binary(der: &[u8]) -> String {
    format!(":{}:", STANDARD.encode(der))
}

/// Envoy's XFCC element: `Hash=<hex sha256>;Subject="…";URI=…;DNS=…`.
fn xfcc(c: &ClientCert) -> String {
    let mut s = format!(
        "Hash={};Subject=\"{}\"",
        c.sha256_hex(),
        c.subject.replace('"', "\\\"")
    );
    for u in &c.san_uri {
        s.push_str(&format!(";URI={}", xfcc_value(u)));
    }
    for d in &c.san_dns {
        s.push_str(&format!(";DNS={}", xfcc_value(d)));
    }
    s
}

fn xfcc_value(v: &str) -> String {
    if v.contains([',', ';', '=', '"']) {
        format!("\"{}\"", v.replace('"', "\\\""))
    } else {
        v.to_owned()
    }
}

fn pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

/// Percent-encode everything but unreserved characters (as NGINX's `$ssl_client_escaped_cert`).
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let c = ClientCert {
            der: vec![1, 2, 3],
            chain_der: vec![vec![4, 5]],
            subject: "CN=a, O=b".into(),
            san_uri: vec!["spiffe://x/y".into()],
            ..Default::default()
        };
        let name = HeaderName::from_static("x-ssl-client-cert");
        let mut out = Vec::new();
        let cfg = CertForward {
            format: CertForwardFormat::Rfc9440,
            chain: true,
            header: None,
        };
        // the chain forwarded is the one given (the validation path), not the one sent
        forward_headers(&cfg, &name, &c, &[vec![6], vec![7, 8]], &mut out);
        assert_eq!(out[0].1, ":AQID:");
        assert_eq!(out[1].1, ":Bg==:, :Bwg=:");
        out.clear();
        let cfg = CertForward {
            format: CertForwardFormat::Xfcc,
            chain: false,
            header: None,
        };
        forward_headers(&cfg, &name, &c, &[], &mut out);
        assert!(out[0]
            .1
            .to_str()
            .unwrap_or_default()
            .ends_with(";Subject=\"CN=a, O=b\";URI=spiffe://x/y"));
        out.clear();
        let cfg = CertForward {
            format: CertForwardFormat::Pem,
            chain: false,
            header: None,
        };
        forward_headers(&cfg, &name, &c, &[], &mut out);
        assert!(out[0]
            .1
            .to_str()
            .unwrap_or_default()
            .starts_with("-----BEGIN%20CERTIFICATE-----%0AAQID%0A"));
    }
}
