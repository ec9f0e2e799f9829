//! In-process rate limits: token buckets (message sends, typing) and windowed failure counters
//! (logins). All state is bounded by periodic pruning of idle keys.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
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

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// Returns a token taken for an attempt that turned out not to need it.
    pub fn give_back(&self, key: &K) {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((tokens, _)) = guard.0.get_mut(key) {
            *tokens = (*tokens + 1.0).min(self.burst);
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

    /// Failures counted for `key` in its current window.
    pub fn failures(&self, key: &K) -> u32 {
        let now = Instant::now();
        let map = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(key) {
            Some((count, start)) if now.duration_since(*start) < self.window => *count,
            _ => 0,
        }
    }
}

/// How long a login throttle remembers that an address logged in to an account.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest slowdown of one login attempt.
const MAX_SLOWDOWN: Duration = Duration::from_secs(5);

/// Brute-force protection for logins that hands nobody a button to lock someone else out.
///
/// - Per username and address (IPv6: per /64): `per_user_and_ip` failures in the window, then
///   429 for that pair only. Guesses from elsewhere do not touch it.
/// - Per address: `per_ip` failures over all usernames, then 429.
/// - Per username over all addresses, for addresses the account has not logged in from
///   before (within `KNOWN_FOR`, 30 days, in this process): past `per_user_and_ip` failures each
///   attempt is slowed down by a delay that doubles with every failure (at most
///   `MAX_SLOWDOWN`, 5 s), and past `per_user` failures they are refused with 429. An address the
///   account logged in from successfully is exempt from both, so its owner keeps getting in
///   from the usual places however many addresses guess at the name.
///
/// Each attempt is counted before its password is checked and forgiven if it succeeds, so a
/// burst of concurrent guesses cannot slip past a limit.
pub struct LoginThrottle {
    by_pair: FailureWindow<(String, IpAddr)>,
    by_ip: FailureWindow<IpAddr>,
    by_user: FailureWindow<String>,
    per_user_and_ip: u32,
    slowdown: Duration,
    known: Mutex<HashMap<(String, IpAddr), Instant>>,
}

/// One login attempt under way: what it counted, and how long to wait before checking it.
pub struct LoginAttempt {
    pair: Option<(String, IpAddr)>,
    ip: IpAddr,
    /// Counted against the username over all addresses (an unknown address).
    user: Option<String>,
    pub delay: Duration,
}

impl LoginThrottle {
    pub fn new(
        per_user_and_ip: u32,
        per_user: u32,
        per_ip: u32,
        window: Duration,
        slowdown: Duration,
    ) -> Self {
        LoginThrottle {
            by_pair: FailureWindow::new(per_user_and_ip, window),
            by_ip: FailureWindow::new(per_ip, window),
            by_user: FailureWindow::new(per_user, window),
            per_user_and_ip,
            slowdown,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt for `user` (its normalised key; `None` for a name no account can
    /// have) from `ip`, or says how long the caller must wait before trying again.
    pub fn begin(&self, user: Option<&str>, ip: IpAddr) -> Result<LoginAttempt, Duration> {
        let pair = user.map(|u| (u.to_string(), ip));
        if let Some(pair) = &pair {
            self.by_pair.begin(pair)?;
        }
        let mut attempt = LoginAttempt {
            pair,
            ip,
            user: None,
            delay: Duration::ZERO,
        };
        if let Err(wait) = self.by_ip.begin(&ip) {
            self.forgive_pair(&attempt);
            return Err(wait);
        }
        if let Some(user) = user.filter(|_| !self.is_known(attempt.pair.as_ref())) {
            let key = user.to_string();
            if let Err(wait) = self.by_user.begin(&key) {
                self.forgive_pair(&attempt);
                self.by_ip.forgive(&ip);
                return Err(wait);
            }
            // This attempt is already counted.
            let failures = self.by_user.failures(&key).saturating_sub(1);
            attempt.delay = slowdown(failures, self.per_user_and_ip, self.slowdown);
            attempt.user = Some(key);
        }
        Ok(attempt)
    }

    /// The attempt succeeded: it counts against nothing, and its address is known for the user.
    pub fn succeeded(&self, attempt: LoginAttempt) {
        self.forgive_pair(&attempt);
        self.by_ip.forgive(&attempt.ip);
        if let Some(user) = &attempt.user {
            self.by_user.forgive(user);
        }
        if let Some(pair) = attempt.pair {
            let now = Instant::now();
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            if known.len() >= MAX_KEYS && !known.contains_key(&pair) {
                known.retain(|_, at| now.duration_since(*at) < KNOWN_FOR);
                if known.len() >= MAX_KEYS {
                    // Still full: forget the oldest half.
                    let mut times: Vec<Instant> = known.values().copied().collect();
                    times.sort_unstable();
                    let cut = times[times.len() / 2];
                    known.retain(|_, at| *at > cut);
                }
            }
            known.insert(pair, now);
        }
    }

    fn forgive_pair(&self, attempt: &LoginAttempt) {
        if let Some(pair) = &attempt.pair {
            self.by_pair.forgive(pair);
        }
    }

    fn is_known(&self, pair: Option<&(String, IpAddr)>) -> bool {
        let Some(pair) = pair else { return false };
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.get(pair).is_some_and(|at| at.elapsed() < KNOWN_FOR)
    }
}

/// The wait before checking an attempt on a username that has failed `failures` times from
/// unknown addresses: nothing up to `free` failures, then `step` doubling with each one more,
/// up to [`MAX_SLOWDOWN`].
fn slowdown(failures: u32, free: u32, step: Duration) -> Duration {
    let Some(excess) = failures.checked_sub(free) else {
        return Duration::ZERO;
    };
    step.saturating_mul(1u32 << excess.min(16))
        .min(MAX_SLOWDOWN)
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
    fn guesses_from_elsewhere_never_lock_out_an_address_the_account_uses() {
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        let t = LoginThrottle::new(2, 5, 100, Duration::from_secs(60), Duration::ZERO);
        // Alice logs in from .1.
        t.succeeded(t.begin(Some("alice"), ip(1)).unwrap());
        // Two guesses from .2 use up that pair; the third is refused, even if it were right.
        t.begin(Some("alice"), ip(2)).unwrap();
        t.begin(Some("alice"), ip(2)).unwrap();
        assert!(t.begin(Some("alice"), ip(2)).is_err());
        // Guesses from .3 and .4 reach the ceiling over all unknown addresses ...
        for n in [3, 3, 4] {
            t.begin(Some("alice"), ip(n)).unwrap();
        }
        assert!(t.begin(Some("alice"), ip(4)).is_err(), "pair limit");
        assert!(
            t.begin(Some("alice"), ip(5)).is_err(),
            "ceiling for unknown addresses"
        );
        // ... but alice's own address still gets in, and other names are untouched.
        t.succeeded(t.begin(Some("alice"), ip(1)).unwrap());
        t.begin(Some("bob"), ip(5)).unwrap();
    }

    #[test]
    fn the_slowdown_doubles_past_the_free_failures_up_to_a_bound() {
        let step = Duration::from_millis(100);
        assert_eq!(slowdown(0, 10, step), Duration::ZERO);
        assert_eq!(slowdown(9, 10, step), Duration::ZERO);
        assert_eq!(slowdown(10, 10, step), step);
        assert_eq!(slowdown(11, 10, step), 2 * step);
        assert_eq!(slowdown(13, 10, step), 8 * step);
        assert_eq!(slowdown(1000, 10, step), MAX_SLOWDOWN);
        assert_eq!(slowdown(u32::MAX, 0, Duration::MAX), MAX_SLOWDOWN);
        let t = LoginThrottle::new(1, 100, 100, Duration::from_secs(60), step);
        let ip = IpAddr::from([127, 0, 0, 9]);
        assert_eq!(t.begin(Some("a"), ip).unwrap().delay, Duration::ZERO);
        let other = IpAddr::from([127, 0, 0, 10]);
        assert_eq!(t.begin(Some("a"), other).unwrap().delay, step);
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
