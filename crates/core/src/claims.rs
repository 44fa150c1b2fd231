//! The claims of a verified access token, packed into one allocation: the claims every
//! request reads (`exp`, `cnf`, scopes, `client_id`, `sub`) decoded once, the others kept
//! as JSON text when a route's rules need them, and an attachment (a phantom-token entry's
//! `Bearer <jwt>` for the upstream) — so a cached token costs one allocation and a hit one
//! reference-count increment.

use std::sync::OnceLock;
use std::time::{Duration, Instant};
use triomphe::ThinArc;

type Map = serde_json::Map<String, serde_json::Value>;

/// How long a cache may serve a verified token: set by the cache that holds it, read by
/// nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reuse {
    /// Serve as fresh until then.
    pub fresh_until: Instant,
    /// Keep in the cache this long from insertion (fresh + stale-if-error window).
    pub keep_for: Duration,
}

/// Verified token claims, stored compactly because a cache may hold a million of them.
///
/// One allocation holds everything a cached token costs (a second, small one holds the
/// parsed claims when every claim is kept, [`Keep::All`]): a fixed head (`exp`,
/// `cnf."x5t#S256"` decoded, where each field ends, [`Reuse`]) and one byte string with
/// the holder's attachment (the phantom-token filter keeps `Bearer <jwt>` there, the one
/// copy of the JWT), the scopes, `client_id`, `sub` and — only when some rule may read
/// another claim — the whole claim set as JSON text, parsed once per token on first use
/// ([`Claims::map`]). Cloning is one reference-count increment.
#[derive(Clone)]
pub struct Claims(ThinArc<Head, u8>);

struct Head {
    reuse: Option<Reuse>,
    exp: i64,
    /// Where the attachment, the scopes, `client_id` and `sub` end in the byte string; the
    /// JSON text (if kept) runs from the last to its end.
    ends: [u32; 4],
    /// `None`: only the hot fields were kept ([`Claims::hot_only`]); else the parsed claims,
    /// filled from the JSON text on first use (or at once, [`Claims::parsed`]).
    full: Option<Box<OnceLock<Map>>>,
    cnf: Cnf,
    /// Which of the scopes, `client_id`, `sub` and `exp` the token has (`HAS_*` bits).
    present: u8,
}

const HAS_SCOPES: u8 = 1;
const HAS_CLIENT_ID: u8 = 2;
const HAS_SUB: u8 = 4;
const HAS_EXP: u8 = 8;

/// Which claims a [`Claims`] keeps beyond the ones the request path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Only `exp`, `cnf."x5t#S256"`, the scopes, `client_id` and `sub`: [`Claims::get`]
    /// finds no other claim (rules asking for one fail closed).
    Hot,
    /// Every claim, as JSON text parsed on first use.
    All,
}

/// The `cnf` claim as far as certificate binding is concerned.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Cnf {
    #[default]
    Absent,
    /// A `cnf` claim without a usable `x5t#S256` (another method, or not a canonical
    /// base64url SHA-256).
    Unusable,
    /// `x5t#S256`, decoded.
    S256([u8; 32]),
}

impl Default for Claims {
    fn default() -> Self {
        Self::hot_only(&Map::new())
    }
}

impl std::fmt::Debug for Claims {
    /// Never the attachment (a credential): only its length.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("exp", &self.exp())
            .field("scopes", &self.text_field(HAS_SCOPES))
            .field("client_id", &self.text_field(HAS_CLIENT_ID))
            .field("sub", &self.text_field(HAS_SUB))
            .field("cnf", &self.head().cnf)
            .field("attachment_bytes", &self.attachment().len())
            .field("all_claims", &self.head().full.is_some())
            .finish()
    }
}

impl Claims {
    /// Compact form keeping every claim (as JSON text, parsed when first asked for).
    pub fn new(map: Map) -> Self {
        Self::cached(&map, Keep::All, b"", None)
    }

    /// Smallest form: only the hot fields; [`Claims::get`] then finds no claim (rules
    /// asking for one fail closed). For caches whose routes need nothing else.
    pub fn hot_only(map: &Map) -> Self {
        Self::cached(map, Keep::Hot, b"", None)
    }

    /// Already-parsed form, for claims used once (a JWT verified for this request).
    pub fn parsed(map: Map) -> Self {
        let c = Self::build(&map, None, Some(Box::default()), b"", None);
        if let Some(full) = &c.head().full {
            let _ = full.set(map);
        }
        c
    }

    /// The form a cache holds: the claims kept as `keep` says, with `attachment` (bytes the
    /// holder wants kept with them, in the same allocation) and how long it may be reused.
    pub fn cached(map: &Map, keep: Keep, attachment: &[u8], reuse: Option<Reuse>) -> Self {
        match keep {
            Keep::Hot => Self::build(map, None, None, attachment, reuse),
            Keep::All => {
                let json = serde_json::to_string(map).unwrap_or_default();
                Self::build(map, Some(&json), Some(Box::default()), attachment, reuse)
            }
        }
    }

    fn build(
        map: &Map,
        json: Option<&str>,
        full: Option<Box<OnceLock<Map>>>,
        attachment: &[u8],
        reuse: Option<Reuse>,
    ) -> Self {
        let s = |k: &str| map.get(k).and_then(|v| v.as_str());
        let mut scopes: Vec<&str> = Vec::new();
        for k in ["scope", "scp"] {
            match map.get(k) {
                Some(serde_json::Value::String(s)) => scopes.extend(s.split(' ')),
                Some(serde_json::Value::Array(a)) => {
                    scopes.extend(a.iter().filter_map(|x| x.as_str()))
                }
                _ => {}
            }
        }
        scopes.retain(|x| !x.is_empty() && !x.contains(' '));
        let cnf = match map.get("cnf") {
            None => Cnf::Absent,
            Some(c) => c
                .get("x5t#S256")
                .and_then(|v| v.as_str())
                .and_then(decode_x5t_s256)
                .map_or(Cnf::Unusable, Cnf::S256),
        };
        let exp = map.get("exp").and_then(|v| v.as_i64());
        let client_id = s("client_id");
        let sub = s("sub");
        let mut present = 0;
        for (has, bit) in [
            (!scopes.is_empty(), HAS_SCOPES),
            (client_id.is_some(), HAS_CLIENT_ID),
            (sub.is_some(), HAS_SUB),
            (exp.is_some(), HAS_EXP),
        ] {
            if has {
                present |= bit;
            }
        }
        let fields = [
            attachment.len(),
            scopes.iter().map(|x| x.len() + 1).sum::<usize>(),
            client_id.map_or(0, str::len),
            sub.map_or(0, str::len),
            json.map_or(0, str::len),
        ];
        let total: usize = fields.iter().sum();
        if u32::try_from(total).is_err() {
            // > 4 GiB of claims cannot pass the header and body limits; keep nothing (an
            // entry without an attachment is never taken for an active token: fail closed)
            let head = Head {
                reuse,
                exp: exp.unwrap_or_default(),
                ends: [0; 4],
                full: full.map(|_| Box::default()),
                cnf,
                present: present & HAS_EXP,
            };
            return Self(ThinArc::from_header_and_slice(head, &[]));
        }
        let mut bytes = Vec::with_capacity(total);
        // every end fits in a u32: the total does (checked above)
        let end = |b: &Vec<u8>| b.len() as u32;
        let mut ends = [0u32; 4];
        bytes.extend_from_slice(attachment);
        ends[0] = end(&bytes);
        bytes.extend_from_slice(scopes.join(" ").as_bytes());
        ends[1] = end(&bytes);
        bytes.extend_from_slice(client_id.unwrap_or_default().as_bytes());
        ends[2] = end(&bytes);
        bytes.extend_from_slice(sub.unwrap_or_default().as_bytes());
        ends[3] = end(&bytes);
        bytes.extend_from_slice(json.unwrap_or_default().as_bytes());
        let head = Head {
            reuse,
            exp: exp.unwrap_or_default(),
            ends,
            full,
            cnf,
            present,
        };
        Self(ThinArc::from_header_and_slice(head, &bytes))
    }

    fn head(&self) -> &Head {
        &self.0.header.header
    }

    fn bytes(&self) -> &[u8] {
        &self.0.slice
    }

    /// `bytes[a..b]` of the byte string, as text.
    fn text(&self, a: u32, b: Option<u32>) -> Option<&str> {
        let bytes = self.bytes();
        let a = a as usize;
        let b = b.map_or(bytes.len(), |b| b as usize);
        std::str::from_utf8(bytes.get(a..b)?).ok()
    }

    /// One of the fields kept in the byte string, if present.
    fn text_field(&self, bit: u8) -> Option<&str> {
        let h = self.head();
        if h.present & bit == 0 {
            return None;
        }
        let [attachment, scopes, client_id, sub] = h.ends;
        match bit {
            HAS_SCOPES => self.text(attachment, Some(scopes)),
            HAS_CLIENT_ID => self.text(scopes, Some(client_id)),
            _ => self.text(client_id, Some(sub)),
        }
    }

    /// The bytes the holder attached ([`Claims::cached`]); empty if none.
    pub fn attachment(&self) -> &[u8] {
        self.bytes()
            .get(..self.head().ends[0] as usize)
            .unwrap_or_default()
    }

    /// Whether both are the very same claims (one allocation), not merely equal ones.
    pub fn same(&self, other: &Claims) -> bool {
        std::ptr::eq(self.0.ptr(), other.0.ptr())
    }

    /// How long a cache may serve these claims, if a cache set it.
    pub fn reuse(&self) -> Option<Reuse> {
        self.head().reuse
    }

    /// Every claim (parsed from the stored JSON on first use; empty for
    /// [`Claims::hot_only`]).
    pub fn map(&self) -> &Map {
        static EMPTY: OnceLock<Map> = OnceLock::new();
        match &self.head().full {
            Some(full) => full.get_or_init(|| {
                self.text(self.head().ends[3], None)
                    .and_then(|j| serde_json::from_str(j).ok())
                    .unwrap_or_default()
            }),
            None => EMPTY.get_or_init(Map::new),
        }
    }

    /// One claim.
    pub fn get(&self, name: &str) -> Option<&serde_json::Value> {
        self.map().get(name)
    }

    /// A string claim (the hot ones without parsing).
    pub fn str_claim(&self, name: &str) -> Option<&str> {
        match name {
            "client_id" => self.text_field(HAS_CLIENT_ID),
            "sub" => self.text_field(HAS_SUB),
            _ => self.get(name).and_then(|v| v.as_str()),
        }
    }

    /// `exp`, if the token has one.
    pub fn exp(&self) -> Option<i64> {
        let h = self.head();
        (h.present & HAS_EXP != 0).then_some(h.exp)
    }

    /// Whether there is a `cnf` claim at all.
    pub fn has_cnf(&self) -> bool {
        self.head().cnf != Cnf::Absent
    }

    /// RFC 8705 §3.1 `cnf."x5t#S256"`, decoded, if present and well-formed.
    pub fn cnf_x5t_s256(&self) -> Option<&[u8; 32]> {
        match &self.head().cnf {
            Cnf::S256(d) => Some(d),
            _ => None,
        }
    }

    /// The granted scopes: `scope` (space-separated, RFC 9068) and Azure AD's `scp` (string
    /// or array).
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.text_field(HAS_SCOPES)
            .unwrap_or_default()
            .split(' ')
            .filter(|x| !x.is_empty())
    }
}

/// `x5t#S256` → the SHA-256 it encodes: exactly 43 characters of canonical, unpadded
/// base64url (RFC 8705 §3.1, RFC 7515 §2), so decoding and comparing digests accepts
/// exactly the strings that equal the certificate's own `x5t#S256`.
fn decode_x5t_s256(s: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    if s.len() != 43 {
        return None;
    }
    let mut out = [0u8; 32];
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode_slice(s, &mut out)
        .ok()?;
    (n == 32).then_some(out)
}

#[cfg(test)]
mod claims_tests {
    use super::*;

    /// base64url of 32 bytes of 0xfb
    const B64_FB: &str = "-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_s";

    #[test]
    fn compact_and_parsed_claims_answer_alike() {
        let v = serde_json::json!({
            "sub": "partner-a", "client_id": "pa", "scope": "a  b", "exp": 10,
            "roles": ["r"], "cnf": {"x5t#S256": B64_FB},
        });
        let map = v.as_object().cloned().unwrap_or_default();
        for c in [Claims::new(map.clone()), Claims::parsed(map.clone())] {
            assert_eq!(c.str_claim("sub"), Some("partner-a"));
            assert_eq!(c.str_claim("client_id"), Some("pa"));
            assert_eq!(c.exp(), Some(10));
            assert_eq!(c.cnf_x5t_s256(), Some(&[0xfb; 32]));
            assert!(c.has_cnf());
            assert_eq!(c.scopes().collect::<Vec<_>>(), ["a", "b"]);
            assert_eq!(c.get("roles"), map.get("roles"));
            assert_eq!(c.map(), &map);
        }
        let scp = serde_json::json!({"scope": "x", "scp": ["y", "z"], "cnf": {}});
        let c = Claims::new(scp.as_object().cloned().unwrap_or_default());
        assert_eq!(c.scopes().collect::<Vec<_>>(), ["x", "y", "z"]);
        assert!(c.has_cnf());
        assert_eq!(c.cnf_x5t_s256(), None);
        assert_eq!(Claims::default().scopes().count(), 0);
        let scp = serde_json::json!({"scp": "p q"});
        let c = Claims::new(scp.as_object().cloned().unwrap_or_default());
        assert_eq!(c.scopes().collect::<Vec<_>>(), ["p", "q"]);
    }

    #[test]
    fn absent_and_empty_hot_claims_stay_apart() {
        let v = serde_json::json!({"client_id": "", "sub": "s", "exp": "not a number"});
        for c in [
            Claims::hot_only(v.as_object().unwrap()),
            Claims::new(v.as_object().cloned().unwrap()),
        ] {
            assert_eq!(c.str_claim("client_id"), Some(""));
            assert_eq!(c.str_claim("sub"), Some("s"));
            assert_eq!(c.exp(), None);
            assert_eq!(c.scopes().count(), 0);
        }
        let v = serde_json::json!({"scope": "a b", "exp": 0});
        let c = Claims::hot_only(v.as_object().unwrap());
        assert_eq!((c.str_claim("client_id"), c.str_claim("sub")), (None, None));
        assert_eq!(c.exp(), Some(0));
        assert_eq!(c.scopes().collect::<Vec<_>>(), ["a", "b"]);
        let v = serde_json::json!({"client_id": "c"});
        let c = Claims::hot_only(v.as_object().unwrap());
        assert_eq!(
            (c.str_claim("client_id"), c.str_claim("sub")),
            (Some("c"), None)
        );
        assert_eq!(c.scopes().count(), 0);
    }

    #[test]
    fn a_cached_form_keeps_its_attachment_and_reuse_beside_the_claims() {
        let v = serde_json::json!({
            "sub": "s", "client_id": "c", "scope": "a b", "exp": 7, "roles": ["r"],
            "cnf": {"x5t#S256": B64_FB},
        });
        let map = v.as_object().cloned().unwrap_or_default();
        let reuse = Reuse {
            fresh_until: std::time::Instant::now(),
            keep_for: std::time::Duration::from_secs(9),
        };
        for keep in [Keep::Hot, Keep::All] {
            let c = Claims::cached(&map, keep, b"Bearer secret.jwt", Some(reuse));
            assert_eq!(c.attachment(), b"Bearer secret.jwt");
            assert_eq!(c.reuse(), Some(reuse));
            assert_eq!(c.str_claim("sub"), Some("s"));
            assert_eq!(c.str_claim("client_id"), Some("c"));
            assert_eq!(c.scopes().collect::<Vec<_>>(), ["a", "b"]);
            assert_eq!(c.exp(), Some(7));
            assert_eq!(c.cnf_x5t_s256(), Some(&[0xfb; 32]));
            assert_eq!(c.get("roles").is_some(), keep == Keep::All);
            // the attachment is a credential: Debug gives its length only
            let debug = format!("{c:?}");
            assert!(!debug.contains("secret"), "{debug}");
            assert!(debug.contains("attachment_bytes: 17"), "{debug}");
            // clones share the one allocation
            assert!(c.clone().same(&c));
            assert!(!c.same(&Claims::cached(
                &map,
                keep,
                b"Bearer secret.jwt",
                Some(reuse)
            )));
        }
        let plain = Claims::new(map.clone());
        assert_eq!((plain.attachment(), plain.reuse()), (&b""[..], None));
    }

    #[test]
    fn hot_only_claims_keep_what_the_request_path_reads_and_nothing_else() {
        let v = serde_json::json!({
            "sub": "s", "client_id": "c", "scope": "a b", "exp": 7, "roles": ["r"],
            "cnf": {"x5t#S256": B64_FB},
        });
        let c = Claims::hot_only(v.as_object().unwrap());
        assert_eq!(
            (c.str_claim("sub"), c.str_claim("client_id")),
            (Some("s"), Some("c"))
        );
        assert_eq!(c.exp(), Some(7));
        assert_eq!(c.cnf_x5t_s256(), Some(&[0xfb; 32]));
        assert_eq!(c.scopes().collect::<Vec<_>>(), ["a", "b"]);
        // anything else is absent, so a rule on it fails closed
        assert_eq!(c.get("roles"), None);
        assert!(c.map().is_empty());
    }

    #[test]
    fn only_a_canonical_x5t_s256_binds() {
        let cnf = |x: &str| {
            let v = serde_json::json!({"cnf": {"x5t#S256": x}});
            Claims::new(v.as_object().cloned().unwrap_or_default())
        };
        assert_eq!(cnf(B64_FB).cnf_x5t_s256(), Some(&[0xfb; 32]));
        // padded, standard alphabet, truncated, non-canonical last character: present but
        // unusable (never equal to a certificate's x5t#S256 string either)
        let padded = format!("{B64_FB}=");
        let standard = B64_FB.replace(['-', '_'], "+");
        let mut noncanonical = B64_FB.to_owned();
        noncanonical.replace_range(42.., "t");
        for bad in [&padded, &standard, &B64_FB[..42], &noncanonical, "abc"] {
            let c = cnf(bad);
            assert!(c.has_cnf(), "{bad}");
            assert_eq!(c.cnf_x5t_s256(), None, "{bad}");
        }
    }
}
