//! In-process rate limits: token buckets (message sends, typing) and windowed failure counters
//! (logins). All state is bounded by periodic pruning of idle keys.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries idle longer than this are forgotten on the next prune.
const IDLE: Duration = Duration::from_secs(600);
/// Prune at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Most keys a failure window tracks before it forgets the ones that are not blocked.
const MAX_KEYS: usize = 100_000;

/// Tokens left and when they were last topped up, per key; and when idle keys were last pruned.
type BucketMap<K> = (HashMap<K, (f64, Instant)>, Instant);

/// A token bucket per key: `rate` tokens a second, up to `burst`.
pub struct Buckets<K> {
    rate: f64,
    burst: f64,
    state: Mutex<BucketMap<K>>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new(rate: f64, burst: f64) -> Self {
        Buckets {
            rate,
            burst,
            state: Mutex::new((HashMap::new(), Instant::now())),
        }
    }

    /// Takes one token for `key`; on refusal, how long until one is available.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (map, pruned) = &mut *guard;
        if now.duration_since(*pruned) > PRUNE_EVERY {
            map.retain(|_, (_, at)| now.duration_since(*at) < IDLE);
            *pruned = now;
        }
        let (tokens, at) = map.entry(key.clone()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

/// Counts failures per key within a fixed window that starts at the key's first failure.
pub struct FailureWindow<K> {
    limit: u32,
    window: Duration,
    state: Mutex<HashMap<K, (u32, Instant)>>,
}

impl<K: Hash + Eq + Clone> FailureWindow<K> {
    pub fn new(limit: u32, window: Duration) -> Self {
        FailureWindow {
            limit,
            window,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(wait)` if `key` has used up its failures in the current window.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let map = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(key) {
            Some((count, start)) if *count >= self.limit => {
                let elapsed = now.duration_since(*start);
                if elapsed < self.window {
                    Err(self.window - elapsed)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    pub fn fail(&self, key: &K) {
        let now = Instant::now();
        let mut map = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.count(&mut map, key, now);
    }

    /// Counts an attempt as a failure up front, unless `key` is already blocked: checking and
    /// counting in one step means concurrent attempts cannot all slip past the limit. Call
    /// [`FailureWindow::forgive`] if the attempt succeeds.
    pub fn begin(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut map = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((count, start)) = map.get(key) {
            let elapsed = now.duration_since(*start);
            if *count >= self.limit && elapsed < self.window {
                return Err(self.window - elapsed);
            }
        }
        self.count(&mut map, key, now);
        Ok(())
    }

    /// Takes back one failure counted by [`FailureWindow::begin`].
    pub fn forgive(&self, key: &K) {
        let mut map = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((count, _)) = map.get_mut(key) {
            *count = count.saturating_sub(1);
        }
    }

    fn count(&self, map: &mut HashMap<K, (u32, Instant)>, key: &K, now: Instant) {
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let window = self.window;
            map.retain(|_, (_, start)| now.duration_since(*start) < window);
            if map.len() >= MAX_KEYS {
                // Still full within the window: keep only the keys that are blocked.
                let limit = self.limit;
                map.retain(|_, (count, _)| *count >= limit);
            }
        }
        let entry = map.entry(key.clone()).or_insert((0, now));
        if now.duration_since(entry.1) >= self.window {
            *entry = (0, now);
        }
        entry.0 += 1;
    }
}

/// Rounds a wait up to whole seconds for a `Retry-After` header.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_refuses() {
        let b = Buckets::new(1.0, 3.0);
        for _ in 0..3 {
            b.take(&1).unwrap();
        }
        let wait = b.take(&1).unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        // other keys are independent
        b.take(&2).unwrap();
    }

    #[test]
    fn failure_window_blocks_after_the_limit() {
        let w = FailureWindow::new(2, Duration::from_secs(60));
        w.check(&"a").unwrap();
        w.fail(&"a");
        w.check(&"a").unwrap();
        w.fail(&"a");
        assert!(w.check(&"a").is_err());
        w.check(&"b").unwrap();
    }

    #[test]
    fn begin_counts_up_front_and_forgive_takes_it_back() {
        let w = FailureWindow::new(2, Duration::from_secs(60));
        w.begin(&"a").unwrap();
        w.begin(&"a").unwrap();
        assert!(
            w.begin(&"a").is_err(),
            "two attempts in flight use the budget"
        );
        w.forgive(&"a");
        w.begin(&"a").unwrap();
        assert!(w.check(&"a").is_err());
    }
}
