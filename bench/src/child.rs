//! The servers under test, run as child processes on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// Which server a figure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The real `chat-server` release binary.
    Chat,
    /// The bare broadcast server of this crate: the ceiling.
    Bare,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Bare => "bare",
        }
    }
}

/// A running server. Dropping it kills the process.
pub struct Server {
    pub kind: Kind,
    pub addr: SocketAddr,
    child: Child,
    pid: u32,
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Writes the chat-server config the benchmark runs with: limits raised so the load generator,
/// not the abuse limits, is what the server sees; cheap password hashing so setting up a
/// thousand users is quick; access logging off; a per-user upload quota above what the uploads
/// scenario sends.
pub fn write_chat_config(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("bench.toml");
    std::fs::write(
        &path,
        r#"# chat-server configuration for the benchmark suite (written by chat-bench).
[server]
log_level = "warn,chat_server=info,chat_server::access=warn"

[auth]
argon2_memory_kib = 8
argon2_iterations = 1
argon2_parallelism = 1

[limits]
max_body_bytes = 1048576
send_rate_per_sec = 1000000.0
send_burst = 1000000
max_connections_per_user = 1000
signups_per_ip_per_hour = 1000000
rooms_created_per_user_per_hour = 10000000
max_rooms_per_user = 10000000
max_rooms_added_by_one_user = 10000000
ws_connects_per_user_per_min = 10000000
ws_connects_per_ip_per_min = 100000000
max_replays_per_user = 100000
max_replays_total = 1000000
max_tcp_connections = 10000000
max_tcp_connections_per_ip = 10000000
# The uploads scenario bounds its own disk use; one user may take more than the default 1 GiB.
upload_quota_bytes = 4294967296
"#,
    )?;
    Ok(path)
}

impl Server {
    /// Starts `bin` with `args` and waits for it to say it is listening.
    pub async fn start(kind: Kind, bin: &Path, args: &[String], port: u16) -> Result<Server> {
        let mut command = Command::new(bin);
        // SAFETY: prctl is async-signal-safe; it only sets a flag on the new process.
        unsafe {
            // If the load generator dies without stopping its servers, they die too.
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("child has no pid")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (ready_tx, ready_rx) = oneshot::channel();
        // Drain the server's log for its whole life, so it never blocks on a full pipe.
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("listening") {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                } else if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("  [{}] {line}", kind.name());
                }
            }
        });
        tokio::select! {
            ready = tokio::time::timeout(Duration::from_secs(60), ready_rx) => {
                if !matches!(ready, Ok(Ok(()))) {
                    bail!("{} did not start listening", bin.display());
                }
            }
            status = child.wait() => bail!("{} exited at startup: {:?}", bin.display(), status),
        }
        Ok(Server {
            kind,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            pid,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Asks the server to shut down (SIGTERM) and waits for it to exit.
    pub async fn stop(mut self) -> Result<()> {
        // SAFETY: kill only sends a signal to our own child.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(status) => {
                status?;
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("{} did not stop within 20 s of SIGTERM", self.kind.name())
            }
        }
    }
}
