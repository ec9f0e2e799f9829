//! chat-server: a self-hosted real-time chat API — REST and WebSocket over SQLite, in one
//! binary.
//!
//! # Layout
//! - `app`: shared state, the route table, and the accept loop ([`app::run`]).
//! - `config`: defaults, the TOML file and CLI overrides.
//! - `connections`: WebSocket connection caps, and closing sockets whose token was revoked.
//! - `cors`: the cross-origin allowlist of the REST API.
//! - `error`: the one API error type and its JSON shape.
//! - `auth`: signup, login, logout, tokens, password hashing, the auth filter.
//! - `users`: `/api/v1/me/` and the user directory.
//! - `rooms`: `/api/v1/chats/` (listing, creating) and `/api/v1/chat/<id>/members/`.
//! - `messages`: history, posting and read receipts; the send path REST and WebSocket share.
//! - `ws`: the WebSockets `/ws/chat/<room_id>/` (one room) and `/ws/` (all of a user's rooms).
//! - `web`: the browser client at `/`, embedded in the binary, with its own CSP.
//! - `hub`: publish/subscribe between connections, and presence.
//! - `store`: every SQL statement; one writer with group commit, a pool of readers.
//! - `model`: the API objects and id newtypes.
//! - `ratelimit`: token buckets and failure windows.
//! - `lifecycle`: shutdown and forced session ends that open WebSockets listen to.
//! - `metrics`: process-wide counters and histograms, rendered for Prometheus.
//! - `ops`: `/healthz`, `/metrics` and `/api/v1/openapi.json`.
//! - `tls`: HTTPS/WSS with rustls, reloading the certificate when it is renewed.
//! - `admin`: the operator's subcommands (`backup`, `user ...`, `print-config`).

pub mod account;
pub mod admin;
pub mod app;
pub mod auth;
pub mod config;
pub mod connections;
pub mod cors;
pub mod error;
pub mod hub;
pub mod lifecycle;
pub mod messages;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod ratelimit;
pub mod rooms;
pub mod store;
pub mod tls;
pub mod users;
pub mod web;
pub mod ws;

pub use app::{AppState, run};
pub use config::Config;
