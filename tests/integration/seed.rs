//! A client written for the seed, replayed against this server exactly as
//! `../shared/seed/WIRE.md` records the seed's own requests and what its code reads from the
//! answers: sign-up with `passwordTwo` (as JSON and as form data), the token at
//! `/api-token-auth/`, DRF's `detail` in errors, the read receipt at
//! `/api/messages/v1/<id>/update/`, its page's socket with `events=message` (every frame read
//! as `data.message.sender + ': ' + data.message.content`) and its page links. What stays
//! refused (an unauthenticated socket, a chosen `sender_id`) is checked too; `docs/MIGRATING.md`
//! lists every difference.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::common::{TestServer, Ws};

/// `POST` with a form body, as an HTML form or a DRF client's `data=` sends it.
async fn post_form(s: &TestServer, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(s.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

/// The seed page's socket: no `hello` is read, because none is asked for.
async fn seed_socket(s: &TestServer, room: &str, token: &str) -> Ws {
    let url = format!(
        "ws://{}/ws/chat/{room}/?token={token}&events=message",
        s.addr
    );
    let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    Ws { socket }
}

#[tokio::test]
async fn a_client_written_for_the_seed_signs_up_logs_in_chats_and_marks_read() {
    let s = TestServer::start().await;

    // Sign-up, the seed's body: all five fields, the second password as `passwordTwo`.
    let (status, alice) = s
        .call(
            "POST",
            "/api/v1/signup/",
            None,
            Some(
                json!({"first_name": "Alice", "last_name": "Liddell", "username": "alice",
                        "password": "wonderland-42", "passwordTwo": "wonderland-42"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{alice}");
    // What the seed answers, and so what its client reads.
    assert_eq!(
        (
            &alice["first_name"],
            &alice["last_name"],
            &alice["username"]
        ),
        (&json!("Alice"), &json!("Liddell"), &json!("alice"))
    );
    // The same as form data.
    let (status, bob) = post_form(
        &s,
        "/api/v1/signup/",
        &[
            ("first_name", "Bob"),
            ("last_name", "Builder"),
            ("username", "bob"),
            ("password", "builder-4242"),
            ("passwordTwo", "builder-4242"),
        ],
    )
    .await;
    assert_eq!(status, 201, "{bob}");
    assert_eq!(bob["username"], "bob");
    // JSON labelled as a form, as `curl -d '{...}'` sends it, is still JSON.
    let res = reqwest::Client::new()
        .post(s.url("/api/v1/login/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#" {"username": "bob", "password": "builder-4242"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    // Passwords that differ are a field error, and a DRF client finds a message in `detail`.
    let (status, refused) = s
        .call(
            "POST",
            "/api/v1/signup/",
            None,
            Some(
                json!({"first_name": "C", "last_name": "D", "username": "carol",
                        "password": "carol-pw-1234", "passwordTwo": "carol-pw-9999"}),
            ),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(
        refused["error"]["fields"]["password2"],
        "passwords do not match"
    );
    assert!(refused["detail"].as_str().is_some_and(|d| !d.is_empty()));
    // Both names at once: each must match.
    let (status, both) = s
        .call(
            "POST",
            "/api/v1/signup/",
            None,
            Some(json!({"username": "carol", "password": "carol-pw-1234",
                        "password2": "carol-pw-1234", "passwordTwo": "carol-pw-9999"})),
        )
        .await;
    assert_eq!(status, 400, "{both}");
    assert_eq!(
        both["error"]["fields"]["password2"],
        "passwords do not match"
    );
    let (status, nobody) = s
        .call("GET", "/api/v1/users/?search=carol", None, None)
        .await;
    assert_eq!(status, 401);
    assert!(nobody["detail"].is_string());

    // Log-in: the seed's client reads `token`.
    let (status, login) = s
        .call(
            "POST",
            "/api/v1/login/",
            None,
            Some(json!({"username": "alice", "password": "wonderland-42"})),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let alice_token = login["token"].as_str().unwrap().to_string();
    // Bad credentials: 401, the scheme named, `detail` for the client to show.
    let res = reqwest::Client::new()
        .post(s.url("/api/v1/login/"))
        .json(&json!({"username": "alice", "password": "wrong-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Token");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["detail"], body["error"]["message"]);
    // The token at the root, as the seed served it: `access` goes back as a bearer token.
    let (status, obtained) = post_form(
        &s,
        "/api-token-auth/",
        &[("username", "bob"), ("password", "builder-4242")],
    )
    .await;
    assert_eq!(status, 200, "{obtained}");
    let bob_token = obtained["access"].as_str().unwrap().to_string();
    let res = reqwest::Client::new()
        .get(s.url("/api/v1/me/"))
        .header("Authorization", format!("Bearer {bob_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["username"], "bob");

    // The directory and a room, with the seed's request body.
    let (status, users) = s.get("/api/v1/users/?limit=10", &alice_token).await;
    assert_eq!(status, 200);
    let bob_id = users["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "bob")
        .unwrap()["id"]
        .clone();
    let (status, room) = s
        .post(
            "/api/v1/chats/",
            &alice_token,
            json!({ "members": [bob_id] }),
        )
        .await;
    assert!(status == 200 || status == 201, "{room}");
    let room_id = room["room_id"].as_str().unwrap().to_string();
    let (_, rooms) = s.get("/api/v1/chats/", &bob_token).await;
    assert_eq!(rooms[0]["room_id"], room_id.as_str());

    // The seed's page opens the room's socket asking for messages only, and sends what the
    // seed's page sends: its own `sender_id` and `room_id` beside the content.
    let mut alice_ws = seed_socket(&s, &room_id, &alice_token).await;
    let mut bob_ws = seed_socket(&s, &room_id, &bob_token).await;
    let alice_id = me_id(&s, &alice_token).await;
    alice_ws
        .send_json(json!({"action": "message", "content": "Hi Bob!",
                          "sender_id": alice_id.to_string(), "room_id": room_id}))
        .await;
    // A `sender_id` naming someone else changes nothing: the message is the sender's own.
    alice_ws
        .send_json(json!({"action": "message", "content": "Still me",
                          "sender_id": bob_id.to_string(), "room_id": room_id}))
        .await;
    for ws in [&mut alice_ws, &mut bob_ws] {
        // Every frame holds a `message`, as the seed's page reads every frame: no `hello`,
        // no presence of the other socket came first.
        let lines: Vec<String> = [ws.next_json().await, ws.next_json().await]
            .iter()
            .map(|data| {
                assert_eq!(data["type"], "message", "{data}");
                format!(
                    "{}: {}",
                    data["message"]["sender"].as_str().unwrap(),
                    data["message"]["content"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(lines, ["alice: Hi Bob!", "alice: Still me"]);
    }

    // The read receipt at the seed's path, without a body.
    let (_, history) = s.get(&format!("/api/v1/chat/{room_id}/"), &bob_token).await;
    let newest = history["results"][0]["id"].as_i64().unwrap();
    assert_eq!(history["results"][0]["is_read"], false);
    let (status, marked) = s
        .call(
            "PATCH",
            &format!("/api/messages/v1/{newest}/update/"),
            Some(&bob_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{marked}");
    assert_eq!(marked["message"], "Message updated successfully.");
    let (_, history) = s
        .get(&format!("/api/v1/chat/{room_id}/"), &alice_token)
        .await;
    assert_eq!(history["results"][0]["is_read"], true);
    // A read mark is a `read` frame, which these sockets did not ask for: the next frame
    // either of them gets is the next message.
    s.post(
        &format!("/api/v1/chat/{room_id}/"),
        &bob_token,
        json!({"content": "Read it."}),
    )
    .await;
    let next = alice_ws.next_json().await;
    assert_eq!(
        (&next["type"], &next["message"]["content"]),
        (&json!("message"), &json!("Read it."))
    );

    // A socket without a token stays refused, as does an unknown kind of frame to ask for.
    assert_eq!(
        s.ws_refused(&format!("/ws/chat/{room_id}/"), &[]).await,
        401
    );
    assert_eq!(
        s.ws_refused(
            &format!("/ws/chat/{room_id}/?token={alice_token}&events=message,shout"),
            &[]
        )
        .await,
        400
    );

    // The seed's page links open the web client: the room list, and the room.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (path, to) in [
        ("/chats/".to_string(), "/".to_string()),
        (format!("/chat/{room_id}/"), format!("/#/c/{room_id}")),
    ] {
        let res = no_redirects.get(s.url(&path)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 302, "{path}");
        assert_eq!(res.headers()["location"], to.as_str(), "{path}");
    }
    let res = no_redirects
        .get(s.url("/chat/not%20a%20room/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    s.stop().await;
}

/// The caller's user id, from `/api/v1/me/`.
async fn me_id(s: &TestServer, token: &str) -> i64 {
    s.get("/api/v1/me/", token).await.1["id"].as_i64().unwrap()
}

/// A socket that asked for some kinds of frame gets no others, on `/ws/` too: with
/// `events=read`, a message and a typing notice in between are not sent, the read mark is.
#[tokio::test]
async fn a_socket_gets_only_the_kinds_of_frame_it_asked_for() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let url = format!("ws://{}/ws/?token={}&events=read", s.addr, alice.token);
    let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut only_reads = Ws { socket };
    let (mut bob_ws, _) = s.ws(&room, &bob, "").await;
    bob_ws
        .send_json(json!({"action": "typing", "typing": true}))
        .await;
    let sent = bob_ws.say("hello", "b-1").await;
    let (status, _) = s
        .call(
            "PATCH",
            &format!("/api/v1/messages/{}/update/", sent["id"]),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    // A ping is answered with a pong frame, which this socket did not ask for either; the
    // first frame it gets is the read mark.
    only_reads
        .socket
        .send(WsMessage::text(json!({"action": "ping"}).to_string()))
        .await
        .unwrap();
    let first = only_reads.next_json().await;
    assert_eq!(first["type"], "read", "{first}");
    assert_eq!(first["message_id"], sent["id"]);
    assert_eq!(first["user_id"], alice.id);
    // Nothing else was queued before it, and nothing else follows.
    only_reads.socket.close(None).await.unwrap();
    while let Some(Ok(frame)) = only_reads.socket.next().await {
        assert!(!frame.is_text(), "unexpected frame {frame:?}");
    }
    s.stop().await;
}
