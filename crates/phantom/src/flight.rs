//! One introspection per token at a time, for first uses and refreshes alike: concurrent
//! requests for one token share the call one of them makes. If that request goes away
//! mid-call, a waiting one makes the call instead. A result (an error too) is handed to
//! the requests that waited for it and then forgotten: what is kept is the cache's
//! business.

use crate::cache::{Lookup, TokenKey};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// Calls in progress, by token key.
pub struct Flights<V> {
    calls: Mutex<HashMap<TokenKey, Arc<OnceCell<V>>>>,
}

impl<V> Default for Flights<V> {
    fn default() -> Self {
        Self {
            calls: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> Flights<V> {
    /// `call`'s result for `key`, run by this request ([`Lookup::Miss`]) or by the one
    /// already running it ([`Lookup::Coalesced`], and `call` is dropped unrun).
    pub async fn run(&self, key: TokenKey, call: impl Future<Output = V>) -> (V, Lookup) {
        // on every way out, a cancelled caller included, the slot goes once its call is
        // over or once nobody waits on it any more (the guard holds this caller's only
        // reference to the cell, so it can tell)
        let leave = Leave {
            flights: self,
            key,
            cell: self.calls.lock().entry(key).or_default().clone(),
        };
        let mut ran = false;
        let value = leave
            .cell
            .get_or_init(|| {
                ran = true;
                call
            })
            .await
            .clone();
        (value, if ran { Lookup::Miss } else { Lookup::Coalesced })
    }

    /// Calls in progress.
    pub fn len(&self) -> usize {
        self.calls.lock().len()
    }

    /// Whether no call is in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Frees a flight's slot when the call is over (the next request for the key starts a new
/// one) or when its last caller went away without an answer.
struct Leave<'a, V> {
    flights: &'a Flights<V>,
    key: TokenKey,
    cell: Arc<OnceCell<V>>,
}

impl<V> Drop for Leave<'_, V> {
    fn drop(&mut self) {
        let mut calls = self.flights.calls.lock();
        let ours = calls
            .get(&self.key)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cell));
        // the map's reference and this one: nobody else waits
        let alone = Arc::strong_count(&self.cell) <= 2;
        if ours && (self.cell.initialized() || alone) {
            calls.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn key(n: u8) -> TokenKey {
        [n; 32]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_make_one_call_and_results_are_not_kept() {
        let f: Arc<Flights<Result<u32, String>>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (f, calls, gate) = (f.clone(), calls.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                f.run(key(7), async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Ok(7)
                })
                .await
            }));
        }
        // every task is in: 49 wait on the one call
        while f.is_empty() || calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.notify_one();
        let mut how = Vec::new();
        for t in tasks {
            let (v, h) = t.await.unwrap();
            assert_eq!(v, Ok(7));
            how.push(h);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(how.iter().filter(|h| **h == Lookup::Miss).count(), 1);
        assert!(f.is_empty());
        // an error is handed out, then forgotten: the next request calls again
        for round in 1..=2 {
            let n = Arc::new(AtomicUsize::new(0));
            let m = n.clone();
            let (v, _) = f
                .run(key(8), async move {
                    m.fetch_add(1, Ordering::SeqCst);
                    Err::<u32, _>("down".to_owned())
                })
                .await;
            assert_eq!(v, Err("down".to_owned()));
            assert_eq!(n.load(Ordering::SeqCst), 1, "round {round}");
        }
        assert!(f.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_makes_the_call_when_the_caller_goes_away() {
        let f: Arc<Flights<u32>> = Arc::default();
        let started = Arc::new(tokio::sync::Notify::new());
        let (s, f1) = (started.clone(), f.clone());
        let stuck = tokio::spawn(async move {
            f1.run(key(9), async move {
                s.notify_one();
                std::future::pending::<u32>().await
            })
            .await
        });
        started.notified().await;
        let f2 = f.clone();
        let waiter = tokio::spawn(async move { f2.run(key(9), async { 9 }).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        stuck.abort();
        assert!(stuck.await.unwrap_err().is_cancelled());
        assert_eq!(waiter.await.unwrap(), (9, Lookup::Miss));
        assert!(f.is_empty());
        // the only caller goes away: its slot goes with it (no slot per abandoned token)
        let (s, f3) = (started.clone(), f.clone());
        let lone = tokio::spawn(async move {
            f3.run(key(10), async move {
                s.notify_one();
                std::future::pending::<u32>().await
            })
            .await
        });
        started.notified().await;
        assert_eq!(f.len(), 1);
        lone.abort();
        assert!(lone.await.unwrap_err().is_cancelled());
        assert!(f.is_empty(), "an abandoned call leaves no slot");
    }
}
