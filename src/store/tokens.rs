//! SQL for access tokens. Only SHA-256 digests are stored, so a copy of the database does not
//! hand out sessions.

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;
use super::users::{USER_COLUMNS, user_from_row};
use crate::model::{User, UserId};

pub fn insert(
    conn: &Connection,
    user: UserId,
    digest: &[u8],
    now: i64,
    expires_at: i64,
) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO tokens (user_id, digest, created, expires_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![user, digest, now, expires_at])?;
    Ok(conn.last_insert_rowid())
}

/// The token's id and its active user, if the digest names a live token.
pub fn authenticate(conn: &Connection, digest: &[u8], now: i64) -> Result<Option<(i64, User)>> {
    let sql = format!(
        "SELECT t.id, {USER_COLUMNS} FROM tokens t JOIN users u ON u.id = t.user_id
         WHERE t.digest = ?1 AND t.expires_at > ?2 AND u.is_active = 1"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![digest, now], |row| {
            Ok((row.get(0)?, user_from_row(row, 1)?))
        })
        .optional()?)
}

pub fn delete(conn: &Connection, token_id: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM tokens WHERE id = ?1")?
        .execute([token_id])?
        > 0)
}
