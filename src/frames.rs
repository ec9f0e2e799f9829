//! Every frame the server sends on a WebSocket, as one type. Each serializes to an object
//! whose first key is `type`; `docs/PROTOCOL.md` describes them for client authors.

use serde::Serialize;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::model::{ErrorCode, Message, MessageId, Room, Seq, User, UserId};

/// A server frame.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    /// The first frame of a room socket.
    #[serde(rename = "hello")]
    RoomHello {
        room_id: &'a str,
        user: &'a User,
        last_message_id: MessageId,
        /// The newest change in the room: what to pass as `since` to resume from here.
        last_seq: Seq,
        online: &'a [UserId],
    },
    /// The first frame of the all-rooms socket.
    #[serde(rename = "hello")]
    UserHello {
        user: &'a User,
        last_message_id: MessageId,
        /// The newest change in any of the rooms.
        last_seq: Seq,
        rooms: &'a [HelloRoom<'a>],
    },
    /// A new message (also the acknowledgement of one's own send); `seq` is its position in
    /// the sequence of changes, equal to its id.
    Message {
        seq: Seq,
        message: &'a Message,
    },
    /// A message was edited or deleted: the whole message as it is now.
    MessageUpdated {
        seq: Seq,
        message: &'a Message,
    },
    /// A member's read mark moved.
    Read {
        room_id: &'a str,
        user_id: UserId,
        message_id: MessageId,
    },
    Typing {
        room_id: &'a str,
        user: &'a User,
        typing: bool,
    },
    /// A user's first socket to a room opened, or their last one closed.
    Presence {
        room_id: &'a str,
        user: &'a User,
        online: bool,
    },
    /// Someone joined or left the room.
    Member {
        room_id: &'a str,
        user: &'a User,
        added: bool,
    },
    /// A group's name or admins changed.
    RoomUpdated {
        room_id: &'a str,
        name: Option<&'a str>,
        admins: &'a [UserId],
    },
    /// The receiving user now belongs to this room (all-rooms sockets only).
    Room {
        room_id: &'a str,
        room: &'a Room,
    },
    /// A frame of the client's could not be acted on.
    Error {
        code: &'static str,
        message: &'a str,
    },
    Pong,
}

/// One room of the all-rooms `hello`.
#[derive(Debug, Serialize)]
pub struct HelloRoom<'a> {
    pub room_id: &'a str,
    pub last_message_id: MessageId,
    pub last_seq: Seq,
    pub online: Vec<UserId>,
}

impl ServerFrame<'_> {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("frames always serialize")
    }

    pub fn error(code: ErrorCode, message: &str) -> ServerFrame<'_> {
        ServerFrame::Error {
            code: code.as_str(),
            message,
        }
    }
}

/// One serialized server frame: the bytes every socket it goes to writes, shared, not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(Utf8Bytes);

impl Frame {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The text a WebSocket writes.
    pub(crate) fn into_text(self) -> Utf8Bytes {
        self.0
    }
}

impl From<&ServerFrame<'_>> for Frame {
    fn from(frame: &ServerFrame<'_>) -> Frame {
        Frame(Utf8Bytes::from(frame.to_json()))
    }
}

impl From<String> for Frame {
    fn from(json: String) -> Frame {
        Frame(Utf8Bytes::from(json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Millis;
    use serde_json::{Value, json};

    fn value(frame: &ServerFrame<'_>) -> Value {
        let text = frame.to_json();
        assert!(text.starts_with(r#"{"type":""#), "{text}");
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn frames_serialize_to_the_documented_shapes() {
        let user = User {
            id: UserId(1),
            username: "alice".into(),
            first_name: String::new(),
            last_name: String::new(),
            email: String::new(),
            date_joined: Millis(0),
            is_bot: false,
        };
        assert_eq!(value(&ServerFrame::Pong), json!({"type": "pong"}));
        assert_eq!(
            value(&ServerFrame::error(ErrorCode::NotFound, "not found")),
            json!({"type": "error", "code": "not_found", "message": "not found"})
        );
        assert_eq!(
            value(&ServerFrame::Read {
                room_id: "r",
                user_id: UserId(1),
                message_id: MessageId(7)
            }),
            json!({"type": "read", "room_id": "r", "user_id": 1, "message_id": 7})
        );
        let hello = value(&ServerFrame::RoomHello {
            room_id: "r",
            user: &user,
            last_message_id: MessageId(3),
            last_seq: Seq(5),
            online: &[UserId(1), UserId(2)],
        });
        assert_eq!(hello["type"], "hello");
        assert_eq!(hello["online"], json!([1, 2]));
        assert_eq!(hello["last_seq"], 5);
        let rooms = [HelloRoom {
            room_id: "r",
            last_message_id: MessageId(3),
            last_seq: Seq(5),
            online: vec![],
        }];
        let hello = value(&ServerFrame::UserHello {
            user: &user,
            last_message_id: MessageId(3),
            last_seq: Seq(5),
            rooms: &rooms,
        });
        assert_eq!(hello["type"], "hello");
        assert_eq!(hello["rooms"][0]["room_id"], "r");
        for (frame, kind) in [
            (
                ServerFrame::Presence {
                    room_id: "r",
                    user: &user,
                    online: true,
                },
                "presence",
            ),
            (
                ServerFrame::Member {
                    room_id: "r",
                    user: &user,
                    added: false,
                },
                "member",
            ),
            (
                ServerFrame::Typing {
                    room_id: "r",
                    user: &user,
                    typing: true,
                },
                "typing",
            ),
        ] {
            let v = value(&frame);
            assert_eq!(
                (v["type"].as_str(), v["user"]["id"].as_i64()),
                (Some(kind), Some(1))
            );
        }
    }
}
