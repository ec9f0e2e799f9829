//! Password hashing: argon2id with the configured cost, bounded so that a flood of sign-ups
//! or logins cannot take the memory or the cores that deliver messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::config::AuthConfig;
use crate::error::ApiError;

/// argon2id with the configured cost, and a hash to verify against when the user is unknown
/// so that a login for a missing user costs the same time as a wrong password.
pub struct Passwords {
    params: Params,
    dummy_hash: String,
    queue: HashQueue,
}

/// Bounds password hashing: each hash takes `argon2_memory_kib` of memory and a core for tens
/// of milliseconds, so unbounded concurrent signups or logins could exhaust memory (the
/// blocking pool has hundreds of threads) or starve message delivery of CPU.
pub struct HashQueue {
    running: Arc<tokio::sync::Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl HashQueue {
    /// At most `running` hashes at once and `max_waiting` queued behind them.
    pub fn new(running: usize, max_waiting: usize) -> HashQueue {
        HashQueue {
            running: Arc::new(tokio::sync::Semaphore::new(running.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// Runs `f` on the blocking pool once a hashing slot is free; a full queue is a 429.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let busy = ApiError::RateLimited {
            retry_after_secs: 1,
        };
        let permit = match self.running.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(busy);
                }
                let permit = self.running.clone().acquire_owned().await;
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                permit.map_err(ApiError::internal)?
            }
        };
        tokio::task::spawn_blocking(move || {
            let value = f();
            drop(permit);
            value
        })
        .await
        .map_err(ApiError::internal)
    }
}

impl Passwords {
    pub fn new(config: &AuthConfig) -> anyhow::Result<Passwords> {
        let params = Params::new(
            config.argon2_memory_kib,
            config.argon2_iterations,
            config.argon2_parallelism,
            None,
        )
        .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        // Half the cores: hashing never takes all of them from the chat.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut passwords = Passwords {
            params,
            dummy_hash: String::new(),
            queue: HashQueue::new(cores / 2, 256),
        };
        passwords.dummy_hash = passwords.hash("not a real password")?;
        Ok(passwords)
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Blocking: call from the blocking pool.
    pub fn hash(&self, password: &str) -> anyhow::Result<String> {
        let hash = self
            .argon2()
            .hash_password(password.as_bytes())
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
        Ok(hash.to_string())
    }

    /// Blocking. Verifies against `hash`, or against the dummy hash when `hash` is `None`
    /// (and then always fails).
    pub fn verify(&self, password: &str, hash: Option<&str>) -> bool {
        let target = hash.unwrap_or(&self.dummy_hash);
        let Ok(parsed) = PasswordHash::new(target) else {
            return false;
        };
        let ok = self
            .argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && hash.is_some()
    }
}

/// Runs a password operation off the async workers, within the hashing bounds.
pub async fn blocking<T: Send + 'static>(
    passwords: &Passwords,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    passwords.queue.run(f).await
}

/// Shared by the binary and tests: a `Passwords` without the OWASP cost, for fast tests.
pub fn cheap_passwords() -> Arc<Passwords> {
    let config = AuthConfig {
        argon2_memory_kib: 64,
        argon2_iterations: 1,
        argon2_parallelism: 1,
        ..AuthConfig::default()
    };
    Arc::new(Passwords::new(&config).expect("valid parameters"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_unknown_users_never_pass() {
        let p = cheap_passwords();
        let h = p.hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(p.verify("correct horse", Some(&h)));
        assert!(!p.verify("wrong", Some(&h)));
        assert!(!p.verify("not a real password", None));
    }

    #[tokio::test]
    async fn the_hash_queue_bounds_running_and_waiting_work() {
        let queue = Arc::new(HashQueue::new(1, 1));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let q = queue.clone();
        let first = tokio::spawn(async move {
            q.run(move || {
                let _ = started_tx.send(());
                hold.recv().unwrap();
                1
            })
            .await
        });
        started.await.unwrap();
        let q = queue.clone();
        let second = tokio::spawn(async move { q.run(|| 2).await });
        // Wait until the second job is queued behind the first.
        while queue.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let third = queue.run(|| 3).await;
        assert!(matches!(third, Err(ApiError::RateLimited { .. })));
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(second.await.unwrap().unwrap(), 2);
        assert_eq!(queue.run(|| 4).await.unwrap(), 4);
    }
}
