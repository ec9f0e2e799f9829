//! Property-based fuzzing of frame and body parsing, against the real server.
//!
//! Inputs are random bytes, random JSON built from the protocol's own vocabulary (so the
//! parsers get past the first check), and random mutations of valid frames and bodies. The
//! properties: every input gets a documented answer (never a 500, never a dropped socket), the
//! server keeps serving, and every message it accepted is stored exactly once.
//!
//! `cargo test` runs a few hundred cases per property. For a long run:
//! `FUZZ_CASES=100000 cargo test --release --test fuzz -- --nocapture`.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;

use common::{TestServer, TestUser, Ws, test_config};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// Keys and values the server's parsers look for, so random JSON often parses far enough to
/// reach validation.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("action".to_string()),
        Just("content".to_string()),
        Just("client_id".to_string()),
        Just("message_id".to_string()),
        Just("typing".to_string()),
        Just("room_id".to_string()),
        Just("sender_id".to_string()),
        Just("members".to_string()),
        Just("name".to_string()),
        Just("user_id".to_string()),
        Just("username".to_string()),
        Just("password".to_string()),
        Just("message".to_string()),
        Just("read".to_string()),
        Just("ping".to_string()),
        "\\PC{0,12}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just(0i64),
            Just(1),
            Just(-1),
            Just(i64::MAX),
            Just(i64::MIN)
        ]
        .prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        word().prop_map(Value::from),
        "\\PC{0,60}".prop_map(Value::from),
        "[\\x00-\\x1f<>'\"%\\\\]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((word(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// An object that looks like a frame: an `action` and some of the fields.
fn frame_like() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just(json!("message")),
            Just(json!("read")),
            Just(json!("typing")),
            Just(json!("ping")),
            json_value(),
        ],
        prop::collection::vec((word(), json_value()), 0..4),
    )
        .prop_map(|(action, fields)| {
            let mut object: serde_json::Map<String, Value> = fields.into_iter().collect();
            object.insert("action".into(), action);
            Value::Object(object)
        })
}

/// A valid text, then bytes inserted, removed or replaced.
fn mutated(valid: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(valid),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..4),
    )
        .prop_map(|(text, edits)| {
            let mut bytes = text.into_bytes();
            for (at, op, byte) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 => bytes.insert(i, byte),
                    1 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ if i < bytes.len() => bytes[i] = byte,
                    _ => bytes.push(byte),
                }
            }
            bytes
        })
}

/// Raw input for a parser: arbitrary bytes, random JSON, frame-like JSON, or mutations.
fn input(valid: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(valid.clone()).prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        frame_like().prop_map(|v| v.to_string().into_bytes()),
        mutated(valid),
    ]
}

const WS_ERRORS: [&str; 6] = [
    "invalid_json",
    "unknown_action",
    "invalid_frame",
    "validation_error",
    "not_found",
    "rate_limited",
];

async fn fuzz_server() -> (TestServer, TestUser, TestUser, String) {
    let mut config = test_config();
    config.limits.send_rate_per_sec = 1_000_000.0;
    config.limits.send_burst = 1_000_000;
    config.limits.typing_per_sec = 1_000_000.0;
    config.limits.login_failures_per_ip = u32::MAX;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    (s, alice, bob, room)
}

async fn stored_ids(s: &TestServer) -> BTreeSet<i64> {
    s.sqlite
        .read(|c| {
            let mut stmt = c.prepare("SELECT id FROM messages")?;
            let ids = stmt.query_map([], |r| r.get(0))?;
            Ok(ids.collect::<rusqlite::Result<_>>()?)
        })
        .await
        .unwrap()
}

#[test]
fn websocket_frames_always_get_a_documented_answer_and_the_socket_survives() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (s, alice, _bob, room) = rt.block_on(fuzz_server());
    // The runner takes an `Fn`: the socket and the tally live in cells.
    let ws = RefCell::new(rt.block_on(s.ws(&room, &alice, "")).0);
    let valid = vec![
        json!({"action": "message", "content": "hello", "client_id": "c1"}).to_string(),
        json!({"action": "read", "message_id": 1}).to_string(),
        json!({"action": "typing", "typing": true}).to_string(),
        json!({"action": "ping"}).to_string(),
    ];
    let seen = RefCell::new(BTreeSet::new());
    let started = std::time::Instant::now();
    let result = runner().run(&input(valid), |bytes| {
        rt.block_on(ws_case(&mut ws.borrow_mut(), bytes, &mut seen.borrow_mut()))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Everything the socket saw stored is stored, and nothing else was.
    let stored = rt.block_on(stored_ids(&s));
    assert_eq!(stored, seen.into_inner());
    eprintln!(
        "{} websocket cases in {:.1?}, {} messages stored",
        cases(),
        started.elapsed(),
        stored.len()
    );
    drop(ws);
    rt.block_on(s.stop());
}

async fn ws_case(
    ws: &mut Ws,
    bytes: Vec<u8>,
    seen: &mut BTreeSet<i64>,
) -> Result<(), TestCaseError> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let text = String::from_utf8(bytes);
    let binary = text.is_err();
    let frame = match text {
        Ok(text) => Message::text(text),
        // Not UTF-8: only a binary frame can carry it.
        Err(e) => Message::binary(e.into_bytes()),
    };
    ws.socket.send(frame).await.unwrap();
    // A marker message follows: everything before its acknowledgement answers this case.
    // Read it all before judging, so a failing case leaves nothing behind for the next one.
    static MARKERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let marker = format!(
        "marker-{}",
        MARKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    ws.send_json(json!({"action": "message", "content": "marker", "client_id": marker}))
        .await;
    let mut replies = Vec::new();
    loop {
        let reply = ws.next_json().await;
        if reply["type"] == "message" && reply["message"]["client_id"] == marker.as_str() {
            seen.insert(reply["message"]["id"].as_i64().unwrap());
            break;
        }
        replies.push(reply);
    }
    for reply in replies {
        match reply["type"].as_str() {
            Some("error") => {
                let code = reply["code"].as_str().unwrap_or_default();
                if binary {
                    prop_assert_eq!(code, "unsupported_frame");
                } else {
                    prop_assert!(WS_ERRORS.contains(&code), "unexpected error {}", reply);
                }
            }
            Some("message") => {
                seen.insert(reply["message"]["id"].as_i64().unwrap());
            }
            Some("read" | "typing" | "presence" | "pong") => {}
            _ => prop_assert!(false, "unexpected frame {}", reply),
        }
    }
    Ok(())
}

#[test]
fn request_bodies_always_get_a_documented_answer() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (s, alice, bob, room) = rt.block_on(fuzz_server());
    let routes = [
        format!("/api/v1/chat/{room}/"),
        "/api/v1/chats/".to_string(),
        "/api/v1/login/".to_string(),
        format!("/api/v1/chat/{room}/members/"),
    ];
    let valid = vec![
        json!({"content": "hello"}).to_string(),
        json!({"members": [bob.id], "name": "team"}).to_string(),
        json!({"username": "alice", "password": "alice-secret-pw"}).to_string(),
        json!({"user_id": bob.id}).to_string(),
    ];
    let strategy = (0..routes.len(), input(valid));
    let started = std::time::Instant::now();
    let created = Cell::new(0usize);
    let result = runner().run(&strategy, |(route, body)| {
        rt.block_on(async {
            let res = s
                .http
                .post(s.url(&routes[route]))
                .header("Authorization", format!("Token {}", alice.token))
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let reply: Value = res
                .json()
                .await
                .map_err(|e| TestCaseError::fail(format!("{status}: not JSON: {e}")))?;
            prop_assert!(
                [200, 201, 400, 401, 403, 404, 409, 429].contains(&status),
                "{} -> {}: {}",
                routes[route],
                status,
                reply
            );
            if status >= 400 {
                prop_assert!(reply["error"]["code"].is_string(), "{}", reply);
                prop_assert!(reply["error"]["message"].is_string(), "{}", reply);
            }
            if route == 0 && status == 201 {
                created.set(created.get() + 1);
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Still serving, and every message it created is there.
    let (status, _) = rt.block_on(s.get("/api/v1/me/", &alice.token));
    assert_eq!(status, 200);
    let stored = rt.block_on(stored_ids(&s));
    assert_eq!(stored.len(), created.get());
    eprintln!(
        "{} body cases in {:.1?}, {} messages stored",
        cases(),
        started.elapsed(),
        created.get()
    );
    rt.block_on(s.stop());
}
