//! The objects of the API (user, room, message) as they appear in JSON, and the id newtypes
//! that keep users, rooms and messages from being mixed up.

use serde::{Serialize, Serializer};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                self.0.to_sql()
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                i64::column_result(v).map($name)
            }
        }
    };
}

id_type!(
    /// A user's database id (public: it appears in the API).
    UserId
);
id_type!(
    /// A room's internal database id. Clients only ever see the room's random public id.
    RoomId
);
id_type!(
    /// A message's id: grows with every message stored by this server. A new message's id is
    /// its [`Seq`].
    MessageId
);
id_type!(
    /// A position in the one ordered sequence of stored changes (a new message, an edit, a
    /// deletion): grows server-wide, in commit order. `?since=` resumes after one.
    Seq
);

impl MessageId {
    /// The position a message took when it was stored: its id.
    pub fn as_seq(self) -> Seq {
        Seq(self.0)
    }
}

/// A point in time as Unix milliseconds, serialized as RFC 3339 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub i64);

impl Millis {
    pub fn to_rfc3339(self) -> String {
        let mut buf = [0u8; RFC3339_MAX];
        match self.write_rfc3339(&mut buf) {
            Some(len) => String::from_utf8_lossy(&buf[..len]).into_owned(),
            None => self.to_rfc3339_slow(),
        }
    }

    /// Appends the timestamp as the JSON string it serializes to (it needs no escaping).
    pub fn write_json(self, out: &mut Vec<u8>) {
        let mut buf = [0u8; RFC3339_MAX];
        out.push(b'"');
        match self.write_rfc3339(&mut buf) {
            Some(len) => out.extend_from_slice(&buf[..len]),
            None => out.extend_from_slice(self.to_rfc3339_slow().as_bytes()),
        }
        out.push(b'"');
    }

    /// Formats like `time`'s RFC 3339 (`2023-11-14T22:13:20.123Z`, fraction without trailing
    /// zeros, none if zero) into `buf` without allocating; `None` outside years 0000–9999.
    fn write_rfc3339(self, buf: &mut [u8; RFC3339_MAX]) -> Option<usize> {
        let secs = self.0.div_euclid(1000);
        let millis = self.0.rem_euclid(1000) as u32;
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        if !(0..=9999).contains(&year) {
            return None;
        }
        let of_day = secs.rem_euclid(86_400) as u32;
        let (hour, minute, second) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
        let mut put = |at: usize, n: u32, digits: usize| {
            let mut n = n;
            for i in (0..digits).rev() {
                buf[at + i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, year as u32, 4);
        put(5, month, 2);
        put(8, day, 2);
        put(11, hour, 2);
        put(14, minute, 2);
        put(17, second, 2);
        put(20, millis, 3);
        buf[4] = b'-';
        buf[7] = b'-';
        buf[10] = b'T';
        buf[13] = b':';
        buf[16] = b':';
        let mut len = 19;
        if millis != 0 {
            buf[19] = b'.';
            len = 23;
            while buf[len - 1] == b'0' {
                len -= 1;
            }
        }
        buf[len] = b'Z';
        Some(len + 1)
    }

    fn to_rfc3339_slow(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    }
}

/// Longest fast-path RFC 3339 timestamp: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
const RFC3339_MAX: usize = 24;

/// Year, month and day of the proleptic Gregorian calendar for days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; RFC3339_MAX];
        match self.write_rfc3339(&mut buf) {
            // Only ASCII digits and separators were written.
            Some(len) => s.serialize_str(std::str::from_utf8(&buf[..len]).unwrap_or_default()),
            None => s.serialize_str(&self.to_rfc3339_slow()),
        }
    }
}

/// A user as every other user may see them. Never carries a password or hash.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub date_joined: Millis,
    /// A bot (`chat-server bot create`), not a person.
    pub is_bot: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub id: MessageId,
    pub room_id: String,
    /// The sender's username.
    pub sender: String,
    pub sender_id: UserId,
    pub content: String,
    pub created: Millis,
    pub updated: Millis,
    /// True once every member other than the sender has read it.
    pub is_read: bool,
    pub client_id: Option<String>,
    /// When the content was last edited, if it was.
    pub edited: Option<Millis>,
    /// A tombstone: the content is gone (empty), the message keeps its place.
    pub deleted: bool,
    /// The message this one answers, as it is now.
    pub reply_to: Option<ReplyTo>,
    /// The reactions, one per emoji, in the order each emoji was first used.
    pub reactions: Vec<Reaction>,
    /// The members its text mentions (`@username`), as resolved when it was sent or edited.
    pub mentions: Vec<UserId>,
    /// The files it carries, in the order they were attached.
    pub attachments: Vec<Attachment>,
    /// The position of the message's latest change (its id until it is edited or deleted).
    #[serde(skip)]
    pub seq: Seq,
}

/// The message a reply answers: `excerpt` is the start of its content (empty once deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplyTo {
    pub id: MessageId,
    pub sender: String,
    pub excerpt: String,
}

/// A file a message carries (or an upload not attached yet), as clients see it. `width` and
/// `height` (and the thumbnails) only for an image the server could decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    pub id: String,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub url: String,
    /// Longest side at most 320 px.
    pub thumbnail_url: Option<String>,
    /// Longest side at most 1280 px.
    pub preview_url: Option<String>,
}

impl Attachment {
    pub fn new(
        id: String,
        filename: String,
        content_type: String,
        size: u64,
        dimensions: Option<(u32, u32)>,
    ) -> Attachment {
        let url = format!("/api/v1/files/{id}/");
        let thumb = |px: u32| format!("/api/v1/files/{id}/thumbnail/{px}/");
        Attachment {
            thumbnail_url: dimensions.map(|_| thumb(320)),
            preview_url: dimensions.map(|_| thumb(1280)),
            width: dimensions.map(|d| d.0),
            height: dimensions.map(|d| d.1),
            id,
            filename,
            content_type,
            size,
            url,
        }
    }
}

/// Most files one message carries.
pub const MAX_ATTACHMENTS: usize = 10;

/// Most characters of a replied-to message shown with a reply.
pub const EXCERPT_CHARS: usize = 100;

/// One emoji's reactions to a message. `me`: whether the user looking reacted with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reaction {
    pub emoji: String,
    pub count: u32,
    pub me: bool,
    /// Who reacted, for telling each recipient of an event whether it was them.
    #[serde(skip)]
    pub users: Vec<UserId>,
}

impl Message {
    /// Sets every reaction's `me` for `viewer` (`None`: nobody in particular).
    pub fn seen_by(&mut self, viewer: Option<UserId>) {
        for r in &mut self.reactions {
            r.me = viewer.is_some_and(|v| r.users.contains(&v));
        }
        // The idempotency key is the sender's own: nobody else is shown it.
        if viewer != Some(self.sender_id) {
            self.client_id = None;
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Room {
    pub room_id: String,
    pub name: Option<String>,
    pub is_direct: bool,
    pub members: Vec<User>,
    pub created: Millis,
    pub last_message: Option<Message>,
    pub unread_count: i64,
    /// Unread messages that mention the caller.
    pub mention_count: i64,
    /// The group's admins (none for a direct room).
    pub admins: Vec<UserId>,
}

/// `text` as a number if it is 1 to `max_len` ASCII digits and nothing else (no sign, no
/// spaces), as the API document's patterns spell ids; `max_len` at most 18, so it fits.
pub fn ascii_digits(text: &str, max_len: usize) -> Option<i64> {
    debug_assert!(max_len <= 18);
    let ok = !text.is_empty() && text.len() <= max_len && text.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| text.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_serialize_as_rfc3339_utc() {
        assert_eq!(Millis(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Millis(1_700_000_000_123).to_rfc3339(),
            "2023-11-14T22:13:20.123Z"
        );
    }

    #[test]
    fn fast_rfc3339_matches_the_time_crate() {
        let mut samples = vec![
            0,
            -1,
            1,
            120,
            100,
            999,
            -86_400_000,
            951_782_400_000,     // 2000-02-29
            4_107_542_399_999,   // 2100-02-28T23:59:59.999
            253_402_300_799_999, // 9999-12-31T23:59:59.999
            -62_167_219_200_000, // 0000-01-01
            253_402_300_800_000, // year 10000: the slow path
            -62_167_219_200_001, // year -1: the slow path
        ];
        let mut x: i64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            samples.push(x.rem_euclid(260_000_000_000_000) - 62_200_000_000_000);
        }
        for ms in samples {
            let fast = serde_json::to_string(&Millis(ms)).unwrap();
            let slow = serde_json::to_string(&Millis(ms).to_rfc3339_slow()).unwrap();
            assert_eq!(fast, slow, "{ms}");
            assert_eq!(
                Millis(ms).to_rfc3339(),
                Millis(ms).to_rfc3339_slow(),
                "{ms}"
            );
        }
    }
}
/// The caller of an authenticated request.
#[derive(Debug, Clone)]
pub struct Auth {
    pub user: User,
    pub token_id: i64,
    /// When the token expires, in Unix milliseconds.
    pub expires_at: i64,
}

/// Every error code a client can get, in a reply body or a WebSocket `error` frame: the one
/// list that replies, WebSocket frames and the rejection metrics use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    InvalidJson,
    ValidationError,
    NotAuthenticated,
    InvalidCredentials,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    RateLimited,
    UpgradeRequired,
    InternalError,
    /// 408: the request's body did not arrive in time.
    RequestTimeout,
    /// 503: the server's queues are full; retry after `Retry-After`.
    Overloaded,
    /// 503: the database cannot store writes (its disk is full or failing); reads still work.
    StorageFull,
    /// WebSocket only: a binary frame.
    UnsupportedFrame,
    /// WebSocket only: an `action` the server does not know.
    UnknownAction,
    /// WebSocket only: a known action with fields of the wrong shape.
    InvalidFrame,
}

impl ErrorCode {
    /// In declaration order, so that `code as usize` indexes it.
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidJson,
        ErrorCode::ValidationError,
        ErrorCode::NotAuthenticated,
        ErrorCode::InvalidCredentials,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::UpgradeRequired,
        ErrorCode::InternalError,
        ErrorCode::RequestTimeout,
        ErrorCode::Overloaded,
        ErrorCode::StorageFull,
        ErrorCode::UnsupportedFrame,
        ErrorCode::UnknownAction,
        ErrorCode::InvalidFrame,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::ValidationError => "validation_error",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::UpgradeRequired => "upgrade_required",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::UnsupportedFrame => "unsupported_frame",
            ErrorCode::UnknownAction => "unknown_action",
            ErrorCode::InvalidFrame => "invalid_frame",
        }
    }
}

/// Why a request was refused for what the store found, not for a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No live session has this token.
    Unauthenticated,
    /// No such room, message or user for this caller (a non-member learns nothing).
    NotFound,
    /// Direct rooms have exactly two members.
    DirectRoom,
    /// Only a group's admins may remove others, rename it or make admins.
    NotAdmin,
    /// The user to add is not an active account.
    NoSuchUser,
    /// Members of a new room that are not active accounts.
    UnknownUsers(Vec<UserId>),
    /// An account has this username in some spelling.
    UsernameTaken,
    /// An account has a username that looks the same.
    UsernameLookAlike,
    /// A reply names a message that is not in the same room (or does not exist).
    NoSuchReply,
    /// A message carries at most 20 different emoji.
    TooManyReactions,
    /// The room has as many hooks as it may, or their creator has made as many as one may.
    TooManyHooks,
    /// The owner has as many active bots as one may.
    TooManyBots,
    /// Only a message's author may edit it.
    NotAuthor,
    /// Only a message's author, or an admin of its group, may delete it.
    MayNotDelete,
    /// The message was deleted: nothing of it is left to edit.
    MessageDeleted,
    /// The acting user is in `limits.max_rooms_per_user` rooms already.
    YouHaveTooManyRooms,
    /// A user to put in the room is in `limits.max_rooms_per_user` rooms already.
    TheyHaveTooManyRooms,
    /// The acting user has put a user in `limits.max_rooms_added_by_one_user` of their rooms.
    TooManyRoomsFromYou,
    /// An upload to attach is nobody's, or someone else's.
    NoSuchUpload,
    /// An upload to attach is attached to a message already.
    UploadAttached,
    /// The upload would take its owner past `limits.upload_quota_bytes`.
    UploadQuota,
}
