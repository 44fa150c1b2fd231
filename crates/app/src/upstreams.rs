//! The background task that keeps upstream pools current: names re-resolved and active
//! health checks run when due. It reads the running configuration at every round, so a
//! reload's pools are picked up without a restart of the task.

use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest pause between rounds (a reload's new pools wait at most this long).
const MAX_PAUSE: Duration = Duration::from_secs(1);

pub struct UpstreamUpkeep {
    pub runtime: Arc<ArcSwap<Runtime>>,
}

#[async_trait]
impl BackgroundService for UpstreamUpkeep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let rt = self.runtime.load_full();
            let now = Instant::now();
            let mut round = tokio::task::JoinSet::new();
            for u in &rt.upstreams {
                let pool = u.pool.clone();
                round.spawn(async move { pool.tick(now).await });
            }
            let mut wake = Instant::now() + MAX_PAUSE;
            while let Some(next) = round.join_next().await {
                if let Ok(next) = next {
                    wake = wake.min(next);
                }
            }
            drop(rt);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
