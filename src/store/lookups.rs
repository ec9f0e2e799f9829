//! SQL for the lists a user asks for across their rooms: the messages that mention them, and
//! full-text search.

use rusqlite::{Connection, params};

use super::Result;
use super::messages::{get, read_marks};
use super::rooms::RoomRef;
use crate::model::{Message, MessageId, UserId};

/// A found message's id and room, from the columns `id, room id, room public id`.
fn found_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(MessageId, RoomRef)> {
    Ok((
        r.get(0)?,
        RoomRef {
            id: r.get(1)?,
            public_id: r.get(2)?,
        },
    ))
}

/// The first `limit` of `found` (fetched one past the page) as `user` sees them, and the
/// cursor of the next page (the last id) if there is one.
fn page_of(
    conn: &Connection,
    user: UserId,
    found: Vec<(MessageId, RoomRef)>,
    limit: u32,
) -> Result<(Vec<Message>, Option<MessageId>)> {
    let more = found.len() > limit as usize;
    let mut out = Vec::new();
    for (id, room) in found.into_iter().take(limit as usize) {
        let marks = read_marks(conn, room.id)?;
        if let Some(mut message) = get(conn, &room, id, &marks)? {
            message.seen_by(Some(user));
            out.push(message);
        }
    }
    let next = more.then(|| out.last().map(|m| m.id)).flatten();
    Ok((out, next))
}

/// Up to `limit` of the messages that mention `user` in rooms they are a member of now, newest
/// first, below `before`; and the cursor of the next page (the last id) if there is one.
pub fn mentions_of(
    conn: &Connection,
    user: UserId,
    before: Option<MessageId>,
    limit: u32,
) -> Result<(Vec<Message>, Option<MessageId>)> {
    let mut stmt = conn.prepare_cached(
        "SELECT mn.message_id, r.id, r.public_id FROM mentions mn
         JOIN room_members rm ON rm.room_id = mn.room_id AND rm.user_id = mn.user_id
         JOIN rooms r ON r.id = mn.room_id
         WHERE mn.user_id = ?1 AND mn.message_id < ?2
         ORDER BY mn.message_id DESC LIMIT +?3",
    )?;
    let bound = before.map_or(i64::MAX, |b| b.0);
    let found = stmt
        .query_map(params![user, bound, i64::from(limit) + 1], found_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    page_of(conn, user, found, limit)
}

/// Up to `limit` messages matching the FTS5 expression `fts` (made by
/// the search query parser, never by a user) in the rooms `user` is a member of now (or
/// only `room`, if it is one of them), newest first, below `before`; and the next page's
/// cursor.
pub fn search(
    conn: &Connection,
    user: UserId,
    fts: &str,
    room: Option<&str>,
    before: Option<MessageId>,
    limit: u32,
) -> Result<(Vec<Message>, Option<MessageId>)> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.id, r.id, r.public_id FROM messages_fts f
         JOIN messages m ON m.id = f.rowid
         JOIN room_members rm ON rm.room_id = m.room_id AND rm.user_id = ?1
         JOIN rooms r ON r.id = m.room_id
         WHERE messages_fts MATCH ?2 AND f.rowid < ?3 AND m.deleted = 0
           AND (?4 IS NULL OR r.public_id = ?4)
         ORDER BY f.rowid DESC LIMIT +?5",
    )?;
    let bound = before.map_or(i64::MAX, |b| b.0);
    let found = stmt
        .query_map(
            params![user, fts, bound, room, i64::from(limit) + 1],
            found_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    page_of(conn, user, found, limit)
}
