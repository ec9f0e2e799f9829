//! SQL for users: sign-up, lookup for login, the user directory.

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::Result;
use crate::account::{self as username, Username};
use crate::model::{Millis, User, UserId};

pub struct NewUser {
    pub username: Username,
    pub password_hash: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
}

impl NewUser {
    /// A bot's account: no password (`!`, which no password verifies), shown as `first_name`.
    pub fn bot(username: Username, first_name: String) -> NewUser {
        NewUser {
            username,
            password_hash: "!".into(),
            first_name,
            last_name: String::new(),
            email: String::new(),
        }
    }
}

/// A user's login record: the public user, its password hash, and whether it may log in.
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
    pub is_active: bool,
}

pub(crate) const USER_COLUMNS: &str =
    "u.id, u.username, u.first_name, u.last_name, u.email, u.date_joined, u.is_bot";

/// How many columns `USER_COLUMNS` is.
pub(crate) const USER_COLUMN_COUNT: usize = 7;

/// Reads a `User` from the `USER_COLUMNS` starting at column `at`.
pub(crate) fn user_from_row(row: &Row<'_>, at: usize) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(at)?,
        username: row.get(at + 1)?,
        first_name: row.get(at + 2)?,
        last_name: row.get(at + 3)?,
        email: row.get(at + 4)?,
        date_joined: Millis(row.get(at + 5)?),
        is_bot: row.get(at + 6)?,
    })
}

/// Why a new account's name was refused by the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// An account has this name, in some case or compatibility spelling.
    Name,
    /// An account has a name that looks the same (one confusable skeleton).
    LookAlike,
}

/// Inserts a user, unless an account has the same key or the same skeleton. The writer runs
/// one transaction at a time, so the checks and the insert cannot interleave with another
/// sign-up.
pub fn insert(conn: &Connection, new: &NewUser, now: i64) -> Result<Result<User, Taken>> {
    let name = &new.username;
    let exists = |sql: &str, value: &str| -> Result<bool> {
        Ok(conn
            .prepare_cached(sql)?
            .query_row([value], |_| Ok(()))
            .optional()?
            .is_some())
    };
    if exists("SELECT 1 FROM users WHERE username_key = ?1", &name.key)? {
        return Ok(Err(Taken::Name));
    }
    if exists(
        "SELECT 1 FROM users WHERE username_skeleton = ?1",
        &name.skeleton,
    )? {
        return Ok(Err(Taken::LookAlike));
    }
    conn.prepare_cached(
        "INSERT INTO users (username, username_key, username_skeleton, password_hash, first_name,
                            last_name, email, date_joined)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        name.display,
        name.key,
        name.skeleton,
        new.password_hash,
        new.first_name,
        new.last_name,
        new.email,
        now
    ])?;
    Ok(Ok(User {
        id: UserId(conn.last_insert_rowid()),
        username: name.display.clone(),
        first_name: new.first_name.clone(),
        last_name: new.last_name.clone(),
        email: new.email.clone(),
        date_joined: Millis(now),
        is_bot: false,
    }))
}

/// The id of the account a typed name (`?1`, and its key `?2`) refers to: the one with
/// exactly that name if there is one (an account created before names were case-folded may
/// share its key with an older account), else the one with its key.
const ID_OF_TYPED: &str = "coalesce((SELECT id FROM users WHERE username = ?1),
                                    (SELECT id FROM users WHERE username_key = ?2))";

/// The account a typed name refers to.
pub fn find(conn: &Connection, typed: &str) -> Result<Option<UserId>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {ID_OF_TYPED}"))?
        .query_row(params![typed, username::key(typed)], |r| r.get(0))?)
}

/// The account a typed name refers to, with its password hash, in one statement.
pub fn credentials(conn: &Connection, typed: &str) -> Result<Option<Credentials>> {
    let sql = format!(
        "SELECT {USER_COLUMNS}, u.password_hash, u.is_active FROM users u WHERE u.id = {ID_OF_TYPED}"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![typed, username::key(typed)], |row| {
            Ok(Credentials {
                user: user_from_row(row, 0)?,
                password_hash: row.get(USER_COLUMN_COUNT)?,
                is_active: row.get(USER_COLUMN_COUNT + 1)?,
            })
        })
        .optional()?)
}

/// What re-keying the existing accounts found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RekeyReport {
    pub accounts: usize,
    /// Keys that changed.
    pub rekeyed: usize,
    /// (older, newer) account names that now fold to one key. The older account takes the
    /// key; the newer keeps logging in by its exact name.
    pub same_key: Vec<(String, String)>,
    /// (older, newer) account names with one skeleton. Both keep working; new look-alikes of
    /// either are refused.
    pub look_alike: Vec<(String, String)>,
}

/// Recomputes every account's key and skeleton with the rules of `crate::username`, for a
/// database whose keys were made by lower-casing. Runs once, inside the migration that adds
/// the skeleton column.
pub(crate) fn rekey(conn: &Connection) -> Result<RekeyReport> {
    let rows: Vec<(i64, String, String)> = {
        let mut stmt = conn.prepare("SELECT id, username, username_key FROM users ORDER BY id")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?
    };
    let mut report = RekeyReport {
        accounts: rows.len(),
        ..RekeyReport::default()
    };
    // The oldest account with a key takes it.
    let mut owner: HashMap<String, usize> = HashMap::new();
    let wanted: Vec<String> = rows
        .iter()
        .map(|(_, name, _)| username::key(name))
        .collect();
    for (i, key) in wanted.iter().enumerate() {
        if let Some(&first) = owner.get(key) {
            report
                .same_key
                .push((rows[first].1.clone(), rows[i].1.clone()));
        } else {
            owner.insert(key.clone(), i);
        }
    }
    let taken: HashSet<&str> = owner.keys().map(String::as_str).collect();
    let mut updates = Vec::new();
    for (i, (id, _, old)) in rows.iter().enumerate() {
        let key = if owner[&wanted[i]] == i {
            wanted[i].clone()
        } else if !taken.contains(old.as_str()) {
            old.clone()
        } else {
            // No typed name folds to a key that starts with U+0000.
            format!("\u{0}{id}")
        };
        if key != *old {
            updates.push((*id, key));
        }
    }
    report.rekeyed = updates.len();
    // Out of the way first, so no intermediate state breaks the unique index.
    let mut park = conn.prepare("UPDATE users SET username_key = char(1) || id WHERE id = ?1")?;
    for (id, _) in &updates {
        park.execute([id])?;
    }
    let mut set = conn.prepare("UPDATE users SET username_key = ?2 WHERE id = ?1")?;
    for (id, key) in &updates {
        set.execute(params![id, key])?;
    }

    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut skel = conn.prepare("UPDATE users SET username_skeleton = ?2 WHERE id = ?1")?;
    for (i, (id, name, _)) in rows.iter().enumerate() {
        let skeleton = username::skeleton_of(&wanted[i]);
        match seen.get(&skeleton) {
            Some(&first) if wanted[first] != wanted[i] => {
                report
                    .look_alike
                    .push((rows[first].1.clone(), name.clone()));
            }
            Some(_) => {}
            None => {
                seen.insert(skeleton.clone(), i);
            }
        }
        skel.execute(params![id, skeleton])?;
    }
    Ok(report)
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
            username: Username::parse(name).unwrap(),
            password_hash: "h".into(),
            first_name: first.into(),
            last_name: String::new(),
            email: String::new(),
        }
    }

    #[test]
    fn usernames_are_unique_case_insensitively() {
        let conn = open_memory_for_tests();
        assert!(insert(&conn, &new_user("Alice", ""), 1).unwrap().is_ok());
        assert_eq!(
            insert(&conn, &new_user("aLICE", ""), 2)
                .unwrap()
                .unwrap_err(),
            Taken::Name
        );
        let creds = credentials(&conn, "ALICE").unwrap().unwrap();
        assert_eq!(creds.user.username, "Alice");
        assert_eq!(
            insert(&conn, &new_user("A1ICE", ""), 2)
                .unwrap()
                .unwrap_err(),
            Taken::LookAlike
        );
    }

    /// Inserts an account the way releases that lower-cased names did.
    fn legacy(conn: &Connection, name: &str) {
        conn.execute(
            "INSERT INTO users (username, username_key, password_hash, date_joined)
             VALUES (?1, ?2, 'h-' || ?1, 0)",
            [name, &name.to_lowercase()],
        )
        .unwrap();
    }

    #[test]
    fn rekeying_gives_a_shared_key_to_the_older_account_and_reports_collisions() {
        let conn = open_memory_for_tests();
        for name in ["ΣΣ", "σσ", "victim", "ｖｉｃｔｉｍ", "bob", "b0b", "Straße"] {
            legacy(&conn, name);
        }
        let report = rekey(&conn).unwrap();
        assert_eq!(report.accounts, 7);
        assert_eq!(
            report.same_key,
            [
                ("ΣΣ".to_string(), "σσ".to_string()),
                ("victim".into(), "ｖｉｃｔｉｍ".into())
            ]
        );
        assert_eq!(report.look_alike, [("bob".to_string(), "b0b".to_string())]);
        // "ΣΣ" (key "σς" before) takes "σσ", so the newer "σσ" moves aside; "ｖｉｃｔｉｍ" keeps
        // its old key; "Straße" becomes "strasse".
        assert_eq!(report.rekeyed, 3);

        // Every account still logs in by its exact name, and by its key where it owns one.
        let hash_of = |typed: &str| credentials(&conn, typed).unwrap().unwrap().password_hash;
        for name in ["ΣΣ", "σσ", "victim", "ｖｉｃｔｉｍ", "bob", "b0b", "Straße"] {
            assert_eq!(hash_of(name), format!("h-{name}"));
        }
        assert_eq!(hash_of("σς"), "h-ΣΣ");
        assert_eq!(hash_of("VICTIM"), "h-victim");
        assert_eq!(hash_of("STRASSE"), "h-Straße");
        // New sign-ups meet both forms.
        assert_eq!(
            insert(&conn, &new_user("Σσ", ""), 1).unwrap().unwrap_err(),
            Taken::Name
        );
        assert_eq!(
            insert(&conn, &new_user("BOB", ""), 1).unwrap().unwrap_err(),
            Taken::Name
        );
        assert!(insert(&conn, &new_user("carol", ""), 1).unwrap().is_ok());
        // Running it again changes nothing.
        let again = rekey(&conn).unwrap();
        assert_eq!(again.rekeyed, 0);
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
