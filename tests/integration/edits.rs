//! Messages people change: edits and deletions over REST and WebSocket, the tombstone they
//! leave, and the one ordered sequence of changes that lets a resuming client converge on
//! exactly what the history API shows.

use std::collections::BTreeMap;

use crate::common;

use common::{TestServer, TestUser, test_config};
use serde_json::{Value, json};

async fn fast_server() -> TestServer {
    let mut config = test_config();
    config.limits.send_rate_per_sec = 100_000.0;
    config.limits.send_burst = 100_000;
    TestServer::start_with(config).await
}

async fn post(s: &TestServer, user: &TestUser, room: &str, content: &str) -> Value {
    let (status, m) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &user.token,
            json!({ "content": content }),
        )
        .await;
    assert_eq!(status, 201, "{m}");
    m
}

async fn edit(s: &TestServer, user: &TestUser, id: i64, content: &str) -> (u16, Value) {
    s.call(
        "PATCH",
        &format!("/api/v1/messages/{id}/"),
        Some(&user.token),
        Some(json!({ "content": content })),
    )
    .await
}

async fn delete(s: &TestServer, user: &TestUser, id: i64) -> (u16, Value) {
    s.call(
        "DELETE",
        &format!("/api/v1/messages/{id}/"),
        Some(&user.token),
        None,
    )
    .await
}

/// Every message of the room as the history API shows it, oldest first.
async fn history(s: &TestServer, user: &TestUser, room: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let (_, page) = s
            .get(
                &format!("/api/v1/chat/{room}/?limit=200&after={after}"),
                &user.token,
            )
            .await;
        let results = page["results"].as_array().unwrap().clone();
        let more = page["has_more"] == true;
        if let Some(last) = results.last() {
            after = last["id"].as_i64().unwrap();
        }
        all.extend(results);
        if !more {
            return all;
        }
    }
}

/// What a client keeps of a message: enough to compare views (reactions as emoji and
/// count: `me` depends on who looks).
fn shown(m: &Value) -> (i64, String, bool, bool, Vec<(String, i64)>) {
    (
        m["id"].as_i64().unwrap(),
        m["content"].as_str().unwrap().to_string(),
        m["deleted"].as_bool().unwrap(),
        m["edited"].is_string(),
        m["reactions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["emoji"].as_str().unwrap().to_string(),
                    r["count"].as_i64().unwrap(),
                )
            })
            .collect(),
    )
}

async fn react(s: &TestServer, user: &TestUser, id: i64, emoji: &str, on: bool) -> (u16, Value) {
    let encoded: String = emoji.bytes().map(|b| format!("%{b:02X}")).collect();
    s.call(
        if on { "PUT" } else { "DELETE" },
        &format!("/api/v1/messages/{id}/reactions/{encoded}/"),
        Some(&user.token),
        None,
    )
    .await
}

#[tokio::test]
async fn the_author_edits_and_the_room_hears_it_as_the_next_change() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let first = post(&s, &alice, &room, "helo").await;
    let (mut watcher, hello) = s.ws(&room, &bob, "").await;
    assert_eq!(
        hello["last_seq"], first["id"],
        "a new message's id is its seq"
    );

    let (status, edited) = edit(&s, &alice, first["id"].as_i64().unwrap(), "  hello  ").await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["content"], "hello", "trimmed like a send");
    assert!(edited["edited"].is_string());
    assert_eq!(edited["deleted"], false);
    assert_eq!(edited["id"], first["id"]);
    let event = watcher.next_of("message_updated").await;
    assert_eq!(event["message"], edited);
    assert!(event["seq"].as_i64() > first["id"].as_i64());

    // The history shows the message as it is now; a new message takes the position after
    // the edit.
    assert_eq!(
        history(&s, &bob, &room).await,
        std::slice::from_ref(&edited)
    );
    let second = post(&s, &alice, &room, "second").await;
    assert!(second["id"].as_i64() > event["seq"].as_i64());
    let next = watcher.next_of("message").await;
    assert_eq!(next["seq"], second["id"]);

    // The same text again changes nothing, and nobody hears of it.
    let (status, same) = edit(&s, &alice, first["id"].as_i64().unwrap(), "hello").await;
    assert_eq!((status, &same), (200, &edited));
    watcher.send_json(json!({"action": "ping"})).await;
    assert_eq!(watcher.next_json().await["type"], "pong");
}

#[tokio::test]
async fn edits_and_deletions_are_refused_to_everyone_else_and_change_nothing() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = s.room(&alice, &[&bob], None).await;
    let m = post(&s, &alice, &room, "mine").await;
    let id = m["id"].as_i64().unwrap();
    let before = history(&s, &alice, &room).await;

    let refusals = [
        (edit(&s, &bob, id, "yours?").await, 403, "forbidden"),
        (delete(&s, &bob, id).await, 403, "forbidden"),
        (edit(&s, &carol, id, "let me in").await, 404, "not_found"),
        (delete(&s, &carol, id).await, 404, "not_found"),
        (edit(&s, &alice, id, "   ").await, 400, "validation_error"),
        (
            edit(&s, &alice, id, &"x".repeat(4001)).await,
            400,
            "validation_error",
        ),
        (edit(&s, &alice, id + 1000, "gone").await, 404, "not_found"),
        (delete(&s, &alice, 0).await, 404, "not_found"),
    ];
    for ((status, body), want, code) in refusals {
        assert_eq!(status, want, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    for (path, body) in [
        (format!("/api/v1/messages/{id}/"), json!({"text": "x"})),
        (format!("/api/v1/messages/{id}/"), json!({"content": 5})),
        ("/api/v1/messages/abc/".to_string(), json!({"content": "x"})),
    ] {
        let (status, reply) = s.call("PATCH", &path, Some(&alice.token), Some(body)).await;
        assert!(status == 400 || status == 404, "{path}: {reply}");
    }
    assert_eq!(history(&s, &alice, &room).await, before, "nothing changed");
}

#[tokio::test]
async fn a_deletion_leaves_a_tombstone_and_takes_the_content_out_of_the_database() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let group = s.room(&alice, &[&bob, &carol], Some("group")).await;
    let by_bob = post(&s, &bob, &group, "a secret recipe").await;
    let by_carol = post(&s, &carol, &group, "regrettable").await;
    let (_, rooms) = s.get("/api/v1/chats/", &alice.token).await;
    assert_eq!(rooms[0]["unread_count"], 2);

    // The author deletes; so does the group's creator, for anyone's message.
    let (status, tomb) = delete(&s, &bob, by_bob["id"].as_i64().unwrap()).await;
    assert_eq!(status, 200, "{tomb}");
    assert_eq!(
        (tomb["deleted"].as_bool(), tomb["content"].as_str()),
        (Some(true), Some(""))
    );
    let (status, _) = delete(&s, &alice, by_carol["id"].as_i64().unwrap()).await;
    assert_eq!(status, 200);
    // Deleting again changes nothing; editing a tombstone is a conflict.
    let (status, again) = delete(&s, &bob, by_bob["id"].as_i64().unwrap()).await;
    assert_eq!((status, &again), (200, &tomb));
    let (status, body) = edit(&s, &bob, by_bob["id"].as_i64().unwrap(), "back").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict"))
    );

    let shown: Vec<_> = history(&s, &carol, &group)
        .await
        .iter()
        .map(shown)
        .collect();
    assert_eq!(
        shown,
        [
            (
                by_bob["id"].as_i64().unwrap(),
                String::new(),
                true,
                false,
                vec![]
            ),
            (
                by_carol["id"].as_i64().unwrap(),
                String::new(),
                true,
                false,
                vec![]
            ),
        ]
    );
    // Deleted messages are not unread any more.
    let (_, rooms) = s.get("/api/v1/chats/", &alice.token).await;
    assert_eq!(rooms[0]["unread_count"], 0);
    // Gone from the database, not just hidden.
    let left: i64 = s
        .sqlite
        .read(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM messages WHERE content LIKE '%secret%' OR content LIKE '%regret%'",
                [],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn edits_and_deletions_over_the_websocket_reach_every_socket_of_the_room() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let (mut a, _) = s.ws(&room, &alice, "").await;
    let (mut b, _) = s.ws_all(&bob, "").await;
    let m = a.say("typo", "c1").await;
    b.next_of("message").await;

    a.send_json(json!({"action": "edit", "message_id": m["id"], "content": "fixed"}))
        .await;
    for ws in [&mut a, &mut b] {
        let e = ws.next_of("message_updated").await;
        assert_eq!(
            (e["message"]["id"].clone(), e["message"]["content"].clone()),
            (m["id"].clone(), json!("fixed"))
        );
    }
    // Bob may not edit or delete it: an error frame, and the socket stays open.
    for action in [
        json!({"action": "edit", "message_id": m["id"], "content": "mine", "room_id": room}),
        json!({"action": "delete", "message_id": m["id"]}),
    ] {
        b.send_json(action).await;
        let reply = b.next_of("error").await;
        assert_eq!(reply["code"], "forbidden", "{reply}");
    }
    a.send_json(json!({"action": "delete", "message_id": m["id"]}))
        .await;
    for ws in [&mut a, &mut b] {
        let e = ws.next_of("message_updated").await;
        assert_eq!(e["message"]["deleted"], true);
    }
}

#[tokio::test]
async fn a_client_that_was_away_replays_edits_and_deletions_in_the_order_they_happened() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let one = post(&s, &alice, &room, "one").await;
    let two = post(&s, &alice, &room, "two").await;
    let (_, hello) = s.ws(&room, &bob, "").await;
    let since = hello["last_seq"].as_i64().unwrap();
    // Bob goes away; meanwhile one is edited, a message is sent and edited, two is deleted.
    edit(&s, &alice, one["id"].as_i64().unwrap(), "one!").await;
    let three = post(&s, &alice, &room, "three").await;
    edit(&s, &alice, three["id"].as_i64().unwrap(), "three!").await;
    delete(&s, &alice, two["id"].as_i64().unwrap()).await;

    for all_rooms in [false, true] {
        let query = format!("&since={since}");
        let (mut ws, _) = if all_rooms {
            s.ws_all(&bob, &query).await
        } else {
            s.ws(&room, &bob, &query).await
        };
        let mut got = Vec::new();
        for _ in 0..4 {
            let f = ws.next_json().await;
            got.push((
                f["type"].as_str().unwrap().to_string(),
                f["message"]["content"].as_str().unwrap().to_string(),
                f["seq"].as_i64().unwrap(),
            ));
        }
        let kinds: Vec<(&str, &str)> = got
            .iter()
            .map(|(t, c, _)| (t.as_str(), c.as_str()))
            .collect();
        // Every change in the order it happened, each showing the message as it is now: the
        // edit of one, the creation of three (already edited), its edit, the deletion of two.
        assert_eq!(
            kinds,
            [
                ("message_updated", "one!"),
                ("message", "three!"),
                ("message_updated", "three!"),
                ("message_updated", "")
            ]
        );
        assert!(got.windows(2).all(|w| w[0].2 < w[1].2), "{got:?}");
    }
}

/// The resume guarantee with changes: readers reconnect again and again while two writers
/// send, edit, delete and react; each reader's reconstructed view ends equal to the history API,
/// every change seen once, in order, on room sockets and on `/ws/`.
#[tokio::test]
async fn readers_reconnecting_through_sends_edits_and_deletions_converge_on_the_history() {
    let s = fast_server().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let dave = s.user("dave").await;
    let room = s.room(&alice, &[&bob, &carol, &dave], Some("busy")).await;
    const PER_WRITER: usize = 60;

    let (done_tx, done_rx) = tokio::sync::watch::channel(None::<i64>);
    let rest_writer = {
        let s = &s;
        let (alice, room) = (alice.clone(), room.clone());
        async move {
            let mut mine = Vec::new();
            for i in 0..PER_WRITER {
                let m = post(s, &alice, &room, &format!("rest {i}")).await;
                mine.push(m["id"].as_i64().unwrap());
                if i % 3 == 2 {
                    let target = mine[i / 2];
                    let (status, _) = edit(s, &alice, target, &format!("rest {i} edited")).await;
                    assert!(status == 200 || status == 409);
                }
                if i % 7 == 6 {
                    let (status, _) = delete(s, &alice, mine[i / 3]).await;
                    assert_eq!(status, 200);
                }
                if i % 2 == 1 {
                    let emoji = ["\u{1F44D}", "\u{1F602}", "\u{2764}\u{FE0F}"][i % 3];
                    let (status, _) = react(s, &alice, mine[i / 2], emoji, i % 8 != 7).await;
                    assert!(status == 200 || status == 409);
                }
            }
        }
    };
    let ws_writer = {
        let s = &s;
        let (bob, room) = (bob.clone(), room.clone());
        async move {
            let (mut ws, _) = s.ws(&room, &bob, "").await;
            let mut mine = Vec::new();
            for i in 0..PER_WRITER {
                let m = ws.say(&format!("ws {i}"), &format!("w{i}")).await;
                mine.push(m["id"].clone());
                if i % 4 == 3 {
                    let target = mine[i / 2].clone();
                    ws.send_json(json!({"action": "edit", "message_id": target, "content": format!("ws {i} edited")}))
                        .await;
                }
                if i % 5 == 4 {
                    ws.send_json(json!({"action": "delete", "message_id": mine[i / 4]}))
                        .await;
                }
                if i % 3 == 1 {
                    let on = i % 9 != 7;
                    let react = json!({"action": "react", "message_id": mine[i / 3], "emoji": "\u{1F44D}", "on": on});
                    ws.send_json(react).await;
                }
            }
            // Every change of bob's is committed once the socket answers a ping after them.
            ws.send_json(json!({"action": "ping"})).await;
            ws.next_of("pong").await;
        }
    };

    let reader = |user: TestUser, all_rooms: bool, burst: usize| {
        let s = &s;
        let room = room.clone();
        let mut done = done_rx.clone();
        async move {
            let mut view: BTreeMap<i64, Value> = BTreeMap::new();
            let mut last = 0i64;
            let mut reconnects = 0;
            'connect: loop {
                if done.borrow().is_some_and(|end| last >= end) {
                    break;
                }
                let since = format!("&since={last}");
                let (mut ws, _) = if all_rooms {
                    s.ws_all(&user, &since).await
                } else {
                    s.ws(&room, &user, &since).await
                };
                reconnects += 1;
                let mut read = 0;
                while read < burst + reconnects % 5 {
                    let frame = tokio::select! {
                        frame = ws.next_json() => frame,
                        _ = done.changed() => continue 'connect,
                    };
                    let kind = frame["type"].as_str().unwrap_or_default();
                    if kind != "message" && kind != "message_updated" {
                        continue;
                    }
                    let seq = frame["seq"].as_i64().unwrap();
                    assert!(
                        seq > last,
                        "{}: seq {seq} after {last}: a duplicate",
                        user.username
                    );
                    last = seq;
                    let id = frame["message"]["id"].as_i64().unwrap();
                    let known = view.insert(id, frame["message"].clone()).is_some();
                    if kind == "message" {
                        assert!(!known, "{}: message {id} arrived twice", user.username);
                        assert_eq!(seq, id, "a message's creation is at its id");
                    } else {
                        assert!(known, "{}: an update of {id}, never seen", user.username);
                    }
                    read += 1;
                    if done.borrow().is_some_and(|end| last >= end) {
                        break 'connect;
                    }
                }
            }
            assert!(
                reconnects > 5,
                "{} reconnected {reconnects} times",
                user.username
            );
            view
        }
    };
    let readers = async {
        futures_util::future::join_all([
            reader(carol.clone(), false, 4),
            reader(dave.clone(), true, 7),
        ])
        .await
    };
    let writers = async {
        futures_util::join!(rest_writer, ws_writer);
        // The room's newest change, now that both writers are done.
        let (_, hello) = s.ws(&room, &alice, "").await;
        done_tx.send_replace(Some(hello["last_seq"].as_i64().unwrap()));
    };
    let (views, ()) = futures_util::join!(readers, writers);

    let stored = history(&s, &alice, &room).await;
    assert_eq!(stored.len(), 2 * PER_WRITER);
    assert!(stored.iter().any(|m| m["deleted"] == true));
    assert!(
        stored
            .iter()
            .any(|m| m["edited"].is_string() && m["deleted"] == false)
    );
    assert!(
        stored
            .iter()
            .any(|m| !m["reactions"].as_array().unwrap().is_empty())
    );
    let expected: Vec<_> = stored.iter().map(shown).collect();
    for view in views {
        let got: Vec<_> = view.values().map(shown).collect();
        assert_eq!(got, expected, "the reconstructed view is the history");
    }
}

#[tokio::test]
async fn reactions_are_idempotent_counted_per_emoji_and_tell_each_member_which_are_theirs() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = s.room(&alice, &[&bob], Some("r")).await;
    let m = post(&s, &alice, &room, "party?").await;
    let id = m["id"].as_i64().unwrap();
    let (mut alice_ws, _) = s.ws(&room, &alice, "").await;
    let (mut bob_ws, _) = s.ws_all(&bob, "").await;

    let (status, after) = react(&s, &bob, id, "\u{1F389}", true).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(
        after["reactions"],
        json!([{"emoji": "\u{1F389}", "count": 1, "me": true}])
    );
    // Each socket is told whether the reaction is its user's.
    let to_alice = alice_ws.next_of("message_updated").await;
    assert_eq!(to_alice["message"]["reactions"][0]["me"], false);
    let to_bob = bob_ws.next_of("message_updated").await;
    assert_eq!(to_bob["message"]["reactions"][0]["me"], true);
    assert_eq!(to_alice["seq"], to_bob["seq"]);

    // Again: nothing changes. Alice adds hers, and another emoji.
    assert_eq!(react(&s, &bob, id, "\u{1F389}", true).await.1, after);
    react(&s, &alice, id, "\u{1F389}", true).await;
    // Without its variation selector a heart is the same emoji.
    let (_, now) = react(&s, &alice, id, "\u{2764}", true).await;
    assert_eq!(
        now["reactions"],
        json!([
            {"emoji": "\u{1F389}", "count": 2, "me": true},
            {"emoji": "\u{2764}\u{FE0F}", "count": 1, "me": true},
        ])
    );
    let (_, page) = s.get(&format!("/api/v1/chat/{room}/"), &bob.token).await;
    assert_eq!(
        page["results"][0]["reactions"],
        json!([
            {"emoji": "\u{1F389}", "count": 2, "me": true},
            {"emoji": "\u{2764}\u{FE0F}", "count": 1, "me": false},
        ])
    );
    // Taking one back, twice.
    react(&s, &alice, id, "\u{2764}\u{FE0F}", false).await;
    let (status, back) = react(&s, &alice, id, "\u{2764}\u{FE0F}", false).await;
    assert_eq!(status, 200);
    assert_eq!(back["reactions"].as_array().unwrap().len(), 1);

    // Anything but one emoji is a 400; strangers get 404; a tombstone keeps none.
    for bad in ["a", "\u{1F44D}\u{1F44D}", "\u{1F44D} ", ":+1:", "\u{200D}"] {
        let (status, body) = react(&s, &bob, id, bad, true).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert!(body["error"]["fields"]["emoji"].is_string(), "{body}");
    }
    assert_eq!(react(&s, &carol, id, "\u{1F389}", true).await.0, 404);
    delete(&s, &alice, id).await;
    let (_, page) = s.get(&format!("/api/v1/chat/{room}/"), &bob.token).await;
    assert_eq!(page["results"][0]["reactions"], json!([]));
    assert_eq!(react(&s, &bob, id, "\u{1F389}", true).await.0, 409);
    let rows: i64 = s
        .sqlite
        .read(|c| Ok(c.query_row("SELECT count(*) FROM reactions", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(
        rows, 0,
        "a deleted message keeps no reactions in the database"
    );
}

#[tokio::test]
async fn a_message_carries_at_most_twenty_different_emoji() {
    let s = fast_server().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let id = post(&s, &alice, &room, "rate me").await["id"]
        .as_i64()
        .unwrap();
    let twenty: Vec<String> = (0x1F600..0x1F614u32)
        .map(|c| char::from_u32(c).unwrap().to_string())
        .collect();
    for e in &twenty {
        assert_eq!(react(&s, &alice, id, e, true).await.0, 200, "{e}");
    }
    let (status, body) = react(&s, &bob, id, "\u{1F680}", true).await;
    assert_eq!(status, 400, "{body}");
    // One already there can still be added to.
    let (status, body) = react(&s, &bob, id, &twenty[0], true).await;
    assert_eq!(status, 200);
    assert_eq!(body["reactions"][0]["count"], 2);
}

#[tokio::test]
async fn a_reply_names_a_message_of_the_same_room_and_never_one_from_elsewhere() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = s.room(&alice, &[&bob], None).await;
    let elsewhere = s.room(&carol, &[&bob], Some("carol's")).await;
    let long = "x".repeat(150);
    let question = post(&s, &alice, &room, &long).await;
    let secret = post(&s, &carol, &elsewhere, "carol's secret").await;

    let (status, reply) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &bob.token,
            json!({"content": "yes", "reply_to": question["id"]}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["reply_to"]["id"], question["id"]);
    assert_eq!(reply["reply_to"]["sender"], "alice");
    assert_eq!(reply["reply_to"]["excerpt"], "x".repeat(100));

    // Over the socket too; the room hears it with its reply_to.
    let (mut ws, _) = s.ws(&room, &alice, "").await;
    let frame =
        json!({"action": "message", "content": "ok", "client_id": "c", "reply_to": reply["id"]});
    ws.send_json(frame).await;
    let m = ws.next_of("message").await;
    assert_eq!(m["message"]["reply_to"]["excerpt"], "yes");

    // A message of another room, one that does not exist, or a bad id: 404 naming the field,
    // the same answer whether or not it exists, and nothing stored.
    for target in [secret["id"].clone(), json!(999_999), json!(0), json!(-3)] {
        let (status, body) = s
            .post(
                &format!("/api/v1/chat/{room}/"),
                &bob.token,
                json!({"content": "leak?", "reply_to": target}),
            )
            .await;
        assert_eq!(status, 404, "{target}: {body}");
        assert_eq!(
            body["error"]["fields"]["reply_to"],
            "no such message in this room"
        );
        assert!(!body.to_string().contains("secret"));
    }
    let stored = history(&s, &alice, &room).await;
    assert_eq!(stored.len(), 3);
    // The excerpt follows the message: once it is deleted, it is empty.
    delete(&s, &alice, question["id"].as_i64().unwrap()).await;
    let stored = history(&s, &alice, &room).await;
    assert_eq!(stored[1]["reply_to"]["excerpt"], "");
    assert_eq!(stored[1]["reply_to"]["id"], question["id"]);
}

#[tokio::test]
async fn mentions_name_members_count_as_unread_and_are_listed_newest_first() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("Bob").await;
    let carol = s.user("carol").await;
    let group = s.room(&alice, &[&bob], Some("team")).await;
    let other = s.room(&carol, &[&bob, &alice], Some("other")).await;

    // Case-insensitive, members only (carol is not in the team), each once.
    let m = post(&s, &alice, &group, "@bob, @BOB and @carol: thanks @bob.").await;
    assert_eq!(m["mentions"], json!([bob.id]));
    let plain = post(&s, &alice, &group, "no one here, mail bob@example.com").await;
    assert_eq!(plain["mentions"], json!([]));
    let second = post(&s, &carol, &other, "@alice @Bob look").await;
    assert_eq!(second["mentions"], json!([alice.id, bob.id]));

    let (_, rooms) = s.get("/api/v1/chats/", &bob.token).await;
    let count = |rooms: &Value, id: &str| {
        rooms
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["room_id"] == id)
            .unwrap()["mention_count"]
            .as_i64()
            .unwrap()
    };
    assert_eq!((count(&rooms, &group), count(&rooms, &other)), (1, 1));
    let (_, page) = s.get("/api/v1/mentions/", &bob.token).await;
    let ids: Vec<&Value> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert_eq!(ids, [&second["id"], &m["id"]], "newest first");
    assert_eq!(page["next"], Value::Null);
    let (_, first) = s.get("/api/v1/mentions/?limit=1", &bob.token).await;
    assert_eq!(first["results"][0]["id"], second["id"]);
    let next = first["next"].as_i64().unwrap();
    let (_, rest) = s
        .get(
            &format!("/api/v1/mentions/?limit=1&before={next}"),
            &bob.token,
        )
        .await;
    assert_eq!(rest["results"][0]["id"], m["id"]);
    assert_eq!(rest["next"], Value::Null);

    // Reading clears the count; an edit that drops the name drops the mention.
    s.call(
        "PATCH",
        &format!("/api/v1/messages/{}/update/", m["id"]),
        Some(&bob.token),
        None,
    )
    .await;
    let (_, rooms) = s.get("/api/v1/chats/", &bob.token).await;
    assert_eq!(count(&rooms, &group), 0);
    let (_, edited) = edit(&s, &carol, second["id"].as_i64().unwrap(), "@alice look").await;
    assert_eq!(edited["mentions"], json!([alice.id]));
    let (_, page) = s.get("/api/v1/mentions/", &bob.token).await;
    assert_eq!(page["results"].as_array().unwrap().len(), 1);
    // A deleted message mentions nobody; a room left takes its mentions with it.
    delete(&s, &alice, m["id"].as_i64().unwrap()).await;
    let (_, page) = s.get("/api/v1/mentions/", &bob.token).await;
    assert_eq!(page["results"], json!([]));
    let third = post(&s, &carol, &other, "@alice again").await;
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/api/v1/chat/{other}/members/{}/", alice.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (_, page) = s.get("/api/v1/mentions/", &alice.token).await;
    assert!(
        !page["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == third["id"]),
        "{page}"
    );
    for bad in ["?limit=0", "?before=x", "?limit=-1"] {
        let (status, _) = s.get(&format!("/api/v1/mentions/{bad}"), &bob.token).await;
        assert_eq!(status, 400, "{bad}");
    }
}

/// `GET /api/v1/search/`.
async fn search(s: &TestServer, user: &TestUser, query: &str) -> (u16, Value) {
    let url = reqwest::Url::parse_with_params(&s.url("/api/v1/search/"), [("q", query)]).unwrap();
    let res = s
        .http
        .get(url)
        .header("Authorization", format!("Token {}", user.token))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn search_finds_words_phrases_and_prefixes_in_the_callers_rooms_only() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = s.room(&alice, &[&bob], None).await;
    let theirs = s.room(&carol, &[&alice], Some("carol and alice")).await;
    let old = post(&s, &alice, &room, "The deployment is on Friday").await;
    let cafe = post(&s, &bob, &room, "Meet at the Café, big deal").await;
    let hidden = post(&s, &carol, &theirs, "deployment secrets").await;

    let ids = |page: &Value| -> Vec<i64> {
        page["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["message"]["id"].as_i64().unwrap())
            .collect()
    };
    // Bob sees only his room; alice, in both, sees both, newest first.
    let (status, page) = search(&s, &bob, "deployment").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), [old["id"].as_i64().unwrap()]);
    assert_eq!(page["results"][0]["hits"], json!([[4, 14]]));
    let (_, page) = search(&s, &alice, "deploy*").await;
    assert_eq!(
        ids(&page),
        [hidden["id"].as_i64().unwrap(), old["id"].as_i64().unwrap()]
    );
    // Without case or diacritics; phrases in order only.
    let (_, page) = search(&s, &bob, "cafe \"big deal\"").await;
    assert_eq!(ids(&page), [cafe["id"].as_i64().unwrap()]);
    assert_eq!(page["results"][0]["hits"], json!([[12, 16], [18, 26]]));
    let (_, page) = search(&s, &bob, "\"deal big\"").await;
    assert_eq!(ids(&page), Vec::<i64>::new());

    // Edits are found by their new text; deletions are not found at all.
    edit(
        &s,
        &alice,
        old["id"].as_i64().unwrap(),
        "The launch is on Monday",
    )
    .await;
    assert_eq!(
        ids(&search(&s, &bob, "deployment").await.1),
        Vec::<i64>::new()
    );
    assert_eq!(ids(&search(&s, &bob, "launch").await.1).len(), 1);
    delete(&s, &bob, cafe["id"].as_i64().unwrap()).await;
    assert_eq!(ids(&search(&s, &bob, "cafe").await.1), Vec::<i64>::new());
    // Leaving a room leaves its messages behind.
    s.call(
        "DELETE",
        &format!("/api/v1/chat/{theirs}/members/{}/", alice.id),
        Some(&alice.token),
        None,
    )
    .await;
    assert_eq!(
        ids(&search(&s, &alice, "secrets").await.1),
        Vec::<i64>::new()
    );

    // Hostile queries get results or a 400, never a 500.
    let long = "a".repeat(10_000);
    for q in [
        "\"",
        "*",
        "NEAR(",
        "OR OR",
        "content:launch",
        "launch AND",
        "(",
        "^launch",
        "\"launch",
        "-",
        "launch*)",
        "NOT launch",
        "{launch}",
        "\u{0}",
        &long,
        "",
        "   ",
    ] {
        let (status, body) = search(&s, &bob, q).await;
        assert!(status == 200 || status == 400, "{q:?}: {status} {body}");
        if status == 400 {
            assert_eq!(body["error"]["code"], "validation_error", "{q:?}");
        }
    }
    // Syntax is only text: a column filter is two words, brackets are punctuation.
    assert_eq!(ids(&search(&s, &bob, "content:launch").await.1).len(), 0);
    assert_eq!(ids(&search(&s, &bob, "(launch) OR").await.1).len(), 0);
    assert_eq!(ids(&search(&s, &bob, "(launch)").await.1).len(), 1);
}

#[tokio::test]
async fn search_pages_by_cursor_and_can_keep_to_one_room() {
    let s = fast_server().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let one = s.room(&alice, &[&bob], Some("one")).await;
    let two = s.room(&alice, &[&bob], Some("two")).await;
    let mut in_one = Vec::new();
    for i in 0..7 {
        in_one.push(
            post(&s, &alice, &one, &format!("report {i}")).await["id"]
                .as_i64()
                .unwrap(),
        );
        post(&s, &alice, &two, &format!("report {i}")).await;
    }
    in_one.reverse();
    let mut seen = Vec::new();
    let mut next: Option<i64> = None;
    loop {
        let mut params = vec![
            ("q", "report".to_string()),
            ("room_id", one.clone()),
            ("limit", "3".to_string()),
        ];
        if let Some(n) = next {
            params.push(("before", n.to_string()));
        }
        let url = reqwest::Url::parse_with_params(&s.url("/api/v1/search/"), &params).unwrap();
        let page: Value = s
            .http
            .get(url)
            .header("Authorization", format!("Token {}", bob.token))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen.extend(
            page["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["message"]["id"].as_i64().unwrap()),
        );
        match page["next"].as_i64() {
            Some(n) => next = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, in_one);
}

#[tokio::test]
async fn group_admins_rename_promote_remove_and_delete_and_nobody_else_does() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let dave = s.user("dave").await;
    let group = s.room(&alice, &[&bob, &carol], Some("plans")).await;
    let direct = s.room(&alice, &[&dave], None).await;
    let (_, rooms) = s.get("/api/v1/chats/", &bob.token).await;
    assert_eq!(
        rooms[0]["admins"],
        json!([alice.id]),
        "the creator is the admin"
    );
    let (mut watcher, _) = s.ws(&group, &carol, "").await;

    let rename = |who: &TestUser, room: &str, name: &str| {
        let (s, who, room, name) = (&s, who.clone(), room.to_string(), name.to_string());
        async move {
            s.call(
                "PATCH",
                &format!("/api/v1/chat/{room}/"),
                Some(&who.token),
                Some(json!({ "name": name })),
            )
            .await
        }
    };
    // Not an admin: refused, nothing changes.
    assert_eq!(rename(&bob, &group, "bob's").await.0, 403);
    let promote = |who: &TestUser, user: i64| {
        let (s, who, group) = (&s, who.clone(), group.clone());
        async move {
            s.call(
                "PUT",
                &format!("/api/v1/chat/{group}/admins/{user}/"),
                Some(&who.token),
                None,
            )
            .await
        }
    };
    assert_eq!(promote(&bob, bob.id).await.0, 403);
    let msg = post(&s, &carol, &group, "carol's note").await;
    assert_eq!(delete(&s, &bob, msg["id"].as_i64().unwrap()).await.0, 403);

    // The admin renames; the room hears it.
    let (status, room) = rename(&alice, &group, "  plans for May ").await;
    assert_eq!(
        (status, room["name"].as_str()),
        (200, Some("plans for May"))
    );
    let e = watcher.next_of("room_updated").await;
    assert_eq!(
        (e["name"].as_str(), e["room_id"].as_str()),
        (Some("plans for May"), Some(group.as_str()))
    );
    for bad in ["", "   ", &"x".repeat(101)] {
        assert_eq!(rename(&alice, &group, bad).await.0, 400, "{bad:?}");
    }
    // Direct rooms have no admins and no names.
    assert_eq!(rename(&alice, &direct, "us").await.0, 403);

    // Bob becomes an admin: now he may remove carol and delete her messages.
    let (status, room) = promote(&alice, bob.id).await;
    assert_eq!(
        (status, room["admins"].clone()),
        (200, json!([alice.id, bob.id]))
    );
    assert_eq!(
        watcher.next_of("room_updated").await["admins"],
        json!([alice.id, bob.id])
    );
    assert_eq!(
        promote(&alice, dave.id).await.0,
        404,
        "dave is not a member"
    );
    let (status, tomb) = delete(&s, &bob, msg["id"].as_i64().unwrap()).await;
    assert_eq!((status, tomb["deleted"].as_bool()), (200, Some(true)));
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/api/v1/chat/{group}/members/{}/", carol.id),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(watcher.closed().await, Some(4003));
}

/// Edits and reactions are not new messages: they leave unread and mention counts as they
/// were.
#[tokio::test]
async fn edits_and_reactions_do_not_count_as_unread() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], Some("g")).await;
    let m = post(&s, &alice, &room, "hello @bob").await;
    let id = m["id"].as_i64().unwrap();
    let counts = |who: &TestUser| {
        let (s, who) = (&s, who.clone());
        async move {
            let (_, rooms) = s.get("/api/v1/chats/", &who.token).await;
            (
                rooms[0]["unread_count"].as_i64().unwrap(),
                rooms[0]["mention_count"].as_i64().unwrap(),
            )
        }
    };
    assert_eq!(counts(&bob).await, (1, 1));
    assert_eq!(counts(&alice).await, (0, 0));
    edit(&s, &alice, id, "hello again @bob").await;
    react(&s, &bob, id, "\u{1F44D}", true).await;
    react(&s, &alice, id, "\u{1F389}", true).await;
    assert_eq!(
        counts(&bob).await,
        (1, 1),
        "still one unread message for bob"
    );
    assert_eq!(
        counts(&alice).await,
        (0, 0),
        "bob's reaction is nothing new to read"
    );
}
