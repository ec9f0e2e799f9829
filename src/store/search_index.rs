//! Keeps the full-text index (`messages_fts`) in step with the messages.
//!
//! Triggers on `messages` queue every change of a message's text in `search_queue` (schema
//! migration 8 says why not straight into the index); [`apply_queue`] moves the queue into the
//! index. The writer calls it just before each commit, so a message is searchable in the same
//! transaction that stored, edited or deleted it, and FTS5 writes one index segment per batch
//! of messages rather than one per message.

use rusqlite::Connection;

use super::Result;

/// Applies every queued change to the index, in the order they were made, and empties the
/// queue. Returns how many changes there were. Run it inside the transaction that made them.
pub fn apply_queue(conn: &Connection) -> Result<usize> {
    let applied = conn
        .prepare_cached(
            "INSERT INTO messages_fts (messages_fts, rowid, content)
             SELECT CASE remove WHEN 1 THEN 'delete' END, message_id, content
               FROM search_queue ORDER BY seq",
        )?
        .execute([])?;
    if applied > 0 {
        conn.prepare_cached("DELETE FROM search_queue")?
            .execute([])?;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open_memory_for_tests;

    fn matches(conn: &Connection, term: &str) -> Vec<i64> {
        let mut stmt = conn
            .prepare("SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?1 ORDER BY rowid")
            .unwrap();
        stmt.query_map([term], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn queued(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM search_queue", [], |r| r.get(0))
            .unwrap()
    }

    /// Inserts, edits and deletions made in one transaction, several of the same message,
    /// reach the index in order once the queue is applied: the index then agrees with the
    /// messages (FTS5's own integrity check compares the two) and the queue is empty.
    #[test]
    fn queued_changes_reach_the_index_in_order() {
        let conn = open_memory_for_tests();
        conn.execute_batch(
            "INSERT INTO users (id, username, username_key, password_hash, date_joined)
                 VALUES (1, 'a', 'a', 'h', 0);
             INSERT INTO rooms (id, public_id, is_direct, created, last_activity)
                 VALUES (1, 'r', 0, 0, 0);",
        )
        .unwrap();
        let insert = |id: i64, text: &str| {
            conn.execute(
                "INSERT INTO messages (id, room_id, sender_id, content, created, updated)
                 VALUES (?1, 1, 1, ?2, 0, 0)",
                rusqlite::params![id, text],
            )
            .unwrap();
        };
        let set = |id: i64, text: &str| {
            conn.execute(
                "UPDATE messages SET content = ?2 WHERE id = ?1",
                rusqlite::params![id, text],
            )
            .unwrap();
        };

        conn.execute_batch("BEGIN").unwrap();
        insert(1, "alpha beta");
        insert(2, "beta gamma");
        set(1, "alpha delta");
        set(2, "");
        insert(3, "beta beta beta");
        // Nothing is searchable before the queue is applied.
        assert_eq!(matches(&conn, "alpha"), Vec::<i64>::new());
        assert_eq!(queued(&conn), 6);
        assert_eq!(apply_queue(&conn).unwrap(), 6);
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(queued(&conn), 0);
        assert_eq!(matches(&conn, "alpha"), [1]);
        assert_eq!(matches(&conn, "beta"), [3]);
        assert_eq!(matches(&conn, "gamma"), Vec::<i64>::new());
        assert_eq!(matches(&conn, "delta"), [1]);

        // Changes to messages indexed by an earlier transaction, and a row deleted outright.
        conn.execute_batch("BEGIN").unwrap();
        set(3, "omega");
        set(3, "omega alpha");
        conn.execute("DELETE FROM messages WHERE id = 1", [])
            .unwrap();
        apply_queue(&conn).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(matches(&conn, "alpha"), [3]);
        assert_eq!(matches(&conn, "beta"), Vec::<i64>::new());
        assert_eq!(matches(&conn, "delta"), Vec::<i64>::new());
        assert_eq!(matches(&conn, "omega"), [3]);
        conn.execute(
            "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)",
            [],
        )
        .unwrap();
        // A deleted message's words leave the index's own pages at once (`secure-delete`),
        // not only its results: the bytes of a word no other message has are gone.
        let stored = |word: &str| -> bool {
            conn.query_row(
                "SELECT count(*) FROM messages_fts_data WHERE instr(block, ?1) > 0",
                [word],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
                > 0
        };
        insert(4, "zebracorn");
        apply_queue(&conn).unwrap();
        assert!(stored("zebracorn"));
        conn.execute_batch("BEGIN").unwrap();
        set(4, "");
        apply_queue(&conn).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        assert!(!stored("zebracorn"));
        assert_eq!(matches(&conn, "zebracorn"), Vec::<i64>::new());
        // An empty queue is a no-op.
        assert_eq!(apply_queue(&conn).unwrap(), 0);
    }
}
