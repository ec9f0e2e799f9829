//! `?events=`: the kinds of frame a socket is sent, for a simple client that wants only some
//! of them (a client written for the seed reads every frame as a message, so it asks for
//! `events=message`). Without the parameter a socket is sent everything.

use crate::error::ApiError;

/// Every kind of frame the server sends, by its `type`.
pub(crate) const KINDS: [&str; 11] = [
    "hello",
    "message",
    "message_updated",
    "read",
    "typing",
    "presence",
    "member",
    "room_updated",
    "room",
    "error",
    "pong",
];

/// The kinds of frame a socket is sent: a bit per entry of [`KINDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Events(u16);

impl Events {
    pub(crate) const ALL: Events = Events((1 << KINDS.len()) - 1);

    /// A comma-separated list of kinds; an empty or unknown one is a 400 that names them.
    pub(crate) fn parse(list: &str) -> Result<Events, ApiError> {
        let mut bits = 0;
        for name in list.split(',').map(str::trim) {
            let Some(i) = KINDS.iter().position(|k| *k == name) else {
                return Err(ApiError::validation(
                    "events",
                    format!("a comma-separated list of: {}", KINDS.join(", ")),
                ));
            };
            bits |= 1 << i;
        }
        Ok(Events(bits))
    }

    /// Whether a frame, as the JSON text the server writes (its first key is always
    /// `type`), is one of these kinds. Text that is not a server frame is always sent.
    pub(crate) fn allow(self, frame: &str) -> bool {
        if self == Events::ALL {
            return true;
        }
        let Some(kind) = frame
            .strip_prefix(r#"{"type":""#)
            .and_then(|rest| rest.split('"').next())
        else {
            return true;
        };
        KINDS
            .iter()
            .position(|k| *k == kind)
            .is_none_or(|i| self.0 & (1 << i) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::ServerFrame;

    #[test]
    fn a_list_lets_through_exactly_its_kinds() {
        let only = Events::parse("message, read").unwrap();
        let pong = ServerFrame::Pong.to_json();
        let error = ServerFrame::error(crate::model::ErrorCode::InvalidJson, "x").to_json();
        let read = ServerFrame::Read {
            room_id: "r",
            user_id: crate::model::UserId(1),
            message_id: crate::model::MessageId(2),
        }
        .to_json();
        assert!(only.allow(&read));
        assert!(!only.allow(&pong));
        assert!(!only.allow(&error));
        assert!(only.allow(r#"{"type":"message","seq":1}"#));
        assert!(!only.allow(r#"{"type":"message_updated","seq":1}"#));
        assert!(Events::ALL.allow(&pong));
        assert!(Events::parse("").is_err());
        assert!(Events::parse("message,shout").is_err());
        assert_eq!(Events::parse(&KINDS.join(",")).unwrap(), Events::ALL);
    }
}
