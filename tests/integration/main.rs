//! The integration tests: each module starts real servers on `127.0.0.1:0` (or runs the real
//! binary) and talks to them over real sockets. One binary, so the server is linked once;
//! tests that need a process of their own (`crash`, `fuzz`) and the browser tests
//! (`web_client`) are binaries of their own.

#[path = "../common/mod.rs"]
mod common;

mod abuse;
mod api;
mod authz;
mod cli;
mod contract;
mod edits;
mod faults;
mod files;
mod hooks;
mod hostile;
mod logs;
mod ops;
mod readme;
mod realtime;
mod security;
mod seed;
