//! The bounds on what one user or one address can make the server hold (SECURITY.md, "Abuse
//! bounds"): each attack, bounded, against a real server, refused with the documented answer
//! and counted in /metrics.

use crate::common;

use common::{TestServer, TestUser, test_config};
use serde_json::{Value, json};

/// The value of `chat_refusals_total{limit="<limit>"}` in /metrics, asked from an address of
/// its own (the tests' usual address may be at its connection cap).
async fn refusals(s: &TestServer, limit: &str) -> u64 {
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 99]))
        .build()
        .unwrap();
    let text = client
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
    // To someone arriving now she is online too: nobody has been told she left.
    let (_, hello) = s.ws(&room, &bob, "").await;
    let mut online: Vec<i64> = hello["online"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    online.sort();
    assert_eq!(online, [alice.id, bob.id]);
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

/// `GET /api/v1/chats/` with its `Link` header.
async fn rooms_page(s: &TestServer, user: &TestUser, query: &str) -> (u16, Value, Option<String>) {
    let res = s
        .http
        .get(s.url(&format!("/api/v1/chats/{query}")))
        .header("Authorization", format!("Token {}", user.token))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let link = res
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_string());
    (status, res.json().await.unwrap(), link)
}

fn room_ids(page: &Value) -> Vec<String> {
    page.as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_room_list_is_paged_by_cursor_newest_first() {
    let mut config = test_config();
    config.limits.rooms_page_default = 3;
    config.limits.rooms_page_max = 4;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let mut made = Vec::new();
    for i in 0..7 {
        made.push(s.room(&alice, &[&bob], Some(&format!("g{i}"))).await);
    }
    // Activity a second apart, the last made the most recent (two rooms made within the same
    // millisecond would otherwise tie, and a tie is broken by the random room id).
    for (i, room) in made.iter().enumerate() {
        let (room, at) = (room.clone(), 1_700_000_000_000i64 + 1000 * i as i64);
        s.sqlite
            .write(move |c| {
                c.execute(
                    "UPDATE rooms SET last_activity = ?2 WHERE public_id = ?1",
                    rusqlite::params![room, at],
                )?;
                Ok(())
            })
            .await
            .unwrap();
    }
    made.reverse();

    // No parameters: today's shape, an array, holding the first page.
    let (status, first, mut link) = rooms_page(&s, &bob, "").await;
    assert_eq!(status, 200);
    assert_eq!(room_ids(&first), made[..3]);
    let mut seen = room_ids(&first);
    while let Some(next) = link {
        let url = next
            .strip_prefix('<')
            .and_then(|l| l.split_once(">; rel=\"next\""))
            .map(|(url, _)| url.to_string())
            .unwrap_or_else(|| panic!("a next link: {next}"));
        let path = url.strip_prefix("/api/v1/chats/").unwrap();
        let (status, page, following) = rooms_page(&s, &bob, path).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(room_ids(&page));
        link = following;
    }
    assert_eq!(seen, made, "every room once, newest activity first");

    // A page never holds more than rooms_page_max.
    let (_, big, link) = rooms_page(&s, &bob, "?limit=100").await;
    assert_eq!(room_ids(&big), made[..4]);
    assert!(link.unwrap().contains("limit=4"));
    for bad in [
        "?before=nonsense",
        "?before=12.",
        "?before=x.abc",
        "?limit=-1",
        "?limit=0",
    ] {
        let (status, body, _) = rooms_page(&s, &bob, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "validation_error", "{bad}");
    }
}

#[tokio::test]
async fn room_creation_is_rate_limited_but_finding_a_direct_room_is_free() {
    let mut config = test_config();
    config.limits.rooms_created_per_user_per_hour = 2;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let direct = s.room(&alice, &[&bob], None).await;
    s.room(&alice, &[&bob], Some("one")).await;
    for _ in 0..5 {
        let (status, room) = s
            .post("/api/v1/chats/", &alice.token, json!({"members": [bob.id]}))
            .await;
        assert_eq!(
            (status, room["room_id"].as_str()),
            (200, Some(direct.as_str()))
        );
    }
    let res = s
        .http
        .post(s.url("/api/v1/chats/"))
        .header("Authorization", format!("Token {}", alice.token))
        .json(&json!({"members": [bob.id], "name": "two"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    assert!(res.headers().get("retry-after").is_some());
    let (_, rooms, _) = rooms_page(&s, &alice, "").await;
    assert_eq!(
        rooms.as_array().unwrap().len(),
        2,
        "the refused room was not made"
    );
    assert_eq!(refusals(&s, "rooms_created_per_user").await, 1);
}

#[tokio::test]
async fn one_user_cannot_fill_anothers_room_list_and_the_victim_can_leave() {
    let mut config = test_config();
    config.limits.max_rooms_added_by_one_user = 2;
    let s = TestServer::start_with(config).await;
    let mallory = s.user("mallory").await;
    let victim = s.user("victim").await;
    let carol = s.user("carol").await;
    let first = s.room(&mallory, &[&victim], Some("spam 1")).await;
    s.room(&mallory, &[&victim], Some("spam 2")).await;
    let (status, body) = s
        .post(
            "/api/v1/chats/",
            &mallory.token,
            json!({"members": [victim.id], "name": "spam 3"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    // Nor through an existing room.
    let group = s.room(&mallory, &[&carol], Some("carol's")).await;
    let (status, _) = s
        .post(
            &format!("/api/v1/chat/{group}/members/"),
            &mallory.token,
            json!({"user_id": victim.id}),
        )
        .await;
    assert_eq!(status, 403);
    // Others still can.
    s.room(&carol, &[&victim], Some("friends")).await;
    assert_eq!(refusals(&s, "max_rooms_added_by_one_user").await, 2);

    // The victim leaves one of mallory's rooms: it is gone from their list, and the cap
    // counts only the rooms they are still in.
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/api/v1/chat/{first}/members/{}/", victim.id),
            Some(&victim.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (_, list, _) = rooms_page(&s, &victim, "").await;
    assert!(!room_ids(&list).contains(&first));
    s.room(&mallory, &[&victim], Some("spam 3")).await;
}

#[tokio::test]
async fn a_direct_room_can_be_declined_and_taken_back_only_by_the_one_who_left() {
    let s = TestServer::start().await;
    let mallory = s.user("mallory").await;
    let victim = s.user("victim").await;
    let direct = s.room(&mallory, &[&victim], None).await;
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/api/v1/chat/{direct}/members/{}/", victim.id),
            Some(&victim.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    // Asking for the pair's room again finds the declined one: the victim is not put back.
    let (status, room) = s
        .post(
            "/api/v1/chats/",
            &mallory.token,
            json!({"members": [victim.id]}),
        )
        .await;
    assert_eq!(
        (status, room["room_id"].as_str()),
        (200, Some(direct.as_str()))
    );
    let members: Vec<i64> = room["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(members, [mallory.id]);
    let (status, _) = s
        .get(&format!("/api/v1/chat/{direct}/"), &victim.token)
        .await;
    assert_eq!(status, 404, "the victim no longer sees it");
    // Mallory cannot remove the other member of a direct room, only leave it.
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/api/v1/chat/{direct}/members/{}/", victim.id),
            Some(&mallory.token),
            None,
        )
        .await;
    assert_eq!(status, 404, "victim is not a member any more");
    // The victim changes their mind.
    let (status, room) = s
        .post(
            "/api/v1/chats/",
            &victim.token,
            json!({"members": [mallory.id]}),
        )
        .await;
    assert_eq!(
        (status, room["room_id"].as_str()),
        (201, Some(direct.as_str()))
    );
    assert_eq!(room["members"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn nobody_is_put_in_more_rooms_than_the_cap() {
    let mut config = test_config();
    config.limits.max_rooms_per_user = 2;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    s.room(&alice, &[&bob], Some("one")).await;
    s.room(&carol, &[&bob], Some("two")).await;
    // Bob is full: nobody can put him in a third room, and he cannot make one.
    let (status, body) = s
        .post(
            "/api/v1/chats/",
            &alice.token,
            json!({"members": [bob.id, carol.id], "name": "three"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    let (status, _) = s
        .post(
            "/api/v1/chats/",
            &bob.token,
            json!({"members": [carol.id], "name": "mine"}),
        )
        .await;
    assert_eq!(status, 409);
    let (_, list, _) = rooms_page(&s, &bob, "").await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(refusals(&s, "max_rooms_per_user").await, 2);
}

/// A keep-alive HTTP connection from `source`, speaking raw HTTP/1.1.
struct Raw {
    stream: tokio::net::TcpStream,
}

impl Raw {
    async fn connect(s: &TestServer, source: [u8; 4]) -> Raw {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from((source, 0)))
            .unwrap();
        Raw {
            stream: socket.connect(s.addr).await.unwrap(),
        }
    }

    /// Reads one response: its status, or `None` if the server closed the connection.
    async fn response(&mut self) -> Option<u16> {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("content-length: ")
                            .or(l.strip_prefix("Content-Length: "))
                    })
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= end + 4 + length {
                    return head.split(' ').nth(1).map(|s| s.parse().unwrap());
                }
            }
            let n = tokio::time::timeout(common::WAIT, self.stream.read(&mut chunk))
                .await
                .expect("timed out reading a response")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends `GET /healthz` and reads the answer.
    async fn get(&mut self) -> Option<u16> {
        use tokio::io::AsyncWriteExt;
        let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        if self.stream.write_all(request).await.is_err() {
            return None;
        }
        self.response().await
    }
}

/// A WebSocket to `path_and_query` from the address `source`, with its `hello` read.
async fn ws_from(s: &TestServer, source: [u8; 4], path_and_query: &str) -> common::Ws {
    let raw = Raw::connect(s, source).await;
    let url = format!("ws://{}{path_and_query}", s.addr);
    let (socket, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(raw.stream))
            .await
            .expect("ws connect");
    let mut ws = common::Ws { socket };
    assert_eq!(ws.next_json().await["type"], "hello");
    ws
}

#[tokio::test]
async fn one_address_gets_its_share_of_connections_and_others_get_in() {
    let mut config = test_config();
    config.limits.max_tcp_connections_per_ip = 2;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let all = format!("/ws/?token={}", alice.token);
    // Two sockets from one address: its share, and neither is idle.
    let mut held = vec![
        ws_from(&s, [127, 0, 0, 7], &all).await,
        ws_from(&s, [127, 0, 0, 7], &all).await,
    ];
    // A third from the same address is answered 429 before its request is read, and closed.
    let mut third = Raw::connect(&s, [127, 0, 0, 7]).await;
    assert_eq!(third.response().await, Some(429));
    assert_eq!(third.response().await, None, "and closed");
    // Another address is not affected, and the held ones still work.
    let mut other = Raw::connect(&s, [127, 0, 0, 8]).await;
    assert_eq!(other.get().await, Some(200));
    for ws in &mut held {
        ws.send_json(json!({"action": "ping"})).await;
        ws.next_of("pong").await;
    }
    // At its share with an idle keep-alive, an address's new connection takes that one's place.
    let mut second = Raw::connect(&s, [127, 0, 0, 8]).await;
    assert_eq!(second.get().await, Some(200));
    let mut newest = Raw::connect(&s, [127, 0, 0, 8]).await;
    assert_eq!(newest.get().await, Some(200));
    // Closed by the server: reading it, without asking anything, ends (a request sent now
    // could still race the close).
    assert_eq!(
        other.response().await,
        None,
        "the address's longest idle was closed"
    );
    assert_eq!(second.get().await, Some(200));
    assert_eq!(refusals(&s, "max_tcp_connections_per_ip").await, 1);
}

#[tokio::test]
async fn at_the_connection_cap_the_longest_idle_keep_alive_makes_room() {
    let mut config = test_config();
    config.limits.max_tcp_connections = 3;
    config.limits.max_tcp_connections_per_ip = 3;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    // The client's own pool may hold a connection of the signup; it is idle and is shed first.
    let mut oldest = Raw::connect(&s, [127, 0, 0, 2]).await;
    assert_eq!(oldest.get().await, Some(200));
    let (mut socket, _) = s.ws_all(&alice, "").await;
    let mut newer = Raw::connect(&s, [127, 0, 0, 3]).await;
    assert_eq!(newer.get().await, Some(200));
    // Full (the test client's pooled connection may be one of the three): each new connection
    // closes the connection idle longest, never the WebSocket.
    for _ in 0..2 {
        let mut fresh = Raw::connect(&s, [127, 0, 0, 4]).await;
        assert_eq!(fresh.get().await, Some(200));
    }
    assert_eq!(oldest.response().await, None, "the longest idle was closed");
    socket.send_json(json!({"action": "ping"})).await;
    assert_eq!(
        socket.next_of("pong").await["type"],
        "pong",
        "the WebSocket lives on"
    );
    assert!(refusals(&s, "idle_connection_shed").await >= 1);
}

#[tokio::test]
async fn with_nothing_idle_a_new_connection_is_refused_and_the_soft_descriptor_limit_is_raised() {
    let mut config = test_config();
    config.limits.max_tcp_connections = 2;
    config.limits.max_tcp_connections_per_ip = 2;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    // Two WebSockets fill the server (the signup's connection is shed for the second).
    let (mut one, _) = s.ws_all(&alice, "").await;
    let (_two, _) = s.ws_all(&alice, "").await;
    let mut refused = Raw::connect(&s, [127, 0, 0, 5]).await;
    assert_eq!(refused.response().await, Some(429));
    one.send_json(json!({"action": "ping"})).await;
    one.next_of("pong").await;
    drop(one);
    s.until("a socket is gone", |st| st.connections.total() < 2)
        .await;
    assert!(refusals(&s, "max_tcp_connections").await >= 1);

    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed to it.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    assert_eq!(
        limit.rlim_cur, limit.rlim_max,
        "the soft limit is raised to the hard one"
    );
}
