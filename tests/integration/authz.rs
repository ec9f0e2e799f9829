//! Authorization everywhere, table-driven: every route and every WebSocket action, called as
//! (a) no token, (b) a bad token, (c) an expired and a revoked token, (d) a valid user who is
//! not a member of the room, gets its documented status, and the database is unchanged.

use crate::common;

use common::{TestServer, Ws};
use serde_json::{Value, json};

/// Every row of every table, as text, sorted: equal snapshots mean nothing changed.
async fn snapshot(s: &TestServer) -> Vec<String> {
    s.sqlite
        .read(|c| {
            let tables: Vec<String> = c
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut rows = Vec::new();
            for table in tables {
                let mut stmt = c.prepare(&format!("SELECT * FROM \"{table}\""))?;
                let columns = stmt.column_count();
                let mut query = stmt.query([])?;
                while let Some(row) = query.next()? {
                    let values: Vec<String> = (0..columns)
                        .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                        .collect();
                    rows.push(format!("{table}: {}", values.join(" | ")));
                }
            }
            rows.sort();
            Ok(rows)
        })
        .await
        .unwrap()
}

/// A request in the table; `{room}`, `{message}`, `{member}` and `{token_id}` are filled in.
struct Route {
    method: &'static str,
    path: &'static str,
    body: Option<Value>,
    /// The status a valid user who is not a member of the room gets.
    non_member: u16,
}

fn routes() -> Vec<Route> {
    let r = |method, path, body, non_member| Route {
        method,
        path,
        body,
        non_member,
    };
    vec![
        r("GET", "/api/v1/me/", None, 200),
        r("GET", "/api/v1/users/?search=a", None, 200),
        r("GET", "/api/v1/chats/", None, 200),
        r("GET", "/api/v1/tokens/", None, 200),
        r("GET", "/api/v1/mentions/", None, 200),
        r("GET", "/api/v1/bots/", None, 200),
        r("POST", "/api/v1/bots/{member}/token/", None, 404),
        r("DELETE", "/api/v1/bots/{member}/", None, 404),
        r("GET", "/api/v1/search/?q=secret", None, 200),
        r("GET", "/api/v1/files/{file}/", None, 404),
        r("GET", "/api/v1/files/{file}/thumbnail/{size}/", None, 404),
        r("GET", "/api/v1/chat/{room}/", None, 404),
        r("GET", "/api/v1/chat/{room}/?after=0", None, 404),
        r(
            "POST",
            "/api/v1/chat/{room}/",
            Some(json!({"content": "let me in"})),
            404,
        ),
        r(
            "POST",
            "/api/v1/chat/{room}/members/",
            Some(json!({"user_id": "{me}"})),
            404,
        ),
        r("DELETE", "/api/v1/chat/{room}/members/{member}/", None, 404),
        r("GET", "/api/v1/chat/{room}/hooks/", None, 404),
        r(
            "POST",
            "/api/v1/chat/{room}/hooks/",
            Some(json!({"name": "mine"})),
            404,
        ),
        r("DELETE", "/api/v1/chat/{room}/hooks/{hook}/", None, 404),
        r(
            "PATCH",
            "/api/v1/chat/{room}/",
            Some(json!({"name": "mine now"})),
            404,
        ),
        r("PUT", "/api/v1/chat/{room}/admins/{me}/", None, 404),
        r("PATCH", "/api/v1/messages/{message}/update/", None, 404),
        r("PATCH", "/api/messages/v1/{message}/update/", None, 404),
        r(
            "PATCH",
            "/api/v1/messages/{message}/",
            Some(json!({"content": "mine now"})),
            404,
        ),
        r(
            "PUT",
            "/api/v1/messages/{message}/reactions/{emoji}/",
            None,
            404,
        ),
        r(
            "DELETE",
            "/api/v1/messages/{message}/reactions/{emoji}/",
            None,
            404,
        ),
        r("DELETE", "/api/v1/messages/{message}/", None, 404),
        r("DELETE", "/api/v1/tokens/{token_id}/", None, 404),
        // These change only the caller's own state; they come last for the non-member.
        r(
            "POST",
            "/api/v1/uploads/?filename=notes.txt",
            Some(json!({"a": "file"})),
            201,
        ),
        r(
            "POST",
            "/api/v1/bots/",
            Some(json!({"username": "carols-bot"})),
            201,
        ),
        r(
            "POST",
            "/api/v1/chats/",
            Some(json!({"members": ["{member}"]})),
            201,
        ),
        r("DELETE", "/api/v1/tokens/", None, 204),
        // The one before signed the non-member out everywhere.
        r("POST", "/api/v1/logout/?all=1", None, 401),
    ]
}

/// Replaces the placeholders in a path or JSON body.
fn fill(text: &str, vars: &[(&str, String)]) -> String {
    vars.iter().fold(text.to_string(), |t, (k, v)| {
        t.replace(&format!("{{{k}}}"), v)
    })
}

fn fill_body(body: &Value, vars: &[(&str, String)]) -> Value {
    // Placeholders standing for numbers are quoted in the table; unquote them.
    let mut text = body.to_string();
    for (k, v) in vars {
        text = text.replace(&format!("\"{{{k}}}\""), v);
    }
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn every_route_and_websocket_action_refuses_callers_without_the_right() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await; // not a member
    let room = s.room(&alice, &[&bob], Some("private")).await;
    let (mut bob_ws, _) = s.ws(&room, &bob, "").await;
    let file = s
        .upload_id(&alice.token, "private.png", common::png(64, 48))
        .await;
    let message = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &alice.token,
            json!({"content": "secret", "attachments": [file]}),
        )
        .await
        .1;
    bob_ws.next_of("message").await;
    let (_, tokens) = s.get("/api/v1/tokens/", &alice.token).await;
    let alice_token_id = tokens[0]["id"].as_i64().unwrap();

    // (c) an expired token and a revoked one, both of alice.
    let expired = {
        let (_, login) = s
            .call(
                "POST",
                "/api/v1/login/",
                None,
                Some(json!({"username": "alice", "password": "alice-secret-pw"})),
            )
            .await;
        let token = login["token"].as_str().unwrap().to_string();
        let digest = chat_server::auth::token_digest(&token);
        s.sqlite
            .write(move |c| {
                c.execute(
                    "UPDATE tokens SET expires_at = 1 WHERE digest = ?1",
                    [digest],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        token
    };
    let revoked = {
        let (_, login) = s
            .call(
                "POST",
                "/api/v1/login/",
                None,
                Some(json!({"username": "alice", "password": "alice-secret-pw"})),
            )
            .await;
        let token = login["token"].as_str().unwrap().to_string();
        assert_eq!(
            s.call("POST", "/api/v1/logout/", Some(&token), None)
                .await
                .0,
            204
        );
        token
    };

    let vars = [
        ("room", room.clone()),
        ("message", message["id"].to_string()),
        ("member", bob.id.to_string()),
        ("me", carol.id.to_string()),
        ("token_id", alice_token_id.to_string()),
        ("emoji", "%F0%9F%91%8D".to_string()),
        ("file", file.clone()),
        ("size", "320".to_string()),
    ];
    let before = snapshot(&s).await;

    let bad_callers: [(&str, Option<String>); 6] = [
        ("no token", None),
        ("malformed token", Some("not-a-token".into())),
        ("unknown token", Some("0".repeat(64))),
        ("token with a stray byte", Some(format!("{}x", alice.token))),
        ("expired token", Some(expired.clone())),
        ("revoked token", Some(revoked.clone())),
    ];
    for route in routes() {
        let path = fill(route.path, &vars);
        let body = route.body.as_ref().map(|b| fill_body(b, &vars));
        for (who, token) in &bad_callers {
            let (status, reply) = s
                .call(route.method, &path, token.as_deref(), body.clone())
                .await;
            assert_eq!(status, 401, "{} {path} with {who}: {reply}", route.method);
            assert_eq!(reply["error"]["code"], "not_authenticated", "{reply}");
        }
        // The Bearer scheme and a lower-case header name change nothing.
        let res = s
            .http
            .request(
                reqwest::Method::from_bytes(route.method.as_bytes()).unwrap(),
                s.url(&path),
            )
            .header("authorization", format!("bearer {revoked}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 401);
    }
    for path in [format!("/ws/chat/{room}/"), "/ws/".to_string()] {
        assert_eq!(s.ws_refused(&path, &[]).await, 401, "{path} with no token");
        for (who, token) in &bad_callers[1..] {
            let token = token.as_deref().unwrap();
            let query = format!("{path}?token={token}");
            assert_eq!(s.ws_refused(&query, &[]).await, 401, "{path} with {who}");
            let header = format!("Token {token}");
            let status = s.ws_refused(&path, &[("authorization", &header)]).await;
            assert_eq!(status, 401, "{path} with {who} in the header");
        }
    }
    assert_eq!(
        snapshot(&s).await,
        before,
        "refused callers changed the database"
    );

    // (d) carol, who is not in the room.
    let (mut carol_ws, hello) = {
        let url = format!("ws://{}/ws/?token={}", s.addr, carol.token);
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut ws = Ws { socket };
        let hello = ws.next_json().await;
        (ws, hello)
    };
    assert_eq!(hello["rooms"], json!([]), "carol's socket sees no rooms");
    let status = s
        .ws_refused(&format!("/ws/chat/{room}/?token={}", carol.token), &[])
        .await;
    assert_eq!(status, 404, "the room socket does not admit a non-member");
    let actions = [
        json!({"action": "message", "room_id": room, "content": "let me in"}),
        json!({"action": "typing", "room_id": room, "typing": true}),
        json!({"action": "read", "message_id": message["id"]}),
        json!({"action": "edit", "message_id": message["id"], "content": "mine now"}),
        json!({"action": "delete", "message_id": message["id"]}),
        json!({"action": "react", "message_id": message["id"], "emoji": "\u{1F44D}", "on": true}),
        json!({"action": "message", "room_id": "0".repeat(24), "content": "guess"}),
    ];
    for action in &actions {
        carol_ws.send_json(action.clone()).await;
        let reply = carol_ws.next_json().await;
        assert_eq!(reply["type"], "error", "{action} -> {reply}");
        assert_eq!(reply["code"], "not_found", "{action} -> {reply}");
    }
    carol_ws.send_json(json!({"action": "ping"})).await;
    assert_eq!(carol_ws.next_json().await["type"], "pong");
    // Bob heard nothing from carol: his next frame is the answer to his own ping.
    bob_ws.send_json(json!({"action": "ping"})).await;
    let next = bob_ws.next_json().await;
    assert_eq!(next["type"], "pong", "bob received {next}");

    for route in routes() {
        let path = fill(route.path, &vars);
        let body = route.body.as_ref().map(|b| fill_body(b, &vars));
        let (status, reply) = s.call(route.method, &path, Some(&carol.token), body).await;
        assert_eq!(status, route.non_member, "{} {path}: {reply}", route.method);
        let text = reply.to_string();
        assert!(
            !text.contains("secret") && !text.contains("private"),
            "{text}"
        );
        if status == 404 {
            assert_eq!(reply["error"]["code"], "not_found");
        }
        if status == 404 || route.method == "GET" {
            assert_eq!(snapshot(&s).await, before, "{} {path}", route.method);
        }
    }
    // Alice's and bob's view is untouched.
    let (_, history) = s.get(&format!("/api/v1/chat/{room}/"), &bob.token).await;
    assert_eq!(history["results"].as_array().unwrap().len(), 1);
    assert_eq!(history["results"][0]["is_read"], false);
    assert_eq!(s.get("/api/v1/me/", &alice.token).await.0, 200);
}

#[test]
fn the_table_above_covers_every_route_that_needs_a_token() {
    use chat_server::routes::{Access, TABLE, shape};
    let covered: std::collections::BTreeSet<(String, String)> = routes()
        .iter()
        .map(|r| (r.method.to_string(), shape(r.path)))
        // The sockets are probed by the test itself, beside the table.
        .chain([
            ("GET".to_string(), "/ws/chat/{}".to_string()),
            ("GET".to_string(), "/ws".to_string()),
        ])
        .collect();
    for route in TABLE.iter().filter(|r| r.access != Access::Anyone) {
        assert!(
            covered.contains(&(route.method.to_string(), route.shape())),
            "{} {} needs a token but is not in the authorization table",
            route.method,
            route.path
        );
    }
    // A route listed as open to anyone must be: nothing in this table is.
    for r in routes() {
        let listed = TABLE
            .iter()
            .find(|t| t.method == r.method && t.shape() == shape(r.path))
            .unwrap_or_else(|| panic!("{} {} is not in the route table", r.method, r.path));
        assert_ne!(listed.access, Access::Anyone, "{} {}", r.method, r.path);
    }
}
