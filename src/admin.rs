//! The operator's subcommands: `backup`, `user create|list|set-password|deactivate|activate`
//! and `print-config`. They open the database file directly and are safe to run while the
//! server is serving it: SQLite's locking orders their writes with the server's, and a
//! running server ends a deactivated user's sockets within a second (see `lifecycle`).

use std::io::{BufRead, Write};
use std::path::Path;

use crate::account::{self, Username};
use crate::config::Config;
use crate::model::Millis;
use crate::passwords::Passwords;
use crate::store::users::{NewUser, Taken};
use crate::store::{self, admin, now_ms, users};

/// The annotated default configuration, as `chat-server print-config` prints it.
pub const EXAMPLE_CONFIG: &str = include_str!("../config.example.toml");

/// A failed admin command, with a message for the operator.
pub type Result<T> = std::result::Result<T, String>;

/// `chat-server backup`: an online, verified copy of the database.
pub fn backup(config: &Config, out: &Path, stdout: &mut impl Write) -> Result<()> {
    let db = Path::new(&config.server.db);
    if config.server.db == ":memory:" {
        return Err("cannot back up a :memory: database".into());
    }
    if same_file(db, out) {
        return Err("--out must not be the database itself".into());
    }
    // The files beside the database go to `<out>.files`, a consistent pair: every file the
    // copy names is copied, and no sweep removes one until that is done.
    let files = config.server.files_dir().filter(|dir| dir.is_dir());
    let files_out = {
        let mut dir = out.as_os_str().to_owned();
        dir.push(".files");
        std::path::PathBuf::from(dir)
    };
    let held = match &files {
        Some(dir) => Some(
            crate::files::SweepLock::shared(dir)
                .map_err(|e| format!("cannot lock {}: {e}", dir.display()))?,
        ),
        None => None,
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut copied = admin::FilesReport::default();
    let report = admin::backup_then(db, out, |copy| {
        if let Some(dir) = &files {
            copied = admin::copy_files(copy, dir, &files_out, |done, total| {
                if tty && (done % 64 == 0 || done == total) {
                    eprint!("\rcopying files: {done}/{total}");
                    if done == total {
                        eprintln!();
                    }
                }
            })?;
        }
        Ok(())
    })
    .map_err(|e| format!("backup of {} failed: {e}", db.display()))?;
    drop(held);
    writeln!(
        stdout,
        "backed up {} to {}: {} bytes, schema version {}, {} users, {} rooms, {} messages; integrity check ok",
        db.display(),
        out.display(),
        report.bytes,
        report.schema_version,
        report.users,
        report.rooms,
        report.messages,
    )
    .map_err(|e| e.to_string())?;
    if files.is_some() {
        writeln!(
            stdout,
            "files: {} ({} bytes) in {}, {} copied now",
            copied.files,
            copied.bytes,
            files_out.display(),
            copied.copied
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn open(config: &Config) -> Result<rusqlite::Connection> {
    store::open_for_admin(&config.server.db)
        .map_err(|e| format!("cannot open database {}: {e}", config.server.db))
}

/// The password policy of the signup endpoint (docs/CONTRACT.md section 1).
fn check_password(username: &str, password: &str) -> Result<()> {
    match account::password_problem(username, password) {
        Some(problem) => Err(format!("password {problem}")),
        None => Ok(()),
    }
}

/// Where a new password comes from.
pub enum PasswordSource<'a> {
    /// The first line of this reader (standard input), so it never shows in `ps` or history.
    Line(&'a mut dyn BufRead),
    /// A random one, printed once.
    Generate,
}

/// The password, and whether it was generated (and so must be shown to the operator).
fn password(source: PasswordSource<'_>) -> Result<(String, bool)> {
    match source {
        PasswordSource::Line(input) => {
            let mut line = String::new();
            input
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the password: {e}"))?;
            let password = line.trim_end_matches(['\r', '\n']).to_string();
            Ok((password, false))
        }
        PasswordSource::Generate => {
            let mut bytes = [0u8; 12];
            rand::fill(&mut bytes);
            // 96 random bits; the leading letter keeps it from ever being all digits.
            Ok((format!("p{}", hex::encode(bytes)), true))
        }
    }
}

fn hasher(config: &Config) -> Result<Passwords> {
    Passwords::new(&config.auth).map_err(|e| e.to_string())
}

/// The optional profile fields of a new user.
#[derive(Default)]
pub struct Profile {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
}

/// `chat-server user create`.
pub fn create_user(
    config: &Config,
    username: &str,
    profile: Profile,
    source: PasswordSource<'_>,
    stdout: &mut impl Write,
) -> Result<()> {
    let username = Username::parse(username).map_err(|e| format!("username {e}"))?;
    let (password, generated) = password(source)?;
    check_password(&username.display, &password)?;
    let password_hash = hasher(config)?.hash(&password).map_err(|e| e.to_string())?;
    let conn = open(config)?;
    let name = username.display.clone();
    let new = NewUser {
        username,
        password_hash,
        first_name: profile.first_name,
        last_name: profile.last_name,
        email: profile.email,
    };
    let user = users::insert(&conn, &new, now_ms())
        .map_err(|e| e.to_string())?
        .map_err(|taken| match taken {
            Taken::Name => format!("a user named {name:?} already exists"),
            Taken::LookAlike => format!("{name:?} looks too much like an existing username"),
        })?;
    let out = if generated {
        writeln!(
            stdout,
            "created user {} (id {}) with password: {password}",
            user.username, user.id.0
        )
    } else {
        writeln!(stdout, "created user {} (id {})", user.username, user.id.0)
    };
    out.map_err(|e| e.to_string())
}

/// `chat-server bot create`: an account for a program, with no password, and its first
/// token, printed once (only its digest is stored). The token never expires; `bot token`
/// replaces it and `user deactivate` ends it.
pub fn create_bot(
    config: &Config,
    username: &str,
    first_name: String,
    stdout: &mut impl Write,
) -> Result<()> {
    let username = Username::parse(username).map_err(|e| format!("username {e}"))?;
    if first_name.chars().count() > 150 || first_name.contains('\0') {
        return Err("the display name must be at most 150 characters".into());
    }
    let conn = open(config)?;
    let name = username.display.clone();
    let new = NewUser::bot(username, first_name);
    let tx = conn.unchecked_transaction().map_err(|e| e.to_string())?;
    let user = admin::create_bot(&tx, &new, now_ms())
        .map_err(|e| e.to_string())?
        .map_err(|taken| match taken {
            Taken::Name => format!("a user named {name:?} already exists"),
            Taken::LookAlike => format!("{name:?} looks too much like an existing username"),
        })?;
    tx.commit().map_err(|e| e.to_string())?;
    let token = issue_bot_token(&conn, &user.username)?;
    writeln!(
        stdout,
        "created bot {} (id {}) with token: {token}",
        user.username, user.id.0
    )
    .map_err(|e| e.to_string())
}

/// `chat-server bot token`: revokes the bot's tokens and prints a new one.
pub fn bot_token(config: &Config, username: &str, stdout: &mut impl Write) -> Result<()> {
    let conn = open(config)?;
    let token = issue_bot_token(&conn, username)?;
    writeln!(
        stdout,
        "new token for bot {username} (earlier tokens revoked): {token}"
    )
    .map_err(|e| e.to_string())
}

fn issue_bot_token(conn: &rusqlite::Connection, username: &str) -> Result<String> {
    let token = crate::auth::new_token();
    let digest = crate::auth::token_digest(&token);
    match admin::bot_token(conn, username, &digest, now_ms()).map_err(|e| e.to_string())? {
        admin::BotToken::Issued(_) => Ok(token),
        admin::BotToken::NoSuchUser => Err(format!("no user named {username:?}")),
        admin::BotToken::NotABot => Err(format!(
            "{username:?} is not an active bot (people log in with their password)"
        )),
    }
}

/// `chat-server user list`: every account, active or not.
pub fn list_users(config: &Config, json: bool, stdout: &mut impl Write) -> Result<()> {
    let conn = open(config)?;
    let accounts = admin::accounts(&conn).map_err(|e| e.to_string())?;
    let write = |stdout: &mut dyn Write| -> std::io::Result<()> {
        if json {
            let rows: Vec<_> = accounts
                .iter()
                .map(|a| {
                    let mut v = serde_json::to_value(&a.user).unwrap_or_default();
                    v["is_active"] = a.is_active.into();
                    v
                })
                .collect();
            return writeln!(stdout, "{}", serde_json::Value::Array(rows));
        }
        writeln!(
            stdout,
            "{:>6}  {:<24} {:<8} {:<20} {:<24} email",
            "id", "username", "active", "joined", "name"
        )?;
        for a in &accounts {
            let u = &a.user;
            let joined = Millis(u.date_joined.0).to_rfc3339();
            let name = format!("{} {}", u.first_name, u.last_name);
            writeln!(
                stdout,
                "{:>6}  {:<24} {:<8} {:<20} {:<24} {}",
                u.id.0,
                u.username,
                if a.is_active { "yes" } else { "no" },
                joined.get(..19).unwrap_or(&joined),
                name.trim(),
                u.email
            )?;
        }
        Ok(())
    };
    write(stdout).map_err(|e| e.to_string())
}

/// `chat-server user set-password`: also signs the user out everywhere.
pub fn set_password(
    config: &Config,
    username: &str,
    source: PasswordSource<'_>,
    stdout: &mut impl Write,
) -> Result<()> {
    let (password, generated) = password(source)?;
    check_password(username, &password)?;
    let hash = hasher(config)?.hash(&password).map_err(|e| e.to_string())?;
    let conn = open(config)?;
    admin::set_password(&conn, username, &hash)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no person named {username:?} (a bot has no password)"))?;
    let out = if generated {
        writeln!(
            stdout,
            "new password for {username}: {password} (existing sessions signed out)"
        )
    } else {
        writeln!(
            stdout,
            "password of {username} changed; existing sessions signed out"
        )
    };
    out.map_err(|e| e.to_string())
}

/// `chat-server user deactivate` and `activate`. Deactivation revokes the user's tokens at
/// once; a running server closes the user's sockets within a second.
pub fn set_active(
    config: &Config,
    username: &str,
    active: bool,
    stdout: &mut impl Write,
) -> Result<()> {
    let conn = open(config)?;
    admin::set_active(&conn, username, active)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no user named {username:?}"))?;
    let what = if active {
        "activated"
    } else {
        "deactivated (tokens revoked, open sockets closing)"
    };
    writeln!(stdout, "{username} {what}").map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_pass_the_policy() {
        let (p, generated) = password(PasswordSource::Generate).unwrap();
        assert!(generated);
        assert!(check_password("someone", &p).is_ok());
    }

    #[test]
    fn the_printed_config_is_the_example_and_parses_to_the_defaults() {
        let parsed = Config::from_toml(EXAMPLE_CONFIG).unwrap();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::default()));
    }
}
