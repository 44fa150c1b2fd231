//! Client-certificate verification: parsing the peer certificate once per handshake,
//! chain verification with OpenSSL (CA bundles, CRLs, depth, clock skew), APIM-style
//! identity policies, and forwarding the verified certificate upstream (RFC 9440).
#![forbid(unsafe_code)]

mod conn;
mod dp;
mod filter;
mod forward;
mod identity;
mod listener;
pub mod parse;
mod verify;

pub use conn::{inspect, inspect_memo, ConnCert, VerifiedLeaves};
pub use dp::distribution_points;
pub use filter::{ClientCertFilter, FilterBuildError};
pub use forward::CERT_HEADERS;
pub use identity::{parse_dn, parse_hex, IdentityMatcher};
pub use listener::ListenerPolicy;
pub use verify::{load_crl, load_pem_bundle, revocation_status, TrustError, TrustStore, Verified};
