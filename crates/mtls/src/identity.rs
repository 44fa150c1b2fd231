//! APIM-style certificate identities: a certificate is allowed when it matches ANY
//! identity, and it matches an identity when ALL of that identity's fields match.

use gatehouse_config::Identity;
use gatehouse_core::ClientCert;
use subtle::ConstantTimeEq;

/// A DN normalized for comparison: attribute names upper-cased, pairs sorted (RDN order
/// does not matter), values exact.
pub type NormDn = Vec<(String, String)>;

/// Parse `CN=partner, O=Partner Inc` (RFC 4514 escapes `\,` `\+` `\\` honoured).
pub fn parse_dn(s: &str) -> Result<NormDn, String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => return Err(format!("{s:?} ends with a lone backslash")),
            },
            ',' | '+' | ';' => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    let mut out = Vec::new();
    for p in parts {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("{p:?} is not ATTRIBUTE=value"))?;
        let key = match k.trim().to_ascii_uppercase().as_str() {
            "E" | "EMAIL" => "EMAILADDRESS".to_owned(),
            "S" => "ST".to_owned(),
            other => other.to_owned(),
        };
        out.push((key, unescape(v.trim())));
    }
    if out.is_empty() {
        return Err("empty distinguished name".to_owned());
    }
    out.sort();
    Ok(out)
}

fn unescape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                s.push(n);
            }
        } else {
            s.push(c);
        }
    }
    s
}

/// Hex thumbprint as written by APIM or `openssl x509 -fingerprint`: any case, optional colons.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let clean: String = s
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect();
    hex::decode(clean.to_ascii_lowercase()).map_err(|e| format!("{s:?}: {e}"))
}

fn normalize_serial(s: &str) -> String {
    let clean: String = s
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    let trimmed = clean.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// One identity, pre-parsed at config load.
#[derive(Debug, Clone, Default)]
pub struct IdentityMatcher {
    thumbprint_sha256: Option<Vec<u8>>,
    thumbprint_sha1: Option<Vec<u8>>,
    serial: Option<String>,
    subject: Option<NormDn>,
    common_name: Option<String>,
    issuer_subject: Option<NormDn>,
    issuer_thumbprint_sha256: Option<Vec<u8>>,
    san_dns: Option<String>,
    san_uri: Option<String>,
    san_email: Option<String>,
}

impl IdentityMatcher {
    /// Parse a configured identity.
    pub fn new(id: &Identity) -> Result<Self, String> {
        Ok(Self {
            thumbprint_sha256: id.thumbprint_sha256.as_deref().map(parse_hex).transpose()?,
            thumbprint_sha1: id.thumbprint_sha1.as_deref().map(parse_hex).transpose()?,
            serial: id.serial.as_deref().map(normalize_serial),
            subject: id.subject.as_deref().map(parse_dn).transpose()?,
            common_name: id.common_name.clone(),
            issuer_subject: id.issuer_subject.as_deref().map(parse_dn).transpose()?,
            issuer_thumbprint_sha256: id
                .issuer_thumbprint_sha256
                .as_deref()
                .map(parse_hex)
                .transpose()?,
            san_dns: id.san_dns.clone(),
            san_uri: id.san_uri.clone(),
            san_email: id.san_email.clone(),
        })
    }

    /// Whether every configured field matches `c`.
    pub fn matches(&self, c: &ClientCert) -> bool {
        fn ct(a: &[u8], b: &[u8]) -> bool {
            a.len() == b.len() && bool::from(a.ct_eq(b))
        }
        if let Some(t) = &self.thumbprint_sha256 {
            if !ct(t, &c.sha256) {
                return false;
            }
        }
        if let Some(t) = &self.thumbprint_sha1 {
            if !ct(t, &c.sha1) {
                return false;
            }
        }
        if let Some(t) = &self.issuer_thumbprint_sha256 {
            match &c.issuer_sha256 {
                Some(i) if ct(t, i) => {}
                _ => return false,
            }
        }
        if let Some(s) = &self.serial {
            if *s != normalize_serial(&c.serial_hex) {
                return false;
            }
        }
        if let Some(dn) = &self.subject {
            if parse_dn(&c.subject).ok().as_ref() != Some(dn) {
                return false;
            }
        }
        if let Some(dn) = &self.issuer_subject {
            if parse_dn(&c.issuer).ok().as_ref() != Some(dn) {
                return false;
            }
        }
        if let Some(cn) = &self.common_name {
            if c.common_name.as_ref() != Some(cn) {
                return false;
            }
        }
        if let Some(p) = &self.san_dns {
            if !c.san_dns.iter().any(|d| dns_matches(p, d)) {
                return false;
            }
        }
        if let Some(p) = &self.san_uri {
            if !c.san_uri.iter().any(|u| uri_matches(p, u)) {
                return false;
            }
        }
        if let Some(e) = &self.san_email {
            if !c.san_email.iter().any(|x| email_matches(e, x)) {
                return false;
            }
        }
        true
    }
}

/// `*.partner.example` matches exactly one extra leftmost label; otherwise exact. DNS names
/// compare without regard to ASCII case (RFC 4343, RFC 5280 §7.2).
fn dns_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix)),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

/// rfc822Name: the local part exactly, the domain without regard to ASCII case (RFC 5280
/// §7.5).
fn email_matches(pattern: &str, email: &str) -> bool {
    match (pattern.rsplit_once('@'), email.rsplit_once('@')) {
        (Some((pl, pd)), Some((el, ed))) => pl == el && pd.eq_ignore_ascii_case(ed),
        _ => pattern == email,
    }
}

/// A trailing `*` makes a prefix match (`spiffe://partner.example/ns/*`); otherwise exact.
fn uri_matches(pattern: &str, uri: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => uri.starts_with(prefix) && uri.len() > prefix.len(),
        None => pattern == uri,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> ClientCert {
        ClientCert {
            subject: "CN=partner-a, O=Partner A, C=DE".into(),
            issuer: "CN=Gatehouse Dev Intermediate, O=Gatehouse Dev".into(),
            common_name: Some("partner-a".into()),
            serial_hex: "0A1B".into(),
            sha256: [0xab; 32],
            sha1: [0xcd; 20],
            issuer_sha256: Some([0x11; 32]),
            san_dns: vec!["api.partner-a.example".into()],
            san_uri: vec!["spiffe://partner-a.example/ns/prod/sa/billing".into()],
            san_email: vec!["ops@partner-a.example".into()],
            ..Default::default()
        }
    }

    fn m(id: Identity) -> IdentityMatcher {
        IdentityMatcher::new(&id).unwrap_or_default()
    }

    #[test]
    fn each_field_matches_and_near_misses_fail() {
        let c = cert();
        let cases: Vec<(Identity, Identity)> = vec![
            (
                Identity {
                    thumbprint_sha256: Some("AB:".repeat(31) + "AB"),
                    ..Default::default()
                },
                Identity {
                    thumbprint_sha256: Some("ab".repeat(31) + "ac"),
                    ..Default::default()
                },
            ),
            (
                Identity {
                    thumbprint_sha1: Some("CD".repeat(20)),
                    ..Default::default()
                },
                Identity {
                    thumbprint_sha1: Some("cd".repeat(19) + "ce"),
                    ..Default::default()
                },
            ),
            (
                Identity {
                    serial: Some("0a:1b".into()),
                    ..Default::default()
                },
                Identity {
                    serial: Some("0a1c".into()),
                    ..Default::default()
                },
            ),
            (
                Identity {
                    subject: Some("c=DE,o=Partner A,cn=partner-a".into()),
                    ..Default::default()
                },
                Identity {
                    subject: Some("CN=Partner-a, O=Partner A, C=DE".into()),
                    ..Default::default()
                },
            ),
            (
                Identity {
                    common_name: Some("partner-a".into()),
                    ..Default::default()
                },
                Identity {
                    common_name: Some("partner-b".into()),
                    ..Default::default()
                },
            ),
            (
                Identity {
                    issuer_subject: Some("O=Gatehouse Dev, CN=Gatehouse Dev Intermediate".into()),
                    ..Default::default()
                },
                Identity {
                    issuer_subject: Some("CN=Gatehouse Dev Intermediate".into()),
                    ..Default::default()
                },
            ),
            (
                Identity {
                    issuer_thumbprint_sha256: Some("11".repeat(32)),
                    ..Default::default()
                },
                Identity {
                    issuer_thumbprint_sha256: Some("12".repeat(32)),
                    ..Default::default()
                },
            ),
            (
                Identity {
                    san_dns: Some("*.partner-a.example".into()),
                    ..Default::default()
                },
                Identity {
                    san_dns: Some("*.example".into()),
                    ..Default::default()
                },
            ),
            (
                Identity {
                    san_uri: Some("spiffe://partner-a.example/ns/prod/*".into()),
                    ..Default::default()
                },
                Identity {
                    san_uri: Some("spiffe://partner-a.example/ns/dev/*".into()),
                    ..Default::default()
                },
            ),
            (
                Identity {
                    san_email: Some("ops@partner-a.example".into()),
                    ..Default::default()
                },
                Identity {
                    san_email: Some("Ops@partner-a.example".into()),
                    ..Default::default()
                },
            ),
            // DNS names and the domain of an email address ignore ASCII case
            (
                Identity {
                    san_dns: Some("API.Partner-A.example".into()),
                    ..Default::default()
                },
                Identity {
                    san_dns: Some("api.partner-b.example".into()),
                    ..Default::default()
                },
            ),
            (
                Identity {
                    san_dns: Some("*.PARTNER-A.example".into()),
                    ..Default::default()
                },
                Identity {
                    san_dns: Some("*.api.partner-a.example".into()),
                    ..Default::default()
                },
            ),
            (
                Identity {
                    san_email: Some("ops@Partner-A.EXAMPLE".into()),
                    ..Default::default()
                },
                Identity {
                    san_email: Some("ops@partner-a.example.org".into()),
                    ..Default::default()
                },
            ),
        ];
        for (yes, no) in cases {
            assert!(m(yes.clone()).matches(&c), "{yes:?}");
            assert!(!m(no.clone()).matches(&c), "{no:?}");
        }
    }

    #[test]
    fn all_fields_of_one_identity_must_match() {
        let id = Identity {
            common_name: Some("partner-a".into()),
            issuer_subject: Some("CN=Someone Else".into()),
            ..Default::default()
        };
        assert!(!m(id).matches(&cert()));
    }

    #[test]
    fn dn_parsing() {
        assert_eq!(
            parse_dn("CN=a\\, b, O=x"),
            Ok(vec![("CN".into(), "a, b".into()), ("O".into(), "x".into())])
        );
        assert!(parse_dn("nonsense").is_err());
        assert!(dns_matches("*.a.example", "x.a.example"));
        assert!(!dns_matches("*.a.example", "y.x.a.example"));
        assert!(!dns_matches("*.a.example", "a.example"));
        assert!(!uri_matches("spiffe://a/*", "spiffe://a/"));
    }
}
