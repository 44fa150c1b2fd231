//! Bytes per cached token and lookup speed with 1k vs 1M cached tokens.
//!   cargo run --release -p gatehouse-benches --bin cache_memory [-- 1000000 [all|hot] [moka|compact] [JWT_BYTES]]
//! `all`: cached claims keep every claim (JSON text); `hot`: only those the request path
//! reads (what Gatehouse caches when no claims rule needs more). The last argument is the
//! token store (`cache.store`); `JWT_BYTES` the length of each cached JWT (default 535).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let big: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    if let Some(n) = std::env::args().nth(4).and_then(|a| a.parse().ok()) {
        gatehouse_benches::set_jwt_bytes(n);
    }
    let x5t = "Ymwke3hNYkI2b9dEiV4oJduhE-HH2O0TI6wkUmpzc14";
    let jwt_len = gatehouse_benches::jwt(0).len() as f64;
    let store = match std::env::args().nth(3).as_deref() {
        Some("compact") => gatehouse_config::CacheStore::Compact,
        _ => gatehouse_config::CacheStore::Moka,
    };
    println!(
        "tokens\tstore\tclaims\trss_delta_MiB\tbytes_per_entry\tbeyond_jwt_bytes\tlookups_per_s"
    );
    // one claims form per process: memory freed by a previous run would hide the next
    // run's growth
    let full = std::env::args().nth(2).as_deref() != Some("hot");
    for n in [1_000u64, big] {
        let tokens: Vec<String> = (0..n).map(|i| format!("opaque-token-{i:012}")).collect();
        let before = rss_bytes();
        let (server, cache) = gatehouse_benches::primed_server(
            &tokens,
            x5t,
            gatehouse_metrics::Metrics::new(),
            full,
            store,
        )
        .await;
        let after = rss_bytes();
        let per = (after.saturating_sub(before)) as f64 / n as f64;
        // lookups through the AuthServer, spread over all tokens
        let rounds = 2_000_000u64;
        let as_issued =
            gatehouse_phantom::Forward::new(gatehouse_config::ForwardJwt::AsIssued, None);
        let t = Instant::now();
        let mut ok = 0u64;
        for i in 0..rounds {
            let tok = &tokens[((i * 7919) % n) as usize];
            if server.lookup(tok, &as_issued).await.is_ok() {
                ok += 1;
            }
        }
        let rate = ok as f64 / t.elapsed().as_secs_f64();
        assert_eq!(ok, rounds);
        println!(
            "{n}\t{}\t{}\t{:.1}\t{per:.0}\t{:.0}\t{rate:.0}",
            if store == gatehouse_config::CacheStore::Compact {
                "compact"
            } else {
                "moka"
            },
            if full { "all" } else { "hot" },
            (after - before) as f64 / 1048576.0,
            per - jwt_len
        );
        drop(server);
        drop(cache);
    }
    println!("(jwt bytes per entry: {jwt_len}; all: every claim kept as JSON text; hot: only what the request path reads)");
}
