//! Configuration: built-in defaults, overridden by a TOML file (`--config`), overridden by
//! command-line flags. Every option is documented in `config.example.toml`, which a test parses.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole configuration. Unknown keys are an error, so a typo never silently does nothing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub cors: CorsConfig,
    pub metrics: MetricsConfig,
    pub web: WebConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind. `127.0.0.1` keeps the server private to this machine.
    pub host: IpAddr,
    pub port: u16,
    /// SQLite database file, or `:memory:` for a throwaway database.
    pub db: String,
    /// Directory of the uploaded files. Empty: `<db>.files` beside the database (for
    /// `:memory:`, a temporary directory removed on exit).
    pub files: String,
    /// `error`, `warn`, `info`, `debug` or `trace` (or a tracing filter directive).
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Read-only connections in the pool that serves reads.
    pub read_connections: u32,
    /// Database reads that may wait for a reader; past this, requests get 503 `overloaded`.
    pub max_queued_reads: usize,
    /// Database writes that may wait for the writer; past this, requests get 503
    /// `overloaded` (and WebSocket sends an `overloaded` error frame).
    pub max_queued_writes: usize,
    /// PEM certificate chain; with `tls_key`, the server speaks HTTPS and WSS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// How long a token from login stays valid.
    pub token_ttl_hours: u64,
    /// argon2id memory cost in KiB (OWASP minimum: 19456).
    pub argon2_memory_kib: u32,
    /// argon2id time cost (iterations).
    pub argon2_iterations: u32,
    /// argon2id parallelism.
    pub argon2_parallelism: u32,
    /// Whether anyone may create an account (`open`), or only an administrator with the
    /// `user create` command (`closed`).
    pub signup: Signup,
}

/// Who may create accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signup {
    Open,
    Closed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Longest message, in characters after trimming.
    pub max_message_chars: usize,
    /// Largest JSON request body, in bytes.
    pub max_body_bytes: u64,
    /// Seconds a client has to send a request's headers; also how long an idle keep-alive
    /// connection stays open.
    pub header_read_timeout_secs: u64,
    /// Seconds a client has, after its headers, to send the whole request body.
    pub body_read_timeout_secs: u64,
    /// Largest WebSocket message a client may send, in bytes.
    pub max_ws_message_bytes: usize,
    /// Sustained messages per second per user (REST and WebSocket together).
    pub send_rate_per_sec: f64,
    /// Messages a user may send in a burst above the sustained rate.
    pub send_burst: u32,
    /// Failed logins per username from one client address within `login_window_secs`.
    pub login_failures_per_user_and_ip: u32,
    /// Failed logins per username within `login_window_secs`, over every address the account
    /// has not logged in from before.
    pub login_failures_per_user: u32,
    /// Failed logins per client IP within `login_window_secs`.
    pub login_failures_per_ip: u32,
    pub login_window_secs: u64,
    /// First delay, in milliseconds, of an attempt on a username that failed more than
    /// `login_failures_per_user_and_ip` times from unknown addresses; it doubles with each
    /// further failure, up to 5 s. 0 turns it off.
    pub login_slowdown_ms: u64,
    /// Typing events per second per user and room; extra ones are dropped.
    pub typing_per_sec: f64,
    /// Open WebSocket connections per user.
    pub max_connections_per_user: u32,
    /// Open WebSocket connections in total, over all users.
    pub max_connections_total: u32,
    /// Events a connection may fall behind before it is resynced from the database.
    pub ws_queue_len: usize,
    /// Seconds between server pings on an idle WebSocket.
    pub ws_ping_interval_secs: u64,
    /// A WebSocket peer silent for this many seconds (not even a pong) is disconnected.
    pub ws_idle_timeout_secs: u64,
    /// A WebSocket write that cannot complete in this many seconds drops the connection.
    pub ws_write_timeout_secs: u64,
    /// Accounts created per client address (IPv6: per /64) per hour, as a burst that refills
    /// evenly over the hour.
    pub signups_per_ip_per_hour: u32,
    /// Rooms a user may create per hour, as a burst that refills evenly over the hour.
    pub rooms_created_per_user_per_hour: u32,
    /// Rooms a user may belong to.
    pub max_rooms_per_user: u32,
    /// Rooms one user may put another user in (by creating them or adding the user), counted
    /// over the rooms the other user is still in.
    pub max_rooms_added_by_one_user: u32,
    /// Rooms per page of `GET /api/v1/chats/`: the default, and the most a client may ask for.
    pub rooms_page_default: u32,
    pub rooms_page_max: u32,
    /// WebSocket connections a user may open per minute, as a burst that refills evenly ...
    pub ws_connects_per_user_per_min: u32,
    /// ... and per client address (IPv6: per /64), over all users.
    pub ws_connects_per_ip_per_min: u32,
    /// Milliseconds a user's offline presence waits after their last socket closed; a
    /// reconnect within it announces nothing. 0 announces at once.
    pub presence_offline_delay_ms: u64,
    /// Most messages one socket replays for `?since=` before it is closed with 4000.
    pub max_replay_messages: u32,
    /// Replays (`?since=` and resyncs) running at once, per user and over all users.
    pub max_replays_per_user: u32,
    pub max_replays_total: u32,
    /// Open TCP connections (HTTP and WebSocket), in total and per client address (IPv6: per
    /// /64). The total is also held below the process's descriptor limit, with a reserve for
    /// the listener and the database. At the cap the oldest idle keep-alive connection is
    /// closed to make room; if none is idle, the new connection is.
    pub max_tcp_connections: u32,
    pub max_tcp_connections_per_ip: u32,
    /// Largest uploaded file, in bytes.
    pub max_upload_bytes: u64,
    /// Bytes one user's uploads may hold in all, attached or not.
    pub upload_quota_bytes: u64,
    /// Uploads one user may be sending at once.
    pub uploads_at_once_per_user: u32,
    /// Seconds an upload has in all; a stalled one (nothing for `body_read_timeout_secs`)
    /// ends sooner.
    pub upload_timeout_secs: u64,
    /// Seconds an upload no message attached is kept.
    pub unattached_upload_secs: u64,
    /// Bytes per second all uploads together are taken in at, at most (0: no bound), so that
    /// fast uploads leave CPU for everything else.
    pub upload_bytes_per_sec: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins (`scheme://host[:port]`) allowed to call the API from a browser and to open
    /// WebSockets. Empty: same-origin only.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// The bearer token `/metrics` asks for; without one it answers loopback clients only.
    pub token: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// For developing the web client: serve its files from this directory (as they are on
    /// each request) instead of the copy embedded in the binary.
    pub dir: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8000,
            db: "chat.db".into(),
            files: String::new(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            read_connections: 4,
            max_queued_reads: 1024,
            max_queued_writes: 4096,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl ServerConfig {
    /// The files directory: `files`, or `<db>.files` beside the database; `None` for a
    /// `:memory:` database without one.
    pub fn files_dir(&self) -> Option<PathBuf> {
        if !self.files.is_empty() {
            Some(PathBuf::from(&self.files))
        } else if self.db == ":memory:" {
            None
        } else {
            let mut dir = PathBuf::from(&self.db).into_os_string();
            dir.push(".files");
            Some(PathBuf::from(dir))
        }
    }

    /// How the database is sized.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            read_connections: self.read_connections,
            max_queued_reads: self.max_queued_reads,
            max_queued_writes: self.max_queued_writes,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_ttl_hours: 24 * 30,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            signup: Signup::Open,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_chars: 4000,
            max_body_bytes: 64 * 1024,
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 30,
            max_ws_message_bytes: 64 * 1024,
            send_rate_per_sec: 20.0,
            send_burst: 40,
            login_failures_per_user_and_ip: 10,
            login_failures_per_user: 100,
            login_failures_per_ip: 100,
            login_window_secs: 300,
            login_slowdown_ms: 250,
            typing_per_sec: 2.0,
            max_connections_per_user: 32,
            max_connections_total: 20_000,
            ws_queue_len: 1024,
            ws_ping_interval_secs: 30,
            ws_idle_timeout_secs: 75,
            ws_write_timeout_secs: 10,
            signups_per_ip_per_hour: 20,
            rooms_created_per_user_per_hour: 200,
            max_rooms_per_user: 2000,
            max_rooms_added_by_one_user: 50,
            rooms_page_default: 100,
            rooms_page_max: 500,
            ws_connects_per_user_per_min: 120,
            ws_connects_per_ip_per_min: 1200,
            presence_offline_delay_ms: 3000,
            max_replay_messages: 10_000,
            max_replays_per_user: 2,
            max_replays_total: 16,
            max_tcp_connections: 30_000,
            max_tcp_connections_per_ip: 2_000,
            max_upload_bytes: 25 * 1024 * 1024,
            upload_quota_bytes: 1024 * 1024 * 1024,
            uploads_at_once_per_user: 4,
            upload_timeout_secs: 600,
            unattached_upload_secs: 24 * 3600,
            upload_bytes_per_sec: 128 * 1024 * 1024,
        }
    }
}

/// A configuration that cannot be used, with a message fit for the person starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Parses a TOML document; unknown keys and wrong types are errors.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Rejects values that parse but make no sense: every number has a range (so none is zero
    /// where zero would break something, or large enough to overflow a deadline), and the
    /// options that depend on each other must agree.
    pub fn validate(&self) -> Result<(), String> {
        let s = &self.server;
        let l = &self.limits;
        let a = &self.auth;
        const MIB: f64 = 1024.0 * 1024.0;
        // The slowest a rate limit may refill: a token in about 11.6 days. A slower one makes
        // the wait of a refusal too long for a `Duration` (a panic when a send is refused).
        const MIN_RATE: f64 = 1e-6;
        // (option, value, least, most)
        let ranges: &[(&str, f64, f64, f64)] = &[
            (
                "server.read_connections",
                s.read_connections.into(),
                1.0,
                256.0,
            ),
            (
                "server.max_queued_reads",
                s.max_queued_reads as f64,
                1.0,
                1e7,
            ),
            (
                "server.max_queued_writes",
                s.max_queued_writes as f64,
                1.0,
                1e7,
            ),
            (
                "auth.token_ttl_hours",
                a.token_ttl_hours as f64,
                1.0,
                24.0 * 3660.0,
            ),
            (
                "auth.argon2_memory_kib",
                a.argon2_memory_kib.into(),
                8.0 * f64::from(a.argon2_parallelism.max(1)),
                4.0 * 1024.0 * 1024.0,
            ),
            (
                "auth.argon2_iterations",
                a.argon2_iterations.into(),
                1.0,
                64.0,
            ),
            (
                "auth.argon2_parallelism",
                a.argon2_parallelism.into(),
                1.0,
                64.0,
            ),
            (
                "limits.max_message_chars",
                l.max_message_chars as f64,
                1.0,
                1_000_000.0,
            ),
            (
                "limits.max_body_bytes",
                l.max_body_bytes as f64,
                1024.0,
                64.0 * MIB,
            ),
            (
                "limits.header_read_timeout_secs",
                l.header_read_timeout_secs as f64,
                1.0,
                3600.0,
            ),
            (
                "limits.body_read_timeout_secs",
                l.body_read_timeout_secs as f64,
                1.0,
                3600.0,
            ),
            (
                "limits.max_ws_message_bytes",
                l.max_ws_message_bytes as f64,
                1024.0,
                64.0 * MIB,
            ),
            (
                "limits.send_rate_per_sec",
                l.send_rate_per_sec,
                MIN_RATE,
                1e6,
            ),
            ("limits.send_burst", l.send_burst.into(), 1.0, 1e6),
            (
                "limits.login_failures_per_user_and_ip",
                l.login_failures_per_user_and_ip.into(),
                1.0,
                1e6,
            ),
            (
                "limits.login_failures_per_user",
                l.login_failures_per_user.into(),
                1.0,
                1e6,
            ),
            (
                "limits.login_failures_per_ip",
                l.login_failures_per_ip.into(),
                1.0,
                1e6,
            ),
            (
                "limits.login_window_secs",
                l.login_window_secs as f64,
                1.0,
                7.0 * 86400.0,
            ),
            (
                "limits.login_slowdown_ms",
                l.login_slowdown_ms as f64,
                0.0,
                5000.0,
            ),
            ("limits.typing_per_sec", l.typing_per_sec, MIN_RATE, 1000.0),
            (
                "limits.max_connections_per_user",
                l.max_connections_per_user.into(),
                1.0,
                1e6,
            ),
            (
                "limits.max_connections_total",
                l.max_connections_total.into(),
                1.0,
                1e7,
            ),
            ("limits.ws_queue_len", l.ws_queue_len as f64, 16.0, 1e6),
            (
                "limits.ws_ping_interval_secs",
                l.ws_ping_interval_secs as f64,
                1.0,
                3600.0,
            ),
            (
                "limits.ws_idle_timeout_secs",
                l.ws_idle_timeout_secs as f64,
                1.0,
                86400.0,
            ),
            (
                "limits.ws_write_timeout_secs",
                l.ws_write_timeout_secs as f64,
                1.0,
                3600.0,
            ),
            (
                "limits.signups_per_ip_per_hour",
                l.signups_per_ip_per_hour as f64,
                1.0,
                1e6,
            ),
            (
                "limits.rooms_created_per_user_per_hour",
                l.rooms_created_per_user_per_hour as f64,
                1.0,
                1e7,
            ),
            (
                "limits.max_rooms_per_user",
                l.max_rooms_per_user as f64,
                2.0,
                1e7,
            ),
            (
                "limits.max_rooms_added_by_one_user",
                l.max_rooms_added_by_one_user as f64,
                1.0,
                1e7,
            ),
            (
                "limits.rooms_page_default",
                l.rooms_page_default as f64,
                1.0,
                1e5,
            ),
            ("limits.rooms_page_max", l.rooms_page_max as f64, 1.0, 1e5),
            (
                "limits.ws_connects_per_user_per_min",
                l.ws_connects_per_user_per_min as f64,
                1.0,
                1e7,
            ),
            (
                "limits.ws_connects_per_ip_per_min",
                l.ws_connects_per_ip_per_min as f64,
                1.0,
                1e8,
            ),
            (
                "limits.presence_offline_delay_ms",
                l.presence_offline_delay_ms as f64,
                0.0,
                600000.0,
            ),
            (
                "limits.max_replay_messages",
                l.max_replay_messages as f64,
                1.0,
                1e9,
            ),
            (
                "limits.max_replays_per_user",
                l.max_replays_per_user as f64,
                1.0,
                1e5,
            ),
            (
                "limits.max_replays_total",
                l.max_replays_total as f64,
                1.0,
                1e6,
            ),
            (
                "limits.max_tcp_connections",
                l.max_tcp_connections as f64,
                16.0,
                1e7,
            ),
            (
                "limits.max_tcp_connections_per_ip",
                l.max_tcp_connections_per_ip as f64,
                1.0,
                1e7,
            ),
            (
                "limits.max_upload_bytes",
                l.max_upload_bytes as f64,
                1.0,
                64.0 * 1024.0 * MIB,
            ),
            (
                "limits.upload_quota_bytes",
                l.upload_quota_bytes as f64,
                0.0,
                1e15,
            ),
            (
                "limits.uploads_at_once_per_user",
                l.uploads_at_once_per_user.into(),
                1.0,
                1000.0,
            ),
            (
                "limits.upload_timeout_secs",
                l.upload_timeout_secs as f64,
                1.0,
                86_400.0,
            ),
            (
                "limits.upload_bytes_per_sec",
                l.upload_bytes_per_sec as f64,
                0.0,
                1e12,
            ),
            (
                "limits.unattached_upload_secs",
                l.unattached_upload_secs as f64,
                60.0,
                365.0 * 86_400.0,
            ),
        ];
        for &(name, value, least, most) in ranges {
            // `!(..)` so that NaN fails too
            if !(value >= least && value <= most) {
                return Err(format!(
                    "{name} must be at least {least} and at most {most} (it is {value})"
                ));
            }
        }
        let agree: &[(bool, &str)] = &[
            (!s.db.is_empty(), "server.db must not be empty"),
            (
                l.login_failures_per_user >= l.login_failures_per_user_and_ip,
                "limits.login_failures_per_user must be at least limits.login_failures_per_user_and_ip",
            ),
            (
                l.max_connections_per_user <= l.max_connections_total,
                "limits.max_connections_per_user must be at most limits.max_connections_total",
            ),
            (
                l.ws_idle_timeout_secs > l.ws_ping_interval_secs,
                "limits.ws_idle_timeout_secs must be longer than limits.ws_ping_interval_secs, \
                 or every idle socket is closed before it is pinged",
            ),
            (
                l.rooms_page_default <= l.rooms_page_max,
                "limits.rooms_page_default must be at most limits.rooms_page_max",
            ),
            (
                l.max_replays_per_user <= l.max_replays_total,
                "limits.max_replays_per_user must be at most limits.max_replays_total",
            ),
            (
                l.max_tcp_connections_per_ip <= l.max_tcp_connections,
                "limits.max_tcp_connections_per_ip must be at most limits.max_tcp_connections",
            ),
            (
                l.max_message_chars as u64 <= l.max_body_bytes,
                "limits.max_message_chars must be at most limits.max_body_bytes",
            ),
        ];
        for &(ok, message) in agree {
            if !ok {
                return Err(message.to_string());
            }
        }
        tracing_subscriber::EnvFilter::try_new(&s.log_level).map_err(|e| {
            format!(
                "server.log_level {:?} is not a level or filter: {e}",
                s.log_level
            )
        })?;
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            return Err("server.tls_cert and server.tls_key must be given together".into());
        }
        if let Some(token) = &self.metrics.token
            && (token.chars().count() < 16 || token.chars().any(char::is_whitespace))
        {
            return Err("metrics.token must be at least 16 characters, without spaces".into());
        }
        for origin in &self.cors.allowed_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.ends_with('/')
            {
                return Err(format!(
                    "cors.allowed_origins: {origin:?} is not an origin like \"https://chat.example.com\""
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_matches_the_defaults() {
        let text = include_str!("../config.example.toml");
        let parsed = Config::from_toml(text).expect("config.example.toml parses");
        // The example documents the defaults; if they drift apart the example is stale.
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("[server]\nprot = 80\n").unwrap_err();
        assert!(err.contains("prot"), "{err}");
    }

    /// Every number of the example file, at zero, negative, huge and not a number: each is a
    /// clear error, except the two options whose zero means something.
    #[test]
    fn every_numeric_option_is_range_checked() {
        const ZERO_MEANS_SOMETHING: &[&str] = &[
            "server.port",
            "limits.login_slowdown_ms",
            "limits.presence_offline_delay_ms",
            "limits.upload_quota_bytes",
            "limits.upload_bytes_per_sec",
        ];
        let example: toml::Table = toml::from_str(include_str!("../config.example.toml")).unwrap();
        let mut walked = 0;
        for (section, table) in &example {
            for (key, value) in table.as_table().unwrap() {
                let name = format!("{section}.{key}");
                let mut bad = vec!["-1", "9223372036854775807", "18446744073709551616"];
                if !ZERO_MEANS_SOMETHING.contains(&name.as_str()) {
                    bad.push("0");
                }
                match value {
                    toml::Value::Integer(_) => {}
                    toml::Value::Float(_) => {
                        bad.extend(["0.0", "-0.5", "nan", "inf", "1e300", "1e-300", "5e-7"])
                    }
                    _ => continue,
                }
                walked += 1;
                for v in bad {
                    let err = Config::from_toml(&format!("[{section}]\n{key} = {v}\n"))
                        .expect_err(&format!("{name} = {v} was accepted"));
                    assert!(err.contains(key.as_str()), "{name} = {v}: {err}");
                }
            }
        }
        assert!(walked >= 24, "walked only {walked} options");
    }

    /// Found with the `config` fuzz target's checks: a rate just above zero was accepted, and
    /// the first refused send or typing event panicked turning its wait into a `Duration`.
    #[test]
    fn the_slowest_rates_accepted_refuse_with_a_finite_wait() {
        let err = Config::from_toml("[limits]\nsend_rate_per_sec = 1e-300\n").unwrap_err();
        assert!(
            err.contains("send_rate_per_sec must be at least 0.000001"),
            "{err}"
        );
        let err = Config::from_toml("[limits]\ntyping_per_sec = 1e-20\n").unwrap_err();
        assert!(err.contains("typing_per_sec"), "{err}");
        let text = "[limits]\nsend_rate_per_sec = 1e-6\nsend_burst = 1\ntyping_per_sec = 1e-6\n";
        let config = Config::from_toml(text).unwrap();
        let limiters = crate::state::Limiters::new(&config.limits);
        let (user, room) = (crate::model::UserId(1), crate::model::RoomId(1));
        assert!(limiters.sends.take(&user).is_ok());
        let wait = limiters.sends.take(&user).unwrap_err();
        assert!(wait.as_secs() > 900_000, "{wait:?}");
        assert!(limiters.typing.take(&(user, room)).is_ok());
        assert!(limiters.typing.take(&(user, room)).is_err());
    }

    #[test]
    fn options_that_depend_on_each_other_must_agree() {
        for (text, says) in [
            (
                "[limits]\nws_ping_interval_secs = 80\n",
                "ws_idle_timeout_secs",
            ),
            (
                "[limits]\nmax_connections_per_user = 30000\n",
                "max_connections_total",
            ),
            (
                "[limits]\nlogin_failures_per_user = 5\n",
                "login_failures_per_user",
            ),
            ("[limits]\nmax_message_chars = 70000\n", "max_body_bytes"),
            ("[server]\nlog_level = \"info,[\"\n", "log_level"),
        ] {
            let err = Config::from_toml(text).expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(Config::from_toml("[server]\nport = \"eighty\"\n").is_err());
        assert!(Config::from_toml("[limits]\nmax_message_chars = 0\n").is_err());
        assert!(Config::from_toml("[cors]\nallowed_origins = [\"example.com\"]\n").is_err());
        assert!(Config::from_toml("[metrics]\ntoken = \"short\"\n").is_err());
        assert!(Config::from_toml("[metrics]\ntoken = \"long enough but spaced\"\n").is_err());
        let ok = Config::from_toml("[metrics]\ntoken = \"0123456789abcdef\"\n").unwrap();
        assert_eq!(ok.metrics.token.as_deref(), Some("0123456789abcdef"));
        assert!(Config::from_toml("[server]\ntls_cert = \"cert.pem\"\n").is_err());
    }
}
