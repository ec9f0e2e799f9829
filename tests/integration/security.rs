//! Security properties, attacked through the real server: sessions (list, revoke, log out
//! everywhere), connection caps, rate limits and CORS.

use crate::common;

use common::{TestServer, TestUser, Ws, test_config};
use serde_json::{Value, json};

/// Logs `user` in again, returning a second token.
async fn login(s: &TestServer, user: &TestUser) -> String {
    let (status, body) = s
        .call(
            "POST",
            "/api/v1/login/",
            None,
            Some(json!({"username": user.username, "password": format!("{}-secret-pw", user.username)})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_string()
}

fn ids(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn users_list_their_sessions_without_ever_seeing_a_token_or_digest() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let second = login(&s, &alice).await;
    let bob = s.user("bob").await;

    let (status, list) = s.get("/api/v1/tokens/", &alice.token).await;
    assert_eq!(status, 200, "{list}");
    let sessions = list.as_array().unwrap();
    assert_eq!(sessions.len(), 2, "only alice's two sessions: {list}");
    let text = list.to_string();
    for secret in [&alice.token, &second, &bob.token] {
        assert!(!text.contains(secret.as_str()), "a token leaked: {text}");
    }
    for session in sessions {
        let mut keys: Vec<&str> = session
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(keys, ["created", "current", "expires_at", "id"]);
    }
    // newest first, and the token used for the request is marked
    assert_eq!(sessions[0]["current"], false);
    assert_eq!(sessions[1]["current"], true);
    let (_, list) = s.get("/api/v1/tokens", &second).await;
    assert_eq!(list[0]["current"], true);
    assert_eq!(list[1]["current"], false);
}

#[tokio::test]
async fn revoking_a_session_ends_it_and_other_users_sessions_are_out_of_reach() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let phone = login(&s, &alice).await;
    let bob = s.user("bob").await;
    let (_, list) = s.get("/api/v1/tokens/", &phone).await;
    let [phone_id, laptop_id] = ids(&list)[..] else {
        panic!("{list}")
    };
    let (_, list) = s.get("/api/v1/tokens/", &bob.token).await;
    let bob_id = ids(&list)[0];

    // bob cannot revoke alice's session: same 404 as a session that does not exist
    for path in [
        format!("/api/v1/tokens/{phone_id}/"),
        "/api/v1/tokens/999999/".into(),
        "/api/v1/tokens/-1/".into(),
        "/api/v1/tokens/abc/".into(),
    ] {
        let (status, body) = s.call("DELETE", &path, Some(&bob.token), None).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    assert_eq!(s.get("/api/v1/me/", &phone).await.0, 200);
    // alice cannot revoke bob's either
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{bob_id}"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(s.get("/api/v1/me/", &bob.token).await.0, 200);

    // from the laptop, alice revokes the lost phone
    let (status, body) = s
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{phone_id}/"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = s.get("/api/v1/me/", &phone).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "not_authenticated");
    let (_, list) = s.get("/api/v1/tokens/", &alice.token).await;
    assert_eq!(ids(&list), [laptop_id]);
}

#[tokio::test]
async fn logging_out_everywhere_revokes_every_session_of_that_user_only() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;

    // DELETE /api/v1/tokens/
    let other = login(&s, &alice).await;
    let (status, _) = s
        .call("DELETE", "/api/v1/tokens/", Some(&alice.token), None)
        .await;
    assert_eq!(status, 204);
    for token in [&alice.token, &other] {
        assert_eq!(s.get("/api/v1/me/", token).await.0, 401);
    }
    assert_eq!(s.get("/api/v1/me/", &bob.token).await.0, 200);

    // POST /api/v1/logout/?all=1
    let one = login(&s, &alice).await;
    let two = login(&s, &alice).await;
    let (status, body) = s
        .call("POST", "/api/v1/logout/?all=maybe", Some(&one), None)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        s.get("/api/v1/me/", &one).await.0,
        200,
        "a bad request changes nothing"
    );
    let (status, _) = s
        .call("POST", "/api/v1/logout/?all=1", Some(&one), None)
        .await;
    assert_eq!(status, 204);
    for token in [&one, &two] {
        assert_eq!(s.get("/api/v1/me/", token).await.0, 401);
    }
    assert_eq!(s.get("/api/v1/me/", &bob.token).await.0, 200);

    // plain logout still ends only the session used
    let one = login(&s, &alice).await;
    let two = login(&s, &alice).await;
    assert_eq!(
        s.call("POST", "/api/v1/logout/", Some(&one), None).await.0,
        204
    );
    assert_eq!(s.get("/api/v1/me/", &one).await.0, 401);
    assert_eq!(s.get("/api/v1/me/", &two).await.0, 200);
}

#[tokio::test]
async fn expired_tokens_are_refused_and_pruned_at_the_next_login() {
    let mut config = test_config();
    config.auth.token_ttl_hours = 1;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    // Age alice's token past its expiry.
    s.sqlite
        .write(|c| {
            c.execute("UPDATE tokens SET expires_at = 1", [])?;
            Ok(())
        })
        .await
        .unwrap();
    let (status, body) = s.get("/api/v1/me/", &alice.token).await;
    assert_eq!(status, 401, "{body}");
    let fresh = login(&s, &alice).await;
    let (_, list) = s.get("/api/v1/tokens/", &fresh).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let rows: i64 = s
        .sqlite
        .read(|c| Ok(c.query_row("SELECT count(*) FROM tokens", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(rows, 1, "the expired token row was deleted");
}

/// Opens a WebSocket at `path` and reads its `hello`.
async fn ws_at(s: &TestServer, path: &str) -> Ws {
    let url = format!("ws://{}{path}", s.addr);
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect");
    let mut ws = Ws { socket };
    assert_eq!(ws.next_json().await["type"], "hello");
    ws
}

#[tokio::test]
async fn revoking_a_token_closes_the_sockets_opened_with_it_and_no_others() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let phone = TestUser {
        token: login(&s, &alice).await,
        ..alice.clone()
    };
    let (mut laptop_ws, _) = s.ws(&room, &alice, "").await;
    let (mut phone_room_ws, _) = s.ws(&room, &phone, "").await;
    let mut phone_all_ws = ws_at(&s, &format!("/ws/?token={}", phone.token)).await;
    let (mut bob_ws, _) = s.ws(&room, &bob, "").await;

    let (_, list) = s.get("/api/v1/tokens/", &phone.token).await;
    let phone_id = list[0]["id"].as_i64().unwrap();
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{phone_id}/"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(phone_room_ws.closed().await, Some(4001));
    assert_eq!(phone_all_ws.closed().await, Some(4001));

    // The laptop's and bob's sockets go on working.
    let sent = laptop_ws.say("still here", "l1").await;
    let got = bob_ws.next_of("message").await;
    assert_eq!(got["message"]["id"], sent["id"]);

    // Log out everywhere closes the laptop too; bob stays.
    let (status, _) = s
        .call("POST", "/api/v1/logout/?all=1", Some(&alice.token), None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(laptop_ws.closed().await, Some(4001));
    bob_ws.send_json(json!({"action": "ping"})).await;
    assert_eq!(bob_ws.next_of("pong").await["type"], "pong");
}

#[tokio::test]
async fn a_socket_closes_when_its_token_expires() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    // Alice's token expires half a second from now.
    s.sqlite
        .write(|c| {
            c.execute(
                "UPDATE tokens SET expires_at = ?1 WHERE user_id = 1",
                [chat_server::store::now_ms() + 500],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let (mut ws, _) = s.ws(&room, &alice, "").await;
    assert_eq!(ws.closed().await, Some(4001));
    assert_eq!(s.get("/api/v1/me/", &alice.token).await.0, 401);
}

#[tokio::test]
async fn connection_caps_per_user_and_in_total_answer_429_with_retry_after() {
    let mut config = test_config();
    config.limits.max_connections_per_user = 2;
    config.limits.max_connections_total = 3;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = s.room(&alice, &[&bob, &carol], Some("team")).await;

    let _a1 = s.ws(&room, &alice, "").await;
    let _a2 = s.ws(&room, &alice, "").await;
    let (status, retry) = s
        .ws_refusal(&format!("/ws/chat/{room}/?token={}", alice.token))
        .await;
    assert_eq!(status, 429, "per-user cap");
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);

    let _b1 = s.ws(&room, &bob, "").await;
    let (status, retry) = s.ws_refusal(&format!("/ws/?token={}", carol.token)).await;
    assert_eq!(status, 429, "total cap");
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    // A refused handshake holds no slot.
    let (status, _) = s.ws_refusal(&format!("/ws/?token={}", carol.token)).await;
    assert_eq!(status, 429);
    assert_eq!(s.state.connections.total(), 3);
}

#[tokio::test]
async fn a_burst_of_concurrent_guesses_cannot_exceed_the_login_failure_limit() {
    let mut config = test_config();
    config.limits.login_failures_per_user_and_ip = 3;
    let s = TestServer::start_with(config).await;
    s.user("alice").await;
    let guesses = (0..24).map(|i| {
        let req = s
            .http
            .post(s.url("/api/v1/login/"))
            .json(&json!({"username": "ALICE", "password": format!("guess-{i}")}));
        async move {
            let res = req.send().await.unwrap();
            let retry = res.headers().get("retry-after").cloned();
            (res.status().as_u16(), retry)
        }
    });
    let results = futures_util::future::join_all(guesses).await;
    let wrong = results.iter().filter(|(s, _)| *s == 401).count();
    let limited = results.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!(wrong, 3, "exactly the limit is checked: {results:?}");
    assert_eq!(limited, 21, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|(s, _)| *s == 429)
            .all(|(_, retry)| retry.is_some())
    );
    // The name is blocked for the window from this address, even with the right password.
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/login/",
            None,
            Some(json!({"username": "alice", "password": "alice-secret-pw"})),
        )
        .await;
    assert_eq!(status, 429);
    // Other accounts are untouched.
    s.user("bob").await;
}

#[tokio::test]
async fn successful_logins_do_not_use_up_the_failure_budget() {
    let mut config = test_config();
    config.limits.login_failures_per_user_and_ip = 2;
    config.limits.login_failures_per_user = 2;
    config.limits.login_failures_per_ip = 2;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    for _ in 0..5 {
        login(&s, &alice).await;
    }
    let bad = json!({"username": "alice", "password": "wrong-password"});
    assert_eq!(
        s.call("POST", "/api/v1/login/", None, Some(bad.clone()))
            .await
            .0,
        401
    );
    login(&s, &alice).await;
    assert_eq!(
        s.call("POST", "/api/v1/login/", None, Some(bad.clone()))
            .await
            .0,
        401
    );
    let (status, body) = s.call("POST", "/api/v1/login/", None, Some(bad)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
}

/// Sends `method path` with the given headers; returns the status and response headers.
async fn raw(
    s: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = s.http.request(method, s.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.headers().clone())
}

const EVIL: &str = "https://evil.example";

#[tokio::test]
async fn by_default_nothing_is_allowed_cross_origin() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let auth = format!("Token {}", alice.token);

    // A foreign page may send a GET, but gets no CORS header, so its script cannot read it.
    let (status, h) = raw(
        &s,
        "GET",
        "/api/v1/me/",
        &[("origin", EVIL), ("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(h.get("access-control-allow-origin").is_none());
    assert!(
        h.get("vary").is_none(),
        "no allowlist, nothing varies by origin"
    );

    // Preflights from it are refused.
    let preflight = [
        ("origin", EVIL),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "authorization, content-type",
        ),
    ];
    let (status, h) = raw(&s, "OPTIONS", "/api/v1/chats/", &preflight, None).await;
    assert_eq!(status, 403);
    assert!(h.get("access-control-allow-origin").is_none());

    // Writes from it are refused before they do anything: no account is created, no failed
    // login is counted.
    let signup = json!({"username": "mallory", "password": "mallory-secret-pw"});
    let (status, _) = raw(
        &s,
        "POST",
        "/api/v1/signup/",
        &[("origin", EVIL)],
        Some(signup),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/login/",
            None,
            Some(json!({"username": "mallory", "password": "mallory-secret-pw"})),
        )
        .await;
    assert_eq!(status, 401, "mallory was not created");
    let (status, _) = raw(
        &s,
        "POST",
        "/api/v1/logout/",
        &[("origin", EVIL), ("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        s.get("/api/v1/me/", &alice.token).await.0,
        200,
        "still logged in"
    );

    // The server's own pages (Origin equals Host) and non-browser clients work as usual.
    let own = format!("http://{}", s.addr);
    let signup = json!({"username": "carol", "password": "carol-secret-pw"});
    let (status, h) = raw(
        &s,
        "POST",
        "/api/v1/signup/",
        &[("origin", &own)],
        Some(signup),
    )
    .await;
    assert_eq!(status, 201);
    assert!(h.get("access-control-allow-origin").is_none());
    // OPTIONS without Origin is not a preflight: the route answers 405 as before.
    let (status, _) = raw(&s, "OPTIONS", "/api/v1/me/", &[], None).await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn an_allowlisted_origin_gets_cors_headers_and_its_preflights_answered() {
    const APP: &str = "https://chat.example";
    let mut config = test_config();
    config.cors.allowed_origins = vec![APP.into()];
    config.limits.send_burst = 1;
    config.limits.send_rate_per_sec = 0.001;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let auth = format!("Token {}", alice.token);

    let preflight = [
        ("origin", APP),
        ("access-control-request-method", "PATCH"),
        (
            "access-control-request-headers",
            "authorization, content-type",
        ),
    ];
    let (status, h) = raw(
        &s,
        "OPTIONS",
        "/api/v1/messages/1/update/",
        &preflight,
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(h["access-control-allow-origin"], APP);
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("PATCH") && methods.contains("DELETE"),
        "{methods}"
    );
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    assert!(
        h.get("access-control-allow-credentials").is_none(),
        "tokens, not cookies"
    );

    let path = format!("/api/v1/chat/{room}/");
    let headers = [("origin", APP), ("authorization", auth.as_str())];
    let (status, h) = raw(&s, "POST", &path, &headers, Some(json!({"content": "hi"}))).await;
    assert_eq!(status, 201);
    assert_eq!(h["access-control-allow-origin"], APP);
    assert!(h.get_all("vary").iter().any(|v| v == "origin"));
    // Errors carry the headers too, and the page may read Retry-After.
    let (status, h) = raw(
        &s,
        "POST",
        &path,
        &headers,
        Some(json!({"content": "again"})),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(h["access-control-allow-origin"], APP);
    assert!(h.get("retry-after").is_some());
    assert_eq!(h["access-control-expose-headers"], "retry-after, link");

    // Another origin still gets nothing.
    let (status, h) = raw(
        &s,
        "GET",
        "/api/v1/me/",
        &[("origin", EVIL), ("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(h.get("access-control-allow-origin").is_none());
    assert!(h.get_all("vary").iter().any(|v| v == "origin"));
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = test_config();
    config.limits.header_read_timeout_secs = 1;
    let s = TestServer::start_with(config).await;
    let mut slow = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"GET /api/v1/me/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    for (i, stream) in [&mut slow, &mut idle].into_iter().enumerate() {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(common::WAIT, stream.read_to_end(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("the server closes connection {i}"));
        assert!(
            read.is_err() || buf.is_empty() || buf.starts_with(b"HTTP/1.1 408"),
            "{:?}",
            String::from_utf8_lossy(&buf)
        );
    }
    // The server still serves everyone else.
    s.user("alice").await;
}

#[tokio::test]
async fn sends_over_rest_and_websocket_share_one_rate_limit() {
    let mut config = test_config();
    config.limits.send_burst = 3;
    config.limits.send_rate_per_sec = 0.001;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let path = format!("/api/v1/chat/{room}/");
    let (mut ws, _) = s.ws(&room, &alice, "").await;

    assert_eq!(
        s.post(&path, &alice.token, json!({"content": "1"})).await.0,
        201
    );
    assert_eq!(
        s.post(&path, &alice.token, json!({"content": "2"})).await.0,
        201
    );
    ws.say("3", "w3").await;
    // The bucket is empty, whichever way the next message comes.
    ws.send_json(json!({"action": "message", "content": "4", "client_id": "w4"}))
        .await;
    let error = ws.next_of("error").await;
    assert_eq!(error["code"], "rate_limited", "{error}");
    let (status, h) = raw(
        &s,
        "POST",
        &path,
        &[("authorization", &format!("Token {}", alice.token))],
        Some(json!({"content": "5"})),
    )
    .await;
    assert_eq!(status, 429);
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    // Bob has his own bucket, and alice's socket stays open.
    assert_eq!(
        s.post(&path, &bob.token, json!({"content": "6"})).await.0,
        201
    );
    ws.send_json(json!({"action": "ping"})).await;
    assert_eq!(ws.next_of("pong").await["type"], "pong");
    let (_, history) = s.get(&format!("{path}?after=0"), &bob.token).await;
    let contents = common::contents(&history);
    assert_eq!(contents, ["1", "2", "3", "6"]);
}

/// A group room of alice, bob and carol, on a server where a socket lags after 16 events, and
/// 300 messages of 16 KB each posted by alice: more than the socket buffers of a client that
/// has stopped reading can hold, so its socket falls behind its event queue.
async fn flood_while_bob_stops_reading(path: impl Fn(&str, &TestUser) -> String) -> Flooded {
    let mut config = test_config();
    config.limits.ws_queue_len = 16;
    config.limits.send_rate_per_sec = 1e6;
    config.limits.send_burst = 1_000_000;
    config.limits.ws_write_timeout_secs = 120;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = s.room(&alice, &[&bob, &carol], Some("team")).await;
    // A second room bob stays in.
    let other = s.room(&alice, &[&bob], Some("other")).await;
    let (bob_ws, _) = s.ws_small_window(&path(&room, &bob)).await;
    let (bob_quiet_ws, _) = s.ws_small_window(&path(&room, &bob)).await;
    let big = "\u{1D11E}".repeat(3980);
    let post = format!("/api/v1/chat/{room}/");
    for chunk in 0..30 {
        let sends = (0..10).map(|i| {
            let content = format!("before-{} {big}", chunk * 10 + i);
            s.post(&post, &alice.token, json!({ "content": content }))
        });
        for (status, body) in futures_util::future::join_all(sends).await {
            assert_eq!(status, 201, "{body}");
        }
    }
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/api/v1/chat/{room}/members/{}/", bob.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    for i in 0..40 {
        let (status, _) = s
            .post(
                &post,
                &alice.token,
                json!({ "content": format!("after-{i}") }),
            )
            .await;
        assert_eq!(status, 201);
    }
    Flooded {
        s,
        alice,
        carol,
        room,
        other,
        bob_ws,
        bob_quiet_ws,
    }
}

struct Flooded {
    s: TestServer,
    alice: TestUser,
    carol: TestUser,
    room: String,
    other: String,
    /// Bob's socket that sends after the removal.
    bob_ws: Ws,
    /// Another of his sockets, which only listens.
    bob_quiet_ws: Ws,
}

/// Messages among `frames` and how many of them were posted before the removal.
fn message_contents(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["message"]["content"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_removed_member_whose_room_socket_lagged_gets_nothing_more_and_cannot_post() {
    let Flooded {
        s,
        carol,
        room,
        mut bob_ws,
        mut bob_quiet_ws,
        ..
    } = flood_while_bob_stops_reading(|room, bob| format!("/ws/chat/{room}/?token={}", bob.token))
        .await;
    // Still not reading, bob sends on one socket of the room he was removed from.
    bob_ws
        .send_json(json!({"action": "message", "content": "bob after removal", "client_id": "b1"}))
        .await;
    for ws in [&mut bob_ws, &mut bob_quiet_ws] {
        let (frames, code) = ws.until_closed().await;
        let seen = message_contents(&frames);
        assert_eq!(
            code,
            Some(4003),
            "closed as removed after {} messages",
            seen.len()
        );
        // The socket did fall behind: the removal did not arrive in order.
        assert!(seen.len() < 300, "the socket lagged: got {}", seen.len());
        assert!(!frames.iter().any(|f| f["type"] == "member"));
        assert!(
            seen.iter().all(|c| c.starts_with("before-")),
            "nothing posted after the removal reached bob"
        );
    }
    let (_, history) = s
        .get(&format!("/api/v1/chat/{room}/?limit=200"), &carol.token)
        .await;
    let contents = common::contents(&history);
    assert!(
        !contents.contains(&"bob after removal"),
        "bob's send was refused"
    );
    assert_eq!(contents[0], "after-39");
}

#[tokio::test]
async fn a_removed_member_whose_all_rooms_socket_lagged_loses_only_that_room() {
    let Flooded {
        s,
        alice,
        carol,
        room,
        other,
        mut bob_ws,
        ..
    } = flood_while_bob_stops_reading(|_, bob| format!("/ws/?token={}", bob.token)).await;
    bob_ws
        .send_json(json!({
            "action": "message", "room_id": room, "content": "bob after removal", "client_id": "b1",
        }))
        .await;
    // Something bob may still see, posted after everything else.
    let (status, _) = s
        .post(
            &format!("/api/v1/chat/{other}/"),
            &alice.token,
            json!({"content": "still friends"}),
        )
        .await;
    assert_eq!(status, 201);
    let mut seen = Vec::new();
    let mut refused = None;
    while refused.is_none() || seen.last().is_none_or(|c: &String| c != "still friends") {
        let frame = bob_ws.next_json().await;
        match frame["type"].as_str() {
            Some("message") => seen.push(frame["message"]["content"].as_str().unwrap().into()),
            Some("error") => refused = Some(frame),
            _ => {}
        }
    }
    assert_eq!(refused.unwrap()["code"], "not_found");
    assert!(seen.len() < 301, "the socket lagged: got {}", seen.len());
    assert!(
        seen.iter()
            .all(|c| c.starts_with("before-") || c == "still friends"),
        "nothing posted to the room after the removal reached bob"
    );
    let (_, history) = s
        .get(&format!("/api/v1/chat/{room}/?limit=200"), &carol.token)
        .await;
    assert!(!common::contents(&history).contains(&"bob after removal"));
    // The socket goes on working for the rooms bob is still in.
    bob_ws.send_json(json!({"action": "ping"})).await;
    assert_eq!(bob_ws.next_of("pong").await["type"], "pong");
}

#[tokio::test]
async fn a_client_speaking_http2_in_clear_text_is_refused_and_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = test_config();
    // Far longer than the test waits: the connection must not last until the header timeout.
    config.limits.header_read_timeout_secs = 3600;
    let s = TestServer::start_with(config).await;
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut h2c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        // The HTTP/2 connection preface, then an empty SETTINGS frame, then silence.
        h2c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        h2c.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        streams.push(h2c);
    }
    for h2c in &mut streams {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(common::WAIT, h2c.read_to_end(&mut answer))
            .await
            .expect("the server closes an HTTP/2 connection at once");
        // Never an HTTP/2 SETTINGS frame (type 4 at byte 3): at most an HTTP/1 error.
        assert!(
            read.is_err() || answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
            "{answer:?}"
        );
    }
    s.user("alice").await;
}

#[tokio::test]
async fn head_on_a_get_route_answers_like_get_without_a_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let auth = format!("Token {}", alice.token);
    for (path, token, status) in [
        ("/healthz", None, 200),
        ("/api/v1/me/", Some(auth.as_str()), 200),
        ("/api/v1/me/", None, 401),
        ("/", None, 200),
    ] {
        let mut headers = vec![];
        if let Some(t) = token {
            headers.push(("authorization", t));
        }
        let (head, head_headers) = raw(&s, "HEAD", path, &headers, None).await;
        let (get, get_headers) = raw(&s, "GET", path, &headers, None).await;
        assert_eq!((head, get), (status, status), "HEAD and GET {path}");
        assert_eq!(
            head_headers.get("content-type"),
            get_headers.get("content-type"),
            "{path}"
        );
    }
    // On the wire: the headers, and no body after them.
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(b"HEAD /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(common::WAIT, stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(body.is_empty(), "no body: {body:?}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: "),
        "{head}"
    );
}

#[tokio::test]
async fn the_servers_own_origin_includes_its_scheme() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let http = format!("http://{}", s.addr);
    let https = format!("https://{}", s.addr);
    let signup = |name: &str| json!({"username": name, "password": "long-enough-pw"});
    // A plain-HTTP server's own origin is http://host, not https://host.
    let (status, _) = raw(
        &s,
        "POST",
        "/api/v1/signup/",
        &[("origin", &https)],
        Some(signup("origin1")),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = raw(
        &s,
        "POST",
        "/api/v1/signup/",
        &[("origin", &http)],
        Some(signup("origin2")),
    )
    .await;
    assert_eq!(status, 201);
    // Behind a TLS-terminating proxy that says so, the page's origin is https://host.
    let proxied = [("origin", https.as_str()), ("x-forwarded-proto", "https")];
    let (status, _) = raw(
        &s,
        "POST",
        "/api/v1/signup/",
        &proxied,
        Some(signup("origin3")),
    )
    .await;
    assert_eq!(status, 201);
    // The same for the WebSocket handshake.
    let path = format!("/ws/chat/{room}/?token={}", alice.token);
    assert_eq!(s.ws_refused(&path, &[("origin", &https)]).await, 403);
    let (_, users) = s.get("/api/v1/users/?search=origin", &alice.token).await;
    let names: Vec<&str> = users["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["origin2", "origin3"]);
}

/// A client whose connections come from `ip` (a loopback address).
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .build()
        .unwrap()
}

async fn login_from(s: &TestServer, client: &reqwest::Client, password: &str) -> u16 {
    client
        .post(s.url("/api/v1/login/"))
        .json(&json!({"username": "alice", "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn wrong_passwords_from_other_addresses_cannot_lock_a_user_out() {
    let mut config = test_config();
    config.limits.login_failures_per_user_and_ip = 3;
    config.limits.login_failures_per_user = 10;
    config.limits.login_slowdown_ms = 1;
    let s = TestServer::start_with(config).await;
    // Alice signs up and logs in from 127.0.0.1.
    s.user("alice").await;
    let right = "alice-secret-pw";
    // An attacker at 127.0.0.2 uses up its guesses at her name: from there she is refused.
    let attacker = client_from([127, 0, 0, 2]);
    for i in 0..3 {
        assert_eq!(login_from(&s, &attacker, &format!("guess-{i}")).await, 401);
    }
    assert_eq!(login_from(&s, &attacker, right).await, 429);
    // More attackers push the name past the ceiling for addresses it never logged in from.
    let mut statuses = Vec::new();
    for n in 3..=6 {
        let attacker = client_from([127, 0, 0, n]);
        for i in 0..3 {
            statuses.push(login_from(&s, &attacker, &format!("guess-{n}-{i}")).await);
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        login_from(&s, &client_from([127, 0, 0, 9]), right).await,
        429,
        "brute force over many addresses is still stopped"
    );
    // Alice, from where she logs in, is not locked out.
    assert_eq!(
        login_from(&s, &client_from([127, 0, 0, 1]), right).await,
        200
    );
    // Once she did, a wrong password there still counts only against that address.
    assert_eq!(
        login_from(&s, &client_from([127, 0, 0, 1]), "typo").await,
        401
    );
    assert_eq!(
        login_from(&s, &client_from([127, 0, 0, 1]), right).await,
        200
    );
}

/// Signs up `username` with a fixed password; returns the status and body.
async fn signup(s: &TestServer, username: &str) -> (u16, Value) {
    s.call(
        "POST",
        "/api/v1/signup/",
        None,
        Some(json!({"username": username, "password": "a fine passphrase"})),
    )
    .await
}

async fn directory(s: &TestServer, token: &str) -> Vec<String> {
    let (status, page) = s.get("/api/v1/users/?limit=100", token).await;
    assert_eq!(status, 200, "{page}");
    let mut names: Vec<String> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_name_in_another_case_or_compatibility_spelling_is_the_same_name() {
    let s = TestServer::start().await;
    let admin = s.user("admin").await;
    for original in ["σσ", "victim", "file", "iv"] {
        assert_eq!(signup(&s, original).await.0, 201, "{original}");
    }
    for (spelling, of) in [
        ("ΣΣ", "σσ"),
        ("σς", "σσ"),
        ("VICTIM", "victim"),
        ("ｖｉｃｔｉｍ", "victim"),
        ("𝐯𝐢𝐜𝐭𝐢𝐦", "victim"),
        ("ﬁle", "file"),
        ("Ⅳ", "iv"),
    ] {
        let (status, body) = signup(&s, spelling).await;
        assert_eq!(status, 409, "{spelling} beside {of}: {body}");
        assert_eq!(body["error"]["code"], "conflict", "{body}");
        // and any spelling logs in to the one account
        let (status, login) = s
            .call(
                "POST",
                "/api/v1/login/",
                None,
                Some(json!({"username": spelling, "password": "a fine passphrase"})),
            )
            .await;
        assert_eq!(status, 200, "{spelling}: {login}");
        assert_eq!(login["user"]["username"], of, "{login}");
    }
    assert_eq!(
        directory(&s, &admin.token).await,
        ["admin", "file", "iv", "victim", "σσ"]
    );

    // A first sign-up in a compatibility spelling is stored in its plain form.
    let (status, user) = signup(&s, "ｆｕｌｌ").await;
    assert_eq!((status, user["username"].as_str()), (201, Some("full")));
}

#[tokio::test]
async fn mixed_script_and_look_alike_names_are_refused_beside_the_originals() {
    let s = TestServer::start().await;
    let admin = s.user("admin").await;
    for original in ["victim", "ace", "bob"] {
        assert_eq!(signup(&s, original).await.0, 201, "{original}");
    }
    // Latin with one Cyrillic і: refused as invalid, whatever exists.
    for mixed in ["vіctim", "nеw"] {
        let (status, body) = signup(&s, mixed).await;
        assert_eq!(status, 400, "{mixed}: {body}");
        assert_eq!(body["error"]["code"], "validation_error", "{body}");
        assert_eq!(
            body["error"]["fields"]["username"], "must not mix letters of different scripts",
            "{body}"
        );
    }
    // Whole-script and digit look-alikes of an existing name: refused as taken.
    for look_alike in ["асе", "b0b", "B0B"] {
        let (status, body) = signup(&s, look_alike).await;
        assert_eq!(status, 409, "{look_alike}: {body}");
        assert_eq!(
            body["error"]["message"],
            "that username looks too much like an existing one"
        );
    }
    assert_eq!(
        directory(&s, &admin.token).await,
        ["ace", "admin", "bob", "victim"]
    );
    // Names of one script that resemble nothing taken are fine.
    for fine in ["виктор", "山田たろう", "bobby"] {
        assert_eq!(signup(&s, fine).await.0, 201, "{fine}");
    }
}

/// A message's `client_id` (its sender's idempotency key) is shown to its sender only: live
/// on both sockets, in an edit, in a replay, in history, in the room list and in search, the
/// other members see `null`, and the sender sees the key.
#[tokio::test]
async fn only_the_sender_is_shown_a_messages_client_id() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], Some("pair")).await;
    let (mut alice_ws, _) = s.ws(&room, &alice, "").await;
    let (mut bob_ws, _) = s.ws(&room, &bob, "").await;
    let (mut bob_all, _) = s.ws_all(&bob, "").await;
    let (status, sent) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &alice.token,
            json!({"content": "lunch plans", "client_id": "alice-key-1"}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(sent["client_id"], "alice-key-1");
    let mine = alice_ws.next_of("message").await;
    assert_eq!(mine["message"]["client_id"], "alice-key-1");
    for ws in [&mut bob_ws, &mut bob_all] {
        let theirs = ws.next_of("message").await;
        assert_eq!(theirs["message"]["content"], "lunch plans");
        assert_eq!(theirs["message"]["client_id"], Value::Null, "{theirs}");
    }
    // An edit (no reactions: one shared frame) and a reaction (a frame per recipient).
    let id = sent["id"].as_i64().unwrap();
    let (status, _) = s
        .call(
            "PATCH",
            &format!("/api/v1/messages/{id}/"),
            Some(&alice.token),
            Some(json!({"content": "lunch plans at noon"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .call(
            "PUT",
            &format!("/api/v1/messages/{id}/reactions/%F0%9F%91%8D/"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    for _ in 0..2 {
        let mine = alice_ws.next_of("message_updated").await;
        assert_eq!(mine["message"]["client_id"], "alice-key-1");
        let theirs = bob_ws.next_of("message_updated").await;
        assert_eq!(theirs["message"]["client_id"], Value::Null, "{theirs}");
    }
    // Reads: a replay, history, the room list, search.
    let (mut replay, _) = s.ws(&room, &bob, "&since=0").await;
    let replayed = replay.next_of("message").await;
    assert_eq!(replayed["message"]["client_id"], Value::Null);
    for (who, key) in [(&alice, json!("alice-key-1")), (&bob, Value::Null)] {
        let (_, history) = s.get(&format!("/api/v1/chat/{room}/"), &who.token).await;
        assert_eq!(history["results"][0]["client_id"], key, "{history}");
        let (_, rooms) = s.get("/api/v1/chats/", &who.token).await;
        assert_eq!(rooms[0]["last_message"]["client_id"], key, "{rooms}");
        let (_, found) = s.get("/api/v1/search/?q=noon", &who.token).await;
        assert_eq!(found["results"][0]["message"]["client_id"], key, "{found}");
    }
    s.stop().await;
}
