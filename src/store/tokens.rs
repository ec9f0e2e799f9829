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

/// A live token, as [`authenticate`] finds it.
#[derive(Debug, Clone)]
pub struct LiveToken {
    pub id: i64,
    pub expires_at: i64,
    pub user: User,
}

/// The token and its active user, if the digest names a live token.
pub fn authenticate(conn: &Connection, digest: &[u8], now: i64) -> Result<Option<LiveToken>> {
    let sql = format!(
        "SELECT t.id, t.expires_at, {USER_COLUMNS} FROM tokens t JOIN users u ON u.id = t.user_id
         WHERE t.digest = ?1 AND t.expires_at > ?2 AND u.is_active = 1"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![digest, now], |row| {
            Ok(LiveToken {
                id: row.get(0)?,
                expires_at: row.get(1)?,
                user: user_from_row(row, 2)?,
            })
        })
        .optional()?)
}

pub fn delete(conn: &Connection, token_id: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM tokens WHERE id = ?1")?
        .execute([token_id])?
        > 0)
}

/// A live session as its owner sees it: never the token or its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: i64,
    pub created: i64,
    pub expires_at: i64,
}

/// The user's live (unexpired) tokens, newest first.
pub fn list_for(conn: &Connection, user: UserId, now: i64) -> Result<Vec<TokenRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, created, expires_at FROM tokens
         WHERE user_id = ?1 AND expires_at > ?2 ORDER BY id DESC",
    )?;
    let rows = stmt.query_map(params![user, now], |r| {
        Ok(TokenRow {
            id: r.get(0)?,
            created: r.get(1)?,
            expires_at: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Deletes token `id` if it belongs to `user`; false if there was no such token of theirs.
pub fn delete_for(conn: &Connection, user: UserId, id: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM tokens WHERE id = ?1 AND user_id = ?2")?
        .execute(params![id, user])?
        > 0)
}

/// Deletes every token of `user` (log out everywhere); returns their ids.
pub fn delete_all_for(conn: &Connection, user: UserId) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached("DELETE FROM tokens WHERE user_id = ?1 RETURNING id")?;
    let ids = stmt.query_map([user], |r| r.get(0))?;
    Ok(ids.collect::<rusqlite::Result<_>>()?)
}

/// Forgets the user's expired tokens, so the table does not grow with every login.
pub fn delete_expired_for(conn: &Connection, user: UserId, now: i64) -> Result<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM tokens WHERE user_id = ?1 AND expires_at <= ?2")?
        .execute(params![user, now])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open_memory_for_tests;
    use crate::store::users::{NewUser, insert as insert_user};

    fn user(conn: &Connection, name: &str) -> UserId {
        let new = NewUser {
            username: crate::account::Username::parse(name).unwrap(),
            password_hash: "h".into(),
            first_name: String::new(),
            last_name: String::new(),
            email: String::new(),
        };
        insert_user(conn, &new, 0).unwrap().unwrap().id
    }

    #[test]
    fn users_list_and_revoke_only_their_own_live_tokens() {
        let conn = open_memory_for_tests();
        let (a, b) = (user(&conn, "a"), user(&conn, "b"));
        let a1 = insert(&conn, a, b"a1", 10, 100).unwrap();
        let a2 = insert(&conn, a, b"a2", 20, 200).unwrap();
        let _expired = insert(&conn, a, b"a3", 0, 50).unwrap();
        let b1 = insert(&conn, b, b"b1", 10, 100).unwrap();

        let live: Vec<i64> = list_for(&conn, a, 60)
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(live, [a2, a1]);

        assert!(!delete_for(&conn, a, b1).unwrap(), "not a's token");
        assert!(authenticate(&conn, b"b1", 60).unwrap().is_some());
        assert!(delete_for(&conn, a, a1).unwrap());
        assert!(authenticate(&conn, b"a1", 60).unwrap().is_none());

        assert_eq!(delete_expired_for(&conn, a, 60).unwrap(), 1);
        assert_eq!(delete_all_for(&conn, a).unwrap(), [a2]);
        assert!(list_for(&conn, a, 0).unwrap().is_empty());
        assert!(
            authenticate(&conn, b"b1", 60).unwrap().is_some(),
            "b untouched"
        );
    }
}
