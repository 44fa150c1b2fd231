//! DEV ONLY — never deploy. The pieces the demo and the tests need around Gatehouse: a
//! throwaway PKI, a tiny HTTP(S) server, the echo upstream, and a small OAuth
//! authorization server (token endpoint with tls_client_auth, RFC 7662/9701 introspection,
//! JWKS, RFC 7009 revocation).
#![forbid(unsafe_code)]

pub mod authz;
pub mod pki;
pub mod serve;
