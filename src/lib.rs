//! chat-server: a self-hosted real-time chat API — REST and WebSocket over SQLite, in one
//! binary.
//!
//! # Layout
//! - `routes`: the route table, the only module that composes the features' routes, with the
//!   policies of every reply (CORS, security headers, access log, error shape).
//! - `server`: the accept loop ([`server::run`]): HTTP/1.1 over TCP or TLS, timeouts, shutdown.
//! - `admission`: which TCP connections are taken: caps in total (below the descriptor limit)
//!   and per address, shedding the longest-idle keep-alive connection at the cap.
//! - `state`: [`AppState`], what every handler and socket session shares.
//! - `filters`: the warp filters the features share (state, JSON bodies, and typed query
//!   strings through `FromQuery`).
//! - `config`: defaults, the TOML file and CLI overrides.
//! - `connections`: WebSocket connection caps, replay caps, and closing sockets whose token
//!   was revoked.
//! - `cors`: the cross-origin allowlist of the REST API.
//! - `error`: the one API error type and its JSON shape.
//! - `auth`: signup, login, logout, tokens, the auth filter.
//! - `passwords`: argon2id hashing, bounded so floods cannot starve the chat.
//! - `account`: the account rules: what a username is (normalised, folded, not a
//!   look-alike) and the password policy.
//! - `users`: `/api/v1/me/` and the user directory.
//! - `rooms`: `/api/v1/chats/` (listing, creating) and `/api/v1/chat/<id>/members/`.
//! - `chat`: the chat apart from any transport (send, read marks, membership, typing, and the
//!   events they publish), shared by the REST handlers and the WebSocket.
//! - `membership`: who may add and remove members, the rules every store backend applies
//!   inside the transaction that changes the members.
//! - `messages`: history, posting and read receipts over REST.
//! - `uploads`: `/api/v1/uploads/` (files streamed in, typed, thumbnailed) and
//!   `/api/v1/files/<id>/` (downloads for the rooms a file was posted in, with ranges).
//! - `files`: the files' bytes in a directory beside the database, named by their SHA-256:
//!   receiving, committing before the row, sweeping what no row names; type sniffing, safe
//!   header names and thumbnails.
//! - `bots`: `/api/v1/bots/`, the bots a person owns (made, given tokens, deactivated).
//! - `hooks`: incoming webhooks: a secret URL that posts into a room as the hook's bot.
//! - `ws`: the WebSockets `/ws/chat/<room_id>/` (one room) and `/ws/` (all of a user's rooms):
//!   `upgrade`, `protocol` (client frames and close codes), `session` (the event loop),
//!   `subscription` (what a socket follows, hello, replay, delivery), `dedup`, `outbox`
//!   (timed batched writes, presence coalescing), `pipeline` (sends in flight) and `actions`.
//! - `web`: the browser client at `/`, embedded in the binary, with its own CSP.
//! - `frames`: every frame the server sends on a WebSocket, as one type (`ServerFrame`).
//! - `hub`: the publish/subscribe interface (`hub::Hub`) between connections, with presence
//!   (damped by `hub::PresenceDamper`), and its in-process implementation `hub::LocalHub`.
//! - `store`: the store interface (`store::api::ChatStore`, named operations) and its SQLite
//!   implementation: every SQL statement, one writer with group commit, a pool of readers.
//! - `model`: the API objects, id newtypes and error codes.
//! - `ratelimit`: token buckets and failure windows.
//! - `lifecycle`: shutdown and forced session ends that open WebSockets listen to.
//! - `metrics`: process-wide counters and histograms, rendered for Prometheus.
//! - `ops`: `/healthz`, `/metrics` and `/api/v1/openapi.json`.
//! - `tls`: HTTPS/WSS with rustls, reloading the certificate when it is renewed.
//! - `admin`: the operator's subcommands (`backup`, `user ...`, `bot ...`, `print-config`).

pub mod account;
pub mod admin;
pub mod admission;
pub mod auth;
pub mod bots;
pub mod chat;
pub mod config;
pub mod connections;
pub mod cors;
pub mod error;
pub mod files;
pub mod filters;
pub mod frames;
pub mod hooks;
pub mod hub;
pub mod lifecycle;
pub mod membership;
pub mod mentions;
pub mod messages;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod passwords;
pub mod ratelimit;
pub mod rooms;
pub mod routes;
pub mod search;
pub mod server;
pub mod state;
pub mod store;
pub mod tls;
pub mod uploads;
pub mod users;
pub mod web;
pub mod ws;

pub use config::Config;
pub use server::run;
pub use state::AppState;
