//! The files a configuration names, read and parsed before anything is built: every
//! certificate, key, CA bundle, CRL and key file that cannot be used is reported at once,
//! each with the field that names it (and so its line), instead of the build stopping at
//! the first with a bare file name.

use gatehouse_config::{ClientAuthMethod, Config, FilterConfig};
use openssl::pkey::PKey;
use openssl::x509::X509;

/// Every unusable file, as (field path, message).
pub fn problems(c: &Config) -> Vec<(String, String)> {
    let mut p = Vec::new();
    let bundle = |p: &mut Vec<(String, String)>, at: String, f: &str| {
        if let Err(e) = gatehouse_mtls::load_pem_bundle(f) {
            p.push((at, e.to_string()));
        }
    };
    for (i, l) in c.listeners.iter().enumerate() {
        let Some(t) = &l.tls else { continue };
        let at = format!("listeners[{i}].tls");
        let leaf = match std::fs::read(&t.cert_file) {
            Err(e) => {
                p.push((format!("{at}.cert_file"), format!("{}: {e}", t.cert_file)));
                None
            }
            Ok(pem) => match X509::stack_from_pem(&pem) {
                Ok(certs) if !certs.is_empty() => certs.into_iter().next(),
                Ok(_) => {
                    p.push((
                        format!("{at}.cert_file"),
                        format!("{}: no PEM certificate in it", t.cert_file),
                    ));
                    None
                }
                Err(e) => {
                    p.push((format!("{at}.cert_file"), format!("{}: {e}", t.cert_file)));
                    None
                }
            },
        };
        let key = match std::fs::read(&t.key_file) {
            Err(e) => {
                p.push((format!("{at}.key_file"), format!("{}: {e}", t.key_file)));
                None
            }
            Ok(pem) => match PKey::private_key_from_pem(&pem) {
                Ok(k) => Some(k),
                Err(_) => {
                    p.push((
                        format!("{at}.key_file"),
                        format!("{}: not a PEM private key", t.key_file),
                    ));
                    None
                }
            },
        };
        if let (Some(leaf), Some(key)) = (leaf, key) {
            let matches = leaf.public_key().is_ok_and(|k| k.public_eq(&key));
            if !matches {
                p.push((
                    format!("{at}.key_file"),
                    format!(
                        "{}: the key does not match the certificate in {}",
                        t.key_file, t.cert_file
                    ),
                ));
            }
        }
        for (j, f) in t.client_auth.ca_files.iter().enumerate() {
            bundle(&mut p, format!("{at}.client_auth.ca_files[{j}]"), f);
        }
        for (j, f) in t.session_ticket_key_files.iter().enumerate() {
            if let Err(e) = crate::listeners::tickets::load(std::slice::from_ref(f)) {
                p.push((format!("{at}.session_ticket_key_files[{j}]"), e.to_string()));
            }
        }
    }
    for (name, a) in &c.authorization_servers {
        let at = format!("authorization_servers.{name}");
        if let Some(f) = &a.ca_file {
            bundle(&mut p, format!("{at}.ca_file"), f);
        }
        if let Some(f) = &a.jwks_file {
            let ok = std::fs::read(f).map_err(|e| e.to_string()).and_then(|b| {
                match serde_json::from_slice::<serde_json::Value>(&b) {
                    Ok(v) if v.get("keys").is_some_and(|k| k.is_array()) => Ok(()),
                    Ok(_) => Err("not a JWKS: no \"keys\" array".to_owned()),
                    Err(e) => Err(format!("not a JWKS: {e}")),
                }
            });
            if let Err(e) = ok {
                p.push((format!("{at}.jwks_file"), format!("{f}: {e}")));
            }
        }
        let Some(i) = &a.introspection else { continue };
        let ca = &i.client_auth;
        let at = format!("{at}.introspection.client_auth");
        match ca.method {
            ClientAuthMethod::PrivateKeyJwt => {
                if let Some(f) = &ca.private_key_file {
                    let ok = std::fs::read(f).map_err(|e| e.to_string()).and_then(|pem| {
                        gatehouse_phantom::signing_key(&pem, ca.algorithm.as_deref()).map(|_| ())
                    });
                    if let Err(e) = ok {
                        p.push((format!("{at}.private_key_file"), format!("{f}: {e}")));
                    }
                }
            }
            ClientAuthMethod::TlsClientAuth => {
                for (field, f) in [("cert_file", &ca.cert_file), ("key_file", &ca.key_file)] {
                    let Some(f) = f else { continue };
                    let ok = std::fs::read(f).map_err(|e| e.to_string()).and_then(|pem| {
                        if field == "cert_file" {
                            X509::from_pem(&pem)
                                .map(|_| ())
                                .map_err(|_| "not a PEM certificate".to_owned())
                        } else {
                            PKey::private_key_from_pem(&pem)
                                .map(|_| ())
                                .map_err(|_| "not a PEM private key".to_owned())
                        }
                    });
                    if let Err(e) = ok {
                        p.push((format!("{at}.{field}"), format!("{f}: {e}")));
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(s) = &c.token_signing {
        if let Err(e) = gatehouse_phantom::Signer::from_config(s) {
            let e = if e.starts_with(&s.key_file) {
                e
            } else {
                format!("{}: {e}", s.key_file)
            };
            p.push(("token_signing.key_file".into(), e));
        }
    }
    for (name, u) in &c.upstreams {
        if let Some(f) = u.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
            bundle(&mut p, format!("upstreams.{name}.tls.ca_file"), f);
        }
    }
    for (ri, r) in c.routes.iter().enumerate() {
        for (fi, f) in r.filters.iter().enumerate() {
            let FilterConfig::ClientCert(cc) = f else {
                continue;
            };
            let at = format!("routes[{ri}].filters[{fi}]");
            for (j, f) in cc.ca_files.iter().flatten().enumerate() {
                bundle(&mut p, format!("{at}.ca_files[{j}]"), f);
            }
            for (j, f) in cc.revocation.crl_files.iter().enumerate() {
                if let Err(e) = gatehouse_mtls::load_crl(f) {
                    p.push((format!("{at}.revocation.crl_files[{j}]"), e.to_string()));
                }
            }
        }
    }
    p
}
