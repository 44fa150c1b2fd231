//! Wires a validated configuration into a running Pingora server. The modules, by
//! lifecycle:
//!
//! - built once per process: `server` (the Pingora server, its shards, the admin
//!   listener, background services, signals);
//! - built per configuration, swapped whole by a reload: `runtime` (routes, their filter
//!   chains, upstream pools, listener TLS material) from `services` (what routes share:
//!   token caches, verifiers, the signing key) and `files` (every file checked first);
//! - per listener: `listeners` (shard layout, TLS acceptor callbacks, session tickets);
//! - per request: `proxy` (the chain in Pingora's phases) and `target` (routing);
//! - around it: `reload` (SIGHUP, the file watch), `admin`, `access_log`,
//!   `upstreams` (upkeep of the pools).

pub mod access_log;
mod admin;
mod error;
mod files;
mod listeners;
mod proxy;
mod reload;
mod runtime;
mod server;
mod services;
mod target;
mod upstreams;

pub use admin::Readiness;
pub use error::BuildError;
pub use listeners::tls::{server_cert_expiry, ServerCertExpiry};
pub use pingora_core::server::ShutdownSignal;
/// Pingora's shutdown-signal trait, for embedding Gatehouse with a shutdown you control
/// (tests).
pub use pingora_core::server::ShutdownSignalWatch as ShutdownSignalWatchExt;
pub use proxy::Chain;
pub use reload::Reloader;
pub use runtime::Runtime;
pub use server::{BuildOptions, Gatehouse};
