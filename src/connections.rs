//! Open WebSocket connections: the caps per user and in total, and the signal that ends a
//! connection when the token it was opened with is revoked or expires.
//!
//! A socket authenticates once, at the upgrade. Without this, logging out (or revoking a
//! stolen token) would leave the sockets already opened with that token running for as long
//! as they stay connected.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::LimitsConfig;
use crate::error::ApiError;
use crate::metrics::{Bound, METRICS};
use crate::model::Auth;
use crate::model::UserId;
use crate::store::now_ms;

/// How long a client refused for too many connections is asked to wait.
const RETRY_AFTER_SECS: u64 = 5;

/// Open connections, by user and by token.
#[derive(Default)]
pub struct Connections {
    inner: Mutex<Inner>,
    /// Bumped by every revocation; see [`Connections::revocations`].
    revocations: AtomicU64,
}

#[derive(Default)]
struct Inner {
    total: u32,
    per_user: HashMap<UserId, u32>,
    /// Connections opened with each token, and the signal that ends them.
    per_token: HashMap<i64, (u32, watch::Sender<bool>)>,
}

/// A connection's place under the caps; releases it when dropped.
pub struct ConnectionSlot {
    connections: Arc<Connections>,
    user: UserId,
    token_id: i64,
    revoked: watch::Receiver<bool>,
    /// When the token expires; `None` if too far away to matter.
    expires: Option<Instant>,
}

impl Connections {
    /// Takes a slot for a connection authenticated by `auth`, unless the user or the server
    /// is at its cap (429 with `Retry-After`).
    pub fn acquire(
        self: &Arc<Self>,
        auth: &Auth,
        limits: &LimitsConfig,
    ) -> Result<ConnectionSlot, ApiError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let user = auth.user.id;
        let mine = inner.per_user.get(&user).copied().unwrap_or(0);
        if mine >= limits.max_connections_per_user || inner.total >= limits.max_connections_total {
            return Err(ApiError::RateLimited {
                retry_after_secs: RETRY_AFTER_SECS,
            });
        }
        inner.total += 1;
        *inner.per_user.entry(user).or_insert(0) += 1;
        let (count, signal) = inner
            .per_token
            .entry(auth.token_id)
            .or_insert_with(|| (0, watch::Sender::new(false)));
        *count += 1;
        let revoked = signal.subscribe();
        let left = Duration::from_millis(auth.expires_at.saturating_sub(now_ms()).max(0) as u64);
        Ok(ConnectionSlot {
            connections: self.clone(),
            user,
            token_id: auth.token_id,
            revoked,
            expires: Instant::now().checked_add(left),
        })
    }

    /// Ends every connection opened with one of `token_ids`. Call after the revocation
    /// committed.
    pub fn revoke(&self, token_ids: &[i64]) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.revocations.fetch_add(1, Ordering::SeqCst);
        for id in token_ids {
            if let Some((_, signal)) = inner.per_token.get(id) {
                signal.send_replace(true);
            }
        }
    }

    /// A counter that moves with every revocation. A connection that authenticated, then
    /// took its slot, re-checks its token if this moved in between: the revocation may have
    /// missed it.
    pub fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::SeqCst)
    }

    /// Open connections, all users together.
    pub fn total(&self) -> u64 {
        u64::from(self.inner.lock().unwrap_or_else(|e| e.into_inner()).total)
    }

    /// The tokens open connections were opened with.
    pub fn tokens(&self) -> Vec<i64> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.per_token.keys().copied().collect()
    }

    /// Users with at least one open connection.
    pub fn users(&self) -> Vec<UserId> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.per_user.keys().copied().collect()
    }
}

impl ConnectionSlot {
    /// Completes once the connection's token has been revoked or has expired. Cancel safe:
    /// meant for a branch of the connection's `select!` loop.
    pub async fn ended(&mut self) {
        let revoked = self.revoked.wait_for(|revoked| *revoked);
        match self.expires {
            Some(at) => {
                tokio::select! {
                    _ = revoked => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => {
                // An error means the sender is gone, which cannot happen while we hold a slot.
                let _ = revoked.await;
            }
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut inner = self
            .connections
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        inner.total -= 1;
        if let Some(count) = inner.per_user.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                inner.per_user.remove(&self.user);
            }
        }
        if let Some((count, _)) = inner.per_token.get_mut(&self.token_id) {
            *count -= 1;
            if *count == 0 {
                inner.per_token.remove(&self.token_id);
            }
        }
    }
}

/// Replays (a `?since=` catch-up or the resync of a socket that fell behind) running at once,
/// per user and in total: each reads the database page by page for as long as it runs.
#[derive(Default)]
pub struct Replays {
    inner: Mutex<(u32, HashMap<UserId, u32>)>,
}

/// A running replay's place under the caps; released when dropped.
pub struct ReplayPermit {
    replays: Arc<Replays>,
    user: UserId,
}

impl Replays {
    /// A permit for one replay by `user`, or the bound that refused it (counted).
    pub fn start(
        self: &Arc<Self>,
        user: UserId,
        limits: &LimitsConfig,
    ) -> Result<ReplayPermit, Bound> {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_user) = &mut *guard;
        let mine = per_user.get(&user).copied().unwrap_or(0);
        let refused = if mine >= limits.max_replays_per_user {
            Some(Bound::ReplaysPerUser)
        } else if *total >= limits.max_replays_total {
            Some(Bound::ReplaysTotal)
        } else {
            None
        };
        if let Some(bound) = refused {
            METRICS.refused(bound);
            return Err(bound);
        }
        *total += 1;
        *per_user.entry(user).or_insert(0) += 1;
        Ok(ReplayPermit {
            replays: self.clone(),
            user,
        })
    }

    /// Replays running now.
    pub fn running(&self) -> u32 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

impl Drop for ReplayPermit {
    fn drop(&mut self) {
        let mut guard = self.replays.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_user) = &mut *guard;
        *total -= 1;
        if let Some(count) = per_user.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                per_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Millis, User};

    fn auth(user: i64, token_id: i64, expires_at: i64) -> Auth {
        Auth {
            user: User {
                id: UserId(user),
                username: format!("u{user}"),
                first_name: String::new(),
                last_name: String::new(),
                email: String::new(),
                date_joined: Millis(0),
                is_bot: false,
            },
            token_id,
            expires_at,
        }
    }

    fn limits(per_user: u32, total: u32) -> LimitsConfig {
        LimitsConfig {
            max_connections_per_user: per_user,
            max_connections_total: total,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn caps_per_user_and_in_total_are_enforced_and_released() {
        let c = Arc::new(Connections::default());
        let l = limits(2, 3);
        let far = i64::MAX;
        let a1 = c.acquire(&auth(1, 1, far), &l).unwrap();
        let _a2 = c.acquire(&auth(1, 1, far), &l).unwrap();
        let err = c.acquire(&auth(1, 2, far), &l).err().unwrap();
        assert!(matches!(err, ApiError::RateLimited { .. }));
        let _b1 = c.acquire(&auth(2, 3, far), &l).unwrap();
        assert!(c.acquire(&auth(3, 4, far), &l).is_err(), "total cap");
        assert_eq!(c.total(), 3);
        drop(a1);
        assert_eq!(c.total(), 2);
        c.acquire(&auth(3, 4, far), &l).unwrap();
    }

    #[test]
    fn replays_are_capped_per_user_and_in_total() {
        let replays = Arc::new(Replays::default());
        let l = LimitsConfig {
            max_replays_per_user: 2,
            max_replays_total: 3,
            ..LimitsConfig::default()
        };
        let a1 = replays.start(UserId(1), &l).unwrap();
        let _a2 = replays.start(UserId(1), &l).unwrap();
        assert_eq!(
            replays.start(UserId(1), &l).err(),
            Some(Bound::ReplaysPerUser)
        );
        let _b1 = replays.start(UserId(2), &l).unwrap();
        assert_eq!(
            replays.start(UserId(3), &l).err(),
            Some(Bound::ReplaysTotal)
        );
        drop(a1);
        assert_eq!(replays.running(), 2);
        replays.start(UserId(3), &l).unwrap();
    }

    #[tokio::test]
    async fn revoking_a_token_ends_its_connections_only() {
        let c = Arc::new(Connections::default());
        let l = limits(10, 10);
        let far = i64::MAX;
        let mut one = c.acquire(&auth(1, 1, far), &l).unwrap();
        let mut other = c.acquire(&auth(1, 2, far), &l).unwrap();
        let before = c.revocations();
        c.revoke(&[1]);
        assert_ne!(c.revocations(), before);
        tokio::time::timeout(Duration::from_secs(5), one.ended())
            .await
            .expect("revoked connection ends");
        let still = tokio::time::timeout(Duration::from_millis(20), other.ended()).await;
        assert!(still.is_err(), "another token's connection goes on");
    }

    #[tokio::test]
    async fn an_expired_token_ends_its_connection() {
        let c = Arc::new(Connections::default());
        let mut slot = c
            .acquire(&auth(1, 1, now_ms() - 1), &limits(10, 10))
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), slot.ended())
            .await
            .expect("expired connection ends");
    }
}
