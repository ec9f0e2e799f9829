//! SQL for changes to stored messages: edits, deletions and reactions. Each takes the next position in
//! the sequence of changes, in the transaction that makes it.

use rusqlite::{Connection, OptionalExtension, params};

use super::messages::{self, next_seq, read_marks};
use super::rooms::RoomRef;
use super::{Result, StoreError};
use crate::model::{Message, MessageId, Refusal, Seq, UserId};

/// A message as a change left it, and whether anything changed (an edit to the same text, or
/// deleting a tombstone, changes nothing and takes no position).
pub struct Changed {
    pub room: RoomRef,
    pub message: Message,
    pub changed: bool,
    /// A deletion took files with it: the sweeper may have bytes to remove.
    pub files_freed: bool,
}

/// What the rules need to know about a message and the user acting on it.
struct Target {
    room: RoomRef,
    sender: UserId,
    content: String,
    deleted: bool,
    /// Whether the acting user is an admin of the message's group.
    by_is_admin: bool,
}

/// The message `id` as `by` may see it: `NotFound` unless `by` is a member of its room now.
fn target(conn: &Connection, id: MessageId, by: UserId) -> Result<Target> {
    conn.prepare_cached(
        "SELECT r.id, r.public_id, m.sender_id, m.content, m.deleted,
                NOT r.is_direct AND rm.admin
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
            by_is_admin: r.get(5)?,
        })
    })
    .optional()?
    .ok_or(StoreError::Refused(Refusal::NotFound))
}

/// Records a change to message `id` of `room` at the next position; returns the position.
fn take_position(conn: &Connection, room: &RoomRef, id: MessageId, now: i64) -> Result<Seq> {
    let seq = next_seq(conn)?;
    conn.prepare_cached("UPDATE messages SET updated = ?2 WHERE id = ?1")?
        .execute(params![id, now])?;
    conn.prepare_cached("INSERT INTO changes (seq, room_id, message_id) VALUES (?1, ?2, ?3)")?
        .execute(params![seq, room.id, id])?;
    Ok(seq)
}

/// The message as it is now; `at`: the position of the change just made, if one was.
fn current(conn: &Connection, room: RoomRef, id: MessageId, at: Option<Seq>) -> Result<Changed> {
    let marks = read_marks(conn, room.id)?;
    let mut message = messages::get(conn, &room, id, &marks)?
        .ok_or_else(|| StoreError::Other(format!("message {} vanished", id.0)))?;
    let changed = at.is_some();
    if let Some(seq) = at {
        message.seq = seq;
    }
    Ok(Changed {
        room,
        message,
        changed,
        files_freed: false,
    })
}

/// `by` replaces the content of message `id` (already validated), and who it mentions with
/// it. Only its author may, and not once it is deleted.
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
        return current(conn, t.room, id, None);
    }
    conn.prepare_cached("UPDATE messages SET content = ?2, edited = ?3 WHERE id = ?1")?
        .execute(params![id, content, now])?;
    messages::set_mentions(conn, &t.room, id, content)?;
    let seq = take_position(conn, &t.room, id, now)?;
    current(conn, t.room, id, Some(seq))
}

/// `by` deletes message `id`: its author may, and so may a group's admins. The message stays
/// as a tombstone; its content, its reactions, its mentions and what it replied to are gone
/// from the database.
pub fn delete(conn: &Connection, id: MessageId, by: UserId, now: i64) -> Result<Changed> {
    let t = target(conn, id, by)?;
    if t.sender != by && !t.by_is_admin {
        return Err(Refusal::MayNotDelete.into());
    }
    if t.deleted {
        return current(conn, t.room, id, None);
    }
    conn.prepare_cached(
        "UPDATE messages SET content = '', deleted = 1, reply_to = NULL, reactions = 0,
             mentions = NULL, attachments = 0
         WHERE id = ?1",
    )?
    .execute(params![id])?;
    // Its files go with it: nobody may download them any more, and the sweeper removes
    // their bytes once no other upload names them.
    let freed = super::uploads::forget_message(conn, id)? > 0;
    conn.prepare_cached("DELETE FROM mentions WHERE message_id = ?1")?
        .execute(params![id])?;
    conn.prepare_cached("DELETE FROM reactions WHERE message_id = ?1")?
        .execute(params![id])?;
    let seq = take_position(conn, &t.room, id, now)?;
    let mut deleted = current(conn, t.room, id, Some(seq))?;
    deleted.files_freed = freed;
    Ok(deleted)
}

/// Most different emoji one message can carry.
pub const MAX_DISTINCT_REACTIONS: i64 = 20;

/// `by` adds (`on`) or takes back their reaction `emoji` (already validated) to message `id`.
/// Adding one that is there, or taking back one that is not, changes nothing.
pub fn react(
    conn: &Connection,
    id: MessageId,
    by: UserId,
    emoji: &str,
    on: bool,
    now: i64,
) -> Result<Changed> {
    let t = target(conn, id, by)?;
    if t.deleted {
        return Err(Refusal::MessageDeleted.into());
    }
    let changed = if on {
        let known: bool = conn
            .prepare_cached("SELECT 1 FROM reactions WHERE message_id = ?1 AND emoji = ?2 LIMIT 1")?
            .query_row(params![id, emoji], |_| Ok(()))
            .optional()?
            .is_some();
        if !known {
            let distinct: i64 = conn
                .prepare_cached(
                    "SELECT count(DISTINCT emoji) FROM reactions WHERE message_id = ?1",
                )?
                .query_row([id], |r| r.get(0))?;
            if distinct >= MAX_DISTINCT_REACTIONS {
                return Err(Refusal::TooManyReactions.into());
            }
        }
        conn.prepare_cached(
            "INSERT INTO reactions (message_id, user_id, emoji, created) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![id, by, emoji, now])?
            > 0
    } else {
        conn.prepare_cached(
            "DELETE FROM reactions WHERE message_id = ?1 AND emoji = ?2 AND user_id = ?3",
        )?
        .execute(params![id, emoji, by])?
            > 0
    };
    if !changed {
        return current(conn, t.room, id, None);
    }
    conn.prepare_cached(
        "UPDATE messages SET reactions = (SELECT count(*) FROM reactions WHERE message_id = ?1)
         WHERE id = ?1",
    )?
    .execute([id])?;
    let seq = take_position(conn, &t.room, id, now)?;
    current(conn, t.room, id, Some(seq))
}
