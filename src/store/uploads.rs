//! SQL for files: upload rows, attaching them to a message, who may download them, and what
//! the sweeper removes. The bytes themselves are the files module's (`crate::files`).

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;
#[cfg(test)]
use super::StoreError;
use crate::model::{Attachment, MessageId, Refusal, UserId};

/// A stored upload, as its row describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub public_id: String,
    pub owner: UserId,
    pub sha256: String,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    /// An image the server decoded: its size as shown, and its thumbnails.
    pub image: Option<ImageInfo>,
    pub created: i64,
}

/// What the server made of an image it could decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub width: u32,
    pub height: u32,
    /// The SHA-256 of the thumbnails (longest side 320 and 1280 px) and their type.
    pub small: String,
    pub large: String,
    pub thumb_type: String,
}

impl Upload {
    /// How the upload appears in a message (and in the upload's own answer).
    pub fn attachment(&self) -> Attachment {
        Attachment::new(
            self.public_id.clone(),
            self.filename.clone(),
            self.content_type.clone(),
            self.size,
            self.image.as_ref().map(|i| (i.width, i.height)),
        )
    }
}

/// Stores an upload's row, refused with [`Refusal::UploadQuota`] if the owner's uploads would
/// then hold more than `quota` bytes.
pub fn insert(conn: &Connection, upload: &Upload, quota: u64) -> Result<()> {
    let used = usage(conn, upload.owner)?;
    if used.saturating_add(upload.size) > quota {
        return Err(Refusal::UploadQuota.into());
    }
    let image = upload.image.as_ref();
    conn.prepare_cached(
        "INSERT INTO uploads (public_id, owner_id, sha256, filename, content_type, size, width,
             height, thumb_small, thumb_large, thumb_type, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        upload.public_id,
        upload.owner,
        upload.sha256,
        upload.filename,
        upload.content_type,
        upload.size as i64,
        image.map(|i| i.width),
        image.map(|i| i.height),
        image.map(|i| &i.small),
        image.map(|i| &i.large),
        image.map(|i| &i.thumb_type),
        upload.created,
    ])?;
    Ok(())
}

/// The bytes `owner`'s uploads hold, attached or not (the same bytes uploaded twice count
/// twice).
pub fn usage(conn: &Connection, owner: UserId) -> Result<u64> {
    let used: i64 = conn
        .prepare_cached("SELECT coalesce(sum(size), 0) FROM uploads WHERE owner_id = ?1")?
        .query_row([owner], |r| r.get(0))?;
    Ok(used.max(0) as u64)
}

/// Attaches `sender`'s unattached uploads `ids` to the new message `message`, in that order.
/// Refused [`Refusal::NoSuchUpload`] for an id that is nobody's or someone else's, and
/// [`Refusal::UploadAttached`] for one a message carries already; run it in the message's
/// savepoint, so that nothing of a refused send stays.
pub fn attach(
    conn: &Connection,
    message: MessageId,
    sender: UserId,
    ids: &[String],
) -> Result<Vec<Attachment>> {
    let mut attach = conn.prepare_cached(
        "UPDATE uploads SET message_id = ?1, position = ?2
         WHERE public_id = ?3 AND owner_id = ?4 AND message_id IS NULL",
    )?;
    for (position, id) in ids.iter().enumerate() {
        if attach.execute(params![message, position as i64, id, sender])? == 0 {
            let attached: Option<bool> = conn
                .prepare_cached(
                    "SELECT message_id IS NOT NULL FROM uploads
                     WHERE public_id = ?1 AND owner_id = ?2",
                )?
                .query_row(params![id, sender], |r| r.get(0))
                .optional()?;
            return Err(match attached {
                Some(true) => Refusal::UploadAttached,
                _ => Refusal::NoSuchUpload,
            }
            .into());
        }
    }
    conn.prepare_cached("UPDATE messages SET attachments = ?2 WHERE id = ?1")?
        .execute(params![message, ids.len() as i64])?;
    Ok(of_message(conn, message)?)
}

/// The files message `id` carries, in order.
pub fn of_message(conn: &Connection, id: MessageId) -> rusqlite::Result<Vec<Attachment>> {
    let mut stmt = conn.prepare_cached(
        "SELECT public_id, filename, content_type, size, width, height FROM uploads
         WHERE message_id = ?1 ORDER BY position",
    )?;
    let rows = stmt.query_map([id], |r| {
        let width: Option<u32> = r.get(4)?;
        let height: Option<u32> = r.get(5)?;
        Ok(Attachment::new(
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get::<_, i64>(3)?.max(0) as u64,
            width.zip(height),
        ))
    })?;
    rows.collect()
}

/// Detaches and forgets the files of message `id` (deleted): their bytes go once no other
/// upload names them.
pub fn forget_message(conn: &Connection, id: MessageId) -> Result<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM uploads WHERE message_id = ?1")?
        .execute([id])?)
}

/// Upload `public_id` if `viewer` may download it: its owner while no message carries it,
/// then the members of the room of the message that does.
pub fn visible(conn: &Connection, public_id: &str, viewer: UserId) -> Result<Option<Upload>> {
    let found = conn
        .prepare_cached(
            "SELECT up.public_id, up.owner_id, up.sha256, up.filename, up.content_type, up.size,
                 up.width, up.height, up.thumb_small, up.thumb_large, up.thumb_type, up.created
             FROM uploads up
             WHERE up.public_id = ?1 AND CASE
                 WHEN up.message_id IS NULL THEN up.owner_id = ?2
                 ELSE EXISTS (SELECT 1 FROM messages m JOIN room_members rm
                                  ON rm.room_id = m.room_id AND rm.user_id = ?2
                              WHERE m.id = up.message_id)
             END",
        )?
        .query_row(params![public_id, viewer], |r| {
            let image = match (r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?) {
                (Some(width), Some(height), Some(small), Some(large), Some(thumb_type)) => {
                    Some(ImageInfo {
                        width,
                        height,
                        small,
                        large,
                        thumb_type,
                    })
                }
                _ => None,
            };
            Ok(Upload {
                public_id: r.get(0)?,
                owner: r.get(1)?,
                sha256: r.get(2)?,
                filename: r.get(3)?,
                content_type: r.get(4)?,
                size: r.get::<_, i64>(5)?.max(0) as u64,
                image,
                created: r.get(11)?,
            })
        })
        .optional()?;
    Ok(found)
}

/// Removes the uploads no message attached that were made before `before`; how many.
pub fn expire_unattached(conn: &Connection, before: i64) -> Result<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM uploads WHERE message_id IS NULL AND created < ?1")?
        .execute([before])?)
}

/// Every file name (SHA-256) a row names: uploads and their thumbnails.
pub fn referenced(conn: &Connection) -> Result<HashSet<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT sha256 FROM uploads
         UNION SELECT thumb_small FROM uploads WHERE thumb_small IS NOT NULL
         UNION SELECT thumb_large FROM uploads WHERE thumb_large IS NOT NULL",
    )?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The bytes and count of the uploads stored, for the metrics.
pub fn totals(conn: &Connection) -> Result<(u64, u64)> {
    let (count, bytes): (i64, i64) = conn
        .prepare_cached("SELECT count(*), coalesce(sum(size), 0) FROM uploads")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((count.max(0) as u64, bytes.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open_memory_for_tests;

    fn user(conn: &Connection, name: &str) -> UserId {
        let new = crate::store::users::NewUser {
            username: crate::account::Username::parse(name).unwrap(),
            password_hash: "h".into(),
            first_name: String::new(),
            last_name: String::new(),
            email: String::new(),
        };
        crate::store::users::insert(conn, &new, 0)
            .unwrap()
            .unwrap()
            .id
    }

    fn upload(owner: UserId, id: &str, size: u64) -> Upload {
        Upload {
            public_id: id.into(),
            owner,
            sha256: format!("{id:0>64}"),
            filename: "a.txt".into(),
            content_type: "text/plain".into(),
            size,
            image: None,
            created: 1000,
        }
    }

    #[test]
    fn the_quota_counts_every_upload_of_the_owner() {
        let conn = open_memory_for_tests();
        let (a, b) = (user(&conn, "a"), user(&conn, "b"));
        insert(&conn, &upload(a, "1", 600), 1000).unwrap();
        insert(&conn, &upload(b, "2", 600), 1000).unwrap();
        let refused = insert(&conn, &upload(a, "3", 401), 1000).unwrap_err();
        assert!(matches!(refused, StoreError::Refused(Refusal::UploadQuota)));
        insert(&conn, &upload(a, "4", 400), 1000).unwrap();
        assert_eq!(usage(&conn, a).unwrap(), 1000);
        assert_eq!(totals(&conn).unwrap(), (3, 1600));
    }

    #[test]
    fn unattached_uploads_expire_and_only_referenced_files_are_kept() {
        let conn = open_memory_for_tests();
        let a = user(&conn, "a");
        let mut old = upload(a, "1", 1);
        old.created = 10;
        insert(&conn, &old, u64::MAX).unwrap();
        insert(&conn, &upload(a, "2", 1), u64::MAX).unwrap();
        assert_eq!(expire_unattached(&conn, 500).unwrap(), 1);
        let kept = referenced(&conn).unwrap();
        assert_eq!(kept, HashSet::from([format!("{:0>64}", "2")]));
    }
}
