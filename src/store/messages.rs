//! SQL for messages: idempotent insert, history pages, read marks.

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::api::NewMessage;
use super::rooms::RoomRef;
use super::{Result, StoreError};
use crate::model::Refusal;
use crate::model::{
    Attachment, Message, MessageId, Millis, Reaction, ReplyTo, RoomId, Seq, UserId,
};

/// Each member's read mark in a room: everything up to and including the id is read.
pub type ReadMarks = Vec<(UserId, MessageId)>;

/// How many [`MESSAGE_COLUMNS`] there are: a statement's own columns follow them.
pub(super) const MESSAGE_COLUMN_COUNT: usize = 16;

pub(super) const MESSAGE_COLUMNS: &str = "m.id, m.sender_id, u.username, m.content, m.created, m.updated, \
     m.client_id, m.edited, m.deleted, m.id, m.reply_to, pu.username, \
     CASE WHEN p.deleted THEN '' ELSE substr(p.content, 1, 100) END, m.reactions, m.mentions, \
     m.attachments";

/// What [`MESSAGE_COLUMNS`] are selected from: the message, its sender, and the message it
/// replies to with that one's sender.
pub(super) const MESSAGE_FROM: &str = "FROM messages m JOIN users u ON u.id = m.sender_id \
     LEFT JOIN messages p ON p.id = m.reply_to LEFT JOIN users pu ON pu.id = p.sender_id";

fn is_read(marks: &ReadMarks, sender: UserId, id: MessageId) -> bool {
    marks
        .iter()
        .filter(|(member, _)| *member != sender)
        .all(|(_, mark)| *mark >= id)
}

/// The `reply_to` of a row whose columns `at`, `at + 1`, `at + 2` are the replied-to id, its
/// sender's name and its excerpt.
fn reply_from_row(row: &Row<'_>, at: usize) -> rusqlite::Result<Option<ReplyTo>> {
    let Some(id) = row.get::<_, Option<MessageId>>(at)? else {
        return Ok(None);
    };
    Ok(Some(ReplyTo {
        id,
        sender: row.get::<_, Option<String>>(at + 1)?.unwrap_or_default(),
        excerpt: row.get::<_, Option<String>>(at + 2)?.unwrap_or_default(),
    }))
}

/// The reactions to message `id`, one per emoji in the order each was first used, with who
/// reacted (`me` is false: see [`Message::seen_by`]).
pub fn reactions(conn: &Connection, id: MessageId) -> rusqlite::Result<Vec<Reaction>> {
    let mut stmt = conn.prepare_cached(
        "SELECT emoji, user_id FROM reactions WHERE message_id = ?1 ORDER BY created, emoji, user_id",
    )?;
    let mut rows = stmt.query([id])?;
    let mut out: Vec<Reaction> = Vec::new();
    while let Some(row) = rows.next()? {
        let emoji = text(row, 0)?.unwrap_or_default();
        let user: UserId = row.get(1)?;
        match out.iter_mut().find(|r| r.emoji == emoji) {
            Some(r) => {
                r.count += 1;
                r.users.push(user);
            }
            None => out.push(Reaction {
                emoji: emoji.to_string(),
                count: 1,
                me: false,
                users: vec![user],
            }),
        }
    }
    Ok(out)
}

pub(super) fn message_from_row(
    conn: &Connection,
    row: &Row<'_>,
    room: &RoomRef,
    marks: &ReadMarks,
) -> rusqlite::Result<Message> {
    let id: MessageId = row.get(0)?;
    let sender_id: UserId = row.get(1)?;
    let reacted: i64 = row.get(13)?;
    Ok(Message {
        id,
        room_id: room.public_id.clone(),
        sender_id,
        sender: row.get(2)?,
        content: row.get(3)?,
        created: Millis(row.get(4)?),
        updated: Millis(row.get(5)?),
        is_read: is_read(marks, sender_id, id),
        client_id: row.get(6)?,
        edited: row.get::<_, Option<i64>>(7)?.map(Millis),
        deleted: row.get(8)?,
        // Its creation's; a change's position is set by whoever read it as that change.
        seq: row.get(9)?,
        reply_to: reply_from_row(row, 10)?,
        reactions: if reacted > 0 {
            reactions(conn, id)?
        } else {
            Vec::new()
        },
        mentions: mention_ids(text(row, 14)?),
        attachments: if row.get::<_, i64>(15)? > 0 {
            super::uploads::of_message(conn, id)?
        } else {
            Vec::new()
        },
    })
}

/// The user ids of a `mentions` column ("3,7").
fn mention_ids(column: Option<&str>) -> Vec<UserId> {
    column
        .unwrap_or_default()
        .split(',')
        .filter_map(|id| id.parse().ok().map(UserId))
        .collect()
}

/// The members of `room` that `content` mentions, in order of appearance.
fn resolve_mentions(conn: &Connection, room: &RoomRef, content: &str) -> Result<Vec<UserId>> {
    if !content.contains('@') {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT u.id FROM users u JOIN room_members rm ON rm.user_id = u.id AND rm.room_id = ?1
         WHERE u.username_key = ?2",
    )?;
    let mut found = Vec::new();
    for key in crate::mentions::candidates(content) {
        let user: Option<UserId> = stmt
            .query_row(params![room.id, key], |r| r.get(0))
            .optional()?;
        if let Some(user) = user.filter(|u| !found.contains(u)) {
            found.push(user);
            if found.len() == crate::mentions::MAX_MENTIONS {
                break;
            }
        }
    }
    Ok(found)
}

/// Records who message `id` of `room` mentions, replacing what it mentioned before; returns
/// them.
pub fn set_mentions(
    conn: &Connection,
    room: &RoomRef,
    id: MessageId,
    content: &str,
) -> Result<Vec<UserId>> {
    let users = resolve_mentions(conn, room, content)?;
    conn.prepare_cached("DELETE FROM mentions WHERE message_id = ?1")?
        .execute([id])?;
    let mut add = conn.prepare_cached(
        "INSERT INTO mentions (user_id, room_id, message_id) VALUES (?1, ?2, ?3)",
    )?;
    for user in &users {
        add.execute(params![user, room.id, id])?;
    }
    let column = (!users.is_empty()).then(|| {
        users
            .iter()
            .map(|u| u.0.to_string())
            .collect::<Vec<_>>()
            .join(",")
    });
    conn.prepare_cached("UPDATE messages SET mentions = ?2 WHERE id = ?1")?
        .execute(params![id, column])?;
    Ok(users)
}

pub fn read_marks(conn: &Connection, room: RoomId) -> Result<ReadMarks> {
    let mut stmt =
        conn.prepare_cached("SELECT user_id, last_read_id FROM room_members WHERE room_id = ?1")?;
    let rows = stmt.query_map([room], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn get(
    conn: &Connection,
    room: &RoomRef,
    id: MessageId,
    marks: &ReadMarks,
) -> Result<Option<Message>> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} {MESSAGE_FROM} WHERE m.id = ?1 AND m.room_id = ?2");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![id, room.id], |row| {
            message_from_row(conn, row, room, marks)
        })
        .optional()?)
}

/// Stores a message, or returns the one this sender already stored in this room under the
/// same `client_id`. The flag says whether a new message was stored. A sender who is not a
/// member of the room is [`StoreError::NotMember`]; run it in a savepoint (every writer job
/// is) so that nothing of the refused insert stays.
pub fn insert(conn: &Connection, m: &NewMessage, now: i64) -> Result<(Message, bool)> {
    let (room, sender, content) = (&m.room, &m.sender, m.content.as_str());
    let (client_id, reply_to, attachments) = (m.client_id.as_deref(), m.reply_to, &m.attachments);
    // A repeated client_id collides in the unique index `messages_by_client_id` and stores
    // nothing (and takes no position); the original is looked up only then.
    let id = MessageId(next_seq(conn)?.0);
    let stored = conn
        .prepare_cached(
            "INSERT INTO messages
                 (id, room_id, sender_id, content, created, updated, client_id, reply_to)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            id, room.id, sender.id, content, now, client_id, reply_to
        ])?;
    if stored == 0 {
        return match client_id {
            Some(client_id) => original(conn, room, sender.id, client_id).map(|m| (m, false)),
            None => Err(StoreError::Other("a message insert stored nothing".into())),
        };
    }
    conn.prepare_cached("UPDATE rooms SET last_message_id = ?2, last_activity = ?3 WHERE id = ?1")?
        .execute(params![room.id, id, now])?;
    // Sending a message means the sender has read everything before it. The same statement
    // is the membership check, in the transaction of the insert: no row means the sender is
    // not (or no longer) a member, and the caller's savepoint takes the insert back.
    let member = conn
        .prepare_cached(
            "UPDATE room_members SET last_read_id = max(last_read_id, ?3)
             WHERE room_id = ?1 AND user_id = ?2",
        )?
        .execute(params![room.id, sender.id, id])?;
    if member == 0 {
        return Err(StoreError::NotMember);
    }
    // Only a message of the same room can be answered; the savepoint takes the insert back.
    let reply_to = match reply_to {
        Some(answered) => Some(replied(conn, room, answered)?.ok_or(Refusal::NoSuchReply)?),
        None => None,
    };
    // A new message has no mentions to replace: without an `@` there is nothing to write.
    let mentions = if content.contains('@') {
        set_mentions(conn, room, id, content)?
    } else {
        Vec::new()
    };
    // A retry stored nothing above and attached nothing: the original keeps its files.
    let attachments = if attachments.is_empty() {
        Vec::new()
    } else {
        super::uploads::attach(conn, id, sender.id, attachments)?
    };
    let message = Message {
        id,
        room_id: room.public_id.clone(),
        sender: sender.username.clone(),
        sender_id: sender.id,
        content: content.to_string(),
        created: Millis(now),
        updated: Millis(now),
        is_read: read_by_others(conn, room.id, sender.id, id)?,
        client_id: client_id.map(str::to_string),
        edited: None,
        deleted: false,
        seq: id.as_seq(),
        reply_to,
        reactions: Vec::new(),
        mentions,
        attachments,
    };
    Ok((message, true))
}

/// Message `id` of `room` as a reply shows it, if there is one.
fn replied(conn: &Connection, room: &RoomRef, id: MessageId) -> Result<Option<ReplyTo>> {
    Ok(conn
        .prepare_cached(
            "SELECT u.username, CASE WHEN p.deleted THEN '' ELSE substr(p.content, 1, 100) END
             FROM messages p JOIN users u ON u.id = p.sender_id
             WHERE p.id = ?1 AND p.room_id = ?2",
        )?
        .query_row(params![id, room.id], |r| {
            Ok(ReplyTo {
                id,
                sender: r.get(0)?,
                excerpt: r.get(1)?,
            })
        })
        .optional()?)
}

/// The next position in the sequence of changes: past every message id and every change.
/// Both are rowids, so each maximum is one seek.
pub fn next_seq(conn: &Connection) -> Result<Seq> {
    Ok(conn
        .prepare_cached(
            "SELECT max((SELECT coalesce(max(id), 0) FROM messages),
                        (SELECT coalesce(max(seq), 0) FROM changes)) + 1",
        )?
        .query_row([], |r| r.get(0))?)
}

/// The message `sender` stored in `room` under `client_id`.
fn original(conn: &Connection, room: &RoomRef, sender: UserId, client_id: &str) -> Result<Message> {
    let id: MessageId = conn
        .prepare_cached(
            "SELECT id FROM messages WHERE room_id = ?1 AND sender_id = ?2 AND client_id = ?3",
        )?
        .query_row(params![room.id, sender, client_id], |r| r.get(0))?;
    let marks = read_marks(conn, room.id)?;
    let mut message = get(conn, room, id, &marks)?
        .ok_or_else(|| StoreError::Other(format!("message {} vanished", id.0)))?;
    message.seen_by(Some(sender));
    Ok(message)
}

/// Whether every member of `room` other than `sender` has read message `id`: the `is_read`
/// of one message, without loading every member's mark. Stops at the first member who has not,
/// which for a new message is the first member looked at.
fn read_by_others(conn: &Connection, room: RoomId, sender: UserId, id: MessageId) -> Result<bool> {
    let unread_by: Option<UserId> = conn
        .prepare_cached(
            "SELECT user_id FROM room_members
             WHERE room_id = ?1 AND user_id <> ?2 AND last_read_id < ?3 LIMIT 1",
        )?
        .query_row(params![room, sender, id], |r| r.get(0))
        .optional()?;
    Ok(unread_by.is_none())
}

/// Which slice of a room's history to read.
#[derive(Debug, Clone, Copy)]
pub enum Page {
    /// The newest messages with ids below `before` (all if `None`), newest first.
    Before(Option<MessageId>),
    /// The oldest messages with ids above `after`, oldest first.
    After(MessageId),
    /// The oldest messages with ids above the first and below the second, oldest first.
    Between(MessageId, MessageId),
}

/// The statement and the id range (both bounds excluded) for a page; bound to
/// `(room, low, high, limit + 1)`.
fn page_query(page: Page, select: &str) -> (String, i64, i64) {
    let (order, low, high) = match page {
        Page::Before(before) => ("DESC", 0, before.map_or(i64::MAX, |b| b.0)),
        Page::After(after) => ("ASC", after.0, i64::MAX),
        Page::Between(after, before) => ("ASC", after.0, before.0),
    };
    // `+?4`, not `?4`: SQLite plans with the value of a bare LIMIT parameter, and so prepares
    // the statement again on every run with a new value.
    let sql = format!(
        "{select} WHERE m.room_id = ?1 AND m.id > ?2 AND m.id < ?3 ORDER BY m.id {order} LIMIT +?4"
    );
    (sql, low, high)
}

/// One page of history and whether more lie beyond it in the same direction.
pub fn page(
    conn: &Connection,
    room: &RoomRef,
    page: Page,
    limit: u32,
) -> Result<(Vec<Message>, bool)> {
    let marks = read_marks(conn, room.id)?;
    let (sql, low, high) = page_query(page, &format!("SELECT {MESSAGE_COLUMNS} {MESSAGE_FROM}"));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![room.id, low, high, i64::from(limit) + 1], |row| {
        message_from_row(conn, row, room, &marks)
    })?;
    let mut messages: Vec<Message> = rows.collect::<rusqlite::Result<_>>()?;
    let has_more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    Ok((messages, has_more))
}

/// A message as [`Message`] serializes, borrowing its text from the row.
struct MessageJson<'a> {
    id: MessageId,
    room_id: &'a str,
    sender: &'a str,
    sender_id: UserId,
    content: &'a str,
    created: Millis,
    updated: Millis,
    is_read: bool,
    client_id: Option<&'a str>,
    edited: Option<Millis>,
    deleted: bool,
    reply_to: Option<ReplyTo>,
    reactions: &'a [Reaction],
    mentions: Vec<UserId>,
    attachments: Vec<Attachment>,
}

impl MessageJson<'_> {
    /// Appends the message as JSON, byte for byte as `Message` serializes (a unit test compares
    /// the two), without serde's per-byte escaping of text that needs none.
    fn write(&self, out: &mut Vec<u8>) {
        let mut number = itoa::Buffer::new();
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(number.format(self.id.0).as_bytes());
        out.extend_from_slice(b",\"room_id\":");
        write_json_str(out, self.room_id);
        out.extend_from_slice(b",\"sender\":");
        write_json_str(out, self.sender);
        out.extend_from_slice(b",\"sender_id\":");
        out.extend_from_slice(number.format(self.sender_id.0).as_bytes());
        out.extend_from_slice(b",\"content\":");
        write_json_str(out, self.content);
        out.extend_from_slice(b",\"created\":");
        let start = out.len();
        self.created.write_json(out);
        let created = start..out.len();
        out.extend_from_slice(b",\"updated\":");
        if self.updated == self.created {
            out.extend_from_within(created);
        } else {
            self.updated.write_json(out);
        }
        out.extend_from_slice(b",\"is_read\":");
        out.extend_from_slice(if self.is_read { b"true" } else { b"false" });
        out.extend_from_slice(b",\"client_id\":");
        match self.client_id {
            Some(client_id) => write_json_str(out, client_id),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"edited\":");
        match self.edited {
            Some(edited) => edited.write_json(out),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(if self.deleted {
            b",\"deleted\":true"
        } else {
            b",\"deleted\":false"
        });
        out.extend_from_slice(b",\"reply_to\":");
        match &self.reply_to {
            Some(reply) => {
                out.extend_from_slice(b"{\"id\":");
                out.extend_from_slice(number.format(reply.id.0).as_bytes());
                out.extend_from_slice(b",\"sender\":");
                write_json_str(out, &reply.sender);
                out.extend_from_slice(b",\"excerpt\":");
                write_json_str(out, &reply.excerpt);
                out.push(b'}');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"reactions\":[");
        for (i, r) in self.reactions.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"emoji\":");
            write_json_str(out, &r.emoji);
            out.extend_from_slice(b",\"count\":");
            out.extend_from_slice(number.format(r.count).as_bytes());
            out.extend_from_slice(if r.me {
                b",\"me\":true}"
            } else {
                b",\"me\":false}"
            });
        }
        out.extend_from_slice(b"],\"mentions\":[");
        for (i, user) in self.mentions.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(number.format(user.0).as_bytes());
        }
        out.extend_from_slice(b"],\"attachments\":");
        if self.attachments.is_empty() {
            out.extend_from_slice(b"[]}");
        } else {
            serde_json::to_writer(&mut *out, &self.attachments)
                .expect("writing JSON to a Vec does not fail");
            out.push(b'}');
        }
    }
}

/// Appends `s` as a JSON string, escaped exactly as serde_json escapes it.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Looked at whole (no early exit) so that the loop is vectorised: most text needs nothing.
    let escape = s.bytes().fold(false, |escape, b| {
        escape | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if escape {
        serde_json::to_writer(&mut *out, s).expect("writing JSON to a Vec does not fail");
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

fn text<'r>(row: &'r Row<'_>, i: usize) -> rusqlite::Result<Option<&'r str>> {
    row.get_ref(i)?
        .as_str_or_null()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, e.into()))
}

/// The page statement of [`page_json`], before its `WHERE`: the sender's name is not joined.
/// A reply's quote is looked up only for the rows that have one, like reactions, so the
/// common page reads nothing but its own rows.
const PAGE_JSON_SELECT: &str = "SELECT m.id, m.sender_id, m.content, m.created, m.updated, \
     m.client_id, m.edited, m.deleted, m.reply_to, m.reactions, m.mentions, m.attachments \
     FROM messages m";

/// The same page as [`page`] as `viewer` sees it, written into `out` as a JSON array of
/// messages without building them first; returns whether more lie beyond it. A page has few
/// distinct senders, so their names are looked up once each rather than joined to every row.
pub fn page_json(
    conn: &Connection,
    room: &RoomRef,
    page: Page,
    limit: u32,
    viewer: UserId,
    out: &mut Vec<u8>,
) -> Result<bool> {
    let marks = read_marks(conn, room.id)?;
    let (sql, low, high) = page_query(page, PAGE_JSON_SELECT);
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![room.id, low, high, i64::from(limit) + 1])?;
    let mut names: Vec<(UserId, String)> = Vec::new();
    out.push(b'[');
    let mut written = 0;
    while let Some(row) = rows.next()? {
        if written == limit {
            out.push(b']');
            return Ok(true);
        }
        if written > 0 {
            out.push(b',');
        }
        let id: MessageId = row.get(0)?;
        let sender_id: UserId = row.get(1)?;
        let known = names.iter().position(|(user, _)| *user == sender_id);
        let at = match known {
            Some(at) => at,
            None => {
                let name: String = conn
                    .prepare_cached("SELECT username FROM users WHERE id = ?1")?
                    .query_row([sender_id], |r| r.get(0))?;
                names.push((sender_id, name));
                names.len() - 1
            }
        };
        let reactions = if row.get::<_, i64>(9)? > 0 {
            let mut r = reactions(conn, id)?;
            for one in &mut r {
                one.me = one.users.contains(&viewer);
            }
            r
        } else {
            Vec::new()
        };
        let message = MessageJson {
            id,
            room_id: &room.public_id,
            sender_id,
            sender: &names[at].1,
            content: text(row, 2)?.unwrap_or_default(),
            created: Millis(row.get(3)?),
            updated: Millis(row.get(4)?),
            is_read: is_read(&marks, sender_id, id),
            // The sender's own idempotency key, shown to nobody else.
            client_id: if sender_id == viewer {
                text(row, 5)?
            } else {
                None
            },
            edited: row.get::<_, Option<i64>>(6)?.map(Millis),
            deleted: row.get(7)?,
            reply_to: match row.get::<_, Option<MessageId>>(8)? {
                Some(answered) => replied(conn, room, answered)?,
                None => None,
            },
            reactions: &reactions,
            mentions: mention_ids(text(row, 10)?),
            attachments: if row.get::<_, i64>(11)? > 0 {
                super::uploads::of_message(conn, id)?
            } else {
                Vec::new()
            },
        };
        message.write(out);
        written += 1;
    }
    out.push(b']');
    Ok(false)
}

/// What a read mark moved to.
pub struct ReadMark {
    pub room: RoomRef,
    pub user: UserId,
    pub message_id: MessageId,
    /// False if the mark was already at or past the message.
    pub moved: bool,
}

/// Marks `message` and everything before it in its room as read by `user`. `None` if the
/// message does not exist or `user` is not a member of its room. Marks never move backwards.
pub fn mark_read(conn: &Connection, message: MessageId, user: UserId) -> Result<Option<ReadMark>> {
    let room: Option<RoomRef> = conn
        .prepare_cached(
            "SELECT r.id, r.public_id FROM messages m
             JOIN rooms r ON r.id = m.room_id
             JOIN room_members rm ON rm.room_id = r.id AND rm.user_id = ?2
             WHERE m.id = ?1",
        )?
        .query_row(params![message, user], RoomRef::from_row)
        .optional()?;
    let Some(room) = room else { return Ok(None) };
    let moved = conn
        .prepare_cached(
            "UPDATE room_members SET last_read_id = ?3
             WHERE room_id = ?1 AND user_id = ?2 AND last_read_id < ?3",
        )?
        .execute(params![room.id, user, message])?
        > 0;
    let mark: MessageId = conn
        .prepare_cached(
            "SELECT last_read_id FROM room_members WHERE room_id = ?1 AND user_id = ?2",
        )?
        .query_row(params![room.id, user], |r| r.get(0))?;
    Ok(Some(ReadMark {
        room,
        user,
        message_id: mark,
        moved,
    }))
}

/// The id of the newest message in the room, 0 if it has none.
pub fn last_id(conn: &Connection, room: RoomId) -> Result<MessageId> {
    Ok(conn
        .prepare_cached("SELECT coalesce(last_message_id, 0) FROM rooms WHERE id = ?1")?
        .query_row([room], |r| r.get(0))?)
}

/// The newest position in `room`'s sequence of changes.
pub fn last_seq(conn: &Connection, room: RoomId) -> Result<Seq> {
    Ok(conn
        .prepare_cached(
            "SELECT max((SELECT coalesce(last_message_id, 0) FROM rooms WHERE id = ?1),
                        (SELECT coalesce(max(seq), 0) FROM changes WHERE room_id = ?1))",
        )?
        .query_row([room], |r| r.get(0))?)
}

/// A message of text alone.
#[cfg(test)]
pub(crate) fn insert_text(
    conn: &Connection,
    room: &RoomRef,
    sender: &crate::model::User,
    content: &str,
    client_id: Option<&str>,
    reply_to: Option<MessageId>,
    now: i64,
) -> Result<(Message, bool)> {
    let m = NewMessage {
        room: room.clone(),
        sender: sender.clone(),
        content: content.to_string(),
        client_id: client_id.map(str::to_string),
        reply_to,
        attachments: Vec::new(),
    };
    insert(conn, &m, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::User;
    use crate::store::open_memory_for_tests;
    use crate::store::rooms::{NewRoom, insert as insert_room};
    use crate::store::users::{NewUser, insert as insert_user};

    fn user(conn: &Connection, name: &str) -> User {
        let new = NewUser {
            username: crate::account::Username::parse(name).unwrap(),
            password_hash: "h".into(),
            first_name: String::new(),
            last_name: String::new(),
            email: String::new(),
        };
        insert_user(conn, &new, 0).unwrap().unwrap()
    }

    fn setup() -> (Connection, User, User, RoomRef) {
        let conn = open_memory_for_tests();
        let a = user(&conn, "a");
        let b = user(&conn, "b");
        let room = insert_room(
            &conn,
            &NewRoom {
                public_id: "r1",
                name: None,
                creator: a.id,
                members: &[a.id, b.id],
            },
            0,
        )
        .unwrap();
        (conn, a, b, room)
    }

    #[test]
    fn same_client_id_returns_the_original() {
        let (conn, a, _b, room) = setup();
        let (first, created) = insert_text(&conn, &room, &a, "hi", Some("c1"), None, 1).unwrap();
        assert!(created);
        let (again, created) =
            insert_text(&conn, &room, &a, "different", Some("c1"), None, 2).unwrap();
        assert!(!created);
        assert_eq!((again.id, again.content.as_str()), (first.id, "hi"));
        let (page, _) = page(&conn, &room, Page::Before(None), 10).unwrap();
        assert_eq!(page.len(), 1);
    }

    #[test]
    fn pages_go_both_ways_and_report_more() {
        let (conn, a, _b, room) = setup();
        let ids: Vec<MessageId> = (0..5)
            .map(|i| {
                insert_text(&conn, &room, &a, &format!("m{i}"), None, None, i)
                    .unwrap()
                    .0
                    .id
            })
            .collect();
        let (newest, more) = page(&conn, &room, Page::Before(None), 2).unwrap();
        assert_eq!(
            newest.iter().map(|m| m.id).collect::<Vec<_>>(),
            [ids[4], ids[3]]
        );
        assert!(more);
        let (older, more) = page(&conn, &room, Page::Before(Some(ids[2])), 10).unwrap();
        assert_eq!(
            older.iter().map(|m| m.id).collect::<Vec<_>>(),
            [ids[1], ids[0]]
        );
        assert!(!more);
        let (after, more) = page(&conn, &room, Page::After(ids[2]), 10).unwrap();
        assert_eq!(
            after.iter().map(|m| m.id).collect::<Vec<_>>(),
            [ids[3], ids[4]]
        );
        assert!(!more);
        // A window: strictly between the two, oldest first, with "more" inside the window only.
        let (window, more) = page(&conn, &room, Page::Between(ids[0], ids[4]), 2).unwrap();
        assert_eq!(
            window.iter().map(|m| m.id).collect::<Vec<_>>(),
            [ids[1], ids[2]]
        );
        assert!(more);
        let (window, more) = page(&conn, &room, Page::Between(ids[1], ids[4]), 2).unwrap();
        assert_eq!(
            window.iter().map(|m| m.id).collect::<Vec<_>>(),
            [ids[2], ids[3]]
        );
        assert!(!more);
        let (empty, more) = page(&conn, &room, Page::Between(ids[3], ids[1]), 2).unwrap();
        assert!(empty.is_empty() && !more);
    }

    /// The page written straight to JSON is the page of `Message`s serialized, field for field.
    #[test]
    fn json_pages_serialize_exactly_like_messages() {
        let (conn, a, b, room) = setup();
        let mut ids = Vec::new();
        for i in 0..7 {
            let client_id = (i % 2 == 0).then(|| format!("c{i}"));
            let from = if i % 3 == 0 { &a } else { &b };
            let text = if i % 2 == 0 {
                format!("m{i} \"quoted\" \\ \u{e9}\n\u{1}\u{7f}")
            } else {
                format!("m{i} plain \u{e9} / \u{1F600}")
            };
            ids.push(
                insert_text(
                    &conn,
                    &room,
                    from,
                    &text,
                    client_id.as_deref(),
                    (i == 4).then(|| ids[1]),
                    1_700_000_000_000 + i,
                )
                .unwrap()
                .0
                .id,
            );
        }
        mark_read(&conn, ids[3], b.id).unwrap();
        // Edits, a tombstone, reactions (some of them the viewer's) and replies, so that
        // every field is written.
        crate::store::edits::edit(&conn, ids[2], b.id, "edited \"again\"", 1_700_000_000_100)
            .unwrap();
        crate::store::edits::delete(&conn, ids[1], b.id, 1_700_000_000_101).unwrap();
        for (who, emoji) in [
            (&a, "\u{1F44D}"),
            (&b, "\u{1F44D}"),
            (&b, "\u{2764}\u{FE0F}"),
        ] {
            crate::store::edits::react(&conn, ids[5], who.id, emoji, true, 7).unwrap();
        }
        crate::store::edits::react(&conn, ids[6], a.id, "\u{1F389}", true, 8).unwrap();
        // Files, one of them an image with a name that needs escaping.
        for (i, (name, dims)) in [("a \"b\".png", Some((4, 3))), ("notes.txt", None)]
            .into_iter()
            .enumerate()
        {
            let upload = crate::store::uploads::Upload {
                public_id: format!("{i:024}"),
                owner: b.id,
                sha256: "0".repeat(64),
                filename: name.into(),
                content_type: "image/png".into(),
                size: 10,
                image: dims.map(|(width, height)| crate::store::uploads::ImageInfo {
                    width,
                    height,
                    small: "1".repeat(64),
                    large: "2".repeat(64),
                    thumb_type: "image/png".into(),
                }),
                created: 1,
            };
            crate::store::uploads::insert(&conn, &upload, u64::MAX).unwrap();
        }
        let m = NewMessage {
            room: room.clone(),
            sender: b.clone(),
            content: String::new(),
            client_id: None,
            reply_to: None,
            attachments: vec![format!("{:024}", 1), format!("{:024}", 0)],
        };
        let (with_files, _) = insert(&conn, &m, 1_700_000_000_200).unwrap();
        assert_eq!(with_files.attachments.len(), 2);
        assert_eq!(with_files.attachments[0].filename, "notes.txt");
        ids.push(with_files.id);
        for (which, limit) in [
            (Page::Before(None), 50),
            (Page::Before(None), 3),
            (Page::Before(Some(ids[5])), 2),
            (Page::After(ids[1]), 4),
            (Page::After(ids[6]), 4),
            (Page::Between(ids[1], ids[6]), 3),
        ] {
            let (mut messages, more) = page(&conn, &room, which, limit).unwrap();
            for m in &mut messages {
                m.seen_by(Some(b.id));
            }
            let mut out = Vec::new();
            let json_more = page_json(&conn, &room, which, limit, b.id, &mut out).unwrap();
            assert_eq!(json_more, more, "{which:?} {limit}");
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&messages).unwrap(),
                "{which:?} {limit}"
            );
        }
    }

    /// A history statement is prepared once: nothing bound to it makes SQLite plan it again.
    #[test]
    fn page_statements_are_not_prepared_again_per_run() {
        let (conn, a, _b, room) = setup();
        for i in 0..20 {
            insert_text(&conn, &room, &a, "m", None, None, i).unwrap();
        }
        for which in [Page::Before(None), Page::After(MessageId(0))] {
            for (bound, limit) in [(3, 2), (10, 5), (15, 7), (19, 1)] {
                let which = match which {
                    Page::Before(_) => Page::Before(Some(MessageId(bound))),
                    Page::After(_) | Page::Between(..) => Page::After(MessageId(bound)),
                };
                page_json(&conn, &room, which, limit, a.id, &mut Vec::new()).unwrap();
            }
            let (sql, _, _) = page_query(which, PAGE_JSON_SELECT);
            let stmt = conn.prepare_cached(&sql).unwrap();
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "{sql}"
            );
        }
    }

    #[test]
    fn read_marks_only_move_forward_and_drive_is_read() {
        let (conn, a, b, room) = setup();
        let m1 = insert_text(&conn, &room, &a, "1", None, None, 1).unwrap().0;
        let m2 = insert_text(&conn, &room, &a, "2", None, None, 2).unwrap().0;
        assert!(!m1.is_read);
        assert_eq!(
            mark_read(&conn, m2.id, b.id).unwrap().unwrap().message_id,
            m2.id
        );
        assert_eq!(
            mark_read(&conn, m1.id, b.id).unwrap().unwrap().message_id,
            m2.id
        );
        let (page, _) = page(&conn, &room, Page::Before(None), 10).unwrap();
        assert!(page.iter().all(|m| m.is_read));
    }

    #[test]
    fn a_new_message_is_read_only_if_nobody_else_is_in_the_room() {
        let (conn, a, b, room) = setup();
        assert!(
            !insert_text(&conn, &room, &a, "1", None, None, 1)
                .unwrap()
                .0
                .is_read
        );
        // b reading everything so far does not make the next message read
        let m2 = insert_text(&conn, &room, &a, "2", None, None, 2).unwrap().0;
        mark_read(&conn, m2.id, b.id).unwrap();
        assert!(
            !insert_text(&conn, &room, &a, "3", None, None, 3)
                .unwrap()
                .0
                .is_read
        );
        crate::store::rooms::remove_member(&conn, room.id, b.id).unwrap();
        assert!(
            insert_text(&conn, &room, &a, "4", None, None, 4)
                .unwrap()
                .0
                .is_read
        );
    }

    #[test]
    fn non_members_cannot_mark_read() {
        let (conn, a, _b, room) = setup();
        let c = user(&conn, "c");
        let m = insert_text(&conn, &room, &a, "1", None, None, 1).unwrap().0;
        assert!(mark_read(&conn, m.id, c.id).unwrap().is_none());
    }
}
