//! The OpenAPI document against the routes the server serves.

use crate::common;

use std::collections::BTreeSet;

use common::TestServer;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// OpenAPI

/// A request body each documented operation accepts.
fn sample_body(operation: &str, fresh_user: &str) -> Option<Value> {
    match operation {
        "signup" => Some(json!({"username": fresh_user, "password": "a fine password"})),
        "login" | "obtainToken" => {
            Some(json!({"username": "alice", "password": "alice-secret-pw"}))
        }
        "createRoom" => Some(json!({"members": [2], "name": "probe"})),
        "postMessage" => Some(json!({"content": "probe"})),
        "addMember" => Some(json!({"user_id": 3})),
        "createHook" => Some(json!({"name": "probe"})),
        "createBot" => Some(json!({"username": format!("{fresh_user}-bot")})),
        "postViaHook" => Some(json!({"content": "probe"})),
        _ => None,
    }
}

/// Sends a request; returns the status and the body as text (not every route answers JSON).
async fn probe(
    s: &TestServer,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = s
        .http
        .request(method, s.url(path))
        .header("Authorization", format!("Token {token}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn openapi_documents_every_route_the_server_serves_and_nothing_else() {
    let s = TestServer::start().await;
    let (status, doc) = s.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    assert_eq!((bob.id, carol.id), (2, 3), "sample_body assumes these ids");
    // A group room created by alice, so that every membership operation can succeed.
    let room = s.room(&alice, &[&bob, &carol], Some("group")).await;
    let members = format!("/api/v1/chat/{room}/members/");
    let (_, message) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &alice.token,
            json!({"content": "hi"}),
        )
        .await;
    let message_id = message["id"].as_i64().unwrap().to_string();
    let file_id = s
        .upload_id(&alice.token, "probe.png", common::png(8, 8))
        .await;

    let methods = ["get", "post", "put", "patch", "delete"];
    let paths = doc["paths"].as_object().unwrap();
    let mut probed = 0;
    // A live hook for the paths that name one, made again once a probe deleted it.
    let mut hook: Option<(String, String)> = None;
    // And an active bot of alice's for the paths that name one.
    let mut bot: Option<String> = None;
    let mut bots_made = 0;
    for (template, item) in paths {
        for method in methods {
            let path = template
                .replace("{room_id}", &room)
                .replace("{message_id}", &message_id)
                .replace("{user_id}", &carol.id.to_string())
                .replace("{file_id}", &file_id)
                .replace("{size}", "320");
            let documented = item.get(method);
            for variant in [path.clone(), path.trim_end_matches('/').to_string()] {
                if variant.is_empty() {
                    continue;
                }
                if (template.contains("{hook_id}") || template.contains("{secret}"))
                    && hook.is_none()
                {
                    let (status, made) = s
                        .post(
                            &format!("/api/v1/chat/{room}/hooks/"),
                            &alice.token,
                            json!({"name": "probe"}),
                        )
                        .await;
                    assert_eq!(status, 201, "{made}");
                    hook = Some((
                        made["id"].to_string(),
                        made["secret"].as_str().unwrap().into(),
                    ));
                }
                if template.contains("{bot_id}") && bot.is_none() {
                    bots_made += 1;
                    let (status, made) = s
                        .post(
                            "/api/v1/bots/",
                            &alice.token,
                            json!({"username": format!("probe-bot-{bots_made}")}),
                        )
                        .await;
                    assert_eq!(status, 201, "{made}");
                    bot = Some(made["bot"]["id"].to_string());
                }
                let variant = variant.replace("{bot_id}", bot.as_deref().unwrap_or(""));
                let (hook_id, secret) = hook.clone().unwrap_or_default();
                let variant = variant
                    .replace("{hook_id}", &hook_id)
                    .replace("{secret}", &secret);
                let op = documented
                    .and_then(|o| o["operationId"].as_str())
                    .unwrap_or("");
                // A token of its own, so that probing logout does not sign alice out.
                let token = if ["logout", "revokeAllTokens", "revokeToken"].contains(&op) {
                    s.user(&format!("probe{probed}")).await.token
                } else {
                    alice.token.clone()
                };
                let token_id = if op == "revokeToken" {
                    let (_, sessions) = s.get("/api/v1/tokens/", &token).await;
                    sessions[0]["id"].to_string()
                } else {
                    "1".to_string()
                };
                let variant = variant.replace("{token_id}", &token_id);
                // Undocumented methods get a body too: without one, warp may answer 405 for a
                // body-less request to a route that exists.
                let body = sample_body(op, &format!("fresh{probed}"))
                    .or(documented.is_none().then(|| json!({})));
                if op == "removeMember" {
                    // Each probe removes carol: put her back first.
                    let (status, _) = s
                        .post(&members, &alice.token, json!({"user_id": carol.id}))
                        .await;
                    assert!(status == 200 || status == 201);
                }
                let (status, reply) =
                    probe(&s, &method.to_uppercase(), &variant, &token, body).await;
                probed += 1;
                if op == "deleteHook" && status == 204 {
                    hook = None;
                }
                if op == "deactivateBot" && status == 204 {
                    bot = None;
                }
                match documented {
                    Some(operation) => {
                        let listed = operation["responses"]
                            .as_object()
                            .unwrap()
                            .contains_key(&status.to_string());
                        assert!(
                            status != 404 && status != 405 && listed,
                            "{} {variant} answered {status}, which its documentation does not list: {reply}",
                            method.to_uppercase()
                        );
                    }
                    None => assert_eq!(
                        status,
                        405,
                        "{} {variant} is served but not documented: {reply}",
                        method.to_uppercase()
                    ),
                }
            }
        }
    }
    assert!(probed > 50);

    // Near misses of documented paths are not served.
    for path in [
        "/api/v1/",
        "/api/v1",
        "/api/v2/me/",
        "/api/v1/user/",
        "/api/v1/me/extra/",
        "/api/v1/users/1/",
        "/api/v1/chats/abc/",
        "/api/v1/chat/",
        "/api/v1/messages/",
        "/api/v1/messages/1/extra/",
        "/api/v1/messages/1/update/more/",
        "/api/v1/openapi.yaml",
        "/api/v1/tokens/1/extra/",
        "/api/v1/admin/",
        "/ws/chat/",
        "/ws/chat/abc/extra/",
        "/healthz/x",
        "/metrics/x",
    ] {
        for method in methods {
            let (status, _) = probe(&s, &method.to_uppercase(), path, &alice.token, None).await;
            assert_eq!(
                status,
                404,
                "{} {path} is served but not documented",
                method.to_uppercase()
            );
        }
    }
}

#[test]
fn openapi_paths_match_the_route_table_in_the_source() {
    let doc: Value = serde_json::from_str(chat_server::ops::OPENAPI).unwrap();
    let mut documented = BTreeSet::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        let path = chat_server::routes::shape(template);
        for method in item.as_object().unwrap().keys() {
            if method != "parameters" {
                documented.insert((method.clone(), path.clone()));
            }
        }
    }
    // The route table, less the web client's pages and assets.
    let served: BTreeSet<(String, String)> = chat_server::routes::TABLE
        .iter()
        .filter(|r| r.api)
        .map(|r| (r.method.to_lowercase(), r.shape()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in openapi.json: {undocumented:?}"
    );
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        unserved.is_empty(),
        "in openapi.json but not served: {unserved:?}"
    );
    assert!(served.len() >= 12, "{served:?}");
}
