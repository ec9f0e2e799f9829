//! End-to-end tests of the v1 REST API and the room WebSocket, against a real server.

use crate::common;

use common::{TestServer, test_config};
use serde_json::json;

#[tokio::test]
async fn two_users_chat_live_in_both_directions_and_read_state_agrees_with_history() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;

    let (mut a, hello) = s.ws(&room, &alice, "").await;
    assert_eq!(hello["room_id"], room.as_str());
    assert_eq!(hello["user"]["id"], alice.id);
    let (mut b, hello) = s.ws(&room, &bob, "").await;
    let online = hello["online"].as_array().unwrap();
    assert!(online.contains(&json!(alice.id)) && online.contains(&json!(bob.id)));

    // alice -> bob; a forged sender_id is ignored
    a.send_json(
        json!({"action": "message", "content": "hi bob", "client_id": "a1", "sender_id": bob.id}),
    )
    .await;
    let got = b.next_of("message").await["message"].clone();
    assert_eq!(got["content"], "hi bob");
    assert_eq!(got["sender"], "alice");
    assert_eq!(got["sender_id"], alice.id);
    assert_eq!(got["is_read"], false);
    let ack = a.next_of("message").await["message"].clone();
    assert_eq!(ack["id"], got["id"]);
    assert_eq!(ack["client_id"], "a1");

    // bob marks alice's message read over the socket; alice sees the receipt
    b.send_json(json!({"action": "read", "message_id": ack["id"]}))
        .await;
    let receipt = a.next_of("read").await;
    assert_eq!(
        b.next_of("read").await,
        receipt,
        "the reader's own sockets hear it too"
    );
    assert_eq!(receipt["user_id"], bob.id);
    assert_eq!(receipt["message_id"], ack["id"]);
    assert_eq!(receipt["room_id"], room.as_str());

    // bob -> alice
    let reply = b.say("hi alice", "b1").await;
    let got = a.next_of("message").await["message"].clone();
    assert_eq!(got["id"], reply["id"]);
    assert!(reply["id"].as_i64() > ack["id"].as_i64());

    let (status, history) = s.get(&format!("/api/v1/chat/{room}/"), &alice.token).await;
    assert_eq!(status, 200);
    let results = history["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    // newest first: bob's reply (unread by alice), then alice's message (read by bob)
    assert_eq!(results[0]["content"], "hi alice");
    assert_eq!(results[0]["is_read"], false);
    assert_eq!(results[1]["content"], "hi bob");
    assert_eq!(results[1]["is_read"], true);
    assert_eq!(history["has_more"], false);

    // alice reads bob's reply over REST: her unread count drops to zero
    let (_, rooms) = s.get("/api/v1/chats/", &alice.token).await;
    assert_eq!(rooms[0]["unread_count"], 1);
    assert_eq!(rooms[0]["last_message"]["id"], reply["id"]);
    let (status, body) = s
        .call(
            "PATCH",
            &format!("/api/v1/messages/{}/update/", reply["id"]),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"message": "Message updated successfully.", "message_id": reply["id"]})
    );
    let receipt = b.next_of("read").await;
    assert_eq!(receipt["user_id"], alice.id);
    let (_, rooms) = s.get("/api/v1/chats/", &alice.token).await;
    assert_eq!(rooms[0]["unread_count"], 0);
    let (_, history) = s.get(&format!("/api/v1/chat/{room}/"), &bob.token).await;
    assert!(
        history["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["is_read"] == true)
    );

    // reading it again succeeds but is no news: bob's next event is alice's next message
    let again = format!("/api/v1/messages/{}/update/", reply["id"]);
    assert_eq!(
        s.call("PATCH", &again, Some(&alice.token), None).await.0,
        200
    );
    let next = a.say("one more", "a2").await;
    assert_eq!(b.next_json().await["message"]["id"], next["id"]);
}

#[tokio::test]
async fn rest_posts_reach_websocket_subscribers_and_client_ids_are_idempotent() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let (mut b, _) = s.ws(&room, &bob, "").await;

    let path = format!("/api/v1/chat/{room}/");
    let (status, first) = s
        .post(
            &path,
            &alice.token,
            json!({"content": "  over REST  ", "client_id": "r1"}),
        )
        .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["content"], "over REST");
    let live = b.next_of("message").await;
    assert_eq!(live["message"]["id"], first["id"]);

    let (status, again) = s
        .post(
            &path,
            &alice.token,
            json!({"content": "changed", "client_id": "r1"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["content"], "over REST");
    let (_, history) = s.get(&path, &alice.token).await;
    assert_eq!(history["results"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_non_member_can_neither_read_nor_post_nor_connect() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let mallory = s.user("mallory").await;
    let room = s.room(&alice, &[&bob], None).await;
    let path = format!("/api/v1/chat/{room}/");
    let (_, msg) = s
        .post(&path, &alice.token, json!({"content": "secret"}))
        .await;

    let (status, body) = s.get(&path, &mallory.token).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = s
        .post(&path, &mallory.token, json!({"content": "let me in"}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = s
        .call(
            "PATCH",
            &format!("/api/v1/messages/{}/update/", msg["id"]),
            Some(&mallory.token),
            None,
        )
        .await;
    assert_eq!(status, 404);
    // the same 404 as for a room that does not exist
    let (status, _) = s.get("/api/v1/chat/doesnotexist/", &mallory.token).await;
    assert_eq!(status, 404);
    let code = s
        .ws_refused(&format!("/ws/chat/{room}/?token={}", mallory.token), &[])
        .await;
    assert_eq!(code, 404);
    let (_, rooms) = s.get("/api/v1/chats/", &mallory.token).await;
    assert_eq!(rooms, json!([]));

    // nothing changed: still one message, and mallory's read did not mark it read
    let (_, history) = s.get(&path, &alice.token).await;
    let results = history["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["is_read"], false);
}

#[tokio::test]
async fn bad_tokens_bad_json_unknown_routes_and_wrong_methods_get_documented_errors() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;

    for token in [
        "",
        "nonsense",
        &"0".repeat(64),
        &format!("{}x", alice.token),
    ] {
        let (status, body) = s.get("/api/v1/me/", token).await;
        assert_eq!(status, 401, "token {token:?}");
        assert_eq!(body["error"]["code"], "not_authenticated");
    }
    let (status, _) = s.call("GET", "/api/v1/chats/", None, None).await;
    assert_eq!(status, 401);
    let res = s
        .http
        .get(s.url("/api/v1/me"))
        .header("Authorization", format!("Bearer {}", alice.token))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "Bearer and no trailing slash work too");
    let code = s.ws_refused("/ws/chat/abc/?token=bad", &[]).await;
    assert_eq!(code, 401);

    let res = s
        .http
        .post(s.url("/api/v1/chats/"))
        .header("Authorization", format!("Token {}", alice.token))
        .body("{\"members\": [1,")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");

    let (status, body) = s
        .post(
            "/api/v1/chats/",
            &alice.token,
            json!({"members": "everyone"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_json");
    let (status, body) = s
        .post(
            "/api/v1/chats/",
            &alice.token,
            json!({"members": [alice.id]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "validation_error");
    assert!(body["error"]["fields"]["members"].is_string());
    let (status, body) = s
        .post("/api/v1/chats/", &alice.token, json!({"members": [999]}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    let (status, body) = s
        .call("GET", "/api/v1/nope/", Some(&alice.token), None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = s
        .call("DELETE", "/api/v1/me/", Some(&alice.token), None)
        .await;
    assert_eq!(status, 405);
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let (status, _) = s.call("GET", "/api/v1/signup/", None, None).await;
    assert_eq!(status, 405);
    // Every 405 names the methods the path has (RFC 9110).
    for (method, path, allow) in [
        ("DELETE", "/api/v1/me/", "GET"),
        ("GET", "/api/v1/signup/", "POST"),
        ("TRACE", "/api/v1/chat/abc/", "GET, POST, PATCH"),
        ("PUT", "/api/v1/tokens", "GET, DELETE"),
    ] {
        let res = reqwest::Client::new()
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                s.url(path),
            )
            .header("Authorization", format!("Token {}", alice.token))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 405, "{method} {path}");
        assert_eq!(res.headers()["allow"], allow, "{method} {path}");
    }
}

#[tokio::test]
async fn signup_and_login_enforce_their_rules() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let signup = |body| s.call("POST", "/api/v1/signup/", None, Some(body));

    let (status, body) = signup(json!({"username": "ALICE", "password": "another-pass"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    let (status, body) = signup(json!({"username": "x", "password": "12345678"})).await;
    assert_eq!(status, 400);
    assert!(body["error"]["fields"]["password"].is_string());
    let (status, body) =
        signup(json!({"username": "carol", "password": "carolcarol", "password2": "other"})).await;
    assert_eq!(status, 400);
    assert!(body["error"]["fields"]["password2"].is_string());
    let (status, body) = signup(json!({"username": "carol", "password": "Carol"})).await;
    assert_eq!(status, 400, "{body}");

    // unknown user and wrong password: the same answer
    let (s1, b1) = s
        .call(
            "POST",
            "/api/v1/login/",
            None,
            Some(json!({"username": "alice", "password": "wrong-password"})),
        )
        .await;
    let (s2, b2) = s
        .call(
            "POST",
            "/api/v1/login/",
            None,
            Some(json!({"username": "nobody", "password": "wrong-password"})),
        )
        .await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(b1, b2);

    let (status, body) = s
        .call(
            "POST",
            "/api/v1/api-token-auth/",
            None,
            Some(json!({"username": "alice", "password": "alice-secret-pw"})),
        )
        .await;
    assert_eq!(status, 200);
    let token = body["token"].as_str().unwrap();
    // `access` too, the name a client of the seed reads: the same token.
    assert_eq!(body.as_object().unwrap().len(), 2);
    assert_eq!(body["access"], token);
    let (status, me) = s.get("/api/v1/me/", token).await;
    assert_eq!((status, me["id"].as_i64()), (200, Some(alice.id)));
    assert!(me.get("password").is_none() && me.get("password_hash").is_none());

    // logout revokes only the token used
    let (status, _) = s.call("POST", "/api/v1/logout/", Some(token), None).await;
    assert_eq!(status, 204);
    assert_eq!(s.get("/api/v1/me/", token).await.0, 401);
    assert_eq!(s.get("/api/v1/me/", &alice.token).await.0, 200);
}

#[tokio::test]
async fn direct_rooms_are_unique_per_pair_and_groups_are_not() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let (status, first) = s
        .post("/api/v1/chats/", &alice.token, json!({"members": [bob.id]}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(first["is_direct"], true);
    let (status, again) = s
        .post(
            "/api/v1/chats/",
            &bob.token,
            json!({"members": [alice.id, bob.id]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["room_id"], first["room_id"]);
    let room_id = first["room_id"].as_str().unwrap();
    assert!(room_id.len() >= 16 && room_id.bytes().all(|b| b.is_ascii_alphanumeric()));

    let (status, group) = s
        .post(
            "/api/v1/chats/",
            &alice.token,
            json!({"members": [bob.id, carol.id], "name": "trio"}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        (
            group["is_direct"].as_bool(),
            group["members"].as_array().unwrap().len()
        ),
        (Some(false), 3)
    );

    // most recent activity first
    s.post(
        &format!("/api/v1/chat/{room_id}/"),
        &alice.token,
        json!({"content": "bump"}),
    )
    .await;
    let (_, rooms) = s.get("/api/v1/chats/", &alice.token).await;
    assert_eq!(rooms[0]["room_id"], room_id);
    assert_eq!(rooms[1]["name"], "trio");
}

#[tokio::test]
async fn history_pages_backwards_and_forwards() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let path = format!("/api/v1/chat/{room}/");
    let mut ids = Vec::new();
    for i in 0..7 {
        let (_, m) = s
            .post(&path, &alice.token, json!({"content": format!("m{i}")}))
            .await;
        ids.push(m["id"].as_i64().unwrap());
    }
    let page_ids = |v: &serde_json::Value| -> Vec<i64> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_i64().unwrap())
            .collect()
    };
    let (_, newest) = s.get(&format!("{path}?limit=3"), &alice.token).await;
    assert_eq!(page_ids(&newest), [ids[6], ids[5], ids[4]]);
    assert_eq!(newest["has_more"], true);
    let (_, older) = s
        .get(&format!("{path}?limit=3&before={}", ids[4]), &alice.token)
        .await;
    assert_eq!(page_ids(&older), [ids[3], ids[2], ids[1]]);
    let (_, forward) = s
        .get(&format!("{path}?after={}", ids[4]), &alice.token)
        .await;
    assert_eq!(page_ids(&forward), [ids[5], ids[6]]);
    assert_eq!(forward["has_more"], false);
    let (status, body) = s.get(&format!("{path}?limit=abc"), &alice.token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("validation_error"))
    );
}

#[tokio::test]
async fn websocket_bad_frames_get_error_frames_and_the_socket_stays_open() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let (mut a, _) = s.ws(&room, &alice, "").await;

    a.send_text("{not json").await;
    assert_eq!(a.next_of("error").await["code"], "invalid_json");
    a.send_json(json!({"action": "dance"})).await;
    assert_eq!(a.next_of("error").await["code"], "unknown_action");
    a.send_json(json!({"action": "message", "content": "   "}))
        .await;
    assert_eq!(a.next_of("error").await["code"], "validation_error");
    a.send_json(json!({"action": "message", "content": "x".repeat(4001)}))
        .await;
    assert_eq!(a.next_of("error").await["code"], "validation_error");
    a.send_json(json!({"action": "read", "message_id": 424242}))
        .await;
    assert_eq!(a.next_of("error").await["code"], "not_found");
    a.send_json(json!({"action": "ping"})).await;
    assert_eq!(a.next_json().await, json!({"type": "pong"}));
    // still usable, and nothing bad was stored
    let m = a.say("still here", "c1").await;
    let (_, history) = s.get(&format!("/api/v1/chat/{room}/"), &alice.token).await;
    assert_eq!(history["results"].as_array().unwrap().len(), 1);
    assert_eq!(history["results"][0]["id"], m["id"]);
}

#[tokio::test]
async fn websocket_frames_that_are_not_objects_are_refused_and_store_nothing() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let (mut a, _) = s.ws(&room, &alice, "").await;

    // Every frame is one JSON object (docs/PROTOCOL.md): an array that starts with an action
    // is not a frame of that action.
    for text in [r#"["message","sneaked in",null,null,null]"#, r#"["ping"]"#] {
        a.send_text(text).await;
        assert_eq!(a.next_of("error").await["code"], "unknown_action", "{text}");
    }
    let m = a.say("only this", "c1").await;
    let (_, history) = s.get(&format!("/api/v1/chat/{room}/"), &alice.token).await;
    assert_eq!(history["results"].as_array().unwrap().len(), 1);
    assert_eq!(history["results"][0]["id"], m["id"]);
}

#[tokio::test]
async fn data_survives_a_restart_on_a_file_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.server.db = dir.path().join("chat.db").to_str().unwrap().to_string();

    let s = TestServer::start_with(config.clone()).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let (mut a, _) = s.ws(&room, &alice, "").await;
    let sent = a.say("remember me", "p1").await;
    drop(a);
    s.stop().await;

    let s = TestServer::start_with(config).await;
    let (status, history) = s.get(&format!("/api/v1/chat/{room}/"), &bob.token).await;
    assert_eq!(status, 200, "tokens survive too");
    assert_eq!(history["results"][0]["id"], sent["id"]);
    assert_eq!(history["results"][0]["content"], "remember me");
    // ids keep growing after the restart
    let (_, next) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &bob.token,
            json!({"content": "later"}),
        )
        .await;
    assert!(next["id"].as_i64() > sent["id"].as_i64());
}
