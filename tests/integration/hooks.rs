//! Incoming webhooks: a member makes one and gets a secret URL; anything that can `curl`
//! posts into the room through it, as the hook's own bot. Hooks are listed without their
//! secrets, deleted by their creator or an admin, rate-limited like any sender, and end with
//! their creator's membership.

use serde_json::{Value, json};

use crate::common::{TestServer, TestUser, test_config};

/// Posts `body` to a hook URL with a content type; the status and the JSON answer.
async fn post_hook(s: &TestServer, url: &str, content_type: &str, body: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(s.url(url))
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn make_hook(s: &TestServer, room: &str, by: &TestUser, name: &str) -> (u16, Value) {
    s.post(
        &format!("/api/v1/chat/{room}/hooks/"),
        &by.token,
        json!({"name": name}),
    )
    .await
}

async fn history(s: &TestServer, room: &str, user: &TestUser) -> Vec<Value> {
    let (_, page) = s
        .get(&format!("/api/v1/chat/{room}/?after=0"), &user.token)
        .await;
    page["results"].as_array().unwrap().clone()
}

async fn members(s: &TestServer, room: &str, user: &TestUser) -> Vec<String> {
    let (_, rooms) = s.get("/api/v1/chats/", &user.token).await;
    let room = rooms
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_id"] == room)
        .unwrap();
    room["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["username"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_hook_posts_into_its_room_as_its_bot_from_json_or_plain_text() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], Some("builds")).await;
    let (mut bob_ws, _) = s.ws(&room, &bob, "").await;

    let (status, hook) = make_hook(&s, &room, &alice, "  CI  ").await;
    assert_eq!(status, 201, "{hook}");
    assert_eq!(hook["name"], "CI");
    assert_eq!(hook["creator_id"], alice.id);
    assert_eq!(hook["bot"]["is_bot"], true);
    assert_eq!(hook["bot"]["first_name"], "CI");
    let secret = hook["secret"].as_str().unwrap().to_string();
    let url = hook["url"].as_str().unwrap().to_string();
    assert_eq!(url, format!("/api/v1/hooks/{secret}/"));
    let bot_name = hook["bot"]["username"].as_str().unwrap().to_string();
    // The room hears its bot join, and lists it.
    let joined = bob_ws.next_of("member").await;
    assert_eq!(
        (&joined["user"]["username"], &joined["added"]),
        (&json!(bot_name), &json!(true))
    );
    assert!(members(&s, &room, &bob).await.contains(&bot_name));

    // JSON, as a script sends it ...
    let (status, m) = post_hook(
        &s,
        &url,
        "application/json",
        r#"{"content": "build 41 passed"}"#,
    )
    .await;
    assert_eq!(status, 201, "{m}");
    assert_eq!(
        (&m["sender"], &m["sender_id"]),
        (&json!(bot_name), &hook["bot"]["id"])
    );
    let heard = bob_ws.next_of("message").await;
    assert_eq!(heard["message"]["content"], "build 41 passed");
    // ... plain text, as `curl --data-binary @file -H 'Content-Type: text/plain'` sends it ...
    let (status, m) = post_hook(
        &s,
        &url,
        "text/plain; charset=utf-8",
        "build 42 failed\nsee the log",
    )
    .await;
    assert_eq!(status, 201, "{m}");
    assert_eq!(m["content"], "build 42 failed\nsee the log");
    // ... and a retried send with the same client_id is stored once.
    let body = r#"{"content": "deployed", "client_id": "deploy-7"}"#;
    assert_eq!(post_hook(&s, &url, "application/json", body).await.0, 201);
    assert_eq!(post_hook(&s, &url, "application/json", body).await.0, 200);
    assert_eq!(history(&s, &room, &bob).await.len(), 3);

    // Bad bodies are refused and store nothing; a secret that names no hook is a 404.
    for (content_type, body) in [
        ("application/json", r#"{"content": "   "}"#),
        ("application/json", r#"{"text": "x"}"#),
        ("application/json", "not json"),
        ("text/plain", ""),
    ] {
        let (status, reply) = post_hook(&s, &url, content_type, body).await;
        assert_eq!(status, 400, "{body}: {reply}");
    }
    let other = format!("/api/v1/hooks/{}/", "0".repeat(64));
    // Secrets are lower-case hex: the same one in capitals names no hook.
    let shouted = format!("/api/v1/hooks/{}/", secret.to_uppercase());
    for path in [other.as_str(), shouted.as_str(), "/api/v1/hooks/short/"] {
        let (status, _) = post_hook(&s, path, "application/json", r#"{"content": "x"}"#).await;
        assert_eq!(status, 404, "{path}");
    }
    assert_eq!(history(&s, &room, &bob).await.len(), 3);

    // Listed for members, never with its secret.
    let (status, listed) = s
        .get(&format!("/api/v1/chat/{room}/hooks/"), &bob.token)
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], hook["id"]);
    assert!(!listed.to_string().contains(&secret));
    let carol = s.user("carol").await;
    let (status, _) = s
        .get(&format!("/api/v1/chat/{room}/hooks/"), &carol.token)
        .await;
    assert_eq!(status, 404, "a non-member learns nothing");
    assert_eq!(make_hook(&s, &room, &carol, "x").await.0, 404);
    // The bot's account is not one anyone can log into.
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/login/",
            None,
            Some(json!({"username": bot_name, "password": secret})),
        )
        .await;
    assert_eq!(status, 401);

    // Only its creator or an admin deletes it; then it posts nothing and its bot has left.
    let delete = format!("/api/v1/chat/{room}/hooks/{}/", hook["id"]);
    assert_eq!(
        s.call("DELETE", &delete, Some(&bob.token), None).await.0,
        403
    );
    assert_eq!(
        s.call("DELETE", &delete, Some(&alice.token), None).await.0,
        204
    );
    let left = bob_ws.next_of("member").await;
    assert_eq!(
        (&left["user"]["username"], &left["added"]),
        (&json!(bot_name), &json!(false))
    );
    assert!(!members(&s, &room, &bob).await.contains(&bot_name));
    let (status, _) = post_hook(&s, &url, "text/plain", "still there?").await;
    assert_eq!(status, 404);
    assert_eq!(
        s.call("DELETE", &delete, Some(&alice.token), None).await.0,
        404
    );
}

#[tokio::test]
async fn hooks_end_with_their_creators_membership_and_are_bounded() {
    let mut config = test_config();
    config.limits.send_burst = 3;
    config.limits.send_rate_per_sec = 0.01;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], Some("team")).await;

    // Bob's hook ends when he leaves; alice's stays.
    let (_, bobs) = make_hook(&s, &room, &bob, "bob's").await;
    let (_, alices) = make_hook(&s, &room, &alice, "alice's").await;
    let bobs_url = bobs["url"].as_str().unwrap().to_string();
    let alices_url = alices["url"].as_str().unwrap().to_string();
    let leave = format!("/api/v1/chat/{room}/members/{}/", bob.id);
    assert_eq!(
        s.call("DELETE", &leave, Some(&bob.token), None).await.0,
        204
    );
    assert_eq!(post_hook(&s, &bobs_url, "text/plain", "x").await.0, 404);
    let names = members(&s, &room, &alice).await;
    assert!(!names.contains(&bobs["bot"]["username"].as_str().unwrap().to_string()));
    assert!(names.contains(&alices["bot"]["username"].as_str().unwrap().to_string()));
    let (_, listed) = s
        .get(&format!("/api/v1/chat/{room}/hooks/"), &alice.token)
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);

    // A deactivated creator's hook posts nothing, though the creator is still a member.
    let (_, second) = make_hook(&s, &room, &alice, "alice's second").await;
    let url = second["url"].as_str().unwrap().to_string();
    assert_eq!(post_hook(&s, &url, "text/plain", "before").await.0, 201);
    let set_active = |active: bool| {
        let id = alice.id;
        s.sqlite.write(move |c| {
            c.execute(
                "UPDATE users SET is_active = ?2 WHERE id = ?1",
                rusqlite::params![id, active],
            )?;
            Ok(())
        })
    };
    set_active(false).await.unwrap();
    assert_eq!(post_hook(&s, &url, "text/plain", "after").await.0, 404);
    set_active(true).await.unwrap();
    let delete = format!("/api/v1/chat/{room}/hooks/{}/", second["id"]);
    assert_eq!(
        s.call("DELETE", &delete, Some(&alice.token), None).await.0,
        204
    );

    // Removing a hook's bot ends the hook too.
    let kick = format!("/api/v1/chat/{room}/members/{}/", alices["bot"]["id"]);
    assert_eq!(
        s.call("DELETE", &kick, Some(&alice.token), None).await.0,
        204
    );
    assert_eq!(post_hook(&s, &alices_url, "text/plain", "x").await.0, 404);
    let (_, listed) = s
        .get(&format!("/api/v1/chat/{room}/hooks/"), &alice.token)
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 0);

    // A hook posts at most as fast as any sender: past the burst, 429 with Retry-After.
    let (_, hook) = make_hook(&s, &room, &alice, "noisy").await;
    let url = hook["url"].as_str().unwrap().to_string();
    let mut statuses = Vec::new();
    for i in 0..5 {
        statuses.push(post_hook(&s, &url, "text/plain", &format!("m{i}")).await.0);
    }
    assert_eq!(statuses, [201, 201, 201, 429, 429]);

    // No hooks in a direct room (its two members are all it has), and at most ten a room.
    let direct = s.room(&alice, &[&bob], None).await;
    assert_eq!(make_hook(&s, &direct, &alice, "x").await.0, 403);
    let mut made = 1;
    loop {
        let (status, body) = make_hook(&s, &room, &alice, &format!("h{made}")).await;
        if status != 201 {
            assert_eq!(status, 409, "{body}");
            break;
        }
        made += 1;
        assert!(made <= 10, "more hooks than a room may have");
    }
    assert_eq!(made, 10);
    // A blank or overlong name changes nothing.
    for name in ["", "   ", &"x".repeat(65)] {
        assert_eq!(make_hook(&s, &room, &alice, name).await.0, 400, "{name:?}");
    }
}
