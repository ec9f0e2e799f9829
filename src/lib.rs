//! chat-server: a self-hosted real-time chat API — REST and WebSocket over SQLite, in one
//! binary.
//!
//! # Layout
//! - `app`: shared state, the route table, and the accept loop ([`app::run`]).
//! - `config`: defaults, the TOML file and CLI overrides.
//! - `error`: the one API error type and its JSON shape.
//! - `auth`: signup, login, logout, tokens, password hashing, the auth filter.
//! - `users`: `/api/v1/me/` and the user directory.
//! - `rooms`: `/api/v1/chats/`, listing and creating rooms.
//! - `messages`: history, posting and read receipts; the send path REST and WebSocket share.
//! - `ws`: the room WebSocket `/ws/chat/<room_id>/`.
//! - `web`: the browser client at `/`, embedded in the binary, with its own CSP.
//! - `hub`: publish/subscribe between connections, and presence.
//! - `store`: every SQL statement; one writer with group commit, a pool of readers.
//! - `model`: the API objects and id newtypes.
//! - `ratelimit`: token buckets and failure windows.

pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod hub;
pub mod messages;
pub mod model;
pub mod ratelimit;
pub mod rooms;
pub mod store;
pub mod users;
pub mod web;
pub mod ws;

pub use app::{AppState, run};
pub use config::Config;
