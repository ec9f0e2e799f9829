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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind. `127.0.0.1` keeps the server private to this machine.
    pub host: IpAddr,
    pub port: u16,
    /// SQLite database file, or `:memory:` for a throwaway database.
    pub db: String,
    /// `error`, `warn`, `info`, `debug` or `trace` (or a tracing filter directive).
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Read-only connections in the pool that serves reads.
    pub read_connections: u32,
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
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins (`scheme://host[:port]`) allowed to call the API from a browser and to open
    /// WebSockets. Empty: same-origin only.
    pub allowed_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8000,
            db: "chat.db".into(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            read_connections: 4,
            tls_cert: None,
            tls_key: None,
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
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_chars: 4000,
            max_body_bytes: 64 * 1024,
            header_read_timeout_secs: 30,
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

    /// Rejects values that parse but make no sense.
    pub fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        let a = &self.auth;
        let checks: &[(bool, &str)] = &[
            (!self.server.db.is_empty(), "server.db must not be empty"),
            (
                self.server.read_connections >= 1,
                "server.read_connections must be at least 1",
            ),
            (
                l.max_message_chars >= 1,
                "limits.max_message_chars must be at least 1",
            ),
            (
                l.max_body_bytes >= 1024,
                "limits.max_body_bytes must be at least 1024",
            ),
            (
                l.header_read_timeout_secs >= 1,
                "limits.header_read_timeout_secs must be at least 1",
            ),
            (
                l.max_ws_message_bytes >= 1024,
                "limits.max_ws_message_bytes must be at least 1024",
            ),
            (
                l.send_rate_per_sec > 0.0 && l.send_burst >= 1,
                "limits.send_rate_per_sec and limits.send_burst must be positive",
            ),
            (
                l.typing_per_sec > 0.0,
                "limits.typing_per_sec must be positive",
            ),
            (
                l.login_failures_per_user_and_ip >= 1
                    && l.login_failures_per_ip >= 1
                    && l.login_window_secs >= 1,
                "limits.login_failures_per_user_and_ip, limits.login_failures_per_ip and \
                 limits.login_window_secs must be at least 1",
            ),
            (
                l.login_failures_per_user >= l.login_failures_per_user_and_ip,
                "limits.login_failures_per_user must be at least limits.login_failures_per_user_and_ip",
            ),
            (
                l.ws_queue_len >= 16,
                "limits.ws_queue_len must be at least 16",
            ),
            (
                a.token_ttl_hours >= 1,
                "auth.token_ttl_hours must be at least 1",
            ),
            (
                a.argon2_memory_kib >= 8 * a.argon2_parallelism.max(1)
                    && a.argon2_iterations >= 1
                    && a.argon2_parallelism >= 1,
                "auth.argon2_* parameters are out of range",
            ),
        ];
        for &(ok, message) in checks {
            if !ok {
                return Err(message.to_string());
            }
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err("server.tls_cert and server.tls_key must be given together".into());
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

    #[test]
    fn bad_values_are_rejected() {
        assert!(Config::from_toml("[server]\nport = \"eighty\"\n").is_err());
        assert!(Config::from_toml("[limits]\nmax_message_chars = 0\n").is_err());
        assert!(Config::from_toml("[cors]\nallowed_origins = [\"example.com\"]\n").is_err());
        assert!(Config::from_toml("[server]\ntls_cert = \"cert.pem\"\n").is_err());
    }
}
