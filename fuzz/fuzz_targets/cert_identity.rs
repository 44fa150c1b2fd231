//! Certificate parsing and identity matching on arbitrary DER, and DN parsing on
//! arbitrary text.
#![no_main]
use gatehouse_config::Identity;
use gatehouse_mtls::{parse, parse_dn, IdentityMatcher};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(dn) = parse_dn(text) {
            assert!(!dn.is_empty());
        }
        let id = Identity {
            subject: Some(text.to_owned()),
            san_uri: Some(format!("{text}*")),
            san_dns: Some(format!("*.{text}")),
            ..Default::default()
        };
        let _ = IdentityMatcher::new(&id);
    }
    if let Ok(cert) = parse::parse(data, Vec::new(), None) {
        let m = IdentityMatcher::new(&Identity { common_name: Some("partner-a".into()), ..Default::default() });
        if let Ok(m) = m {
            let _ = m.matches(&cert);
        }
        let _ = parse_dn(&cert.subject);
    }
});
