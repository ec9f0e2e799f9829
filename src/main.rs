//! The `chat-server` binary: parse flags, load the config, set up logging, bind, serve.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use chat_server::config::LogFormat;
use chat_server::{AppState, Config};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// A self-hosted real-time chat API: REST + WebSocket on SQLite.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// SQLite database file, or ":memory:" [default: chat.db]
    #[arg(long)]
    db: Option<String>,
    /// Port to listen on [default: 8000]
    #[arg(long)]
    port: Option<u16>,
    /// Address to bind; 0.0.0.0 serves the LAN [default: 127.0.0.1]
    #[arg(long)]
    host: Option<IpAddr>,
    /// TOML configuration file (see config.example.toml)
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log level or tracing filter, e.g. "debug" [default: info]
    #[arg(long)]
    log_level: Option<String>,
}

fn load_config(cli: &Cli) -> Result<Config, String> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(db) = &cli.db {
        config.server.db = db.clone();
    }
    if let Some(port) = cli.port {
        config.server.port = port;
    }
    if let Some(host) = cli.host {
        config.server.host = host;
    }
    if let Some(level) = &cli.log_level {
        config.server.log_level = level.clone();
    }
    config.validate()?;
    Ok(config)
}

fn init_tracing(config: &Config) -> Result<(), String> {
    let filter = EnvFilter::try_new(&config.server.log_level)
        .map_err(|e| format!("invalid log level {:?}: {e}", config.server.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match config.server.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chat-server: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_tracing(&config) {
        eprintln!("chat-server: {e}");
        return ExitCode::from(2);
    }
    let addr = SocketAddr::new(config.server.host, config.server.port);
    let db = config.server.db.clone();
    let state = match AppState::new(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chat-server: cannot open database {db}: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("chat-server: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(addr);
    tracing::info!(%addr, db, "chat-server listening");
    match chat_server::run(state, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "server failed");
            ExitCode::FAILURE
        }
    }
}
