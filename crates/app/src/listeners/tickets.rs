//! TLS session-ticket keys: a list per listener, the first encrypting new tickets and every
//! one decrypting, read from files every replica shares (so a partner resumes on any pod)
//! and swapped with the rest of the listener's TLS material on reload (so a rotated Secret
//! takes effect without a restart). Without files: one random key per process, shared by
//! its shards, never written anywhere.
//!
//! A ticket also carries the intermediates the client sent in its full handshake (as
//! ticket application data, encrypted and authenticated with the ticket): a resumed session
//! brings back only the leaf, and a replica that never saw that handshake needs the chain
//! to verify the leaf again against root-only CA bundles.
//!
//! The `openssl` crate has neither a ticket-key callback nor ticket application data, so
//! this module calls OpenSSL directly: `SSL_CTX_callback_ctrl(SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB)`
//! (what the C macro `SSL_CTX_set_tlsext_ticket_key_cb` expands to) and
//! `SSL_CTX_set_session_ticket_cb` — the only unsafe code in Gatehouse.
#![allow(unsafe_code)]

use crate::listeners::tls::{Chains, TlsSource};
use crate::BuildError;
use foreign_types::ForeignTypeRef;
use openssl::ex_data::Index;
use openssl::ssl::{SslContext, SslContextBuilder, SslRef};
use openssl::x509::{X509Ref, X509};
use std::ffi::{c_int, c_uchar, c_void};
use std::sync::{Arc, OnceLock};

/// One key: 16 bytes of name (carried in the ticket, to find the key again), an
/// HMAC-SHA256 secret and an AES-CBC key, both 16 bytes (48-byte files: AES-128) or 32
/// (80-byte files: AES-256).
#[derive(Clone)]
pub struct TicketKey {
    name: [u8; 16],
    hmac: Vec<u8>,
    aes: Vec<u8>,
}

impl TicketKey {
    /// From the bytes of a key file, laid out as NGINX's `ssl_session_ticket_key` files:
    /// 48 bytes = name, AES-128 key, HMAC secret; 80 bytes = name, HMAC secret, AES-256 key.
    pub fn from_bytes(b: &[u8]) -> Result<Self, String> {
        let mut name = [0u8; 16];
        let (hmac, aes) = match b.len() {
            48 => (&b[32..48], &b[16..32]),
            80 => (&b[16..48], &b[48..80]),
            n => {
                return Err(format!(
                    "a session-ticket key file holds 80 (or 48) bytes, this one {n}: make one with `openssl rand 80 > ticket.key`"
                ))
            }
        };
        name.copy_from_slice(&b[..16]);
        Ok(Self {
            name,
            hmac: hmac.to_vec(),
            aes: aes.to_vec(),
        })
    }

    /// A random key.
    pub fn random() -> Result<Self, BuildError> {
        let mut b = [0u8; 80];
        openssl::rand::rand_bytes(&mut b)
            .map_err(|e| BuildError::Tls(format!("session-ticket keys: {e}")))?;
        Self::from_bytes(&b).map_err(BuildError::Tls)
    }

    fn cipher(&self) -> *const openssl_sys::EVP_CIPHER {
        // SAFETY: both return pointers to OpenSSL's static cipher descriptions
        unsafe {
            if self.aes.len() == 32 {
                openssl_sys::EVP_aes_256_cbc()
            } else {
                openssl_sys::EVP_aes_128_cbc()
            }
        }
    }
}

/// The configured key files, in order (`None` when there are none).
pub fn load(files: &[String]) -> Result<Option<Arc<[TicketKey]>>, BuildError> {
    if files.is_empty() {
        return Ok(None);
    }
    let keys = files
        .iter()
        .map(|f| {
            let b = std::fs::read(f).map_err(|e| BuildError::Tls(format!("{f}: {e}")))?;
            TicketKey::from_bytes(&b).map_err(|e| BuildError::Tls(format!("{f}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(keys.into()))
}

/// What the callback of a listener's contexts reads: the listener's current material (with
/// the configured keys, if any) and the process's random key for when none are configured.
struct Source {
    material: TlsSource,
    fallback: TicketKey,
    chains: Chains,
}

fn index() -> Result<Index<SslContext, Arc<Source>>, BuildError> {
    static INDEX: OnceLock<Index<SslContext, Arc<Source>>> = OnceLock::new();
    if let Some(i) = INDEX.get() {
        return Ok(*i);
    }
    let i = SslContext::new_ex_index::<Arc<Source>>()
        .map_err(|e| BuildError::Tls(format!("session-ticket keys: {e}")))?;
    Ok(*INDEX.get_or_init(|| i))
}

type Callback = unsafe extern "C" fn(
    *mut openssl_sys::SSL,
    *mut c_uchar,
    *mut c_uchar,
    *mut openssl_sys::EVP_CIPHER_CTX,
    *mut openssl_sys::HMAC_CTX,
    c_int,
) -> c_int;

/// Let this context (one per shard) encrypt and decrypt tickets with the listener's keys.
pub fn install(
    ctx: &mut SslContextBuilder,
    material: TlsSource,
    fallback: TicketKey,
    chains: Chains,
) -> Result<(), BuildError> {
    ctx.set_ex_data(
        index()?,
        Arc::new(Source {
            material,
            fallback,
            chains,
        }),
    );
    const SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB: c_int = 72;
    let cb: Callback = callback;
    // SAFETY: the context is live and exclusively borrowed. OpenSSL keeps the function
    // pointer and calls it with SSL_CTX_set_tlsext_ticket_key_cb's six arguments, which
    // `Callback` declares: the transmute only erases the type, as the C macro's cast does.
    let r = unsafe {
        openssl_sys::SSL_CTX_callback_ctrl__fixed_rust(
            ctx.as_ptr(),
            SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB,
            Some(std::mem::transmute::<Callback, unsafe extern "C" fn()>(cb)),
        )
    };
    // SAFETY: the context is live and exclusively borrowed; both callbacks have the
    // signatures OpenSSL declares for them and use no `arg`
    let r2 = unsafe {
        SSL_CTX_set_session_ticket_cb(
            ctx.as_ptr(),
            Some(generated),
            Some(decrypted),
            std::ptr::null_mut(),
        )
    };
    if r == 1 && r2 == 1 {
        Ok(())
    } else {
        Err(BuildError::Tls(format!(
            "cannot install the session-ticket callbacks: {}",
            openssl::error::ErrorStack::get()
        )))
    }
}

// Not in openssl-sys (OpenSSL 1.1.1+, ssl.h).
extern "C" {
    fn SSL_CTX_set_session_ticket_cb(
        ctx: *mut openssl_sys::SSL_CTX,
        gen_cb: Option<unsafe extern "C" fn(*mut openssl_sys::SSL, *mut c_void) -> c_int>,
        dec_cb: Option<
            unsafe extern "C" fn(
                *mut openssl_sys::SSL,
                *mut openssl_sys::SSL_SESSION,
                *const c_uchar,
                usize,
                c_int,
                *mut c_void,
            ) -> c_int,
        >,
        arg: *mut c_void,
    ) -> c_int;
    fn SSL_SESSION_set1_ticket_appdata(
        ss: *mut openssl_sys::SSL_SESSION,
        data: *const c_void,
        len: usize,
    ) -> c_int;
    fn SSL_SESSION_get0_ticket_appdata(
        ss: *mut openssl_sys::SSL_SESSION,
        data: *mut *mut c_void,
        len: *mut usize,
    ) -> c_int;
    fn SSL_SESSION_get0_peer(ss: *mut openssl_sys::SSL_SESSION) -> *mut openssl_sys::X509;
}

// SSL_TICKET_STATUS and SSL_TICKET_RETURN values (ssl.h)
const SSL_TICKET_SUCCESS: c_int = 5;
const SSL_TICKET_SUCCESS_RENEW: c_int = 6;
const SSL_TICKET_RETURN_ABORT: c_int = 0;
const SSL_TICKET_RETURN_IGNORE_RENEW: c_int = 2;
const SSL_TICKET_RETURN_USE: c_int = 3;
const SSL_TICKET_RETURN_USE_RENEW: c_int = 4;

/// Largest chain carried in a ticket (bytes of DER): a longer one is not carried, and a
/// replica without it verifies the leaf against its CA bundle alone.
const MAX_CHAIN_BYTES: usize = 16 * 1024;

/// The intermediates as ticket data: each certificate's DER after its 4-byte length.
fn encode_chain(chain: &[&X509Ref]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for c in chain {
        let der = c.to_der().ok()?;
        out.extend_from_slice(&u32::try_from(der.len()).ok()?.to_be_bytes());
        out.extend_from_slice(&der);
    }
    (out.len() <= MAX_CHAIN_BYTES).then_some(out)
}

fn decode_chain(mut b: &[u8]) -> Option<Vec<X509>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let der = b.get(4..4 + len)?;
        out.push(X509::from_der(der).ok()?);
        b = &b[4 + len..];
    }
    Some(out)
}

/// A ticket is being made: put the intermediates the client sent into it (a ticket made
/// for a resumed session keeps the data of the one it replaces, which OpenSSL copies).
unsafe extern "C" fn generated(ssl: *mut openssl_sys::SSL, _arg: *mut c_void) -> c_int {
    // SAFETY: OpenSSL calls this during a handshake on `ssl`, live for the call
    let ssl_ref = unsafe { SslRef::from_ptr(ssl) };
    let Some(sent) = ssl_ref.peer_cert_chain() else {
        return 1;
    };
    let chain: Vec<&X509Ref> = sent.iter().collect();
    if chain.is_empty() {
        return 1;
    }
    let Some(data) = encode_chain(&chain) else {
        return 1;
    };
    // SAFETY: the session is the one the ticket is made from (live during the call);
    // OpenSSL copies `data`
    unsafe {
        let sess = openssl_sys::SSL_get_session(ssl);
        if !sess.is_null() {
            SSL_SESSION_set1_ticket_appdata(sess, data.as_ptr() as *const c_void, data.len());
        }
    }
    1
}

/// A ticket was decrypted (or not): use it as OpenSSL judged, and hand the chain it
/// carries to the listener's leaf → chain table for the verification after the handshake.
unsafe extern "C" fn decrypted(
    ssl: *mut openssl_sys::SSL,
    sess: *mut openssl_sys::SSL_SESSION,
    _keyname: *const c_uchar,
    _keyname_len: usize,
    status: c_int,
    _arg: *mut c_void,
) -> c_int {
    let use_it = match status {
        SSL_TICKET_SUCCESS => SSL_TICKET_RETURN_USE,
        SSL_TICKET_SUCCESS_RENEW => SSL_TICKET_RETURN_USE_RENEW,
        // no ticket, an empty one, or not ours: a full handshake
        2..=4 => return SSL_TICKET_RETURN_IGNORE_RENEW,
        _ => return SSL_TICKET_RETURN_ABORT,
    };
    let Ok(idx) = index() else { return use_it };
    // SAFETY: OpenSSL calls this during a handshake on `ssl` with the decrypted session
    // `sess`, both live for the call; the appdata pointer stays valid while `sess` is and
    // is only read here; the peer certificate is borrowed, not freed
    unsafe {
        let ssl_ref = SslRef::from_ptr(ssl);
        let Some(src) = ssl_ref.ssl_context().ex_data(idx) else {
            return use_it;
        };
        let mut data: *mut c_void = std::ptr::null_mut();
        let mut len = 0usize;
        if SSL_SESSION_get0_ticket_appdata(sess, &mut data, &mut len) != 1
            || data.is_null()
            || len == 0
        {
            return use_it;
        }
        let bytes = std::slice::from_raw_parts(data as *const u8, len);
        let peer = SSL_SESSION_get0_peer(sess);
        if peer.is_null() {
            return use_it;
        }
        let leaf = X509Ref::from_ptr(peer);
        let key = leaf
            .digest(openssl::hash::MessageDigest::sha256())
            .ok()
            .and_then(|d| <[u8; 32]>::try_from(&d[..]).ok());
        if let (Some(key), Some(chain)) = (key, decode_chain(bytes)) {
            crate::listeners::tls::remember_chain(&src.chains, key, chain);
        }
    }
    use_it
}

/// OpenSSL's ticket-key callback. `enc == 1`, a new ticket: under the first key (write its
/// name and a random IV, set up AES and HMAC) → 1. Otherwise the ticket names its key:
/// none of ours → 0 (no resumption: a full handshake); the first → 1; another → 2 (valid,
/// and OpenSSL issues a fresh ticket under the first). Errors → -1.
unsafe extern "C" fn callback(
    ssl: *mut openssl_sys::SSL,
    name: *mut c_uchar,
    iv: *mut c_uchar,
    cctx: *mut openssl_sys::EVP_CIPHER_CTX,
    hctx: *mut openssl_sys::HMAC_CTX,
    enc: c_int,
) -> c_int {
    let Ok(idx) = index() else { return -1 };
    // SAFETY: OpenSSL calls this during a handshake on `ssl`, which is live for the call
    let ssl = unsafe { SslRef::from_ptr(ssl) };
    let Some(src) = ssl.ssl_context().ex_data(idx) else {
        return -1;
    };
    let material = src.material.load();
    let keys: &[TicketKey] = match material.as_ref().and_then(|m| m.ticket_keys.as_deref()) {
        Some(k) if !k.is_empty() => k,
        _ => std::slice::from_ref(&src.fallback),
    };
    // SAFETY: OpenSSL passes `name` valid for 16 bytes (the ticket's key name) and `iv`
    // for EVP_MAX_IV_LENGTH (16) bytes, neither aliased during the call
    let (name, iv) = unsafe {
        (
            std::slice::from_raw_parts_mut(name, 16),
            std::slice::from_raw_parts_mut(iv, 16),
        )
    };
    let (key, found) = if enc == 1 {
        name.copy_from_slice(&keys[0].name);
        if openssl::rand::rand_bytes(iv).is_err() {
            return -1;
        }
        (&keys[0], 1)
    } else {
        match keys.iter().position(|k| k.name[..] == name[..]) {
            None => return 0,
            Some(0) => (&keys[0], 1),
            Some(i) => (&keys[i], 2),
        }
    };
    // SAFETY: `cctx` and `hctx` are the live contexts OpenSSL handed us; the key and IV
    // buffers hold the lengths the cipher (AES-128/256-CBC: 16/32-byte key, 16-byte IV)
    // and HMAC_Init_ex (`len` bytes) read, and are not kept after the calls
    let ok = unsafe {
        // one call for both directions: `enc` is 1 to encrypt, 0 to decrypt
        openssl_sys::EVP_CipherInit_ex(
            cctx,
            key.cipher(),
            std::ptr::null_mut(),
            key.aes.as_ptr(),
            iv.as_ptr(),
            enc,
        ) == 1
            && openssl_sys::HMAC_Init_ex(
                hctx,
                key.hmac.as_ptr() as *const c_void,
                key.hmac.len() as c_int,
                openssl_sys::EVP_sha256(),
                std::ptr::null_mut(),
            ) == 1
    };
    if ok {
        found
    } else {
        -1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_survives_its_ticket_encoding_and_garbage_does_not_parse() {
        let pki = gatehouse_devauth::pki::Pki::generate().unwrap_or_else(|e| panic!("{e}"));
        let chain = [pki.intermediate.cert.as_ref(), pki.root.cert.as_ref()];
        let bytes = encode_chain(&chain).unwrap_or_default();
        let back = decode_chain(&bytes).unwrap_or_default();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].to_der().ok(), pki.intermediate.cert.to_der().ok());
        assert!(decode_chain(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode_chain(&[0, 0, 0, 9, 1]).is_none());
    }

    #[test]
    fn key_files_of_48_and_80_bytes_and_nothing_else() {
        let b: Vec<u8> = (0u8..80).collect();
        let k = TicketKey::from_bytes(&b).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.name, b[..16]);
        assert_eq!((k.hmac.len(), k.aes.len()), (32, 32));
        assert_eq!(k.aes, b[48..80]);
        let k = TicketKey::from_bytes(&b[..48]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((k.hmac.len(), k.aes.len()), (16, 16));
        assert_eq!(k.aes, b[16..32]);
        let e = TicketKey::from_bytes(&b[..79]).err().unwrap_or_default();
        assert!(e.contains("openssl rand 80"), "{e}");
    }
}
