//! SQL for operating the server: account administration from the command line, the
//! deactivation watcher, the health check and the metrics scrape.

use std::path::Path;
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::users::{self, USER_COLUMNS, user_from_row};
use super::{Result, StoreError};
use crate::model::{User, UserId};

/// A user as the operator sees it: active or not.
pub struct Account {
    pub user: User,
    pub is_active: bool,
}

/// Every account, active or not, by id.
pub fn accounts(conn: &Connection) -> Result<Vec<Account>> {
    let sql = format!("SELECT {USER_COLUMNS}, u.is_active FROM users u ORDER BY u.id");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], |row| {
        Ok(Account {
            user: user_from_row(row, 0)?,
            is_active: row.get(users::USER_COLUMN_COUNT)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Activates or deactivates the account; `None` if there is no such username. Deactivating
/// also revokes the account's tokens, so reactivating it does not revive old sessions, and
/// deactivates the bots it made (reactivating it does not bring them back).
pub fn set_active(conn: &Connection, username: &str, active: bool) -> Result<Option<UserId>> {
    let id = users::find(conn, username)?;
    if let Some(id) = id {
        conn.execute(
            "UPDATE users SET is_active = ?2 WHERE id = ?1",
            params![id, active],
        )?;
    }
    if let (Some(id), false) = (id, active) {
        conn.execute("DELETE FROM tokens WHERE user_id = ?1", [id])?;
        // The bots the account made go with it.
        conn.execute(
            "DELETE FROM tokens WHERE user_id IN (SELECT id FROM users WHERE owner_id = ?1)",
            [id],
        )?;
        conn.execute("UPDATE users SET is_active = 0 WHERE owner_id = ?1", [id])?;
    }
    Ok(id)
}

/// Replaces the password hash and revokes every token of the account; `None` if there is no
/// such username.
/// Refused for a bot (`Ok(None)`, like no such user): bots have no password.
pub fn set_password(conn: &Connection, username: &str, hash: &str) -> Result<Option<UserId>> {
    let id = users::find(conn, username)?;
    let is_bot = |id: UserId| -> Result<bool> {
        Ok(conn.query_row("SELECT is_bot FROM users WHERE id = ?1", [id], |r| r.get(0))?)
    };
    let id = match id {
        Some(id) if is_bot(id)? => None,
        other => other,
    };
    if let Some(id) = id {
        conn.execute(
            "UPDATE users SET password_hash = ?2 WHERE id = ?1",
            params![id, hash],
        )?;
        conn.execute("DELETE FROM tokens WHERE user_id = ?1", [id])?;
    }
    Ok(id)
}

/// When a bot's token expires: the last millisecond of the year 9999, so never in practice,
/// and still a time every client can parse.
pub const BOT_TOKEN_EXPIRES_AT: i64 = 253_402_300_799_999;

/// Creates a bot: an account without a password (no password verifies `!`), marked
/// `is_bot`. `Err(taken)` if the name or a look-alike is taken. Two statements: the caller
/// runs it in a transaction.
pub fn create_bot(
    conn: &Connection,
    new: &users::NewUser,
    now: i64,
) -> Result<std::result::Result<User, users::Taken>> {
    let user = match users::insert(conn, new, now)? {
        Ok(user) => user,
        Err(taken) => return Ok(Err(taken)),
    };
    conn.execute("UPDATE users SET is_bot = 1 WHERE id = ?1", [user.id])?;
    Ok(Ok(User {
        is_bot: true,
        ..user
    }))
}

/// The active bots `owner` made, by id.
pub fn owned_bots(conn: &Connection, owner: UserId) -> Result<Vec<User>> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users u WHERE u.owner_id = ?1 AND u.is_active = 1 ORDER BY u.id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([owner], |row| user_from_row(row, 0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Marks the new bot `bot` as `owner`'s.
pub fn set_owner(conn: &Connection, bot: UserId, owner: UserId) -> Result<()> {
    conn.execute(
        "UPDATE users SET owner_id = ?2 WHERE id = ?1",
        params![bot, owner],
    )?;
    Ok(())
}

/// Whether `bot` is an active bot of `owner`.
pub fn owns(conn: &Connection, owner: UserId, bot: UserId) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM users WHERE id = ?1 AND owner_id = ?2 AND is_bot = 1 AND is_active = 1",
        )?
        .query_row(params![bot, owner], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Revokes every token of `bot` and stores `digest` as its one token, which never expires.
/// Returns the ids of the tokens revoked.
pub fn replace_bot_token(
    conn: &Connection,
    bot: UserId,
    digest: &[u8],
    now: i64,
) -> Result<Vec<i64>> {
    let revoked = super::tokens::delete_all_for(conn, bot)?;
    super::tokens::insert(conn, bot, digest, now, BOT_TOKEN_EXPIRES_AT)?;
    Ok(revoked)
}

/// Deactivates `bot` and revokes its tokens; returns their ids.
pub fn deactivate_bot(conn: &Connection, bot: UserId) -> Result<Vec<i64>> {
    conn.execute("UPDATE users SET is_active = 0 WHERE id = ?1", [bot])?;
    super::tokens::delete_all_for(conn, bot)
}

/// What giving a bot a new token found.
pub enum BotToken {
    /// The token was stored for this bot; its earlier tokens were revoked.
    Issued(User),
    NoSuchUser,
    NotABot,
}

/// Revokes every token of the bot `username` and stores the digest of its new one, which
/// never expires ([`BOT_TOKEN_EXPIRES_AT`]). Deactivated bots get none.
pub fn bot_token(conn: &Connection, username: &str, digest: &[u8], now: i64) -> Result<BotToken> {
    let Some(id) = users::find(conn, username)? else {
        return Ok(BotToken::NoSuchUser);
    };
    let sql = format!("SELECT {USER_COLUMNS}, u.is_active FROM users u WHERE u.id = ?1");
    let (user, active): (User, bool) = conn.query_row(&sql, [id], |row| {
        Ok((user_from_row(row, 0)?, row.get(users::USER_COLUMN_COUNT)?))
    })?;
    if !user.is_bot || !active {
        return Ok(BotToken::NotABot);
    }
    let tx = conn.unchecked_transaction()?;
    tx.execute("DELETE FROM tokens WHERE user_id = ?1", [id])?;
    super::tokens::insert(&tx, id, digest, now, BOT_TOKEN_EXPIRES_AT)?;
    tx.commit()?;
    Ok(BotToken::Issued(user))
}

/// Which of the token ids `ids` no longer exist (revoked by another process, such as
/// `chat-server bot token` or `user set-password`); primary-key lookups only.
pub fn revoked_among(conn: &Connection, ids: &[i64]) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM tokens WHERE id = ?1")?;
    let mut gone = Vec::new();
    for id in ids {
        if stmt.query_row([id], |_| Ok(())).optional()?.is_none() {
            gone.push(*id);
        }
    }
    Ok(gone)
}

/// Which of `ids` are deactivated accounts (primary-key lookups only).
pub fn inactive_among(conn: &Connection, ids: &[UserId]) -> Result<Vec<UserId>> {
    let mut stmt = conn.prepare_cached("SELECT is_active FROM users WHERE id = ?1")?;
    let mut inactive = Vec::new();
    for id in ids {
        let active: Option<bool> = stmt.query_row([id], |r| r.get(0)).optional()?;
        if active == Some(false) {
            inactive.push(*id);
        }
    }
    Ok(inactive)
}

/// Highest message id stored: how many messages the database has seen (ids only grow).
pub fn last_message_id(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT coalesce(max(id), 0) FROM messages")?
        .query_row([], |r| r.get(0))?)
}

/// The schema version and whether the database answers a query that touches a table.
pub fn health(conn: &Connection) -> Result<i64> {
    conn.prepare_cached("SELECT count(*) FROM (SELECT 1 FROM users LIMIT 1)")?
        .query_row([], |r| r.get::<_, i64>(0))?;
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// What a verified backup holds.
#[derive(Debug)]
pub struct BackupReport {
    pub schema_version: i64,
    pub users: i64,
    pub rooms: i64,
    pub messages: i64,
    pub bytes: u64,
}

/// Copies the database at `db` to `out` with SQLite's online backup API while a server may be
/// writing to it, then opens the copy and checks it. The copy is written beside `out` and
/// renamed into place only once verified, so `out` is never a partial file.
pub fn backup(db: &Path, out: &Path) -> Result<BackupReport> {
    backup_then(db, out, |_| Ok(()))
}

/// Like [`backup`], running `before_rename` on the verified copy before it is renamed into
/// place (to copy the files it names), so `out` appears only once that succeeded.
pub fn backup_then(
    db: &Path,
    out: &Path,
    before_rename: impl FnOnce(&Path) -> Result<()>,
) -> Result<BackupReport> {
    if !db.exists() {
        return Err(StoreError::Other(format!(
            "{} does not exist",
            db.display()
        )));
    }
    let source = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    source.busy_timeout(Duration::from_secs(5))?;
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);
    {
        let mut dest = Connection::open(&partial)?;
        let copy = Backup::new(&source, &mut dest)?;
        // All pages in one step: one read transaction, so the copy is a consistent snapshot
        // however busy the server is (WAL readers never block its writer).
        let mut attempts = 0;
        loop {
            match copy.step(-1)? {
                StepResult::Done => break,
                StepResult::More => continue,
                _ if attempts < 100 => {
                    // Busy or locked: another connection holds a lock for a moment.
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => return Err(StoreError::Other("the database stayed locked".into())),
            }
        }
    }
    let report = verify_copy(&partial)?;
    if let Err(e) = before_rename(&partial) {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, out)
        .map_err(|e| StoreError::Other(format!("cannot move the backup into place: {e}")))?;
    Ok(report)
}

/// What [`copy_files`] copied.
#[derive(Debug, Default)]
pub struct FilesReport {
    /// Files the copy names, and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Of them, copied now (the others were in `to` from an earlier backup).
    pub copied: u64,
}

/// Copies every file the database at `copy` names from the files directory `from` to `to`
/// (each synced and renamed into place; one already there with the same size is the same
/// bytes, its name being their hash), removes from `to` what the copy does not name, and
/// fails if a named file is missing from `from`. `progress(done, total)` after each file.
pub fn copy_files(
    copy: &Path,
    from: &Path,
    to: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<FilesReport> {
    let conn = Connection::open_with_flags(copy, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let named = super::uploads::referenced(&conn)?;
    let (from, to) = (from.join("objects"), to.join("objects"));
    let io = |what: &str, path: &Path, e: std::io::Error| {
        StoreError::Other(format!("cannot {what} {}: {e}", path.display()))
    };
    std::fs::create_dir_all(&to).map_err(|e| io("create", &to, e))?;
    let mut report = FilesReport::default();
    let total = named.len() as u64;
    for sha in &named {
        let source = crate::files::object_in(&from, sha);
        let target = crate::files::object_in(&to, sha);
        let size = std::fs::metadata(&source)
            .map_err(|e| {
                StoreError::Other(format!(
                    "the database names the file {sha}, which is not in {}: {e}",
                    from.display()
                ))
            })?
            .len();
        let there = std::fs::metadata(&target).is_ok_and(|m| m.len() == size);
        if !there {
            let dir = target.parent().unwrap_or(&to);
            std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
            let mut partial = target.clone().into_os_string();
            partial.push(".partial");
            let partial = std::path::PathBuf::from(partial);
            std::fs::copy(&source, &partial).map_err(|e| io("copy to", &partial, e))?;
            std::fs::File::open(&partial)
                .and_then(|f| f.sync_all())
                .map_err(|e| io("sync", &partial, e))?;
            std::fs::rename(&partial, &target).map_err(|e| io("rename", &target, e))?;
            report.copied += 1;
        }
        report.files += 1;
        report.bytes += size;
        progress(report.files, total);
    }
    // What an earlier backup had and this one does not name.
    for dir in std::fs::read_dir(&to)
        .map_err(|e| io("read", &to, e))?
        .flatten()
    {
        for entry in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let keep = entry
                .file_name()
                .to_str()
                .is_some_and(|n| named.contains(n));
            if !keep {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(report)
}

/// Opens a database copy read-only and checks that it is whole.
pub fn verify_copy(path: &Path) -> Result<BackupReport> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(StoreError::Other(format!(
            "the copy failed its integrity check: {check}"
        )));
    }
    let count = |table: &str| -> Result<i64> {
        Ok(conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
    };
    Ok(BackupReport {
        schema_version: conn.pragma_query_value(None, "user_version", |r| r.get(0))?,
        users: count("users")?,
        rooms: count("rooms")?,
        messages: count("messages")?,
        bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::users::{NewUser, credentials, insert};
    use crate::store::{open_memory_for_tests, tokens};

    #[test]
    fn deactivating_revokes_tokens_and_is_reported_among_online_users() {
        let conn = open_memory_for_tests();
        let new = |name: &str| NewUser {
            username: crate::account::Username::parse(name).unwrap(),
            password_hash: "h".into(),
            first_name: String::new(),
            last_name: String::new(),
            email: String::new(),
        };
        let a = insert(&conn, &new("Alice"), 0).unwrap().unwrap();
        let b = insert(&conn, &new("bob"), 0).unwrap().unwrap();
        tokens::insert(&conn, a.id, b"t", 0, 100).unwrap();
        assert_eq!(set_active(&conn, "ALICE", false).unwrap(), Some(a.id));
        assert!(tokens::authenticate(&conn, b"t", 1).unwrap().is_none());
        assert_eq!(
            inactive_among(&conn, &[a.id, b.id, UserId(99)]).unwrap(),
            [a.id]
        );
        let listed = accounts(&conn).unwrap();
        assert_eq!(listed.len(), 2);
        assert!(!listed[0].is_active && listed[1].is_active);

        set_active(&conn, "alice", true).unwrap();
        tokens::insert(&conn, a.id, b"t2", 0, 100).unwrap();
        assert_eq!(set_password(&conn, "alice", "new").unwrap(), Some(a.id));
        assert_eq!(
            credentials(&conn, "alice").unwrap().unwrap().password_hash,
            "new"
        );
        assert!(tokens::authenticate(&conn, b"t2", 1).unwrap().is_none());
        assert_eq!(set_password(&conn, "nobody", "x").unwrap(), None);
    }

    /// A person's bots go with the person; a bot never gets a password.
    #[test]
    fn deactivating_an_owner_deactivates_its_bots() {
        let conn = open_memory_for_tests();
        let new = |name: &str, hash: &str| NewUser {
            username: crate::account::Username::parse(name).unwrap(),
            password_hash: hash.into(),
            first_name: String::new(),
            last_name: String::new(),
            email: String::new(),
        };
        let owner = insert(&conn, &new("carol", "h"), 0).unwrap().unwrap();
        let other = insert(&conn, &new("dave", "h"), 0).unwrap().unwrap();
        let bot = create_bot(&conn, &new("carols-bot", "!"), 0)
            .unwrap()
            .unwrap();
        let stranger = create_bot(&conn, &new("daves-bot", "!"), 0)
            .unwrap()
            .unwrap();
        set_owner(&conn, bot.id, owner.id).unwrap();
        set_owner(&conn, stranger.id, other.id).unwrap();
        replace_bot_token(&conn, bot.id, b"bt", 0).unwrap();
        replace_bot_token(&conn, stranger.id, b"st", 0).unwrap();
        assert!(owns(&conn, owner.id, bot.id).unwrap());
        assert!(!owns(&conn, owner.id, stranger.id).unwrap());
        assert_eq!(set_password(&conn, "carols-bot", "new").unwrap(), None);

        set_active(&conn, "carol", false).unwrap();
        assert!(tokens::authenticate(&conn, b"bt", 1).unwrap().is_none());
        assert_eq!(
            inactive_among(&conn, &[bot.id, stranger.id]).unwrap(),
            [bot.id]
        );
        assert!(owned_bots(&conn, owner.id).unwrap().is_empty());
        assert!(tokens::authenticate(&conn, b"st", 1).unwrap().is_some());
        // Reactivating the owner does not bring its bots back.
        set_active(&conn, "carol", true).unwrap();
        assert!(owned_bots(&conn, owner.id).unwrap().is_empty());
    }
}
