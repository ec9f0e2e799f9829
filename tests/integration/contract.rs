//! Where the API document (`GET /api/v1/openapi.json`) and the server could disagree, they
//! agree: what the document allows is accepted, and what it refuses is refused. The whole of
//! it is checked by `tests/schemathesis/run`; these are the cases that once differed.

use serde_json::{Value, json};

use crate::common::{TestServer, test_config};

fn ids(page: &Value) -> Vec<i64> {
    page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn before_and_after_together_read_the_window_between_them() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let path = format!("/api/v1/chat/{room}/");
    let mut sent = Vec::new();
    for i in 0..6 {
        let (_, m) = s
            .post(&path, &alice.token, json!({"content": format!("m{i}")}))
            .await;
        sent.push(m["id"].as_i64().unwrap());
    }
    let window = format!("{path}?after={}&before={}", sent[0], sent[5]);
    let (status, page) = s.get(&format!("{window}&limit=3"), &bob.token).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), [sent[1], sent[2], sent[3]]);
    assert_eq!(page["has_more"], true);
    let (_, page) = s.get(&window, &bob.token).await;
    assert_eq!(ids(&page), [sent[1], sent[2], sent[3], sent[4]]);
    assert_eq!(page["has_more"], false);
    // An empty window is an empty page, not an error.
    let (status, page) = s
        .get(
            &format!("{path}?after={}&before={}", sent[4], sent[1]),
            &bob.token,
        )
        .await;
    assert_eq!((status, ids(&page).len()), (200, 0));
}

#[tokio::test]
async fn integers_spelled_as_json_numbers_with_a_zero_fraction_are_integers() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let (status, room) = s
        .post(
            "/api/v1/chats/",
            &alice.token,
            serde_json::from_str(&format!(r#"{{"members": [{}.0], "name": "g"}}"#, bob.id))
                .unwrap(),
        )
        .await;
    assert_eq!(status, 201, "{room}");
    let room = room["room_id"].as_str().unwrap().to_string();
    let body: Value = serde_json::from_str(&format!(r#"{{"user_id": {}e0}}"#, carol.id)).unwrap();
    let (status, added) = s
        .post(&format!("/api/v1/chat/{room}/members/"), &alice.token, body)
        .await;
    assert_eq!(status, 201, "{added}");
    let (_, first) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &alice.token,
            json!({"content": "q"}),
        )
        .await;
    let reply: Value = serde_json::from_str(&format!(
        r#"{{"content": "a", "reply_to": {}.0, "client_id": null}}"#,
        first["id"]
    ))
    .unwrap();
    let (status, m) = s
        .post(&format!("/api/v1/chat/{room}/"), &bob.token, reply)
        .await;
    assert_eq!(status, 201, "{m}");
    assert_eq!(m["reply_to"]["id"], first["id"]);
    // A fraction is not an integer, and changes nothing.
    let (status, body) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &bob.token,
            json!({"content": "b", "reply_to": 1.5}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    let (_, page) = s.get(&format!("/api/v1/chat/{room}/"), &bob.token).await;
    assert_eq!(ids(&page).len(), 2);
}

#[tokio::test]
async fn names_of_things_that_do_not_exist_are_404s_naming_the_field() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let (status, body) = s
        .post(
            "/api/v1/chats/",
            &alice.token,
            json!({"members": [bob.id, 999_999]}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(body["error"]["fields"]["members"], "unknown users: 999999");
    let (_, rooms) = s.get("/api/v1/chats/", &alice.token).await;
    assert_eq!(rooms.as_array().unwrap().len(), 0, "nothing was created");
    let room = s.room(&alice, &[&bob], Some("g")).await;
    let (status, body) = s
        .post(
            &format!("/api/v1/chat/{room}/members/"),
            &alice.token,
            json!({"user_id": 424_242}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["fields"]["user_id"], "no such user");
}

#[tokio::test]
async fn query_parameters_are_exactly_what_the_document_spells() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    s.room(&alice, &[&bob], None).await;
    // `exclude`: ids and commas, nothing else.
    let (status, page) = s
        .get(
            &format!("/api/v1/users/?exclude={},{}", alice.id, bob.id),
            &alice.token,
        )
        .await;
    assert_eq!((status, page["count"].as_i64()), (200, Some(0)));
    for bad in [
        "%201",
        "1,",
        "+1",
        "-1",
        "1;2",
        "1,,2",
        "1234567890123456789",
    ] {
        let (status, body) = s
            .get(&format!("/api/v1/users/?exclude={bad}"), &alice.token)
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(
            body["error"]["fields"]["exclude"],
            "must be comma-separated user ids"
        );
    }
    // The rooms cursor: `<activity>.<room id>`, no sign but a minus, no spaces.
    for bad in [
        "+1.abc",
        "1 .abc",
        "1.",
        ".abc",
        "1.a b",
        "12345678901234567890.a",
    ] {
        let (status, body) = s
            .get(&format!("/api/v1/chats/?before={bad}"), &alice.token)
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = s.get("/api/v1/chats/?before=-5.abc", &alice.token).await;
    assert_eq!(status, 200);
    // A search without a word in it finds nothing; an empty one is refused.
    let (status, found) = s.get("/api/v1/search/?q=%2A%2A%2A", &alice.token).await;
    assert_eq!((status, found), (200, json!({"results": [], "next": null})));
    let (status, _) = s.get("/api/v1/search/?q=", &alice.token).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_served_document_carries_this_servers_limits_and_emoji() {
    let mut config = test_config();
    config.limits.max_message_chars = 321;
    let s = TestServer::start_with(config).await;
    let doc: Value = reqwest::get(s.url("/api/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = &doc["components"]["schemas"];
    for name in ["PostMessageRequest", "EditMessageRequest"] {
        assert_eq!(schemas[name]["properties"]["content"]["maxLength"], 321);
    }
    let path = &doc["paths"]["/api/v1/messages/{message_id}/reactions/{emoji}/"];
    let emoji = path["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "emoji")
        .unwrap();
    let listed = emoji["schema"]["enum"].as_array().unwrap();
    assert!(listed.contains(&json!("👍")) && listed.contains(&json!("👍🏽")));
    assert!(!listed.contains(&json!("0")));
    // Every one of them is a reaction the server takes (a sample, to keep the test quick).
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let (_, m) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &alice.token,
            json!({"content": "x"}),
        )
        .await;
    for e in listed.iter().step_by(listed.len() / 15).take(15) {
        let e = e.as_str().unwrap();
        let encoded = percent_encoding::utf8_percent_encode(e, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
        let path = format!("/api/v1/messages/{}/reactions/{encoded}/", m["id"]);
        let (status, body) = s.call("PUT", &path, Some(&bob.token), None).await;
        assert_eq!(status, 200, "{e}: {body}");
        let (status, _) = s.call("DELETE", &path, Some(&bob.token), None).await;
        assert_eq!(status, 200, "{e}");
    }
    // A digit is not an emoji.
    let path = format!("/api/v1/messages/{}/reactions/0/", m["id"]);
    let (status, _) = s.call("PUT", &path, Some(&bob.token), None).await;
    assert_eq!(status, 400);
}
