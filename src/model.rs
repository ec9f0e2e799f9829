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
    /// A message's id: grows with every message stored by this server.
    MessageId
);

/// A point in time as Unix milliseconds, serialized as RFC 3339 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub i64);

impl Millis {
    pub fn to_rfc3339(self) -> String {
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

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
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
}
