//! SQL for incoming webhooks. A hook is a row naming its room, its creator and its bot (an
//! account of its own, a member of the room); the secret of its URL is kept only as a digest.

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;
use super::rooms::{self, RoomRef};
use super::users::{self, USER_COLUMN_COUNT, USER_COLUMNS, user_from_row};
use crate::model::{Millis, User, UserId};

/// A hook as the room's members see it (never its secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hook {
    pub id: i64,
    pub room_id: String,
    pub name: String,
    pub creator_id: UserId,
    pub bot: User,
    pub created: Millis,
}

/// The hook's row, its bot joined: `h.id, h.name, h.creator_id, h.created, USER_COLUMNS`.
const HOOK_SELECT: &str = "SELECT h.id, h.name, h.creator_id, h.created, {USER} \
     FROM hooks h JOIN users u ON u.id = h.bot_id";

fn select(rest: &str) -> String {
    format!("{} {rest}", HOOK_SELECT.replace("{USER}", USER_COLUMNS))
}

fn hook_from_row(row: &rusqlite::Row<'_>, room: &RoomRef) -> rusqlite::Result<Hook> {
    Ok(Hook {
        id: row.get(0)?,
        room_id: room.public_id.clone(),
        name: row.get(1)?,
        creator_id: row.get(2)?,
        created: Millis(row.get(3)?),
        bot: user_from_row(row, 4)?,
    })
}

/// The room's hooks, oldest first.
pub fn list(conn: &Connection, room: &RoomRef) -> Result<Vec<Hook>> {
    let sql = select("WHERE h.room_id = ?1 ORDER BY h.id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([room.id], |row| hook_from_row(row, room))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The hook `id` of `room`, if there is one.
pub fn get(conn: &Connection, room: &RoomRef, id: i64) -> Result<Option<Hook>> {
    let sql = select("WHERE h.room_id = ?1 AND h.id = ?2");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![room.id, id], |row| hook_from_row(row, room))
        .optional()?)
}

/// How many hooks `room` has, and how many `creator` has made in all.
pub fn counts(conn: &Connection, room: &RoomRef, creator: UserId) -> Result<(i64, i64)> {
    Ok(conn
        .prepare_cached(
            "SELECT (SELECT count(*) FROM hooks WHERE room_id = ?1),
                    (SELECT count(*) FROM hooks WHERE creator_id = ?2)",
        )?
        .query_row(params![room.id, creator], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// Stores a hook of `room` by `creator` posting as `bot`, with the secret's digest.
pub fn insert(
    conn: &Connection,
    room: &RoomRef,
    creator: UserId,
    bot: &User,
    name: &str,
    digest: &[u8],
    now: i64,
) -> Result<Hook> {
    conn.prepare_cached(
        "INSERT INTO hooks (room_id, creator_id, bot_id, name, digest, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![room.id, creator, bot.id, name, digest, now])?;
    Ok(Hook {
        id: conn.last_insert_rowid(),
        room_id: room.public_id.clone(),
        name: name.to_string(),
        creator_id: creator,
        bot: bot.clone(),
        created: Millis(now),
    })
}

/// Who may post through the secret with this digest: the hook's bot and room, while its
/// creator is an active member of the room and its bot an active member too.
pub fn sender(conn: &Connection, digest: &[u8]) -> Result<Option<(User, RoomRef)>> {
    let sql = format!(
        "SELECT {USER_COLUMNS}, r.id, r.public_id FROM hooks h
         JOIN users u ON u.id = h.bot_id AND u.is_active = 1
         JOIN users c ON c.id = h.creator_id AND c.is_active = 1
         JOIN rooms r ON r.id = h.room_id
         JOIN room_members cm ON cm.room_id = h.room_id AND cm.user_id = h.creator_id
         JOIN room_members bm ON bm.room_id = h.room_id AND bm.user_id = h.bot_id
         WHERE h.digest = ?1"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([digest], |row| {
            let room = RoomRef {
                id: row.get(USER_COLUMN_COUNT)?,
                public_id: row.get(USER_COLUMN_COUNT + 1)?,
            };
            Ok((user_from_row(row, 0)?, room))
        })
        .optional()?)
}

/// Ends the hooks of `room` that `user` created or that post as `user`: each row goes, and
/// each bot is deactivated and leaves the room. Returns the bots, so the room hears they left.
pub fn end_for(conn: &Connection, room: &RoomRef, user: UserId) -> Result<Vec<User>> {
    let ids: Vec<(i64, UserId)> = conn
        .prepare_cached(
            "SELECT id, bot_id FROM hooks WHERE room_id = ?1 AND (creator_id = ?2 OR bot_id = ?2)",
        )?
        .query_map(params![room.id, user], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut bots = Vec::new();
    for (id, bot) in ids {
        end(conn, room, id, bot)?;
        if bot != user
            && let Some(bot) = users::get(conn, bot)?
        {
            bots.push(bot);
        }
    }
    Ok(bots)
}

/// Ends one hook: its row, its bot's membership and its bot's account.
pub fn end(conn: &Connection, room: &RoomRef, id: i64, bot: UserId) -> Result<()> {
    conn.prepare_cached("DELETE FROM hooks WHERE id = ?1")?
        .execute([id])?;
    rooms::remove_member(conn, room.id, bot)?;
    conn.prepare_cached("UPDATE users SET is_active = 0 WHERE id = ?1")?
        .execute([bot])?;
    conn.prepare_cached("DELETE FROM tokens WHERE user_id = ?1")?
        .execute([bot])?;
    Ok(())
}
