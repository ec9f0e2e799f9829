//! SQL for rooms and their members: creation, the caller's room list, membership checks.

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;
use super::messages;
use super::users::{USER_COLUMNS, user_from_row};
use crate::membership::{Joining, RoomFacts};
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
        "INSERT INTO room_members (room_id, user_id, joined, added_by, admin)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for member in new.members {
        let added_by = (*member != new.creator).then_some(new.creator);
        let admin = !is_direct && *member == new.creator;
        add.execute(params![id, member, now, added_by, admin])?;
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
    let mut last_message = match last_message_id {
        Some(id) => messages::get(conn, room, crate::model::MessageId(id), &marks)?,
        None => None,
    };
    if let Some(m) = &mut last_message {
        m.seen_by(Some(user));
    }
    let my_mark = marks
        .iter()
        .find(|(u, _)| *u == user)
        .map_or(0, |(_, m)| m.0);
    let unread_count: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM messages
             WHERE room_id = ?1 AND id > ?2 AND sender_id != ?3 AND deleted = 0",
        )?
        .query_row(params![room.id, my_mark, user], |r| r.get(0))?;
    let mention_count: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM mentions
             WHERE user_id = ?3 AND room_id = ?1 AND message_id > ?2",
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
        mention_count,
        admins: admins(conn, room.id)?,
    })
}

/// Where a page of a user's room list ends: the last room's activity time and public id
/// (the list is ordered by both, newest first). As text: `<activity>.<public id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomCursor {
    pub activity: i64,
    pub public_id: String,
}

impl RoomCursor {
    /// `<activity>.<public id>`: `-?[0-9]{1,18}` and `[A-Za-z0-9_-]{1,64}`, nothing else.
    pub fn parse(text: &str) -> Option<RoomCursor> {
        let (activity, public_id) = text.split_once('.')?;
        let ok = !public_id.is_empty()
            && public_id.len() <= 64
            && public_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let activity = match activity.strip_prefix('-') {
            Some(magnitude) => -crate::model::ascii_digits(magnitude, 18)?,
            None => crate::model::ascii_digits(activity, 18)?,
        };
        ok.then(|| RoomCursor {
            activity,
            public_id: public_id.to_string(),
        })
    }
}

impl std::fmt::Display for RoomCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.activity, self.public_id)
    }
}

/// Up to `limit` of the rooms `user` belongs to, most recent activity first, after `before`;
/// and the cursor of the next page if there is one.
pub fn page_for(
    conn: &Connection,
    user: UserId,
    before: Option<&RoomCursor>,
    limit: u32,
) -> Result<(Vec<Room>, Option<RoomCursor>)> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.id, r.public_id, r.last_activity FROM room_members m
         JOIN rooms r ON r.id = m.room_id
         WHERE m.user_id = ?1
           AND (?2 IS NULL OR r.last_activity < ?2 OR (r.last_activity = ?2 AND r.public_id < ?3))
         ORDER BY r.last_activity DESC, r.public_id DESC LIMIT +?4",
    )?;
    let (activity, public_id) = match before {
        Some(c) => (Some(c.activity), Some(c.public_id.as_str())),
        None => (None, None),
    };
    let mut refs = stmt
        .query_map(
            params![user, activity, public_id, i64::from(limit) + 1],
            |r| Ok((RoomRef::from_row(r)?, r.get::<_, i64>(2)?)),
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let more = refs.len() > limit as usize;
    refs.truncate(limit as usize);
    let next = refs
        .last()
        .filter(|_| more)
        .map(|(room, activity)| RoomCursor {
            activity: *activity,
            public_id: room.public_id.clone(),
        });
    let rooms = refs
        .iter()
        .map(|(room, _)| view(conn, room, user))
        .collect::<Result<_>>()?;
    Ok((rooms, next))
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

/// The admins of `room`, by id.
pub fn admins(conn: &Connection, room: RoomId) -> Result<Vec<UserId>> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id FROM room_members WHERE room_id = ?1 AND admin = 1 ORDER BY user_id",
    )?;
    let rows = stmt.query_map([room], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Whether `user` is an admin of `room`.
pub fn is_admin(conn: &Connection, room: RoomId, user: UserId) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM room_members WHERE room_id = ?1 AND user_id = ?2 AND admin = 1",
        )?
        .query_row(params![room, user], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Makes `user` an admin of `room`; false if they were one already (or are not a member).
pub fn make_admin(conn: &Connection, room: RoomId, user: UserId) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE room_members SET admin = 1 WHERE room_id = ?1 AND user_id = ?2 AND admin = 0",
        )?
        .execute(params![room, user])?
        > 0)
}

/// Renames `room`.
pub fn rename(conn: &Connection, room: RoomId, name: &str) -> Result<()> {
    conn.prepare_cached("UPDATE rooms SET name = ?2 WHERE id = ?1")?
        .execute(params![room, name])?;
    Ok(())
}

pub fn is_member(conn: &Connection, room: RoomId, user: UserId) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM room_members WHERE room_id = ?1 AND user_id = ?2")?
        .query_row(params![room, user], |_| Ok(()))
        .optional()?
        .is_some())
}

/// `by` adds `user` to `room`; false if they already were a member. A new member starts with
/// everything before their arrival marked read.
pub fn add_member(
    conn: &Connection,
    room: RoomId,
    user: UserId,
    by: UserId,
    now: i64,
) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO room_members (room_id, user_id, last_read_id, joined, added_by)
             SELECT ?1, ?2, coalesce(last_message_id, 0), ?3, ?4 FROM rooms WHERE id = ?1
             ON CONFLICT (room_id, user_id) DO NOTHING",
        )?
        .execute(params![room, user, now, by])?
        > 0)
}

/// How many rooms `user` is in.
pub fn count_for(conn: &Connection, user: UserId) -> Result<u32> {
    Ok(conn
        .prepare_cached("SELECT count(*) FROM room_members WHERE user_id = ?1")?
        .query_row([user], |r| r.get(0))?)
}

/// What the room caps need to know about `user` being put in a room by `actor`.
pub fn joining(conn: &Connection, user: UserId, actor: UserId) -> Result<Joining> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*), count(CASE WHEN added_by = ?2 THEN 1 END)
             FROM room_members WHERE user_id = ?1",
        )?
        .query_row(params![user, actor], |r| {
            Ok(Joining {
                rooms: r.get(0)?,
                from_actor: r.get(1)?,
            })
        })?)
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
