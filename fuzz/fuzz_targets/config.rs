//! The configuration file: the input is the text of a TOML file, parsed and validated by
//! `Config::from_toml`, the function `--config` and `Config::from_file` use.
//!
//! Checks: no panic; a configuration that is accepted is one the server can run with, as
//! `config.example.toml` promises ("numbers out of their range ... stop the server at
//! startup"): its argon2 parameters are valid, its timeouts make deadlines, its origins make a
//! CORS policy, and the server's own rate limiters built from it refuse without panicking once
//! their burst is spent; the same settings written out again as TOML parse to the same
//! configuration.
#![no_main]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use chat_server::Config;
use chat_server::cors::Cors;
use chat_server::model::{RoomId, UserId};
use chat_server::ratelimit::Buckets;
use chat_server::state::Limiters;
use libfuzzer_sys::fuzz_target;

/// Takes from `bucket` until it refuses, or `most` times. A refusal's wait must be a real
/// duration (it becomes a `Retry-After`).
fn spend<K: std::hash::Hash + Eq + Clone>(bucket: &Buckets<K>, key: &K, most: usize) {
    for _ in 0..most {
        if bucket.take(key).is_err() {
            return;
        }
    }
}

fn runnable(config: &Config) {
    let a = &config.auth;
    argon2::Params::new(
        a.argon2_memory_kib,
        a.argon2_iterations,
        a.argon2_parallelism,
        None,
    )
    .expect("accepted argon2 parameters that argon2 refuses");
    let ttl = Duration::from_secs(a.token_ttl_hours * 3600);
    assert!(i64::try_from(ttl.as_millis()).is_ok());

    let l = &config.limits;
    let now = Instant::now();
    for secs in [
        l.header_read_timeout_secs,
        l.ws_ping_interval_secs,
        l.ws_idle_timeout_secs,
        l.ws_write_timeout_secs,
        l.login_window_secs,
    ] {
        assert!(now.checked_add(Duration::from_secs(secs)).is_some());
    }
    for ms in [l.login_slowdown_ms, l.presence_offline_delay_ms] {
        assert!(now.checked_add(Duration::from_millis(ms)).is_some());
    }
    let _ = Cors::new(
        &config.cors.allowed_origins,
        config.server.tls_cert.is_some(),
    );

    // A burst of up to 64 is spent here; a larger one is not worth the time per input.
    const MOST: usize = 65;
    let limiters = Limiters::new(l);
    let user = UserId(1);
    let ip = IpAddr::from([192, 0, 2, 1]);
    spend(&limiters.sends, &user, MOST);
    spend(&limiters.typing, &(user, RoomId(1)), MOST);
    spend(&limiters.signups, &ip, MOST);
    spend(&limiters.rooms_created, &user, MOST);
    spend(&limiters.ws_connects_user, &user, MOST);
    spend(&limiters.ws_connects_ip, &ip, MOST);
}

fuzz_target!(|data: &[u8]| {
    // `Config::from_file` reads the file as UTF-8 text first.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_toml(text) else {
        return;
    };
    runnable(&config);
    // The same settings, written out again by the TOML library, are the same configuration.
    let table: toml::Table = toml::from_str(text).expect("accepted text that is not TOML");
    let again = toml::to_string(&table).expect("a TOML table writes out");
    let reparsed = Config::from_toml(&again)
        .unwrap_or_else(|e| panic!("{again:?} written out from {text:?} is refused: {e}"));
    assert_eq!(format!("{reparsed:?}"), format!("{config:?}"));
});
