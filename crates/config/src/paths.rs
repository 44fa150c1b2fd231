//! Relative file paths in a configuration file name files beside it: they are resolved
//! against the file's directory when it is loaded, whatever the working directory.

use crate::model::*;
use std::path::Path;

/// Make every relative file path in `c` relative to `base` (the config file's directory).
pub fn resolve(c: &mut Config, base: &Path) {
    let fix = |p: &mut String| {
        if !p.is_empty() && Path::new(p.as_str()).is_relative() {
            *p = base.join(p.as_str()).display().to_string();
        }
    };
    let fix_opt = |p: &mut Option<String>| {
        if let Some(p) = p {
            fix(p);
        }
    };
    fix_opt(&mut c.server.upgrade_sock);
    if let Some(log) = &mut c.log.access_log {
        if log != "stdout" && log != "off" {
            fix(log);
        }
    }
    for l in &mut c.listeners {
        if let Some(t) = &mut l.tls {
            fix(&mut t.cert_file);
            fix(&mut t.key_file);
            t.client_auth.ca_files.iter_mut().for_each(fix);
            t.session_ticket_key_files.iter_mut().for_each(fix);
        }
    }
    for a in c.authorization_servers.values_mut() {
        fix_opt(&mut a.jwks_file);
        fix_opt(&mut a.ca_file);
        fix_opt(&mut a.hmac_secret_file);
        if let Some(i) = &mut a.introspection {
            let ca = &mut i.client_auth;
            fix_opt(&mut ca.client_secret_file);
            fix_opt(&mut ca.private_key_file);
            fix_opt(&mut ca.cert_file);
            fix_opt(&mut ca.key_file);
        }
    }
    if let Some(s) = &mut c.token_signing {
        fix(&mut s.key_file);
    }
    for u in c.upstreams.values_mut() {
        if let Some(t) = &mut u.tls {
            fix_opt(&mut t.ca_file);
        }
    }
    for r in &mut c.routes {
        for f in &mut r.filters {
            if let FilterConfig::ClientCert(cc) = f {
                if let Some(files) = &mut cc.ca_files {
                    files.iter_mut().for_each(fix);
                }
                cc.revocation.crl_files.iter_mut().for_each(fix);
            }
        }
    }
}
