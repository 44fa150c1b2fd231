//! What Gatehouse adds to each full mTLS handshake, timed in isolation: verifying and
//! parsing the client certificate (`inspect`), and installing the server certificate and
//! key on the connection (the certificate callback, so a reload can swap them).
//!   cargo run --release -p gatehouse-benches --example handshake_parts -- CERT_DIR
//! CERT_DIR holds ca.pem, client.pem, server.pem, server.key (the NGINX harness's).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use openssl::pkey::PKey;
use openssl::ssl::{Ssl, SslContext, SslMethod};
use openssl::x509::X509;
use std::time::Instant;

fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    let dir = std::env::args().nth(1).expect("CERT_DIR");
    let read = |f: &str| std::fs::read(format!("{dir}/{f}")).unwrap();
    let ca = X509::stack_from_pem(&read("ca.pem")).unwrap();
    let mut client = X509::stack_from_pem(&read("client.pem")).unwrap();
    let leaf = client.remove(0);
    let trust = gatehouse_mtls::TrustStore::new(&ca, &[], 4, false).unwrap();
    let n = 2000;
    let us = per_call(n, || {
        let c = gatehouse_mtls::inspect(leaf.clone(), client.clone(), &trust).unwrap();
        assert!(c.failure.is_none());
    });
    println!("inspect (verify chain + parse identity): {us:.1} us");
    let us = per_call(n, || {
        assert!(trust.verify(&leaf, &client, 0).is_ok());
    });
    println!("  of which chain verification: {us:.1} us");
    let us = per_call(n, || {
        std::hint::black_box(leaf.to_der().unwrap());
    });
    println!("  leaf to DER: {us:.1} us");
    let us = per_call(n, || {
        std::hint::black_box(leaf.digest(openssl::hash::MessageDigest::sha256()).unwrap());
    });
    println!("  leaf SHA-256 digest (chain table key): {us:.1} us");

    let server = X509::from_pem(&read("server.pem")).unwrap();
    let key = PKey::private_key_from_pem(&read("server.key")).unwrap();
    let ctx = SslContext::builder(SslMethod::tls_server())
        .unwrap()
        .build();
    let us = per_call(n, || {
        let mut ssl = Ssl::new(&ctx).unwrap();
        pingora_core::tls::ext::ssl_use_certificate(&mut ssl, &server).unwrap();
        pingora_core::tls::ext::ssl_use_private_key(&mut ssl, &key).unwrap();
    });
    let base = per_call(n, || {
        std::hint::black_box(Ssl::new(&ctx).unwrap());
    });
    println!(
        "certificate callback (install cert + key): {:.1} us",
        us - base
    );
}
