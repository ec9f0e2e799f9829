//! The bounds on what one user or one address can make the server hold (SECURITY.md, "Abuse
//! bounds"): each attack, bounded, against a real server, refused with the documented answer
//! and counted in /metrics.

use crate::common;

use common::{TestServer, TestUser, test_config};
use serde_json::{Value, json};

/// The value of `chat_refusals_total{limit="<limit>"}` in /metrics.
async fn refusals(s: &TestServer, limit: &str) -> u64 {
    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("chat_refusals_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
        .parse()
        .unwrap()
}

async fn signup(s: &TestServer, username: &str) -> (u16, Value, Option<String>) {
    let res = s
        .http
        .post(s.url("/api/v1/signup/"))
        .json(&json!({"username": username, "password": "a-long-password"}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, res.json().await.unwrap(), retry)
}

#[tokio::test]
async fn signups_from_one_address_are_rate_limited() {
    let mut config = test_config();
    config.limits.signups_per_ip_per_hour = 3;
    let s = TestServer::start_with(config).await;
    for i in 0..3 {
        let (status, body, _) = signup(&s, &format!("user{i}")).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body, retry) = signup(&s, "one-too-many").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    // One signup refills every 1200 s.
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=1200).contains(&retry), "Retry-After {retry}");
    // Nothing was created: the name is still free for the CLI or a later signup.
    let (_, page) = s
        .call(
            "POST",
            "/api/v1/login/",
            None,
            Some(json!({"username": "one-too-many", "password": "a-long-password"})),
        )
        .await;
    assert_eq!(page["error"]["code"], "invalid_credentials");
    assert_eq!(refusals(&s, "signups_per_ip").await, 1);
}

#[tokio::test]
async fn closed_signups_are_refused_and_create_nothing() {
    let mut config = test_config();
    config.auth.signup = chat_server::config::Signup::Closed;
    let s = TestServer::start_with(config).await;
    let (status, body, _) = signup(&s, "walk-in").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/login/",
            None,
            Some(json!({"username": "walk-in", "password": "a-long-password"})),
        )
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn socket_connects_are_rate_limited_per_user_and_per_address() {
    let mut config = test_config();
    config.limits.ws_connects_per_user_per_min = 3;
    config.limits.ws_connects_per_ip_per_min = 5;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    for _ in 0..3 {
        let (ws, _) = s.ws_all(&alice, "").await;
        drop(ws);
    }
    let (status, retry) = s.ws_refusal(&format!("/ws/?token={}", alice.token)).await;
    assert_eq!(status, 429);
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    assert_eq!(refusals(&s, "ws_connects_per_user").await, 1);
    // Bob has his own budget, but the address has one left (3 + 1 refused + 1 = 5).
    let (_ws, _) = s.ws_all(&bob, "").await;
    let (status, _) = s.ws_refusal(&format!("/ws/?token={}", bob.token)).await;
    assert_eq!(status, 429);
    assert_eq!(refusals(&s, "ws_connects_per_ip").await, 1);
}

/// One user connecting and closing a room socket in a loop: the others see them come online
/// once, and nothing more while they flap.
#[tokio::test]
async fn a_flapping_connection_costs_the_other_members_nothing() {
    let mut config = test_config();
    config.limits.presence_offline_delay_ms = 60_000;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let (mut watcher, _) = s.ws(&room, &bob, "").await;
    for _ in 0..20 {
        let (mut ws, _) = s.ws(&room, &alice, "").await;
        ws.socket.close(None).await.unwrap();
        ws.closed().await;
        // Her session has ended on the server: only bob's socket is left.
        s.until("alice's socket is gone", |st| st.connections.total() == 1)
            .await;
    }
    let (status, sent) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &alice.token,
            json!({"content": "done"}),
        )
        .await;
    assert_eq!(status, 201);
    let mut presence = Vec::new();
    loop {
        let frame = watcher.next_json().await;
        match frame["type"].as_str() {
            Some("presence") => presence.push(frame["online"].as_bool().unwrap()),
            Some("message") => {
                assert_eq!(frame["message"]["id"], sent["id"]);
                break;
            }
            _ => {}
        }
    }
    assert_eq!(
        presence,
        [true],
        "one arrival, no departures while she flapped"
    );
}

#[tokio::test]
async fn an_offline_is_announced_once_the_grace_period_is_over() {
    let mut config = test_config();
    config.limits.presence_offline_delay_ms = 50;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let (mut watcher, _) = s.ws(&room, &bob, "").await;
    let (ws, _) = s.ws(&room, &alice, "").await;
    let p = watcher.next_of("presence").await;
    assert_eq!(
        (p["user"]["id"].as_i64(), p["online"].as_bool()),
        (Some(alice.id), Some(true))
    );
    drop(ws);
    let p = watcher.next_of("presence").await;
    assert_eq!(
        (p["user"]["id"].as_i64(), p["online"].as_bool()),
        (Some(alice.id), Some(false))
    );
}

/// Sends `n` messages to `room` over REST; returns their ids.
async fn send_many(s: &TestServer, user: &TestUser, room: &str, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (status, m) = s
            .post(
                &format!("/api/v1/chat/{room}/"),
                &user.token,
                json!({"content": format!("m{i}")}),
            )
            .await;
        assert_eq!(status, 201, "{m}");
        ids.push(m["id"].as_i64().unwrap());
    }
    ids
}

/// A replay longer than `max_replay_messages` stops there with 4000; reconnecting with the
/// last id received goes on where it stopped, on room sockets and on `/ws/`.
#[tokio::test]
async fn a_replay_stops_at_its_cap_and_resumes_from_where_it_stopped() {
    let mut config = test_config();
    config.limits.max_replay_messages = 5;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let other = s.room(&alice, &[&bob], Some("other")).await;
    let mut sent = send_many(&s, &alice, &room, 8).await;
    sent.extend(send_many(&s, &alice, &other, 4).await);
    sent.sort();
    let in_room = sent[..8].to_vec();

    for all_rooms in [false, true] {
        let expected = if all_rooms { &sent } else { &in_room };
        let mut got = Vec::new();
        let mut since = 0;
        let mut closes = Vec::new();
        loop {
            let query = format!("&since={since}");
            let (mut ws, _) = if all_rooms {
                s.ws_all(&bob, &query).await
            } else {
                s.ws(&room, &bob, &query).await
            };
            let mut batch = Vec::new();
            if got.len() + 5 < expected.len() {
                let (frames, code) = ws.until_closed().await;
                closes.push(code);
                batch.extend(frames.iter().filter(|f| f["type"] == "message"));
                assert_eq!(batch.len(), 5, "a full replay before the close");
                got.extend(batch.iter().map(|f| f["message"]["id"].as_i64().unwrap()));
                since = *got.last().unwrap();
            } else {
                while got.len() < expected.len() {
                    got.push(
                        ws.next_of("message").await["message"]["id"]
                            .as_i64()
                            .unwrap(),
                    );
                }
                break;
            }
        }
        assert_eq!(&got, expected, "every message once, in order");
        assert!(closes.iter().all(|c| *c == Some(4000)), "{closes:?}");
    }
    assert!(refusals(&s, "max_replay_messages").await >= 3);
}

#[tokio::test]
async fn replays_past_the_per_user_cap_are_refused_with_429() {
    let mut config = test_config();
    config.limits.max_replays_per_user = 1;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let limits = s.state.config.limits.clone();
    let bob_id = chat_server::model::UserId(bob.id);
    // A replay of bob's is under way.
    let running = s.state.replays.start(bob_id, &limits).unwrap();
    let (status, retry) = s
        .ws_refusal(&format!("/ws/chat/{room}/?token={}&since=0", bob.token))
        .await;
    assert_eq!((status, retry.as_deref()), (429, Some("1")));
    // Without since there is nothing to replay, and alice's replays are hers.
    let (_live, _) = s.ws(&room, &bob, "").await;
    let (_alice, _) = s.ws(&room, &alice, "&since=0").await;
    drop(running);
    let (_resumed, _) = s.ws(&room, &bob, "&since=0").await;
    assert_eq!(refusals(&s, "max_replays_per_user").await, 1);
}
