//! A client's text frame, as the server receives it: the input is the payload of one masked
//! WebSocket text frame, read by tungstenite with the server's own socket configuration, and
//! the text it yields goes through the server's frame parser (`ws::parse_frame`), exactly as
//! the session loop calls it.
//!
//! Checks: no panic; tungstenite hands over exactly the valid UTF-8 within the size bound;
//! an accepted frame is a JSON object whose `action` is one of the protocol's; the direct
//! parse and the step-by-step one (`ws::diagnose`) agree; every refusal is an `error` frame
//! with one of the codes `docs/PROTOCOL.md` lists for a malformed frame.
#![no_main]

use std::io::{Cursor, Read, Write};

use chat_server::config::LimitsConfig;
use chat_server::ws::{diagnose, parse_frame, socket_config};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};
use tokio_tungstenite::tungstenite::{Error, Message};

const ACTIONS: [&str; 7] = [
    "message", "read", "edit", "delete", "react", "typing", "ping",
];

/// The bytes the client sends, read from; what the server writes back, dropped.
struct Peer(Cursor<Vec<u8>>);

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Peer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One final, masked text frame carrying `payload`, as a client sends it.
fn client_text_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

fn error_code(reply: &Message) -> String {
    let Message::Text(text) = reply else {
        panic!("a refusal that is not a text frame: {reply:?}");
    };
    let frame: Value = serde_json::from_str(text.as_str()).expect("an error frame is JSON");
    assert_eq!(frame["type"], "error", "{frame}");
    assert!(frame["message"].is_string(), "{frame}");
    frame["code"].as_str().expect("an error code").to_string()
}

fn check_text(text: &str) {
    let parsed = parse_frame(text);
    let diagnosed = diagnose(text);
    match &parsed {
        Ok(frame) => {
            let value: Value = serde_json::from_str(text).expect("an accepted frame is JSON");
            let action = value.get("action").and_then(Value::as_str);
            assert!(
                value.is_object() && action.is_some_and(|a| ACTIONS.contains(&a)),
                "accepted a frame that is not an object with a known action: {text:?}"
            );
            assert_eq!(
                diagnosed.as_ref().ok(),
                Some(frame),
                "the two parses disagree on {text:?}"
            );
        }
        Err(reply) => {
            let code = error_code(reply);
            assert!(
                ["invalid_json", "unknown_action", "invalid_frame"].contains(&code.as_str()),
                "{code} for {text:?}"
            );
            assert!(
                diagnosed.is_err(),
                "the step-by-step parse accepted {text:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = LimitsConfig::default();
    let wire = client_text_frame(data);
    let mut socket = WebSocket::from_raw_socket(
        Peer(Cursor::new(wire)),
        Role::Server,
        Some(socket_config(&limits)),
    );
    match socket.read() {
        Ok(Message::Text(text)) => {
            assert_eq!(text.as_bytes(), data);
            check_text(text.as_str());
        }
        Ok(other) => panic!("a text frame read as {other:?}"),
        Err(Error::Utf8(_)) => assert!(std::str::from_utf8(data).is_err()),
        Err(Error::Capacity(_)) => assert!(data.len() > limits.max_ws_message_bytes),
        Err(e) => panic!("a well-formed frame refused: {e}"),
    }
});
