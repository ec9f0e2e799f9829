//! Operations: health and metrics endpoints, TLS, the OpenAPI document, shutdown, schema
//! upgrades, and the admin subcommands of the real binary.

mod binary;
mod bots;
mod health;
mod openapi;
mod schema;
mod shutdown;
mod startup;
mod tls;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use crate::common::WAIT;

pub(super) const BIN: &str = env!("CARGO_BIN_EXE_chat-server");

/// Runs an admin subcommand to completion; returns (success, stdout, stderr).
pub(super) fn admin(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(super) async fn admin_async(
    args: Vec<String>,
    stdin: Option<String>,
) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        admin(&args, stdin.as_deref())
    })
    .await
    .unwrap()
}

/// A config file that makes password hashing cheap and lifts the send rate limit, so tests of
/// the binary are quick and can put it under load.
pub(super) fn quick_config(dir: &Path) -> PathBuf {
    let path = dir.join("quick.toml");
    std::fs::write(
        &path,
        "[auth]\nargon2_memory_kib = 64\nargon2_iterations = 1\n\n\
         [limits]\nsend_rate_per_sec = 100000.0\nsend_burst = 100000\n",
    )
    .unwrap();
    path
}

/// A running server on a database file, with what an admin command needs to work on that
/// file, for tests that drive the binary's subcommands beside the server.
pub(super) struct AdminSetup {
    pub server: crate::common::TestServer,
    db: String,
    config: String,
    _dir: tempfile::TempDir,
}

impl AdminSetup {
    pub async fn start() -> AdminSetup {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db").to_str().unwrap().to_string();
        let config = quick_config(dir.path()).to_str().unwrap().to_string();
        let mut server_config = crate::common::test_config();
        server_config.server.db = db.clone();
        let server = crate::common::TestServer::start_with(server_config).await;
        AdminSetup {
            server,
            db,
            config,
            _dir: dir,
        }
    }

    /// `rest` followed by `--db` and `--config` for this setup's database.
    pub fn args(&self, rest: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = rest.iter().map(|a| a.to_string()).collect();
        v.extend([
            "--db".into(),
            self.db.clone(),
            "--config".into(),
            self.config.clone(),
        ]);
        v
    }
}

/// The real binary, serving; its log lines arrive on a channel.
pub(super) struct Spawned {
    child: Option<Child>,
    pub pid: u32,
    pub addr: std::net::SocketAddr,
    _lines: std_mpsc::Receiver<String>,
}

impl Spawned {
    pub fn start(db: &Path, config: &Path) -> Spawned {
        let mut child = Command::new(BIN)
            .args(["--db", db.to_str().unwrap(), "--port", "0", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std_mpsc::channel();
        // Drain the log continuously so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let addr = loop {
            let line = rx
                .recv_timeout(WAIT)
                .expect("the server did not report its address");
            if line.contains("listening")
                && let Some(rest) = line.split("addr=").nth(1)
            {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        Spawned {
            pid: child.id(),
            child: Some(child),
            addr,
            _lines: rx,
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Waits for the process to exit; fails (and kills it) after `limit`.
    pub async fn exit_status(mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let waited = tokio::task::spawn_blocking(move || child.wait().unwrap());
        match tokio::time::timeout(limit, waited).await {
            Ok(status) => status.unwrap(),
            Err(_) => {
                self.signal("-KILL");
                panic!("the server did not exit within {limit:?}");
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
