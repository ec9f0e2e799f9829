//! The `chat-server` binary: parse flags, load the config, set up logging, bind, serve; or
//! run one of the operator's subcommands (`backup`, `user ...`, `print-config`).

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use chat_server::admin::{self, PasswordSource, Profile};
use chat_server::config::LogFormat;
use chat_server::{AppState, Config};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// mimalloc: faster than the system allocator for the many small, short-lived allocations of
/// request handling and fan-out, and spares the static musl build musl's slow allocator.
/// Without transparent huge pages (`no_thp`), which would double an idle server's RSS.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A self-hosted real-time chat API: REST + WebSocket on SQLite.
///
/// With no subcommand, serves the API.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// SQLite database file, or ":memory:" [default: chat.db]
    #[arg(long)]
    db: Option<String>,
    /// Directory of uploaded files [default: <db>.files]
    #[arg(long)]
    files: Option<String>,
    /// Port to listen on; 0 picks a free one [default: 8000]
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
    /// PEM certificate chain: serve HTTPS and WSS (needs --tls-key)
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve the web client from this directory (e.g. web/) instead of the embedded copy
    #[arg(long)]
    web_dir: Option<PathBuf>,
}

/// The database an admin command works on.
#[derive(Args, Debug)]
struct DbArgs {
    /// SQLite database file [default: chat.db, or the config file's]
    #[arg(long)]
    db: Option<String>,
    /// Directory of uploaded files [default: <db>.files, or the config file's]
    #[arg(long)]
    files: Option<String>,
    /// TOML configuration file, for the database path and password hashing cost
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Copy the database to FILE while the server runs, and verify the copy.
    Backup {
        #[command(flatten)]
        db: DbArgs,
        /// Where to write the copy (replaced atomically once verified)
        #[arg(long)]
        out: PathBuf,
    },
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage bots: accounts for programs, which use a long-lived token instead of a password.
    #[command(subcommand)]
    Bot(BotCommand),
    /// Print the annotated default configuration (a starting config.toml).
    PrintConfig,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create an account. The password is read from standard input with --password-stdin;
    /// otherwise a random one is generated and printed.
    Create {
        username: String,
        #[arg(long)]
        password_stdin: bool,
        #[arg(long, default_value = "")]
        first_name: String,
        #[arg(long, default_value = "")]
        last_name: String,
        #[arg(long, default_value = "")]
        email: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List every account, active or not.
    List {
        /// One JSON array instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Set a new password (from standard input with --password-stdin, else generated) and
    /// sign the user out everywhere.
    SetPassword {
        username: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Block an account: its tokens stop working and its open sockets close.
    Deactivate {
        username: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Allow a deactivated account to log in again.
    Activate {
        username: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand, Debug)]
enum BotCommand {
    /// Create a bot and print its token (shown once; it does not expire). `user deactivate`
    /// blocks a bot like any account.
    Create {
        name: String,
        /// The name shown for it
        #[arg(long, default_value = "")]
        display_name: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke the bot's tokens and print a new one.
    Token {
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

fn base_config(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(path) => Config::from_file(path).map_err(|e| e.to_string()),
        None => Ok(Config::default()),
    }
}

fn serve_config(cli: &ServeArgs) -> Result<Config, String> {
    let mut config = base_config(cli.config.as_ref())?;
    if let Some(db) = &cli.db {
        config.server.db = db.clone();
    }
    if let Some(files) = &cli.files {
        config.server.files = files.clone();
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
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        config.server.tls_cert = Some(cert.clone());
        config.server.tls_key = Some(key.clone());
    }
    if let Some(dir) = &cli.web_dir {
        config.web.dir = Some(dir.clone());
    }
    config.validate()?;
    Ok(config)
}

fn admin_config(args: &DbArgs) -> Result<Config, String> {
    let mut config = base_config(args.config.as_ref())?;
    if let Some(db) = &args.db {
        config.server.db = db.clone();
    }
    if let Some(files) = &args.files {
        config.server.files = files.clone();
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
    tracing::info!("shutdown requested");
}

fn run_admin(command: Command) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    match command {
        Command::Backup { db, out: file } => admin::backup(&admin_config(&db)?, &file, &mut out),
        Command::PrintConfig => {
            use std::io::Write;
            out.write_all(admin::EXAMPLE_CONFIG.as_bytes())
                .map_err(|e| e.to_string())
        }
        Command::User(user) => match user {
            UserCommand::Create {
                username,
                password_stdin,
                first_name,
                last_name,
                email,
                db,
            } => {
                let profile = Profile {
                    first_name,
                    last_name,
                    email,
                };
                let source = if password_stdin {
                    PasswordSource::Line(&mut input)
                } else {
                    PasswordSource::Generate
                };
                admin::create_user(&admin_config(&db)?, &username, profile, source, &mut out)
            }
            UserCommand::List { json, db } => {
                admin::list_users(&admin_config(&db)?, json, &mut out)
            }
            UserCommand::SetPassword {
                username,
                password_stdin,
                db,
            } => {
                let source = if password_stdin {
                    PasswordSource::Line(&mut input)
                } else {
                    PasswordSource::Generate
                };
                admin::set_password(&admin_config(&db)?, &username, source, &mut out)
            }
            UserCommand::Deactivate { username, db } => {
                admin::set_active(&admin_config(&db)?, &username, false, &mut out)
            }
            UserCommand::Activate { username, db } => {
                admin::set_active(&admin_config(&db)?, &username, true, &mut out)
            }
        },
        Command::Bot(command) => match command {
            BotCommand::Create {
                name,
                display_name,
                db,
            } => admin::create_bot(&admin_config(&db)?, &name, display_name, &mut out),
            BotCommand::Token { name, db } => {
                admin::bot_token(&admin_config(&db)?, &name, &mut out)
            }
        },
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let config = match serve_config(&args) {
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
    let scheme = if config.server.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
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
    // The bound address, not the requested one: with --port 0 this is how to find the server.
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, url = format!("{scheme}://{bound}"), db, "chat-server listening");
    match chat_server::run(state, listener, shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("chat-server stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "server failed");
            eprintln!("chat-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an admin command with what opening the database reports (a migration's findings) on
/// stderr, so the command's own output stays parseable.
fn run_admin_logged(command: Command) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::new("info"))
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    run_admin(command)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime.block_on(serve(cli.serve)),
            Err(e) => {
                eprintln!("chat-server: cannot start the runtime: {e}");
                ExitCode::FAILURE
            }
        },
        Some(command) => match run_admin_logged(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chat-server: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
