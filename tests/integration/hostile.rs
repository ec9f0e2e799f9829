//! Hostile input: malformed, nested, mistyped, oversized and injected requests and frames.
//! Each gets its documented error, the server stays up, and nothing accepted is lost.

use crate::common;

use common::{TestServer, TestUser, test_config};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Sends raw bytes as one HTTP/1.1 request (no client-side normalisation of the path) and
/// returns the status and body of the answer.
async fn raw(s: &TestServer, request: &[u8]) -> (u16, String) {
    common::raw_http(s.addr, request, false).await
}

fn get(path: &str, token: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Token {token}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

fn post_bytes(path: &str, token: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Token {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// The error code of a JSON error body.
fn code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

struct Setup {
    s: TestServer,
    alice: TestUser,
    bob: TestUser,
    room: String,
}

async fn setup() -> Setup {
    let mut config = test_config();
    // Plenty of sends: this suite is about input, not rate limits.
    config.limits.send_rate_per_sec = 10_000.0;
    config.limits.send_burst = 10_000;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    Setup {
        s,
        alice,
        bob,
        room,
    }
}

/// History of the room, oldest first.
async fn history(s: &TestServer, room: &str, user: &TestUser) -> Vec<Value> {
    let (status, page) = s
        .get(
            &format!("/api/v1/chat/{room}/?after=0&limit=200"),
            &user.token,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["results"].as_array().unwrap().clone()
}

#[tokio::test]
async fn malformed_nested_mistyped_and_non_utf8_bodies_are_400_and_change_nothing() {
    let Setup { s, alice, room, .. } = setup().await;
    let first = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &alice.token,
            json!({"content": "before"}),
        )
        .await;
    assert_eq!(first.0, 201);
    let deep_array = "[".repeat(30_000) + &"]".repeat(30_000);
    let deep_object = "{\"a\":".repeat(10_000) + "1" + &"}".repeat(10_000);
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{".to_vec(),
        b"{\"content\": }".to_vec(),
        b"{\"content\": \"hi\"} trailing".to_vec(),
        b"{\"content\": \"hi\",}".to_vec(),
        b"\xef\xbb\xbf{\"content\": \"bom\"}".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"content\"".to_vec(),
        b"123".to_vec(),
        b"{\"content\": 123}".to_vec(),
        b"{\"content\": null}".to_vec(),
        b"{\"content\": {\"$gt\": \"\"}}".to_vec(),
        b"{\"content\": [\"a\"]}".to_vec(),
        b"{\"content\": \"hi\", \"client_id\": 7}".to_vec(),
        b"{\"content\": \"hi\", \"sender_id\": 2}".to_vec(),
        b"{\"content\": \"hi\", \"content\": \"twice\"}".to_vec(),
        b"{\"content\": \"\\ud800\"}".to_vec(),
        b"{\"content\": \"\xff\xfe\"}".to_vec(),
        b"\xff\xfe\xfd".to_vec(),
        b"{\"content\": \"hi\x00\"}".to_vec(),
        format!("{{\"content\": {deep_array}}}").into_bytes(),
        deep_array.clone().into_bytes(),
        deep_object.clone().into_bytes(),
        "[".repeat(60_000).into_bytes(),
    ];
    let path = format!("/api/v1/chat/{room}/");
    for body in &bodies {
        let (status, reply) = raw(&s, &post_bytes(&path, &alice.token, body)).await;
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]);
        assert_eq!(status, 400, "{shown:?} -> {reply}");
        assert_eq!(code(&reply), "invalid_json", "{shown:?} -> {reply}");
    }
    // The same on the other JSON routes.
    for path in [
        "/api/v1/signup/",
        "/api/v1/login/",
        "/api/v1/chats/",
        &format!("/api/v1/chat/{room}/members/"),
    ] {
        for body in [&bodies[1], &bodies[10], &bodies[19], &bodies[22]] {
            let (status, reply) = raw(&s, &post_bytes(path, &alice.token, body)).await;
            assert_eq!(status, 400, "{path}: {reply}");
            assert_eq!(code(&reply), "invalid_json", "{path}: {reply}");
        }
    }
    // Wrong types and impossible numbers in the other bodies.
    for (path, body) in [
        ("/api/v1/chats/", json!({"members": "2"})),
        ("/api/v1/chats/", json!({"members": [true]})),
        ("/api/v1/chats/", json!({"members": [2.5]})),
        ("/api/v1/chats/", json!({"members": [2], "name": 5})),
        (
            "/api/v1/signup/",
            json!({"username": ["a"], "password": "x"}),
        ),
        (
            "/api/v1/login/",
            json!({"username": "alice", "password": 12345678}),
        ),
    ] {
        let (status, reply) = s.post(path, &alice.token, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {reply}");
    }
    // Numbers no 64-bit id can be: 400. An integer written with an exponent or a zero
    // fraction is an integer (as JSON Schema counts), here one naming nobody: 404.
    for (number, expected) in [
        ("1e400", 400),
        ("18446744073709551616", 400),
        ("-9223372036854775809", 400),
        ("9.3e18", 400),
        ("1.0e10", 404),
        ("77.0", 404),
    ] {
        let body = format!("{{\"members\": [{number}]}}");
        let (status, reply) = raw(
            &s,
            &post_bytes("/api/v1/chats/", &alice.token, body.as_bytes()),
        )
        .await;
        assert_eq!(status, expected, "{number}: {reply}");
    }
    for id in ["-1", "0", "9223372036854775807"] {
        let body = json!({"members": [id.parse::<i64>().unwrap()]});
        let (status, reply) = s.post("/api/v1/chats/", &alice.token, body).await;
        assert_eq!(status, 404, "{id}: {reply}");
        assert_eq!(
            reply["error"]["fields"]["members"],
            format!("unknown users: {id}")
        );
    }
    // Nothing was stored but the one good message.
    let messages = history(&s, &room, &alice).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["content"], "before");
    let (_, rooms) = s.get("/api/v1/chats/", &alice.token).await;
    assert_eq!(rooms.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn invisible_reordering_and_oversized_usernames_are_400_and_create_nothing() {
    let Setup { s, alice, .. } = setup().await;
    let names = [
        "\u{202E}nilmda",    // right-to-left override
        "ad\u{200D}min",     // zero-width joiner
        "ad\u{200B}min",     // zero-width space
        "\u{FEFF}admin",     // byte-order mark
        "admin\u{00A0}",     // no-break space (NFKC: a plain space)
        "\u{0301}",          // a lone combining mark
        "\u{1D400}\u{0430}", // mathematical bold A then Cyrillic а
        "\u{0391}lice",      // Greek Alpha then Latin
        "½",                 // NFKC: 1, fraction slash, 2
        "\u{2163}\u{2044}",  // numeral four, fraction slash
        "\u{16A0}\u{16A1}",  // runes: letters, but not of a script in use
    ];
    let long = [
        "ａ".repeat(151),     // 151 characters after NFKC too
        "\u{FDFA}".repeat(9), // 9 characters, 162 after NFKC
        "a".repeat(3000),
    ];
    for name in names.iter().copied().chain(long.iter().map(String::as_str)) {
        let (status, body) = s
            .call(
                "POST",
                "/api/v1/signup/",
                None,
                Some(json!({"username": name, "password": "a fine passphrase"})),
            )
            .await;
        let shown: String = name.chars().take(20).collect();
        assert_eq!(status, 400, "{shown:?}: {body}");
        assert_eq!(
            body["error"]["code"], "validation_error",
            "{shown:?}: {body}"
        );
        assert!(
            body["error"]["fields"]["username"].is_string(),
            "{shown:?}: {body}"
        );
    }
    let (_, page) = s.get("/api/v1/users/?limit=100", &alice.token).await;
    assert_eq!(page["count"], 2, "{page}");
}

#[tokio::test]
async fn ids_and_query_numbers_out_of_range_get_404_or_400_never_500() {
    let Setup { s, alice, room, .. } = setup().await;
    for (path, want) in [
        ("/api/v1/messages/-1/update/".to_string(), 404),
        ("/api/v1/messages/0/update/".into(), 404),
        (
            "/api/v1/messages/99999999999999999999999/update/".into(),
            404,
        ),
        ("/api/v1/messages/9223372036854775807/update/".into(), 404),
        ("/api/v1/messages/1e3/update/".into(), 404),
        ("/api/v1/messages/0x10/update/".into(), 404),
        ("/api/v1/tokens/99999999999999999999999/".into(), 404),
        ("/api/v1/tokens/-9223372036854775808/".into(), 404),
        (format!("/api/v1/chat/{room}/members/-1/"), 404),
        (
            format!("/api/v1/chat/{room}/members/99999999999999999999/"),
            404,
        ),
    ] {
        let method = if path.contains("update") {
            "PATCH"
        } else {
            "DELETE"
        };
        let (status, reply) = s.call(method, &path, Some(&alice.token), None).await;
        assert_eq!(status, want, "{method} {path}: {reply}");
        assert_eq!(reply["error"]["code"], "not_found");
    }
    for query in [
        "limit=-1",
        "limit=0",
        "limit=1e3",
        "limit=99999999999999999999",
        "before=-5",
        "before=99999999999999999999",
        "after=abc",
    ] {
        let path = format!("/api/v1/chat/{room}/?{query}");
        let (status, reply) = s.get(&path, &alice.token).await;
        assert_eq!(status, 400, "{query}: {reply}");
        assert_eq!(reply["error"]["code"], "validation_error");
    }
    for query in [
        "limit=-1",
        "limit=0",
        "offset=-1",
        "limit=99999999999999999999",
        "exclude=1,x",
        "exclude=99999999999999999999",
    ] {
        let (status, reply) = s
            .get(&format!("/api/v1/users/?{query}"), &alice.token)
            .await;
        assert_eq!(status, 400, "{query}: {reply}");
    }
    // Huge but valid numbers page past the end instead of overflowing.
    for query in [
        "offset=9223372036854775807",
        "offset=9223372036854775807&limit=4294967295",
        "offset=9223372036854775000&limit=200",
    ] {
        let (status, reply) = s
            .get(&format!("/api/v1/users/?{query}"), &alice.token)
            .await;
        assert_eq!(status, 200, "{query}: {reply}");
        assert_eq!(reply["results"], json!([]));
        assert_eq!(reply["next"], Value::Null);
    }
    let (status, _) = s.get("/api/v1/me/", &alice.token).await;
    assert_eq!(status, 200, "the server is still up");
}

#[tokio::test]
async fn sql_and_script_payloads_are_stored_verbatim_and_returned_as_json_strings() {
    let Setup {
        s,
        alice,
        bob,
        room,
    } = setup().await;
    let payloads = [
        "'); DROP TABLE messages; --",
        "\" OR 1=1 --",
        "1; SELECT * FROM users WHERE ''='",
        "<script>alert(document.cookie)</script>",
        "<img src=x onerror=alert(1)>",
        "\u{202e}reversed\u{200b}zero-width",
        "{\"type\":\"message\",\"forged\":true}",
        "%00%2e%2e\\u0000 ${jndi:ldap://x}",
        "multi\nline\r\ntext\twith tabs",
        "emoji 🔥 and CJK 漢字",
    ];
    let (mut bob_ws, _) = s.ws(&room, &bob, "").await;
    for (i, payload) in payloads.iter().enumerate() {
        let (status, message) = s
            .post(
                &format!("/api/v1/chat/{room}/"),
                &alice.token,
                json!({"content": payload}),
            )
            .await;
        assert_eq!(status, 201, "{payload}: {message}");
        assert_eq!(message["content"], *payload);
        let live = bob_ws.next_of("message").await;
        assert_eq!(live["message"]["content"], *payload, "live copy of #{i}");
    }
    // The raw response is JSON with the payload as an escaped string, never markup.
    let res = s
        .http
        .get(s.url(&format!("/api/v1/chat/{room}/?after=0&limit=200")))
        .header("Authorization", format!("Token {}", alice.token))
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let text = res.text().await.unwrap();
    let page: Value = serde_json::from_str(&text).unwrap();
    let stored = common::contents(&page);
    assert_eq!(
        stored,
        payloads.iter().map(|p| p.trim()).collect::<Vec<_>>()
    );
    // Payloads in names and searches too.
    let (status, room2) = s
        .post(
            "/api/v1/chats/",
            &alice.token,
            json!({"members": [bob.id], "name": "x'); DROP TABLE rooms; --<b>"}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(room2["name"], "x'); DROP TABLE rooms; --<b>");
    for search in ["' OR '1'='1", "%", "_", "\\", "%' --"] {
        let encoded: String = search.bytes().map(|b| format!("%{b:02X}")).collect();
        let res = s
            .http
            .get(s.url(&format!("/api/v1/users/?search={encoded}")))
            .header("Authorization", format!("Token {}", alice.token))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        let page: Value = res.json().await.unwrap();
        assert_eq!(page["count"], 0, "{search:?} matched {page}");
    }
    let (_, rooms) = s.get("/api/v1/chats/", &bob.token).await;
    assert_eq!(rooms.as_array().unwrap().len(), 2, "every table is intact");
}

#[tokio::test]
async fn path_tricks_in_room_ids_never_reach_another_resource() {
    let Setup { s, alice, room, .. } = setup().await;
    let long = "a".repeat(10_000);
    let upper = room.to_uppercase();
    let paths = [
        "/api/v1/chat/../chats/".to_string(),
        "/api/v1/chat/%2e%2e/".into(),
        "/api/v1/chat/%2e%2e%2fchats/".into(),
        "/api/v1/chat/..%2F..%2Fv1%2Fchats/".into(),
        format!("/api/v1/chat/{room}%00/"),
        format!("/api/v1/chat/{room}%2f/"),
        format!("/api/v1/chat/{room}/../../chats/"),
        format!("/api/v1/chat/{room}%20/"),
        format!("/api/v1/chat/%20{room}/"),
        format!("/api/v1/chat/{upper}/"),
        format!("/api/v1/chat/{room}{room}/"),
        format!("/api/v1/chat/{long}/"),
        "/api/v1/chat/%F0%9F%94%A5/".into(),
        "/api/v1/chat/%ff%fe/".into(),
        "/api/v1/chat/*/".into(),
        "/api/v1/chat/'%20OR%20'1'='1/".into(),
    ];
    for path in &paths {
        let (status, body) = raw(&s, &get(path, &alice.token)).await;
        let shown = &path[..path.len().min(80)];
        assert_eq!(status, 404, "{shown}: {body}");
        assert_eq!(code(&body), "not_found", "{shown}");
        // Also on the socket.
        let ws_path = path.replacen("/api/v1/chat/", "/ws/chat/", 1);
        let status = s
            .ws_refused(&format!("{ws_path}?token={}", alice.token), &[])
            .await;
        assert_eq!(status, 404, "{shown} on the socket");
    }
    // A request line too long to be reasonable is refused by the HTTP layer, not served.
    let huge = format!("/api/v1/chat/{}/", "a".repeat(100_000));
    let (status, _) = raw(&s, &get(&huge, &alice.token)).await;
    assert!([400, 414, 431].contains(&status), "{status}");
    assert_eq!(
        s.get(&format!("/api/v1/chat/{room}/"), &alice.token)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn oversized_headers_and_bodies_are_refused_and_the_server_stays_up() {
    let Setup { s, alice, room, .. } = setup().await;
    // One enormous header, and too many headers.
    let big = format!(
        "GET /api/v1/me/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1_000_000)
    );
    let (status, _) = raw(&s, big.as_bytes()).await;
    assert_eq!(status, 431);
    let mut many = String::from("GET /api/v1/me/ HTTP/1.1\r\nHost: x\r\n");
    for i in 0..500 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("Connection: close\r\n\r\n");
    let (status, _) = raw(&s, many.as_bytes()).await;
    assert_eq!(status, 431);
    // A huge Authorization header is just a bad token.
    let (status, body) = s.get("/api/v1/me/", &"f".repeat(60_000)).await;
    assert_eq!(status, 401, "{body}");

    // Bodies over the limit: sent, or only announced.
    let path = format!("/api/v1/chat/{room}/");
    let content = "x".repeat(70 * 1024);
    let (status, body) = s
        .post(&path, &alice.token, json!({"content": content}))
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    let announced = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Token {}\r\n\
         Content-Length: 10000000000\r\nConnection: close\r\n\r\n{{",
        alice.token
    );
    let (status, body) = raw(&s, announced.as_bytes()).await;
    assert_eq!(status, 413, "{body}");
    // A chunked body has no length to check up front: refused, not read without bound.
    let chunked = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Token {}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n{{\"a\":\r\n0\r\n\r\n",
        alice.token
    );
    let (status, body) = raw(&s, chunked.as_bytes()).await;
    assert_eq!(status, 400, "{body}");
    // Content just under the character limit is fine, just over it is a validation error.
    let (status, _) = s
        .post(&path, &alice.token, json!({"content": "é".repeat(4000)}))
        .await;
    assert_eq!(status, 201);
    let (status, body) = s
        .post(&path, &alice.token, json!({"content": "é".repeat(4001)}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["fields"]["content"],
        "must be at most 4000 characters"
    );
    let (status, _) = s
        .post(&path, &alice.token, json!({"content": " \n\t "}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(history(&s, &room, &alice).await.len(), 1);
}

#[tokio::test]
async fn hostile_websocket_frames_get_error_frames_and_lose_nothing() {
    let Setup {
        s,
        alice,
        bob,
        room,
    } = setup().await;
    let (mut a, _) = s.ws(&room, &alice, "").await;
    let (mut b, _) = s.ws(&room, &bob, "").await;
    let mut accepted = vec![a.say("first", "c0").await["id"].clone()];

    let deep = "[".repeat(50_000);
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "invalid_json"),
        ("{".into(), "invalid_json"),
        (deep, "invalid_json"),
        (
            "{\"action\":\"message\",\"content\":\"hi\"} extra".into(),
            "invalid_json",
        ),
        ("null".into(), "unknown_action"),
        ("[]".into(), "unknown_action"),
        ("\"ping\"".into(), "unknown_action"),
        ("{}".into(), "unknown_action"),
        ("{\"action\":5}".into(), "unknown_action"),
        ("{\"action\":\"MESSAGE\"}".into(), "unknown_action"),
        (
            "{\"action\":\"shout\",\"message_id\":1}".into(),
            "unknown_action",
        ),
        (
            "{\"action\":\"edit\",\"message_id\":1}".into(),
            "invalid_frame",
        ),
        (
            "{\"action\":\"edit\",\"message_id\":\"1\",\"content\":\"x\"}".into(),
            "invalid_frame",
        ),
        (
            "{\"action\":\"delete\",\"message_id\":99999}".into(),
            "not_found",
        ),
        (
            "{\"action\":\"delete\",\"message_id\":-1}".into(),
            "not_found",
        ),
        (
            "{\"action\":\"edit\",\"message_id\":1,\"content\":\"  \"}".into(),
            "validation_error",
        ),
        ("{\"action\":\"message\"}".into(), "invalid_frame"),
        (
            "{\"action\":\"message\",\"content\":5}".into(),
            "invalid_frame",
        ),
        (
            "{\"action\":\"message\",\"content\":\"x\",\"client_id\":[]}".into(),
            "invalid_frame",
        ),
        (
            "{\"action\":\"read\",\"message_id\":\"1\"}".into(),
            "invalid_frame",
        ),
        (
            "{\"action\":\"read\",\"message_id\":1e400}".into(),
            "invalid_json",
        ),
        (
            "{\"action\":\"read\",\"message_id\":99999999999999999999}".into(),
            "invalid_frame",
        ),
        (
            "{\"action\":\"read\",\"message_id\":-1}".into(),
            "not_found",
        ),
        (
            "{\"action\":\"read\",\"message_id\":9223372036854775807}".into(),
            "not_found",
        ),
        (
            "{\"action\":\"typing\",\"typing\":\"yes\"}".into(),
            "invalid_frame",
        ),
        (
            "{\"action\":\"message\",\"content\":\"\"}".into(),
            "validation_error",
        ),
        (
            "{\"action\":\"message\",\"content\":\"   \"}".into(),
            "validation_error",
        ),
        (
            "{\"action\":\"message\",\"content\":\"a\\u0000b\"}".into(),
            "validation_error",
        ),
        (
            json!({"action": "message", "content": "x".repeat(4001)}).to_string(),
            "validation_error",
        ),
        (
            json!({"action": "message", "content": "x", "client_id": "c".repeat(129)}).to_string(),
            "validation_error",
        ),
    ];
    for (frame, want) in &cases {
        a.send_text(frame).await;
        let reply = a.next_json().await;
        let shown = &frame[..frame.len().min(60)];
        assert_eq!(reply["type"], "error", "{shown} -> {reply}");
        assert_eq!(reply["code"], *want, "{shown} -> {reply}");
        assert!(reply["message"].is_string());
    }
    // Binary frames are refused with an error frame, and the socket stays open.
    a.socket
        .send(WsMessage::binary(b"{\"action\":\"ping\"}".to_vec()))
        .await
        .unwrap();
    let reply = a.next_json().await;
    assert_eq!(reply["code"], "unsupported_frame");
    // A forged sender is ignored; injected markup is stored verbatim.
    a.send_json(json!({"action": "message", "content": "<script>x</script>", "client_id": "c1", "sender_id": bob.id, "room_id": "other"}))
        .await;
    let ack = a.next_of("message").await["message"].clone();
    assert_eq!(ack["sender_id"], alice.id);
    assert_eq!(ack["content"], "<script>x</script>");
    accepted.push(ack["id"].clone());

    // Bob saw exactly the accepted messages, nothing else from the barrage.
    for id in &accepted {
        let got = b.next_of("message").await;
        assert_eq!(got["message"]["id"], *id);
    }
    b.send_json(json!({"action": "ping"})).await;
    assert_eq!(b.next_json().await["type"], "pong");

    // A text frame that is not UTF-8 breaks the protocol: the socket closes with 1002/1007.
    let (mut c, _) = s.ws(&room, &alice, "").await;
    let frame = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
        vec![0xff, 0xfe, 0xfd],
        tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
            tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    );
    c.socket.send(WsMessage::Frame(frame)).await.unwrap();
    let code = c.closed().await;
    assert!(matches!(code, Some(1002 | 1007)), "{code:?}");
    // An oversized message closes with 1009.
    let (mut d, _) = s.ws(&room, &alice, "").await;
    d.send_text(&"x".repeat(70 * 1024)).await;
    assert_eq!(d.closed().await, Some(1009));

    // The first socket is still open, and history holds exactly what was accepted.
    a.send_json(json!({"action": "ping"})).await;
    assert_eq!(a.next_of("pong").await["type"], "pong");
    let ids: Vec<Value> = history(&s, &room, &bob)
        .await
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, accepted);
}
