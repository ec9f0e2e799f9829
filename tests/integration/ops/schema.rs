//! Schema upgrades of databases made by earlier releases.

use crate::common;

use std::collections::BTreeSet;

use common::{TestServer, test_config};
use serde_json::json;

use super::*;

// ---------------------------------------------------------------------------------------------
// Schema upgrades

/// The first released schema, frozen. `schema.sql` must keep it as migration 1 unchanged and
/// append later changes as new migrations.
const SCHEMA_V1: &str = include_str!("../../fixtures/schema-v1.sql");

fn schema_objects(conn: &rusqlite::Connection) -> BTreeSet<(String, String, String)> {
    let mut stmt = conn
        .prepare("SELECT type, name, coalesce(sql, '') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        .unwrap();
    stmt.query_map([], |r| {
        let sql: String = r.get(2)?;
        Ok((
            r.get(0)?,
            r.get(1)?,
            sql.split_whitespace().collect::<Vec<_>>().join(" "),
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[tokio::test]
async fn a_database_from_the_first_released_schema_upgrades_with_its_data_intact() {
    let schema = include_str!("../../../schema.sql");
    let migration_1 = schema
        .split("\n-- migration: ")
        .nth(1)
        .and_then(|m| m.split_once('\n'))
        .map(|(_, body)| body.trim())
        .unwrap();
    assert_eq!(
        migration_1,
        SCHEMA_V1.trim(),
        "migration 1 of schema.sql was edited after release: append a new migration instead"
    );
    let latest = schema.matches("\n-- migration: ").count() as i64;

    // A database as the first release left it, with data in every table.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    let passwords = chat_server::passwords::cheap_passwords();
    let hash = passwords.hash("alice-secret-pw").unwrap();
    let token = "ab".repeat(32);
    let digest = chat_server::auth::token_digest(&token);
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        let now = 1_700_000_000_000i64;
        conn.execute(
            "INSERT INTO users (id, username, username_key, password_hash, first_name, date_joined)
             VALUES (1, 'Alice', 'alice', ?1, 'Alice', ?2), (2, 'bob', 'bob', ?1, 'Bob', ?2)",
            rusqlite::params![hash, now],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO tokens (user_id, digest, created, expires_at) VALUES (1, ?1, ?2, ?3)",
            rusqlite::params![digest, now, i64::MAX],
        )
        .unwrap();
        conn.execute_batch(&format!(
            "INSERT INTO rooms (id, public_id, name, is_direct, direct_key, creator_id, created,
                                last_message_id, last_activity)
                 VALUES (1, 'oldroom1', NULL, 1, '1:2', 1, {now}, 3, {now});
             INSERT INTO room_members (room_id, user_id, last_read_id, joined)
                 VALUES (1, 1, 3, {now}), (1, 2, 1, {now});
             INSERT INTO messages (id, room_id, sender_id, content, created, updated, client_id)
                 VALUES (1, 1, 1, 'first', {now}, {now}, 'c1'),
                        (2, 1, 1, 'second', {now}, {now}, NULL),
                        (3, 1, 1, 'third', {now}, {now}, 'c3');"
        ))
        .unwrap();
    }

    let mut config = test_config();
    config.server.db = db.to_str().unwrap().to_string();
    let s = TestServer::start_with(config.clone()).await;

    // The old token still works; the room, its history and read marks survived.
    let (status, rooms) = s.get("/api/v1/chats/", &token).await;
    assert_eq!(status, 200, "{rooms}");
    assert_eq!(rooms[0]["room_id"], "oldroom1");
    assert_eq!(rooms[0]["last_message"]["content"], "third");
    let (_, history) = s.get("/api/v1/chat/oldroom1/?after=0", &token).await;
    let contents = common::contents(&history);
    assert_eq!(contents, ["first", "second", "third"]);
    // The old password works, and bob has two unread messages.
    let (status, login) = s
        .call(
            "POST",
            "/api/v1/login/",
            None,
            Some(json!({"username": "bob", "password": "alice-secret-pw"})),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let bob_token = login["token"].as_str().unwrap();
    let (_, rooms) = s.get("/api/v1/chats/", bob_token).await;
    assert_eq!(rooms[0]["unread_count"], 2);
    // Idempotency keys survived; new ids continue after the old ones.
    let (status, again) = s
        .post(
            "/api/v1/chat/oldroom1/",
            &token,
            json!({"content": "first", "client_id": "c1"}),
        )
        .await;
    assert_eq!((status, again["id"].as_i64()), (200, Some(1)));
    let (status, new) = s
        .post(
            "/api/v1/chat/oldroom1/",
            &token,
            json!({"content": "fourth"}),
        )
        .await;
    assert_eq!((status, new["id"].as_i64()), (201, Some(4)));
    // The old messages are in the search index the upgrade built, and replay by position: an
    // edit of one takes the position after the newest message.
    let (_, found) = s.get("/api/v1/search/?q=second", &token).await;
    assert_eq!(found["results"][0]["message"]["id"], 2, "{found}");
    let (status, edited) = s
        .call(
            "PATCH",
            "/api/v1/messages/1/",
            Some(&token),
            Some(json!({"content": "first, edited"})),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    let (mut ws, hello) = s
        .ws_all(
            &common::TestUser {
                id: 1,
                username: "Alice".into(),
                token: token.clone(),
            },
            "&since=3",
        )
        .await;
    assert_eq!(hello["last_seq"], 5);
    assert_eq!(ws.next_json().await["message"]["content"], "fourth");
    let change = ws.next_json().await;
    assert_eq!(
        (change["type"].as_str(), change["seq"].as_i64()),
        (Some("message_updated"), Some(5))
    );
    s.stop().await;

    // The upgraded database has the current schema, exactly as a fresh one.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, latest);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let violations: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(violations, 0);
    let fresh = chat_server::store::open_memory_for_tests();
    assert_eq!(schema_objects(&conn), schema_objects(&fresh));

    // A message another program writes straight into the database waits in the index's queue
    // and is indexed when a server starts; the index then agrees with the messages.
    conn.execute(
        "INSERT INTO messages (room_id, sender_id, content, created, updated)
         VALUES (1, 1, 'written by sqlite3', 0, 0)",
        [],
    )
    .unwrap();
    drop(conn);
    let s = TestServer::start_with(config).await;
    let (_, found) = s.get("/api/v1/search/?q=sqlite3", &token).await;
    assert_eq!(
        found["results"][0]["message"]["content"], "written by sqlite3",
        "{found}"
    );
    s.stop().await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let queued: i64 = conn
        .query_row("SELECT count(*) FROM search_queue", [], |r| r.get(0))
        .unwrap();
    assert_eq!(queued, 0);
    conn.execute(
        "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)",
        [],
    )
    .unwrap();
}

#[tokio::test]
async fn upgrading_rekeys_usernames_reports_collisions_and_every_account_still_logs_in() {
    // Accounts as releases that lower-cased names made them: "ΣΣ" (key "σς") and "σσ" now fold
    // to one key, as do "victim" and its fullwidth twin; "bob" and "b0b" look alike.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    let db_arg = db.to_str().unwrap().to_string();
    let passwords = chat_server::passwords::cheap_passwords();
    let names = ["ΣΣ", "σσ", "victim", "ｖｉｃｔｉｍ", "bob", "b0b", "Straße"];
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        for (i, name) in names.iter().enumerate() {
            let hash = passwords.hash(&format!("{i}-secret-pw")).unwrap();
            conn.execute(
                "INSERT INTO users (id, username, username_key, password_hash, date_joined)
                 VALUES (?1, ?2, ?3, ?4, 0)",
                rusqlite::params![i as i64 + 1, name, name.to_lowercase(), hash],
            )
            .unwrap();
        }
    }

    // The first program to open it migrates it and says what it found, on stderr.
    let (ok, stdout, stderr) = admin(&["user", "list", "--db", &db_arg], None);
    assert!(ok, "{stderr}");
    for name in names {
        assert!(stdout.contains(name), "{name} missing from {stdout}");
    }
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 3, "{stderr}");
    assert!(
        warnings[0].contains("fold to one key")
            && warnings[0].contains("older=\"ΣΣ\"")
            && warnings[0].contains("newer=\"σσ\""),
        "{stderr}"
    );
    assert!(
        warnings[1].contains("older=\"victim\"") && warnings[1].contains("newer=\"ｖｉｃｔｉｍ\""),
        "{stderr}"
    );
    assert!(
        warnings[2].contains("look alike")
            && warnings[2].contains("older=\"bob\"")
            && warnings[2].contains("newer=\"b0b\""),
        "{stderr}"
    );
    // Opening it again finds nothing to do.
    let (ok, _, stderr) = admin(&["user", "list", "--db", &db_arg], None);
    assert!(ok && !stderr.contains("WARN"), "{stderr}");

    let mut config = test_config();
    config.server.db = db_arg.clone();
    let s = TestServer::start_with(config).await;
    let login = |typed: &'static str, i: usize| {
        let s = &s;
        async move {
            let (status, body) = s
                .call(
                    "POST",
                    "/api/v1/login/",
                    None,
                    Some(json!({"username": typed, "password": format!("{i}-secret-pw")})),
                )
                .await;
            assert_eq!(status, 200, "{typed}: {body}");
            body["user"]["id"].as_i64().unwrap()
        }
    };
    // Every account logs in by its exact name...
    for (i, name) in names.iter().enumerate() {
        assert_eq!(login(name, i).await, i as i64 + 1, "{name}");
    }
    // ... and by any spelling of a key it owns.
    assert_eq!(login("σς", 0).await, 1);
    assert_eq!(login("VICTIM", 2).await, 3);
    assert_eq!(login("STRASSE", 6).await, 7);
    // New accounts meet the new rules against the old ones.
    for taken in ["Σσ", "𝐯𝐢𝐜𝐭𝐢𝐦", "BOB", "B0B", "strasse"] {
        let (status, body) = s
            .call(
                "POST",
                "/api/v1/signup/",
                None,
                Some(json!({"username": taken, "password": "a fine passphrase"})),
            )
            .await;
        assert_eq!(status, 409, "{taken}: {body}");
    }
    s.stop().await;
}
