//! SQL for users: sign-up, lookup for login, the user directory.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::Result;
use crate::model::{Millis, User, UserId};

pub struct NewUser {
    pub username: String,
    pub password_hash: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
}

/// A user's login record: the public user, its password hash, and whether it may log in.
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
    pub is_active: bool,
}

pub(crate) const USER_COLUMNS: &str =
    "u.id, u.username, u.first_name, u.last_name, u.email, u.date_joined";

/// Reads a `User` from the six `USER_COLUMNS` starting at column `at`.
pub(crate) fn user_from_row(row: &Row<'_>, at: usize) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(at)?,
        username: row.get(at + 1)?,
        first_name: row.get(at + 2)?,
        last_name: row.get(at + 3)?,
        email: row.get(at + 4)?,
        date_joined: Millis(row.get(at + 5)?),
    })
}

pub fn username_key(username: &str) -> String {
    username.to_lowercase()
}

/// Inserts a user; `None` if the username is taken (case-insensitively).
pub fn insert(conn: &Connection, new: &NewUser, now: i64) -> Result<Option<User>> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO users (username, username_key, password_hash, first_name, last_name, email, date_joined)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (username_key) DO NOTHING",
        )?
        .execute(params![
            new.username,
            username_key(&new.username),
            new.password_hash,
            new.first_name,
            new.last_name,
            new.email,
            now
        ])?;
    if inserted == 0 {
        return Ok(None);
    }
    Ok(Some(User {
        id: UserId(conn.last_insert_rowid()),
        username: new.username.clone(),
        first_name: new.first_name.clone(),
        last_name: new.last_name.clone(),
        email: new.email.clone(),
        date_joined: Millis(now),
    }))
}

pub fn credentials(conn: &Connection, username: &str) -> Result<Option<Credentials>> {
    let sql = format!(
        "SELECT {USER_COLUMNS}, u.password_hash, u.is_active FROM users u WHERE u.username_key = ?1"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([username_key(username)], |row| {
            Ok(Credentials {
                user: user_from_row(row, 0)?,
                password_hash: row.get(6)?,
                is_active: row.get(7)?,
            })
        })
        .optional()?)
}

pub fn get(conn: &Connection, id: UserId) -> Result<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], |row| user_from_row(row, 0))
        .optional()?)
}

/// Which of `ids` are active users.
pub fn existing(conn: &Connection, ids: &[UserId]) -> Result<Vec<UserId>> {
    let mut stmt = conn.prepare_cached("SELECT id FROM users WHERE id = ?1 AND is_active = 1")?;
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(id) = stmt.query_row([id], |r| r.get(0)).optional()? {
            found.push(id);
        }
    }
    Ok(found)
}

pub struct UserQuery {
    pub search: Option<String>,
    pub exclude: Vec<UserId>,
    pub limit: i64,
    pub offset: i64,
}

/// One page of the directory of active users, ordered by first name then id, and the total.
pub fn list(conn: &Connection, q: &UserQuery) -> Result<(i64, Vec<User>)> {
    let exclude = serde_json::to_string(&q.exclude).unwrap_or_else(|_| "[]".into());
    let pattern = q.search.as_ref().map(|s| {
        let escaped = s
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    let filter = "u.is_active = 1
        AND u.id NOT IN (SELECT value FROM json_each(?1))
        AND (?2 IS NULL OR u.username LIKE ?2 ESCAPE '\\' OR u.first_name LIKE ?2 ESCAPE '\\'
             OR u.last_name LIKE ?2 ESCAPE '\\')";
    let count: i64 = conn
        .prepare_cached(&format!("SELECT count(*) FROM users u WHERE {filter}"))?
        .query_row(params![exclude, pattern], |r| r.get(0))?;
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users u WHERE {filter}
         ORDER BY u.first_name, u.id LIMIT +?3 OFFSET +?4"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![exclude, pattern, q.limit, q.offset], |row| {
        user_from_row(row, 0)
    })?;
    Ok((count, rows.collect::<rusqlite::Result<_>>()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open_memory_for_tests;

    fn new_user(name: &str, first: &str) -> NewUser {
        NewUser {
            username: name.into(),
            password_hash: "h".into(),
            first_name: first.into(),
            last_name: String::new(),
            email: String::new(),
        }
    }

    #[test]
    fn usernames_are_unique_case_insensitively() {
        let conn = open_memory_for_tests();
        assert!(insert(&conn, &new_user("Alice", ""), 1).unwrap().is_some());
        assert!(insert(&conn, &new_user("aLICE", ""), 2).unwrap().is_none());
        let creds = credentials(&conn, "ALICE").unwrap().unwrap();
        assert_eq!(creds.user.username, "Alice");
    }

    #[test]
    fn directory_orders_by_first_name_and_filters() {
        let conn = open_memory_for_tests();
        let zed = insert(&conn, &new_user("z", "Zed"), 1).unwrap().unwrap();
        let amy = insert(&conn, &new_user("a", "Amy"), 1).unwrap().unwrap();
        insert(&conn, &new_user("m_x", "Max"), 1).unwrap().unwrap();
        let all = UserQuery {
            search: None,
            exclude: vec![],
            limit: 10,
            offset: 0,
        };
        let (count, users) = list(&conn, &all).unwrap();
        assert_eq!(count, 3);
        let names: Vec<_> = users.iter().map(|u| u.first_name.as_str()).collect();
        assert_eq!(names, ["Amy", "Max", "Zed"]);

        let q = UserQuery {
            exclude: vec![amy.id],
            ..all
        };
        let (count, users) = list(&conn, &q).unwrap();
        assert_eq!(count, 2);
        assert_eq!(users[1].id, zed.id);

        // `_` is a literal, not a LIKE wildcard
        let q = UserQuery {
            search: Some("_".into()),
            exclude: vec![],
            limit: 10,
            offset: 0,
        };
        let (count, users) = list(&conn, &q).unwrap();
        assert_eq!((count, users[0].username.as_str()), (1, "m_x"));
    }
}
