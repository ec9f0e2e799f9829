//! SQL for changes to stored messages: edits and deletions. Each takes the next position in
//! the sequence of changes, in the transaction that makes it.

use rusqlite::{Connection, OptionalExtension, params};

use super::messages::{self, next_seq, read_marks, took_seq};
use super::rooms::RoomRef;
use super::{Result, StoreError};
use crate::model::{Message, MessageId, Refusal, UserId};

/// A message as a change left it, and whether anything changed (an edit to the same text, or
/// deleting a tombstone, changes nothing and takes no position).
pub struct Changed {
    pub room: RoomRef,
    pub message: Message,
    pub changed: bool,
}

/// What the rules need to know about a message and the user acting on it.
struct Target {
    room: RoomRef,
    sender: UserId,
    content: String,
    deleted: bool,
    /// The room's creator, for a group; `None` for a direct room.
    group_creator: Option<UserId>,
}

/// The message `id` as `by` may see it: `NotFound` unless `by` is a member of its room now.
fn target(conn: &Connection, id: MessageId, by: UserId) -> Result<Target> {
    conn.prepare_cached(
        "SELECT r.id, r.public_id, m.sender_id, m.content, m.deleted,
                CASE WHEN r.is_direct THEN NULL ELSE r.creator_id END
         FROM messages m
         JOIN rooms r ON r.id = m.room_id
         JOIN room_members rm ON rm.room_id = m.room_id AND rm.user_id = ?2
         WHERE m.id = ?1",
    )?
    .query_row(params![id, by], |r| {
        Ok(Target {
            room: RoomRef {
                id: r.get(0)?,
                public_id: r.get(1)?,
            },
            sender: r.get(2)?,
            content: r.get(3)?,
            deleted: r.get(4)?,
            group_creator: r.get(5)?,
        })
    })
    .optional()?
    .ok_or(StoreError::Refused(Refusal::NotFound))
}

/// Takes the next position for a change to message `id`.
fn take_position(conn: &Connection, id: MessageId, now: i64) -> Result<()> {
    let seq = next_seq(conn)?;
    conn.prepare_cached("UPDATE messages SET seq = ?2, updated = ?3 WHERE id = ?1")?
        .execute(params![id, seq, now])?;
    took_seq(conn, seq)
}

fn current(conn: &Connection, room: RoomRef, id: MessageId, changed: bool) -> Result<Changed> {
    let marks = read_marks(conn, room.id)?;
    let message = messages::get(conn, &room, id, &marks)?
        .ok_or_else(|| StoreError::Other(format!("message {} vanished", id.0)))?;
    Ok(Changed {
        room,
        message,
        changed,
    })
}

/// `by` replaces the content of message `id` (already validated). Only its author may, and
/// not once it is deleted.
pub fn edit(
    conn: &Connection,
    id: MessageId,
    by: UserId,
    content: &str,
    now: i64,
) -> Result<Changed> {
    let t = target(conn, id, by)?;
    if t.sender != by {
        return Err(Refusal::NotAuthor.into());
    }
    if t.deleted {
        return Err(Refusal::MessageDeleted.into());
    }
    if t.content == content {
        return current(conn, t.room, id, false);
    }
    conn.prepare_cached("UPDATE messages SET content = ?2, edited = ?3 WHERE id = ?1")?
        .execute(params![id, content, now])?;
    take_position(conn, id, now)?;
    current(conn, t.room, id, true)
}

/// `by` deletes message `id`: its author may, and so may a group's creator. The message stays
/// as a tombstone; its content is gone from the database.
pub fn delete(conn: &Connection, id: MessageId, by: UserId, now: i64) -> Result<Changed> {
    let t = target(conn, id, by)?;
    if t.sender != by && t.group_creator != Some(by) {
        return Err(Refusal::MayNotDelete.into());
    }
    if t.deleted {
        return current(conn, t.room, id, false);
    }
    conn.prepare_cached("UPDATE messages SET content = '', deleted = 1 WHERE id = ?1")?
        .execute(params![id])?;
    take_position(conn, id, now)?;
    current(conn, t.room, id, true)
}
