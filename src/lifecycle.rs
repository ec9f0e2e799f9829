//! When open WebSocket sessions must end: at shutdown ("reconnect later") or when their user
//! is deactivated (`ws::Close` has the close codes).
//!
//! One `watch` channel carries both. Each session holds a receiver while it serves, which
//! also lets shutdown wait until every session has said goodbye. Deactivation can happen in
//! another process (`chat-server user deactivate`), so a watcher polls the database for the
//! users that have sockets open here; tokens stop working at once anyway, because the token
//! query only accepts active users.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::metrics::METRICS;
use crate::model::UserId;

/// Why an open session must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The server is going away; clients reconnect (with `?since=`) once it is back.
    Shutdown,
    /// The account was deactivated; clients should not reconnect.
    Deactivated,
}

/// How often the deactivation watcher looks at the users with open sockets.
pub const DEACTIVATION_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Clone)]
struct Stop {
    shutdown: bool,
    /// Users whose sessions must end now.
    deactivated: Arc<HashSet<UserId>>,
}

/// Cheap handle; clone freely.
#[derive(Clone)]
pub struct Lifecycle {
    tx: Arc<watch::Sender<Stop>>,
    started: Instant,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    pub fn new() -> Lifecycle {
        let (tx, _) = watch::channel(Stop::default());
        Lifecycle {
            tx: Arc::new(tx),
            started: Instant::now(),
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Tells every session to close with 1001; new sessions close at once.
    pub fn begin_shutdown(&self) {
        self.tx.send_modify(|s| s.shutdown = true);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.tx.borrow().shutdown
    }

    /// Ends the open sessions of exactly these users (replacing the previous set).
    pub fn end_sessions_of(&self, users: HashSet<UserId>) {
        self.tx.send_if_modified(|s| {
            if *s.deactivated == users {
                return false;
            }
            s.deactivated = Arc::new(users);
            true
        });
    }

    /// Resolves with the reason when `user`'s session must end. A session
    /// selects on it beside its socket and its room events.
    pub fn session_end(&self, user: UserId) -> impl Future<Output = SessionEnd> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            loop {
                {
                    let stop = rx.borrow_and_update();
                    if stop.shutdown {
                        METRICS.sessions_closed_shutdown.inc();
                        return SessionEnd::Shutdown;
                    }
                    if stop.deactivated.contains(&user) {
                        METRICS.sessions_closed_deactivated.inc();
                        return SessionEnd::Deactivated;
                    }
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// Completes once no session is listening any more.
    pub async fn sessions_ended(&self) {
        self.tx.closed().await;
    }
}

/// Polls the database every [`DEACTIVATION_POLL`] for deactivated users among those with
/// open sockets, and ends their sessions; and for tokens of open sockets that another process
/// revoked (`chat-server bot token`, `user set-password`), and closes those sockets (4001).
/// Runs until the task is dropped.
pub async fn watch_deactivations(state: crate::AppState) {
    let mut tick = tokio::time::interval(DEACTIVATION_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let online = state.connections.users();
        if online.is_empty() {
            state.lifecycle.end_sessions_of(HashSet::new());
            continue;
        }
        let found = state.store.inactive_among(online).await;
        match found {
            Ok(inactive) => state
                .lifecycle
                .end_sessions_of(inactive.into_iter().collect()),
            Err(e) => tracing::warn!(error = %e, "cannot check for deactivated users"),
        }
        match state.store.revoked_among(state.connections.tokens()).await {
            Ok(gone) if !gone.is_empty() => state.connections.revoke(&gone),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot check for revoked tokens"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_end_on_shutdown_and_on_deactivation() {
        let life = Lifecycle::new();
        let alice = life.session_end(UserId(1));
        let bob = life.session_end(UserId(2));
        life.end_sessions_of(HashSet::from([UserId(1)]));
        assert_eq!(alice.await, SessionEnd::Deactivated);
        life.begin_shutdown();
        assert_eq!(bob.await, SessionEnd::Shutdown);
        // Nobody listens any more.
        tokio::time::timeout(Duration::from_secs(5), life.sessions_ended())
            .await
            .unwrap();
    }
}
