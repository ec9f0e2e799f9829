//! SQL for replays: every change of a room (or of all of a user's rooms) after a position, in
//! position order, as a socket that resumes or falls behind is sent them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;
use super::messages::{
    MESSAGE_COLUMN_COUNT, MESSAGE_COLUMNS, MESSAGE_FROM, ReadMarks, message_from_row, read_marks,
};
use super::rooms::RoomRef;
use crate::model::{Message, RoomId, Seq, UserId};

/// One replayed change: the message as it is now, at the position of the change, and whether
/// the change was its creation.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub seq: Seq,
    pub created: bool,
    pub message: Message,
}

/// Where a room's changes come from: its messages by id (their creations), and its rows of
/// `changes` by position (every later change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Created,
    Changed,
}

impl Source {
    /// The position of the next change of this source in `room` after `after`.
    fn head(self, conn: &Connection, room: RoomId, after: Seq) -> Result<Option<Seq>> {
        let sql = match self {
            Source::Created => {
                "SELECT id FROM messages WHERE room_id = ?1 AND id > ?2 ORDER BY id LIMIT 1"
            }
            Source::Changed => {
                "SELECT seq FROM changes WHERE room_id = ?1 AND seq > ?2 ORDER BY seq LIMIT 1"
            }
        };
        Ok(conn
            .prepare_cached(sql)?
            .query_row(params![room, after], |r| r.get(0))
            .optional()?)
    }

    /// This source's changes in `room` at positions `from..until`, up to `limit`, in order.
    fn run(
        self,
        conn: &Connection,
        room: &RoomRef,
        marks: &ReadMarks,
        (from, until): (Seq, Seq),
        limit: usize,
        out: &mut Vec<Replayed>,
    ) -> Result<()> {
        let sql = match self {
            Source::Created => format!(
                "SELECT {MESSAGE_COLUMNS}, m.id {MESSAGE_FROM}
                 WHERE m.room_id = ?1 AND m.id >= ?2 AND m.id < ?3 ORDER BY m.id LIMIT +?4"
            ),
            Source::Changed => format!(
                "SELECT {MESSAGE_COLUMNS}, c.seq FROM changes c JOIN messages m ON m.id = c.message_id
                 JOIN users u ON u.id = m.sender_id
                 LEFT JOIN messages p ON p.id = m.reply_to LEFT JOIN users pu ON pu.id = p.sender_id
                 WHERE c.room_id = ?1 AND c.seq >= ?2 AND c.seq < ?3 ORDER BY c.seq LIMIT +?4"
            ),
        };
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![room.id, from, until, limit as i64], |row| {
            let seq: Seq = row.get(MESSAGE_COLUMN_COUNT)?;
            let mut message = message_from_row(conn, row, room, marks)?;
            message.seq = seq;
            Ok(Replayed {
                seq,
                created: self == Source::Created,
                message,
            })
        })?;
        for r in rows {
            out.push(r?);
        }
        Ok(())
    }
}

/// Every change in `rooms` after `after`, in position order, up to `limit`; and whether more
/// follow.
///
/// A k-way merge over two streams per room, each read through an index: the room's messages
/// by id (their creations) and its `changes` rows by position (edits, deletions, reactions).
/// Each stream is represented by its next position after the cursor, and the stream holding
/// the smallest gives a run up to the next stream's head. Work and memory follow the page, not
/// the number of rooms or what lies beyond the page: a user in thousands of rooms costs two
/// index seeks per room and one query per run.
fn merged_changes(
    conn: &Connection,
    rooms: &[RoomRef],
    after: Seq,
    limit: u32,
) -> Result<(Vec<Replayed>, bool)> {
    let mut heads = BinaryHeap::new();
    for (i, room) in rooms.iter().enumerate() {
        for source in [Source::Created, Source::Changed] {
            if let Some(head) = source.head(conn, room.id, after)? {
                heads.push(Reverse((head, i, source)));
            }
        }
    }
    let wanted = limit as usize + 1;
    let mut merged: Vec<Replayed> = Vec::new();
    let mut marks: Vec<Option<ReadMarks>> = vec![None; rooms.len()];
    while merged.len() < wanted {
        let Some(Reverse((head, i, source))) = heads.pop() else {
            break;
        };
        let room = &rooms[i];
        let until = heads
            .peek()
            .map_or(Seq(i64::MAX), |Reverse((next, _, _))| *next);
        if marks[i].is_none() {
            marks[i] = Some(read_marks(conn, room.id)?);
        }
        let room_marks = marks[i].as_ref().expect("just read");
        let left = wanted - merged.len();
        source.run(conn, room, room_marks, (head, until), left, &mut merged)?;
        let Some(last) = merged.last().map(|r| r.seq) else {
            break;
        };
        if let Some(next) = source.head(conn, room.id, last)? {
            heads.push(Reverse((next, i, source)));
        }
    }
    let more = merged.len() > limit as usize;
    merged.truncate(limit as usize);
    Ok((merged, more))
}

/// The changes of `room` after `after` (each message's creation, and each later edit, deletion
/// or reaction change), in position order, each showing the message as it is now; up to
/// `limit`, and whether more follow. Applying them in order brings a client that had seen
/// everything up to `after` to exactly what the history shows, and after each one it has seen
/// everything up to that one's position.
pub fn changes(
    conn: &Connection,
    room: &RoomRef,
    after: Seq,
    limit: u32,
) -> Result<(Vec<Replayed>, bool)> {
    merged_changes(conn, std::slice::from_ref(room), after, limit)
}

/// [`changes`] across every room `user` belongs to.
pub fn changes_for_user(
    conn: &Connection,
    user: UserId,
    after: Seq,
    limit: u32,
) -> Result<(Vec<Replayed>, bool)> {
    let rooms = super::rooms::refs_for(conn, user)?;
    merged_changes(conn, &rooms, after, limit)
}
