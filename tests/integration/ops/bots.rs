//! Bots: `chat-server bot create` makes an account for a program, with a token that does not
//! expire and no password; it joins rooms and talks over REST and `/ws/` like anyone, and is
//! shown as a bot wherever its user is. `bot token` replaces the token; `user deactivate` ends it.

use serde_json::{Value, json};

use super::*;
use crate::common::{TestServer, TestUser};

#[tokio::test]
async fn a_bot_made_on_the_command_line_talks_with_its_token_and_is_marked_a_bot() {
    let setup = AdminSetup::start().await;
    let s = &setup.server;
    let args = |rest: &[&str]| setup.args(rest);

    let (ok, stdout, stderr) = admin_async(
        args(&["bot", "create", "deploy-bot", "--display-name", "Deploys"]),
        None,
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("created bot deploy-bot"), "{stdout}");
    let token = stdout.trim().rsplit(' ').next().unwrap().to_string();
    let (status, me) = s.get("/api/v1/me/", &token).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (&me["username"], &me["is_bot"]),
        (&json!("deploy-bot"), &json!(true))
    );
    assert_eq!(me["first_name"], "Deploys");
    // Its token does not expire (for any practical purpose).
    let (_, sessions) = s.get("/api/v1/tokens/", &token).await;
    assert_eq!(sessions[0]["expires_at"], "9999-12-31T23:59:59.999Z");
    // It has no password: nothing logs it in.
    for password in ["!", "", "deploy-bot", "password"] {
        let (status, _) = s
            .call(
                "POST",
                "/api/v1/login/",
                None,
                Some(json!({"username": "deploy-bot", "password": password})),
            )
            .await;
        assert_eq!(status, 401, "{password:?}");
    }

    // A person puts it in a room; it posts over REST and hears and answers over /ws/.
    let alice = s.user("alice").await;
    assert!(!alice_is_bot(s, &alice).await, "a person is not a bot");
    let bot = TestUser {
        id: me["id"].as_i64().unwrap(),
        username: "deploy-bot".into(),
        token: token.clone(),
    };
    let room = s.room(&alice, &[&bot], Some("ops")).await;
    let (_, rooms) = s.get("/api/v1/chats/", &alice.token).await;
    let members = rooms[0]["members"].as_array().unwrap();
    let listed = members
        .iter()
        .find(|m| m["username"] == "deploy-bot")
        .unwrap();
    assert_eq!(listed["is_bot"], true);
    let (status, posted) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &token,
            json!({"content": "deployed v2"}),
        )
        .await;
    assert_eq!(status, 201, "{posted}");
    let (mut bot_ws, _) = s.ws_all(&bot, "").await;
    let (_, said) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &alice.token,
            json!({"content": "@deploy-bot status?"}),
        )
        .await;
    let heard = bot_ws.next_of("message").await;
    assert_eq!(heard["message"]["id"], said["id"]);
    bot_ws
        .send_json(json!({"action": "message", "room_id": room, "content": "all green", "client_id": "r1"}))
        .await;
    let answer = bot_ws.next_of("message").await;
    assert_eq!(answer["message"]["sender"], "deploy-bot");
    let (_, page) = s.get(&format!("/api/v1/chat/{room}/"), &alice.token).await;
    assert_eq!(page["results"][0]["content"], "all green");

    // A new token revokes the old one at once, and the socket opened with it closes with
    // "log in again" though the revocation came from another process.
    let (ok, stdout, stderr) = admin_async(args(&["bot", "token", "deploy-bot"]), None).await;
    assert!(ok, "{stderr}");
    let new_token = stdout.trim().rsplit(' ').next().unwrap().to_string();
    assert_eq!(s.get("/api/v1/me/", &token).await.0, 401);
    assert_eq!(bot_ws.closed().await, Some(4001));
    assert_eq!(s.get("/api/v1/me/", &new_token).await.0, 200);
    // Only bots get tokens this way; a person logs in with a password.
    let (ok, _, stderr) = admin_async(args(&["bot", "token", "alice"]), None).await;
    assert!(!ok && stderr.contains("not an active bot"), "{stderr}");
    let (ok, _, stderr) = admin_async(args(&["bot", "create", "Deploy-Bot"]), None).await;
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
    let long = "x".repeat(151);
    let (ok, _, stderr) = admin_async(
        args(&["bot", "create", "verbose", "--display-name", &long]),
        None,
    )
    .await;
    assert!(!ok && stderr.contains("at most 150"), "{stderr}");
    // Nor can a bot be given a password.
    let (ok, _, stderr) = admin_async(
        args(&["user", "set-password", "deploy-bot", "--password-stdin"]),
        Some("a-long-password\n".into()),
    )
    .await;
    assert!(!ok && stderr.contains("a bot has no password"), "{stderr}");
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/login/",
            None,
            Some(json!({"username": "deploy-bot", "password": "a-long-password"})),
        )
        .await;
    assert_eq!(status, 401);

    // Deactivating the bot ends its token, and a deactivated bot gets no new one.
    let (ok, _, _) = admin_async(args(&["user", "deactivate", "deploy-bot"]), None).await;
    assert!(ok);
    assert_eq!(s.get("/api/v1/me/", &new_token).await.0, 401);
    let (ok, _, stderr) = admin_async(args(&["bot", "token", "deploy-bot"]), None).await;
    assert!(!ok && stderr.contains("not an active bot"), "{stderr}");
}

async fn alice_is_bot(s: &TestServer, alice: &TestUser) -> bool {
    let (_, me): (u16, Value) = s.get("/api/v1/me/", &alice.token).await;
    me["is_bot"].as_bool().unwrap()
}

#[tokio::test]
async fn a_person_makes_bots_over_the_api_gives_them_new_tokens_and_deactivates_them() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let (status, made) = s
        .post(
            "/api/v1/bots/",
            &alice.token,
            json!({"username": "standup", "first_name": "Standup"}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(
        (&made["bot"]["is_bot"], &made["bot"]["first_name"]),
        (&json!(true), &json!("Standup"))
    );
    let bot_id = made["bot"]["id"].as_i64().unwrap();
    let token = made["token"].as_str().unwrap().to_string();
    let (status, me) = s.get("/api/v1/me/", &token).await;
    assert_eq!((status, &me["username"]), (200, &json!("standup")));
    let (_, mine) = s.get("/api/v1/bots/", &alice.token).await;
    assert_eq!(mine.as_array().unwrap().len(), 1);
    let (_, theirs) = s.get("/api/v1/bots/", &bob.token).await;
    assert_eq!(theirs, json!([]));

    // The usual username rules, and no bots made by bots.
    let (status, body) = s
        .post("/api/v1/bots/", &alice.token, json!({"username": "Alice"}))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = s
        .post(
            "/api/v1/bots/",
            &alice.token,
            json!({"username": "no spaces"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = s
        .post("/api/v1/bots/", &token, json!({"username": "botception"}))
        .await;
    assert_eq!(status, 403);

    // A new token: the old one stops at once, and its socket closes with "log in again".
    let bot = TestUser {
        id: bot_id,
        username: "standup".into(),
        token: token.clone(),
    };
    let (mut ws, _) = s.ws_all(&bot, "").await;
    let path = format!("/api/v1/bots/{bot_id}/token/");
    assert_eq!(
        s.post(&path, &bob.token, json!({})).await.0,
        404,
        "not bob's bot"
    );
    let (status, fresh) = s.post(&path, &alice.token, json!({})).await;
    assert_eq!(status, 201);
    assert_eq!(ws.closed().await, Some(4001));
    assert_eq!(s.get("/api/v1/me/", &token).await.0, 401);
    let fresh = fresh["token"].as_str().unwrap().to_string();
    assert_eq!(s.get("/api/v1/me/", &fresh).await.0, 200);

    // Deactivated by its owner only: then nothing of it works.
    let path = format!("/api/v1/bots/{bot_id}/");
    assert_eq!(s.call("DELETE", &path, Some(&bob.token), None).await.0, 404);
    assert_eq!(
        s.call("DELETE", &path, Some(&alice.token), None).await.0,
        204
    );
    assert_eq!(s.get("/api/v1/me/", &fresh).await.0, 401);
    let (_, mine) = s.get("/api/v1/bots/", &alice.token).await;
    assert_eq!(mine, json!([]));
    assert_eq!(
        s.call("DELETE", &path, Some(&alice.token), None).await.0,
        404
    );

    // At most ten at a time.
    for i in 0..10 {
        let (status, body) = s
            .post(
                "/api/v1/bots/",
                &alice.token,
                json!({"username": format!("b{i}")}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, _) = s
        .post("/api/v1/bots/", &alice.token, json!({"username": "b10"}))
        .await;
    assert_eq!(status, 409);
}
