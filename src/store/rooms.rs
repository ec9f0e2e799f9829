//! SQL for rooms and their members: creation, the caller's room list, membership checks.

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;
use super::messages;
use super::users::{USER_COLUMNS, user_from_row};
use crate::membership::RoomFacts;
use crate::model::{Millis, Room, RoomId, User, UserId};

/// A room as the server addresses it: internal id and public id.
#[derive(Debug, Clone)]
pub struct RoomRef {
    pub id: RoomId,
    pub public_id: String,
}

impl RoomRef {
    /// From the columns `id, public_id`.
    pub(crate) fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RoomRef> {
        Ok(RoomRef {
            id: r.get(0)?,
            public_id: r.get(1)?,
        })
    }
}

/// The key that makes a direct room unique per pair of users.
pub fn direct_key(a: UserId, b: UserId) -> String {
    let (lo, hi) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    format!("{}:{}", lo.0, hi.0)
}

pub fn find_direct(conn: &Connection, a: UserId, b: UserId) -> Result<Option<RoomRef>> {
    Ok(conn
        .prepare_cached("SELECT id, public_id FROM rooms WHERE direct_key = ?1")?
        .query_row([direct_key(a, b)], RoomRef::from_row)
        .optional()?)
}

pub struct NewRoom<'a> {
    pub public_id: &'a str,
    pub name: Option<&'a str>,
    pub creator: UserId,
    /// Distinct members, the creator among them.
    pub members: &'a [UserId],
}

pub fn insert(conn: &Connection, new: &NewRoom<'_>, now: i64) -> Result<RoomRef> {
    let is_direct = new.name.is_none() && new.members.len() == 2;
    let key = is_direct.then(|| direct_key(new.members[0], new.members[1]));
    conn.prepare_cached(
        "INSERT INTO rooms (public_id, name, is_direct, direct_key, creator_id, created, last_activity)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    )?
    .execute(params![new.public_id, new.name, is_direct, key, new.creator, now])?;
    let id = RoomId(conn.last_insert_rowid());
    let mut add = conn.prepare_cached(
        "INSERT INTO room_members (room_id, user_id, joined) VALUES (?1, ?2, ?3)",
    )?;
    for member in new.members {
        add.execute(params![id, member, now])?;
    }
    Ok(RoomRef {
        id,
        public_id: new.public_id.to_string(),
    })
}

/// The room with this public id, if `user` is a member of it.
pub fn for_member(conn: &Connection, public_id: &str, user: UserId) -> Result<Option<RoomRef>> {
    Ok(conn
        .prepare_cached(
            "SELECT r.id, r.public_id FROM rooms r
             JOIN room_members m ON m.room_id = r.id AND m.user_id = ?2
             WHERE r.public_id = ?1",
        )?
        .query_row(params![public_id, user], RoomRef::from_row)
        .optional()?)
}

pub fn members(conn: &Connection, room: RoomId) -> Result<Vec<User>> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM room_members m JOIN users u ON u.id = m.user_id
         WHERE m.room_id = ?1 ORDER BY u.id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([room], |row| user_from_row(row, 0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The full room object as `user` sees it.
pub fn view(conn: &Connection, room: &RoomRef, user: UserId) -> Result<Room> {
    let (name, is_direct, created, last_message_id): (Option<String>, bool, i64, Option<i64>) =
        conn.prepare_cached(
            "SELECT name, is_direct, created, last_message_id FROM rooms WHERE id = ?1",
        )?
        .query_row([room.id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
    let marks = messages::read_marks(conn, room.id)?;
    let last_message = match last_message_id {
        Some(id) => messages::get(conn, room, crate::model::MessageId(id), &marks)?,
        None => None,
    };
    let my_mark = marks
        .iter()
        .find(|(u, _)| *u == user)
        .map_or(0, |(_, m)| m.0);
    let unread_count: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM messages WHERE room_id = ?1 AND id > ?2 AND sender_id != ?3",
        )?
        .query_row(params![room.id, my_mark, user], |r| r.get(0))?;
    Ok(Room {
        room_id: room.public_id.clone(),
        name,
        is_direct,
        members: members(conn, room.id)?,
        created: Millis(created),
        last_message,
        unread_count,
    })
}

/// Every room `user` belongs to, most recent activity first.
pub fn list_for(conn: &Connection, user: UserId) -> Result<Vec<Room>> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.id, r.public_id FROM room_members m JOIN rooms r ON r.id = m.room_id
         WHERE m.user_id = ?1 ORDER BY r.last_activity DESC, r.id DESC",
    )?;
    let refs = stmt
        .query_map([user], RoomRef::from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    refs.iter().map(|room| view(conn, room, user)).collect()
}

/// What the membership rules need to know about a room.
pub fn info(conn: &Connection, room: RoomId) -> Result<RoomFacts> {
    Ok(conn
        .prepare_cached("SELECT is_direct, creator_id FROM rooms WHERE id = ?1")?
        .query_row([room], |r| {
            Ok(RoomFacts {
                is_direct: r.get(0)?,
                creator: r.get(1)?,
            })
        })?)
}

pub fn is_member(conn: &Connection, room: RoomId, user: UserId) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM room_members WHERE room_id = ?1 AND user_id = ?2")?
        .query_row(params![room, user], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Adds `user` to `room`; false if they already were a member. A new member starts with
/// everything before their arrival marked read.
pub fn add_member(conn: &Connection, room: RoomId, user: UserId, now: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO room_members (room_id, user_id, last_read_id, joined)
             SELECT ?1, ?2, coalesce(last_message_id, 0), ?3 FROM rooms WHERE id = ?1
             ON CONFLICT (room_id, user_id) DO NOTHING",
        )?
        .execute(params![room, user, now])?
        > 0)
}

/// Removes `user` from `room`; false if they were not a member.
pub fn remove_member(conn: &Connection, room: RoomId, user: UserId) -> Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM room_members WHERE room_id = ?1 AND user_id = ?2")?
        .execute(params![room, user])?
        > 0)
}

/// Every room `user` belongs to, as references.
pub fn refs_for(conn: &Connection, user: UserId) -> Result<Vec<RoomRef>> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.id, r.public_id FROM room_members m JOIN rooms r ON r.id = m.room_id
         WHERE m.user_id = ?1",
    )?;
    let rows = stmt.query_map([user], RoomRef::from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
