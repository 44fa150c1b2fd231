//! moka's own memory per entry, whatever the value: 1M entries with a 32-byte key (what
//! the token cache uses) and an `Arc<u64>` value, with per-entry expiry (as the token
//! cache), a global TTL, or no expiry at all.
//!   cargo run --release -p gatehouse-benches --example moka_probe -- expiry|ttl|none
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

struct PerEntry;

impl moka::Expiry<[u8; 32], Arc<u64>> for PerEntry {
    fn expire_after_create(&self, _: &[u8; 32], _: &Arc<u64>, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(3600))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "expiry".into());
    let n = 1_000_000u64;
    let before = rss();
    let builder = moka::future::Cache::builder().max_capacity(2 * n);
    let cache: moka::future::Cache<[u8; 32], Arc<u64>> = match mode.as_str() {
        "expiry" => builder.expire_after(PerEntry).build(),
        "ttl" => builder.time_to_live(Duration::from_secs(3600)).build(),
        _ => builder.build(),
    };
    for i in 0..n {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&i.to_le_bytes());
        cache.insert(k, Arc::new(i)).await;
    }
    cache.run_pending_tasks().await;
    assert_eq!(cache.entry_count(), n);
    println!(
        "{mode}: {} bytes per entry (32-byte key, Arc<u64> value)",
        (rss() - before) / n
    );
}
