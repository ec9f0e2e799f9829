//! The shared state every handler and socket session reaches through one reference count.

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, LimitsConfig};
use crate::connections::{Connections, Replays};
use crate::files::Files;
use crate::hub::{Hub, LocalHub, PresenceDamper};
use crate::lifecycle::Lifecycle;
use crate::model::{RoomId, UserId};
use crate::passwords::Passwords;
use crate::ratelimit::{Buckets, LoginThrottle};
use crate::store::{ChatStore, Store};

/// Everything a handler needs, behind one reference count: the filters clone it for every
/// request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Arc<dyn ChatStore>,
    pub hub: Arc<dyn Hub>,
    /// Offlines waiting out their grace period.
    pub presence: Arc<PresenceDamper>,
    pub limits: Arc<Limiters>,
    pub passwords: Arc<Passwords>,
    pub connections: Arc<Connections>,
    /// Replays running at once.
    pub replays: Arc<Replays>,
    /// Which browser origins may use the API and open WebSockets.
    pub cors: crate::cors::Cors,
    /// Shutdown and forced session ends, which open WebSocket sessions listen to.
    pub lifecycle: Lifecycle,
    /// The uploaded files' bytes.
    pub files: Arc<Files>,
}

/// The abuse limits of docs/CONTRACT.md section 2 and SECURITY.md.
pub struct Limiters {
    pub sends: Buckets<UserId>,
    pub typing: Buckets<(UserId, RoomId)>,
    pub login: LoginThrottle,
    /// Accounts created, per client address.
    pub signups: Buckets<IpAddr>,
    /// Rooms created, per user.
    pub rooms_created: Buckets<UserId>,
    /// WebSocket connections opened, per user and per client address.
    pub ws_connects_user: Buckets<UserId>,
    pub ws_connects_ip: Buckets<IpAddr>,
}

/// A bucket that holds `per_period` tokens and refills them evenly over `period_secs`.
fn per_period<K: Hash + Eq + Clone>(per_period: u32, period_secs: f64) -> Buckets<K> {
    let n = f64::from(per_period);
    Buckets::new(n / period_secs, n)
}

impl Limiters {
    /// The limiters `limits` describes.
    pub fn new(l: &LimitsConfig) -> Limiters {
        let window = Duration::from_secs(l.login_window_secs);
        Limiters {
            sends: Buckets::new(l.send_rate_per_sec, f64::from(l.send_burst)),
            typing: Buckets::new(l.typing_per_sec, l.typing_per_sec.max(1.0)),
            login: LoginThrottle::new(
                l.login_failures_per_user_and_ip,
                l.login_failures_per_user,
                l.login_failures_per_ip,
                window,
                Duration::from_millis(l.login_slowdown_ms),
            ),
            signups: per_period(l.signups_per_ip_per_hour, 3600.0),
            rooms_created: per_period(l.rooms_created_per_user_per_hour, 3600.0),
            ws_connects_user: per_period(l.ws_connects_per_user_per_min, 60.0),
            ws_connects_ip: per_period(l.ws_connects_per_ip_per_min, 60.0),
        }
    }
}

impl AppState {
    /// Opens the database and builds the state the configuration describes.
    pub fn new(config: Config) -> anyhow::Result<AppState> {
        let passwords = Arc::new(Passwords::new(&config.auth)?);
        Self::with_passwords(config, passwords)
    }

    /// Like [`AppState::new`] with a given password hasher (tests use a cheap one).
    pub fn with_passwords(config: Config, passwords: Arc<Passwords>) -> anyhow::Result<AppState> {
        let store = Store::open_with(&config.server.db, config.server.store_options())?;
        Self::with_store(config, passwords, Arc::new(store))
    }

    /// The state over a given store: any [`ChatStore`] implementation. Opens the files
    /// directory the configuration names.
    pub fn with_store(
        config: Config,
        passwords: Arc<Passwords>,
        store: Arc<dyn ChatStore>,
    ) -> anyhow::Result<AppState> {
        let files = Files::open(
            config.server.files_dir(),
            config.limits.upload_bytes_per_sec,
        )
        .map_err(|e| {
            let dir = config.server.files_dir().map_or_else(
                || "a temporary directory".into(),
                |d| d.display().to_string(),
            );
            anyhow::anyhow!("cannot open the files directory {dir}: {e}")
        })?;
        let l = &config.limits;
        let limits = Limiters::new(l);
        let tls = config.server.tls_cert.is_some();
        Ok(AppState(Arc::new(Shared {
            cors: crate::cors::Cors::new(&config.cors.allowed_origins, tls),
            hub: Arc::new(LocalHub::new(l.ws_queue_len)),
            presence: Arc::new(PresenceDamper::new(Duration::from_millis(
                l.presence_offline_delay_ms,
            ))),
            config: Arc::new(config),
            store,
            limits: Arc::new(limits),
            passwords,
            connections: Arc::default(),
            replays: Arc::default(),
            lifecycle: Lifecycle::new(),
            files: Arc::new(files),
        })))
    }
}

/// The peer address of the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);
