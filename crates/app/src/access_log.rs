//! One JSON line per request. Never the token: only its `client_id`/`sub` claims.

use crate::proxy::Ctx;
use parking_lot::Mutex;
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use std::io::Write;
use std::sync::Arc;

/// Where access-log lines go.
#[derive(Clone)]
pub enum AccessLog {
    Off,
    Stdout,
    File(Arc<Mutex<std::fs::File>>),
}

impl AccessLog {
    /// From the `log.access_log` setting: `stdout` (default), `off`, or a path.
    pub fn open(setting: Option<&str>) -> std::io::Result<Self> {
        Ok(match setting {
            None | Some("stdout") => Self::Stdout,
            Some("off") => Self::Off,
            Some(path) => Self::File(Arc::new(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ))),
        })
    }

    /// Write the line for a finished request. `req` is `None` for a request the HTTP
    /// parser refused (there may be no header to read).
    pub fn write(
        &self,
        session: &Session,
        req: Option<&RequestHeader>,
        ctx: &Ctx,
        status: u16,
        duration: f64,
    ) {
        if matches!(self, Self::Off) {
            return;
        }
        let (chain, ctx) = (ctx, &ctx.req);
        let cert = ctx.accepted_cert.as_ref().or(ctx.presented_cert.as_ref());
        let token = ctx.token.as_ref();
        let line = serde_json::json!({
            "time": humantime_now(),
            "route": &*ctx.route_name,
            "method": req.map(|r| r.method.as_str()),
            "path": req.map(|r| r.uri.path()),
            "status": status,
            "duration_s": (duration * 1e6).round() / 1e6,
            "client": session.client_addr().map(|a| a.to_string()),
            "upstream": chain.upstream_addr.map(|a| a.to_string()),
            "cert_subject": cert.map(|c| c.subject.as_str()),
            "cert_sha256": cert.map(|c| c.sha256_hex()),
            "client_id": token.and_then(|t| t.claim_str("client_id")),
            "sub": token.and_then(|t| t.claim_str("sub")),
            "rejected_by": chain.rejected_by.as_ref().map(|(f, _)| *f),
            "reason": chain.rejected_by.as_ref().map(|(_, r)| r.reason),
        });
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        match self {
            Self::Off => {}
            Self::Stdout => {
                let _ = std::io::stdout().lock().write_all(&bytes);
            }
            Self::File(f) => {
                let mut f = f.lock();
                let _ = f.write_all(&bytes);
            }
        }
    }
}

/// RFC 3339 UTC timestamp with milliseconds, without a date-time dependency.
fn humantime_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // civil from days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_shape() {
        let t = super::humantime_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}
