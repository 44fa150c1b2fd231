//! Micro-benchmarks of the per-request hot path (no network, no TLS):
//!   cargo bench -p gatehouse-benches
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gatehouse_config::{
    BindingMode, ClaimsFilter as ClaimsCfg, ClientCertFilter as CertCfg, ForwardJwt, Identity,
};
use gatehouse_core::{Filter, RequestCtx};
use gatehouse_devauth::pki::Pki;
use gatehouse_metrics::Metrics;
use gatehouse_mtls::IdentityMatcher;
use std::sync::Arc;

fn bench(c: &mut Criterion) {
    let pki = Pki::generate().unwrap();
    let cert = Arc::new(
        gatehouse_mtls::parse::parse(
            &pki.partner_a.der(),
            Vec::new(),
            Some(&pki.intermediate.der()),
        )
        .unwrap(),
    );
    let x5t = cert.x5t_s256();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let metrics = Metrics::new();
    let token = "bench-opaque-token-0001".to_owned();
    let primed = |store| {
        rt.block_on(gatehouse_benches::primed_server(
            std::slice::from_ref(&token),
            &x5t,
            metrics.clone(),
            true,
            store,
        ))
        .0
    };
    let server = primed(gatehouse_config::CacheStore::Moka);
    let compact = primed(gatehouse_config::CacheStore::Compact);

    let subject = IdentityMatcher::new(&Identity {
        subject: Some("CN=partner-a, O=partner-a Ltd".into()),
        ..Default::default()
    })
    .unwrap();
    let thumb = IdentityMatcher::new(&Identity {
        thumbprint_sha256: Some(cert.sha256_hex()),
        ..Default::default()
    })
    .unwrap();
    c.bench_function("identity/subject_dn", |b| {
        b.iter(|| black_box(subject.matches(black_box(&cert))))
    });
    c.bench_function("identity/thumbprint_sha256", |b| {
        b.iter(|| black_box(thumb.matches(black_box(&cert))))
    });

    // the token's cnf is decoded once per token (when it is cached); per request only the
    // digests are compared
    let claims = gatehouse_core::Claims::new(gatehouse_benches::claims(&x5t, 0));
    let bound = *claims.cnf_x5t_s256().unwrap();
    c.bench_function("cnf/x5t_compare", |b| {
        b.iter(|| {
            black_box(gatehouse_bound::thumbprints_equal(
                black_box(&bound),
                &black_box(&cert).sha256,
            ))
        })
    });

    let header = format!("Bearer {token}");
    c.bench_function("header/bearer_parse", |b| {
        b.iter(|| {
            black_box(gatehouse_core::bearer_token(
                std::iter::once(black_box(header.as_bytes())),
                8192,
            ))
        })
    });

    let as_issued = gatehouse_phantom::Forward::new(ForwardJwt::AsIssued, None);
    for (name, srv) in [("cache/hit", &server), ("cache/hit_compact", &compact)] {
        c.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    black_box(srv.lookup(black_box(&token), &as_issued).await.is_ok())
                })
            })
        });
    }

    // the whole chain on a cache hit: client_cert → phantom_token → cert_bound_token → claims
    let cert_cfg = CertCfg {
        require_eku_client_auth: true,
        identities: vec![Identity {
            common_name: Some("partner-a".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let filters: Vec<Box<dyn Filter>> = vec![
        Box::new(
            gatehouse_mtls::ClientCertFilter::new(
                &cert_cfg,
                &[],
                4,
                metrics.clone(),
                gatehouse_core::system_clock(),
            )
            .unwrap(),
        ),
        Box::new(gatehouse_phantom::PhantomTokenFilter::new(
            server.clone(),
            as_issued.clone(),
            8192,
        )),
        Box::new(gatehouse_bound::CertBoundFilter::new(
            BindingMode::Strict,
            metrics.clone(),
        )),
        Box::new(
            gatehouse_bound::ClaimsFilter::new(&ClaimsCfg {
                scope: vec!["transactions".into()],
                ..Default::default()
            })
            .unwrap(),
        ),
    ];
    let req = http::Request::builder()
        .header("authorization", &header)
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let route: Arc<str> = "bench".into();
    c.bench_function("chain/full_on_cache_hit", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut ctx = RequestCtx {
                    presented_cert: Some(cert.clone()),
                    route_name: route.clone(),
                    ..Default::default()
                };
                for f in &filters {
                    if let gatehouse_core::Verdict::Reject(r) = f.check(&req, &mut ctx).await {
                        panic!("rejected: {r:?}");
                    }
                }
                black_box(ctx.upstream_headers.len())
            })
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
