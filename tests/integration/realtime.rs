//! The real-time guarantees: resume without gaps or duplicates, idempotent sends, presence,
//! typing, live receipts, membership changes, the all-rooms socket and slow consumers.

use crate::common;

use std::collections::HashSet;

use common::{TestServer, TestUser, Ws, test_config};
use serde_json::{Value, json};

/// A server whose send rate limit does not get in the way of load.
async fn fast_server() -> TestServer {
    let mut config = test_config();
    config.limits.send_rate_per_sec = 100_000.0;
    config.limits.send_burst = 100_000;
    TestServer::start_with(config).await
}

async fn pair(s: &TestServer) -> (TestUser, TestUser, String) {
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    (alice, bob, room)
}

fn id(v: &Value) -> i64 {
    v["message"]["id"].as_i64().unwrap()
}

#[tokio::test]
async fn clients_reconnecting_mid_stream_see_every_message_exactly_once_in_order() {
    let s = fast_server().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let dave = s.user("dave").await;
    let room = s.room(&alice, &[&bob, &carol, &dave], Some("busy")).await;
    const PER_SENDER: usize = 150;
    const TOTAL: usize = 2 * PER_SENDER;

    // Two senders post concurrently, one over REST and one over a WebSocket.
    let rest = {
        let (http, url, token) = (
            s.http.clone(),
            s.url(&format!("/api/v1/chat/{room}/")),
            alice.token.clone(),
        );
        tokio::spawn(async move {
            for i in 0..PER_SENDER {
                let res = http
                    .post(&url)
                    .header("Authorization", format!("Token {token}"))
                    .json(&json!({"content": format!("rest {i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 201);
            }
        })
    };
    let (mut ws_sender, _) = s.ws(&room, &bob, "").await;
    let ws_task = tokio::spawn(async move {
        for i in 0..PER_SENDER {
            ws_sender.say(&format!("ws {i}"), &format!("w{i}")).await;
        }
    });

    // Three readers read in short bursts of different lengths, reconnecting with since= each
    // time: two on the room socket, one on the all-rooms socket.
    let reader = |user: TestUser, all_rooms: bool, burst: usize| {
        let s = &s;
        let room = room.clone();
        async move {
            let mut seen: Vec<i64> = Vec::new();
            let mut reconnects = 0;
            while seen.len() < TOTAL {
                let since = format!("&since={}", seen.last().copied().unwrap_or(0));
                let (mut ws, _) = if all_rooms {
                    s.ws_all(&user, &since).await
                } else {
                    s.ws(&room, &user, &since).await
                };
                reconnects += 1;
                for _ in 0..(burst + reconnects % 5) {
                    seen.push(id(&ws.next_of("message").await));
                    if seen.len() == TOTAL {
                        break;
                    }
                }
            }
            assert!(
                reconnects > 10,
                "{} reconnected {reconnects} times",
                user.username
            );
            seen
        }
    };
    let readers = futures_util::future::join_all([
        reader(alice.clone(), false, 5),
        reader(carol.clone(), false, 13),
        reader(dave.clone(), true, 9),
    ])
    .await;
    rest.await.unwrap();
    ws_task.await.unwrap();

    let mut stored: Vec<i64> = Vec::new();
    let mut after = 0;
    loop {
        let (_, page) = s
            .get(
                &format!("/api/v1/chat/{room}/?limit=200&after={after}"),
                &alice.token,
            )
            .await;
        let ids: Vec<i64> = page["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_i64().unwrap())
            .collect();
        stored.extend(&ids);
        match ids.last() {
            Some(last) if page["has_more"] == true => after = *last,
            _ => break,
        }
    }
    assert_eq!(stored.len(), TOTAL);
    for seen in readers {
        assert_eq!(
            seen, stored,
            "every stored message seen exactly once, in order"
        );
    }
}

#[tokio::test]
async fn resending_a_client_id_over_websocket_returns_the_original() {
    let s = TestServer::start().await;
    let (alice, bob, room) = pair(&s).await;
    let (mut a, _) = s.ws(&room, &alice, "").await;
    let (mut b, _) = s.ws(&room, &bob, "").await;
    let first = a.say("once", "same").await;
    a.send_json(json!({"action": "message", "content": "twice?", "client_id": "same"}))
        .await;
    let again = a.next_of("message").await["message"].clone();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["content"], "once");
    // bob got the message once: the next thing he sees is a new message
    assert_eq!(b.next_of("message").await["message"]["id"], first["id"]);
    let later = a.say("new", "other").await;
    assert_eq!(b.next_of("message").await["message"]["id"], later["id"]);
    let (_, history) = s.get(&format!("/api/v1/chat/{room}/"), &alice.token).await;
    assert_eq!(history["results"].as_array().unwrap().len(), 2);
}

/// What a sender must get back for one frame of a burst.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// Its own copy of a new message: `client_id`.
    Ack(String),
    /// A reply to this socket only: an error code, `pong`, or the original of a repeated
    /// `client_id`.
    Reply(String),
}

#[tokio::test]
async fn frames_sent_back_to_back_are_answered_and_stored_in_the_order_sent() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let s = fast_server().await;
    let (alice, bob, room) = pair(&s).await;
    let (mut a, _) = s.ws(&room, &alice, "").await;
    let (mut b, _) = s.ws(&room, &bob, "").await;
    let original = a.say("original", "dup").await;
    assert_eq!(b.next_of("message").await["message"]["id"], original["id"]);

    // Far more frames than a connection keeps in flight, written without waiting for any
    // answer: new messages mixed with every kind of frame that is answered on this socket.
    const FRAMES: usize = 300;
    let mut expected = Vec::new();
    let mut stored = vec!["original".to_string()];
    for i in 0..FRAMES {
        let (frame, answer) = match i % 10 {
            2 => (
                json!({"action": "message", "content": "  "}).to_string(),
                Answer::Reply("validation_error".into()),
            ),
            4 => (
                json!({"action": "message", "content": "again", "client_id": "dup"}).to_string(),
                Answer::Reply("original".into()),
            ),
            6 => (
                "{not json".to_string(),
                Answer::Reply("invalid_json".into()),
            ),
            7 => (
                json!({"action": "ping"}).to_string(),
                Answer::Reply("pong".into()),
            ),
            9 => (
                json!({"action": "message", "content": 5}).to_string(),
                Answer::Reply("invalid_frame".into()),
            ),
            _ => {
                let client_id = format!("c{i}");
                stored.push(format!("m{i}"));
                (
                    json!({"action": "message", "content": format!("m{i}"), "client_id": client_id})
                        .to_string(),
                    Answer::Ack(client_id),
                )
            }
        };
        a.socket.feed(WsMessage::text(frame)).await.unwrap();
        expected.push(answer);
    }
    a.socket.flush().await.unwrap();

    // Acks come through the room and replies straight to the socket, so the two streams may
    // interleave; each on its own must follow the order of the frames.
    let mut answers = Vec::new();
    while answers.len() < expected.len() {
        let v = a.next_json().await;
        let answer = match v["type"].as_str().unwrap() {
            "message" if v["message"]["client_id"] == "dup" => {
                assert_eq!(v["message"]["id"], original["id"]);
                assert_eq!(v["message"]["content"], "original");
                Answer::Reply("original".into())
            }
            "message" => Answer::Ack(v["message"]["client_id"].as_str().unwrap().into()),
            "error" => Answer::Reply(v["code"].as_str().unwrap().into()),
            "pong" => Answer::Reply("pong".into()),
            _ => continue,
        };
        answers.push(answer);
    }
    let acks = |list: &[Answer]| -> Vec<Answer> {
        list.iter()
            .filter(|x| matches!(x, Answer::Ack(_)))
            .cloned()
            .collect()
    };
    let replies = |list: &[Answer]| -> Vec<Answer> {
        list.iter()
            .filter(|x| matches!(x, Answer::Reply(_)))
            .cloned()
            .collect()
    };
    assert_eq!(acks(&answers), acks(&expected), "acks in the order sent");
    assert_eq!(
        replies(&answers),
        replies(&expected),
        "replies in the order of their frames"
    );

    // The other member saw the new messages in that order, and so does the history.
    let mut seen = Vec::new();
    while seen.len() < stored.len() - 1 {
        let v = b.next_of("message").await;
        seen.push(v["message"]["content"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, stored[1..]);
    let (status, history) = s
        .get(
            &format!("/api/v1/chat/{room}/?after=0&limit=200"),
            &alice.token,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(history["has_more"], false);
    let contents = common::contents(&history);
    assert_eq!(contents, stored, "stored in the order sent");
}

#[tokio::test]
async fn presence_follows_the_first_and_last_connection_of_a_user() {
    let s = TestServer::start().await;
    let (alice, bob, room) = pair(&s).await;
    let (mut b, hello) = s.ws(&room, &bob, "").await;
    assert_eq!(hello["online"], json!([bob.id]));

    let (tab1, _) = s.ws(&room, &alice, "").await;
    let p = b.next_of("presence").await;
    assert_eq!(
        (p["user"]["id"].as_i64(), p["online"].as_bool()),
        (Some(alice.id), Some(true))
    );
    let (mut tab2, hello) = s.ws(&room, &alice, "").await;
    let mut online: Vec<i64> = hello["online"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    online.sort();
    assert_eq!(online, [alice.id, bob.id]);

    drop(tab1);
    // Alice is still online in tab 2: the next event bob sees is her message, not "offline".
    let m = tab2.say("still here", "t2").await;
    let next = b.next_json().await;
    assert_eq!(next["type"], "message", "{next}");
    assert_eq!(next["message"]["id"], m["id"]);

    drop(tab2);
    let p = b.next_of("presence").await;
    assert_eq!(
        (p["user"]["id"].as_i64(), p["online"].as_bool()),
        (Some(alice.id), Some(false))
    );
}

/// Presence frames may wait briefly to be written together, but never behind what follows
/// them: a message sent right after three arrivals reaches the watcher after all three.
#[tokio::test]
async fn presence_frames_that_wait_are_written_before_the_message_behind_them() {
    let s = TestServer::start().await;
    let owner = s.user("owner").await;
    let guests = [s.user("g1").await, s.user("g2").await, s.user("g3").await];
    let room = s
        .room(&owner, &guests.iter().collect::<Vec<_>>(), Some("arrivals"))
        .await;
    let (mut watcher, _) = s.ws(&room, &owner, "").await;
    let mut sockets = Vec::new();
    for guest in &guests {
        sockets.push(s.ws(&room, guest, "").await.0);
    }
    let sent = sockets[2].say("we are all here", "m").await;

    let mut arrived = Vec::new();
    loop {
        let frame = watcher.next_json().await;
        match frame["type"].as_str() {
            Some("presence") => {
                assert_eq!(frame["online"], true, "{frame}");
                arrived.push(frame["user"]["id"].as_i64().unwrap());
            }
            Some("message") => {
                assert_eq!(frame["message"]["id"], sent["id"]);
                break;
            }
            _ => panic!("unexpected frame {frame}"),
        }
    }
    let expected: Vec<i64> = guests.iter().map(|g| g.id).collect();
    assert_eq!(
        arrived, expected,
        "every arrival, in order, before the message"
    );
}

/// A presence frame with nothing behind it waits for company (so a crowd arriving at once
/// shares writes), then goes out on its own.
#[tokio::test]
async fn a_lone_presence_frame_goes_out_after_the_presence_delay() {
    let s = TestServer::start().await;
    let (alice, bob, room) = pair(&s).await;
    let (mut b, _) = s.ws(&room, &bob, "").await;
    let before = std::time::Instant::now();
    let _a = s.ws(&room, &alice, "").await;
    let p = b.next_of("presence").await;
    assert_eq!(p["user"]["id"], alice.id);
    let waited = before.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(100),
        "written after {waited:?}"
    );
}

#[tokio::test]
async fn typing_reaches_only_the_others_is_rate_limited_and_never_stored() {
    let s = TestServer::start().await;
    let (alice, bob, room) = pair(&s).await;
    let (mut a, _) = s.ws(&room, &alice, "").await;
    let (mut b, _) = s.ws(&room, &bob, "").await;
    a.next_of("presence").await; // bob came online

    for _ in 0..10 {
        a.send_json(json!({"action": "typing", "typing": true}))
            .await;
    }
    let marker = a.say("done typing", "m").await;
    let mut typing = 0;
    loop {
        let v = b.next_json().await;
        match v["type"].as_str() {
            Some("typing") => {
                assert_eq!(v["user"]["id"], alice.id);
                assert_eq!(v["typing"], true);
                typing += 1;
            }
            Some("message") => {
                assert_eq!(v["message"]["id"], marker["id"]);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        (1..=2).contains(&typing),
        "{typing} typing events got through 10"
    );
    // alice never hears her own typing: after her ack, her next frame answers her ping
    a.send_json(json!({"action": "ping"})).await;
    assert_eq!(a.next_json().await["type"], "pong");
    let (_, history) = s.get(&format!("/api/v1/chat/{room}/"), &bob.token).await;
    assert_eq!(history["results"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn members_can_be_added_and_removed_and_removed_sockets_close_at_once() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let dave = s.user("dave").await;
    let room = s.room(&alice, &[&bob], Some("team")).await;
    let members = format!("/api/v1/chat/{room}/members/");

    let (mut carol_all, hello) = s.ws_all(&carol, "").await;
    assert_eq!(hello["rooms"], json!([]));
    let (mut b, _) = s.ws(&room, &bob, "").await;

    // any member may add
    let (status, view) = s
        .post(&members, &bob.token, json!({"user_id": carol.id}))
        .await;
    assert_eq!(status, 201, "{view}");
    assert_eq!(view["members"].as_array().unwrap().len(), 3);
    let ev = carol_all.next_of("room").await;
    assert_eq!(ev["room"]["room_id"], room.as_str());
    let ev = b.next_of("member").await;
    assert_eq!(
        (ev["user"]["id"].as_i64(), ev["added"].as_bool()),
        (Some(carol.id), Some(true))
    );
    let (status, _) = s
        .post(&members, &bob.token, json!({"user_id": carol.id}))
        .await;
    assert_eq!(status, 200, "adding twice changes nothing");
    let (status, _) = s
        .post(&members, &dave.token, json!({"user_id": dave.id}))
        .await;
    assert_eq!(status, 404, "a non-member cannot add");
    let (status, body) = s.post(&members, &bob.token, json!({"user_id": 9999})).await;
    assert_eq!(
        (status, body["error"]["fields"]["user_id"].as_str()),
        (404, Some("no such user"))
    );

    // carol now reads the room over her all-rooms socket
    let m = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &alice.token,
            json!({"content": "welcome"}),
        )
        .await
        .1;
    assert_eq!(carol_all.next_of("message").await["message"]["id"], m["id"]);

    // only the creator removes others; anyone may leave
    let (status, _) = s
        .call(
            "DELETE",
            &format!("{members}{}/", alice.id),
            Some(&carol.token),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = s
        .call(
            "DELETE",
            &format!("{members}{}/", bob.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let ev = b.next_of("member").await;
    assert_eq!(
        (ev["user"]["id"].as_i64(), ev["added"].as_bool()),
        (Some(bob.id), Some(false))
    );
    assert_eq!(b.closed().await, Some(4003));
    assert_eq!(
        s.get(&format!("/api/v1/chat/{room}/"), &bob.token).await.0,
        404
    );
    assert_eq!(
        s.ws_refused(&format!("/ws/chat/{room}/?token={}", bob.token), &[])
            .await,
        404
    );

    let (status, _) = s
        .call(
            "DELETE",
            &format!("{members}{}/", carol.id),
            Some(&carol.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let ev = carol_all.next_of("member").await;
    assert_eq!(
        (ev["user"]["id"].as_i64(), ev["added"].as_bool()),
        (Some(bob.id), Some(false))
    );
    let ev = carol_all.next_of("member").await;
    assert_eq!(
        (ev["user"]["id"].as_i64(), ev["added"].as_bool()),
        (Some(carol.id), Some(false))
    );
    // carol's all-rooms socket no longer follows the room
    let later = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &alice.token,
            json!({"content": "bye"}),
        )
        .await
        .1;
    let (_, other_room) = s
        .post(
            "/api/v1/chats/",
            &alice.token,
            json!({"members": [carol.id]}),
        )
        .await;
    let ev = loop {
        let ev = carol_all.next_json().await;
        if ev["type"] != "presence" {
            break ev;
        }
    };
    assert_eq!(
        ev["type"], "room",
        "the next event is the new room, not {later}: {ev}"
    );
    assert_eq!(ev["room"]["room_id"], other_room["room_id"]);

    // direct rooms keep exactly their two members
    let direct = other_room["room_id"].as_str().unwrap();
    let (status, _) = s
        .post(
            &format!("/api/v1/chat/{direct}/members/"),
            &alice.token,
            json!({"user_id": dave.id}),
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn one_socket_follows_every_room_and_can_send_to_any() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let with_bob = s.room(&alice, &[&bob], None).await;
    let with_carol = s.room(&alice, &[&carol], None).await;

    let (mut all, hello) = s.ws_all(&alice, "").await;
    let rooms: HashSet<&str> = hello["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        rooms,
        HashSet::from([with_bob.as_str(), with_carol.as_str()])
    );

    let (_, m1) = s
        .post(
            &format!("/api/v1/chat/{with_bob}/"),
            &bob.token,
            json!({"content": "from bob"}),
        )
        .await;
    let (_, m2) = s
        .post(
            &format!("/api/v1/chat/{with_carol}/"),
            &carol.token,
            json!({"content": "from carol"}),
        )
        .await;
    let e1 = all.next_of("message").await;
    let e2 = all.next_of("message").await;
    assert_eq!(
        (
            e1["message"]["id"].clone(),
            e1["message"]["room_id"].as_str()
        ),
        (m1["id"].clone(), Some(with_bob.as_str()))
    );
    assert_eq!(
        (
            e2["message"]["id"].clone(),
            e2["message"]["room_id"].as_str()
        ),
        (m2["id"].clone(), Some(with_carol.as_str()))
    );

    // sending needs a room_id here, and only to one's own rooms
    all.send_json(json!({"action": "message", "content": "no room"}))
        .await;
    assert_eq!(all.next_of("error").await["code"], "validation_error");
    let (_, foreign) = s
        .post("/api/v1/chats/", &bob.token, json!({"members": [carol.id]}))
        .await;
    all.send_json(
        json!({"action": "message", "room_id": foreign["room_id"], "content": "intrude"}),
    )
    .await;
    assert_eq!(all.next_of("error").await["code"], "not_found");
    all.send_json(json!({"action": "message", "room_id": with_carol, "content": "hi carol", "client_id": "x"})).await;
    let ack = all.next_of("message").await;
    assert_eq!(
        (
            ack["message"]["client_id"].as_str(),
            ack["message"]["room_id"].as_str()
        ),
        (Some("x"), Some(with_carol.as_str()))
    );

    // resume across rooms
    drop(all);
    let (_, m3) = s
        .post(
            &format!("/api/v1/chat/{with_bob}/"),
            &bob.token,
            json!({"content": "while away"}),
        )
        .await;
    let (mut all, _) = s
        .ws_all(&alice, &format!("&since={}", ack["message"]["id"]))
        .await;
    assert_eq!(all.next_of("message").await["message"]["id"], m3["id"]);
}

#[tokio::test]
async fn a_client_that_stops_reading_neither_slows_others_nor_loses_messages() {
    let mut config = test_config();
    config.limits.send_rate_per_sec = 100_000.0;
    config.limits.send_burst = 100_000;
    config.limits.ws_queue_len = 16;
    config.limits.ws_write_timeout_secs = 60;
    let s = TestServer::start_with(config).await;
    let (alice, bob, room) = pair(&s).await;

    let (mut stalled, _) = s.ws(&room, &bob, "").await;
    let (mut sender, _) = s.ws(&room, &alice, "").await;
    // Far more than the socket buffers hold, so the stalled reader's server side blocks and
    // its queue overflows while the sender keeps getting its acks.
    const COUNT: usize = 1500;
    let big = "x".repeat(3900);
    let mut sent = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        sent.push(
            sender.say(&big, &format!("c{i}")).await["id"]
                .as_i64()
                .unwrap(),
        );
    }

    // Now the stalled client reads: it must see every id once, in order, either straight
    // through a resync or after being told to reconnect with since.
    let mut seen: Vec<i64> = Vec::new();
    let mut reconnects = 0;
    loop {
        match next_message_or_close(&mut stalled).await {
            Ok(m) => seen.push(m),
            Err(code) => {
                assert_eq!(code, Some(4000), "closed with the resync code");
                reconnects += 1;
                let since = seen.last().copied().unwrap_or(0);
                stalled = s.ws(&room, &bob, &format!("&since={since}")).await.0;
            }
        }
        if seen.len() == COUNT {
            break;
        }
    }
    assert_eq!(seen, sent, "after {reconnects} reconnects");
}

/// The next message id on `ws`, or the close code if the socket closes.
async fn next_message_or_close(ws: &mut Ws) -> Result<i64, Option<u16>> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let frame = tokio::time::timeout(common::WAIT, ws.socket.next())
            .await
            .expect("timed out");
        match frame {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "message" {
                    return Ok(id(&v));
                }
            }
            Some(Ok(Message::Close(f))) => return Err(f.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Err(None),
        }
    }
}

#[tokio::test]
async fn a_silent_peer_is_pinged_then_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = test_config();
    config.limits.ws_ping_interval_secs = 1;
    config.limits.ws_idle_timeout_secs = 2;
    let s = TestServer::start_with(config).await;
    let (alice, _bob, room) = pair(&s).await;

    // A raw client that completes the handshake and then never answers anything.
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let request = format!(
        "GET /ws/chat/{room}/?token={} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        alice.token, s.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(common::WAIT, tcp.read(&mut buf))
            .await
            .expect("the server should drop a silent peer")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
    }
    assert!(received.starts_with(b"HTTP/1.1 101"));
    // a ping frame (opcode 0x9) went out before the server gave up
    let body = &received[received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    assert!(body.contains(&0x89), "no ping frame in {body:?}");
}
