//! The wire protocol of the sockets: the frames a client sends, the error frames it gets
//! back, the presence event, and every close code.

use serde::Deserialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::error::{ApiError, ErrorCode};
use crate::frames::ServerFrame;

/// A close code and its reason, as the server sends them: every code the server closes a
/// WebSocket with is one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: &'static str,
}

impl From<crate::lifecycle::SessionEnd> for Close {
    fn from(end: crate::lifecycle::SessionEnd) -> Close {
        match end {
            crate::lifecycle::SessionEnd::Shutdown => Close::SHUTDOWN,
            crate::lifecycle::SessionEnd::Deactivated => Close::DEACTIVATED,
        }
    }
}

impl Close {
    /// The server is going away; reconnect (with `?since=`) once it is back.
    pub const SHUTDOWN: Close = Close {
        code: 1001,
        reason: "server shutting down; reconnect with since",
    };
    /// The frame broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: Close = Close {
        code: 1002,
        reason: "protocol error",
    };
    /// The account was deactivated; do not reconnect.
    pub const DEACTIVATED: Close = Close {
        code: 1008,
        reason: "account deactivated",
    };
    /// A message over `max_ws_message_bytes`.
    pub const TOO_BIG: Close = Close {
        code: 1009,
        reason: "message too big",
    };
    pub const INTERNAL: Close = Close {
        code: 1011,
        reason: "internal error",
    };
    /// The server could not keep this connection up to date; reconnect with
    /// `?since=<last message id seen>`.
    pub const RESYNC: Close = Close {
        code: 4000,
        reason: "too far behind: reconnect with since",
    };
    /// The replay asked for with `?since=` passed `limits.max_replay_messages`; reconnect with
    /// the last id received to go on, or page older history over REST.
    pub const REPLAY_LIMIT: Close = Close {
        code: 4000,
        reason: "replay limit reached: reconnect with since, or page history",
    };
    /// The token this socket was opened with was revoked or expired; log in again.
    pub const SESSION_ENDED: Close = Close {
        code: 4001,
        reason: "session ended: log in again",
    };
    /// The user is not, or no longer, a member of the room.
    pub const REMOVED: Close = Close {
        code: 4003,
        reason: "removed from the room",
    };
}

/// A frame from the client. Unknown fields (such as a forged `sender_id`) are ignored.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ClientFrame {
    Message {
        content: String,
        client_id: Option<String>,
        room_id: Option<String>,
        reply_to: Option<i64>,
        /// Upload ids to attach; `content` may then be "".
        #[serde(default)]
        attachments: Vec<String>,
    },
    Read {
        message_id: i64,
    },
    Edit {
        message_id: i64,
        content: String,
    },
    Delete {
        message_id: i64,
    },
    React {
        message_id: i64,
        emoji: String,
        on: bool,
    },
    Typing {
        typing: bool,
        room_id: Option<String>,
    },
    Ping,
}

pub(crate) const ACTIONS: [&str; 7] = [
    "message", "read", "edit", "delete", "react", "typing", "ping",
];

pub(crate) fn error_frame(code: ErrorCode, message: &str) -> WsMessage {
    WsMessage::text(ServerFrame::error(code, message).to_json())
}

/// A text frame from the client as the frame it asks for, or the error frame that answers it.
/// A well-formed frame, the usual case, is parsed once; anything else is parsed again step by
/// step ([`diagnose`]) to say what is wrong with it.
///
/// Every frame is one JSON object: serde would also read an internally tagged enum from an
/// array whose first element is the tag (`["ping"]`), so only an object takes the direct path.
pub fn parse_frame(text: &str) -> Result<ClientFrame, WsMessage> {
    let object = text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{');
    if object {
        serde_json::from_str::<ClientFrame>(text).or_else(|_| diagnose(text))
    } else {
        diagnose(text)
    }
}

/// Why `text` is not a valid frame, as the error frame for it; or the frame, for input that
/// the direct parse refused but the step-by-step one accepts (a repeated key: the last wins).
pub fn diagnose(text: &str) -> Result<ClientFrame, WsMessage> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| error_frame(ErrorCode::InvalidJson, &e.to_string()))?;
    let action = value.get("action").and_then(Value::as_str);
    if !action.is_some_and(|a| ACTIONS.contains(&a)) {
        return Err(error_frame(
            ErrorCode::UnknownAction,
            "action must be one of: message, read, edit, delete, react, typing, ping",
        ));
    }
    serde_json::from_value(value).map_err(|e| error_frame(ErrorCode::InvalidFrame, &e.to_string()))
}

/// The `error` frame for `e`, counted and (if internal) logged like an HTTP error reply.
pub(crate) fn api_error_frame(e: &ApiError) -> WsMessage {
    e.record();
    let message = match e {
        ApiError::Validation(fields) | ApiError::Missing(fields) => fields
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    };
    error_frame(e.code(), &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_the_same_whichever_way_they_are_parsed() {
        let message = r#"{"action":"message","content":"hi","client_id":"c","sender_id":9}"#;
        assert!(matches!(
            serde_json::from_str::<ClientFrame>(message),
            Ok(ClientFrame::Message { content, client_id: Some(c), room_id: None, reply_to: None, attachments })
                if content == "hi" && c == "c" && attachments.is_empty()
        ));
        // The direct parse refuses a repeated key; the step-by-step one takes the last.
        let repeated = r#"{"action":"message","content":"a","content":"b"}"#;
        assert!(serde_json::from_str::<ClientFrame>(repeated).is_err());
        assert!(matches!(
            diagnose(repeated),
            Ok(ClientFrame::Message { content, .. }) if content == "b"
        ));
        let code = |text: &str| match diagnose(text) {
            Err(WsMessage::Text(t)) => serde_json::from_str::<Value>(t.as_str()).unwrap()["code"]
                .as_str()
                .unwrap()
                .to_string(),
            _ => panic!("{text} is not an error"),
        };
        assert_eq!(code("{"), "invalid_json");
        assert_eq!(code(r#"{"action":"shout"}"#), "unknown_action");
        assert_eq!(
            code(r#"{"action":"read","message_id":"x"}"#),
            "invalid_frame"
        );
    }

    #[test]
    fn a_frame_is_an_object_and_never_an_array() {
        // Found with the `ws_frame` fuzz target's checks: serde reads an internally tagged
        // enum from an array whose first element is the tag, so these parsed as frames.
        let code = |text: &str| match parse_frame(text) {
            Err(WsMessage::Text(t)) => serde_json::from_str::<Value>(t.as_str()).unwrap()["code"]
                .as_str()
                .unwrap()
                .to_string(),
            Err(other) => panic!("{text}: {other:?}"),
            Ok(frame) => panic!("{text} parsed as {frame:?}"),
        };
        for text in [
            r#"["ping"]"#,
            r#" ["message","sneaked in",null,null,null]"#,
            r#"["read",7]"#,
        ] {
            assert_eq!(code(text), "unknown_action", "{text}");
        }
        assert_eq!(
            parse_frame(" \r\n\t{\"action\":\"ping\"}"),
            Ok(ClientFrame::Ping)
        );
    }
}
