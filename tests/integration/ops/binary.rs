//! The real binary: admin subcommands, backup, SIGTERM under load.

use crate::common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use common::{TestServer, WAIT, test_config};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::*;

#[test]
fn print_config_prints_the_annotated_defaults() {
    let (ok, stdout, _) = admin(&["print-config"], None);
    assert!(ok);
    assert_eq!(stdout, include_str!("../../../config.example.toml"));
    let parsed = chat_server::Config::from_toml(&stdout).unwrap();
    assert_eq!(
        format!("{parsed:?}"),
        format!("{:?}", chat_server::Config::default())
    );
}

#[tokio::test]
async fn admin_commands_manage_users_of_a_running_server() {
    let setup = AdminSetup::start().await;
    let s = &setup.server;
    let args = |rest: &[&str]| setup.args(rest);
    let login = |username: &'static str, password: String| async move {
        s.call(
            "POST",
            "/api/v1/login/",
            None,
            Some(json!({"username": username, "password": password})),
        )
        .await
    };

    // create, with the password on stdin
    let (ok, stdout, stderr) = admin_async(
        args(&[
            "user",
            "create",
            "carol",
            "--password-stdin",
            "--first-name",
            "Carol",
        ]),
        Some("carol-long-pass\n".into()),
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("created user carol"), "{stdout}");
    let (status, body) = login("carol", "carol-long-pass".into()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["first_name"], "Carol");
    let carol_token = body["token"].as_str().unwrap().to_string();

    // the same rules as signup
    let (ok, _, stderr) = admin_async(
        args(&["user", "create", "CAROL", "--password-stdin"]),
        Some("another-pass\n".into()),
    )
    .await;
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
    let (ok, _, stderr) = admin_async(
        args(&["user", "create", "eve", "--password-stdin"]),
        Some("12345678\n".into()),
    )
    .await;
    assert!(!ok && stderr.contains("numeric"), "{stderr}");

    // create with a generated password, printed once
    let (ok, stdout, stderr) = admin_async(args(&["user", "create", "dave"]), None).await;
    assert!(ok, "{stderr}");
    let generated = stdout.trim().rsplit(' ').next().unwrap().to_string();
    assert_eq!(login("dave", generated).await.0, 200, "{stdout}");

    // list, as a table and as JSON
    let (ok, stdout, _) = admin_async(args(&["user", "list"]), None).await;
    assert!(
        ok && stdout.contains("carol") && stdout.contains("dave"),
        "{stdout}"
    );
    let (_, stdout, _) = admin_async(args(&["user", "list", "--json"]), None).await;
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["is_active"], true);

    // set-password: the new one works, the old one and old sessions do not
    let (ok, _, stderr) = admin_async(
        args(&["user", "set-password", "carol", "--password-stdin"]),
        Some("carol-new-pass\n".into()),
    )
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(s.get("/api/v1/me/", &carol_token).await.0, 401);
    assert_eq!(login("carol", "carol-long-pass".into()).await.0, 401);
    let (status, body) = login("carol", "carol-new-pass".into()).await;
    assert_eq!(status, 200);
    let carol = common::TestUser {
        id: body["user"]["id"].as_i64().unwrap(),
        username: "carol".into(),
        token: body["token"].as_str().unwrap().to_string(),
    };

    // deactivate: tokens stop at once, open sockets close with 1008, others are unaffected
    let bob = s.user("bob").await;
    let room = s.room(&carol, &[&bob], None).await;
    let (mut carol_ws, _) = s.ws(&room, &carol, "").await;
    let (mut bob_ws, _) = s.ws(&room, &bob, "").await;
    let (ok, _, stderr) = admin_async(args(&["user", "deactivate", "carol"]), None).await;
    assert!(ok, "{stderr}");
    assert_eq!(s.get("/api/v1/me/", &carol.token).await.0, 401);
    assert_eq!(carol_ws.closed().await, Some(1008));
    assert_eq!(login("carol", "carol-new-pass".into()).await.0, 401);
    assert_eq!(s.get("/api/v1/me/", &bob.token).await.0, 200);
    bob_ws.send_json(json!({"action": "ping"})).await;
    assert_eq!(bob_ws.next_of("pong").await["type"], "pong");

    // activate: logging in works again, the revoked token stays revoked
    let (ok, _, _) = admin_async(args(&["user", "activate", "carol"]), None).await;
    assert!(ok);
    assert_eq!(login("carol", "carol-new-pass".into()).await.0, 200);
    assert_eq!(s.get("/api/v1/me/", &carol.token).await.0, 401);

    let (ok, _, stderr) = admin_async(args(&["user", "deactivate", "nobody"]), None).await;
    assert!(!ok && stderr.contains("no user named"), "{stderr}");
}

#[tokio::test]
async fn backup_copies_a_database_that_is_being_written_and_the_copy_serves() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let out = dir.path().join("backup.db");
    let mut config = test_config();
    config.server.db = db.to_str().unwrap().to_string();
    config.limits.send_rate_per_sec = 100_000.0;
    config.limits.send_burst = 100_000;
    let s = TestServer::start_with(config.clone()).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let path = format!("/api/v1/chat/{room}/");
    let mut acked = Vec::new();
    for i in 0..20 {
        let (status, m) = s
            .post(&path, &alice.token, json!({"content": format!("m{i}")}))
            .await;
        assert_eq!(status, 201);
        acked.push(m["id"].as_i64().unwrap());
    }
    // Files, attached to a message, and what the restored server must serve of them.
    let mut files = Vec::new();
    for (name, bytes) in [
        ("photo.png", common::png(400, 300)),
        ("notes.txt", b"files travel with the database".to_vec()),
    ] {
        let id = s.upload_id(&alice.token, name, bytes.clone()).await;
        files.push((id, bytes));
    }
    let ids: Vec<&String> = files.iter().map(|(id, _)| id).collect();
    let (status, _) = s
        .post(
            &path,
            &alice.token,
            json!({"content": "files", "attachments": ids}),
        )
        .await;
    assert_eq!(status, 201);
    let thumbnail = format!("/api/v1/files/{}/thumbnail/320/", files[0].0);
    let (_, _, thumb) = s.download(&thumbnail, &bob.token, &[]).await;
    files.push((String::new(), thumb));

    // Keep writing while the backup runs.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = {
        let http = s.http.clone();
        let url = s.url(&path);
        let token = bob.token.clone();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                tokio::select! {
                    _ = &mut stop_rx => return n,
                    res = http.post(&url).header("Authorization", format!("Token {token}"))
                        .json(&json!({"content": "busy"})).send() => {
                        assert_eq!(res.unwrap().status(), 201);
                        n += 1;
                    }
                }
            }
        })
    };
    let (ok, stdout, stderr) = admin_async(
        vec![
            "backup".into(),
            "--db".into(),
            db.to_str().unwrap().into(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ],
        None,
    )
    .await;
    let _ = stop_tx.send(());
    let busy_writes = writer.await.unwrap();
    assert!(ok, "{stderr}");
    assert!(stdout.contains("integrity check ok"), "{stdout}");
    assert!(stdout.contains("files: 4 ("), "{stdout}");
    assert!(busy_writes > 0, "no writes overlapped the backup");
    assert!(!dir.path().join("backup.db.partial").exists());

    // The copy is a whole database with everything acknowledged before the backup began.
    {
        let copy = rusqlite::Connection::open(&out).unwrap();
        let check: String = copy
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        for id in &acked {
            let found: i64 = copy
                .query_row("SELECT count(*) FROM messages WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .unwrap();
            assert_eq!(found, 1, "message {id} missing from the backup");
        }
    }
    s.stop().await;
    config.server.db = out.to_str().unwrap().to_string();
    let restored = TestServer::start_with(config).await;
    let (status, history) = restored
        .get(&format!("{path}?after=0&limit=20"), &alice.token)
        .await;
    assert_eq!(status, 200);
    assert_eq!(history["results"][19]["content"], "m19");
    // Every file, from the restored files directory beside the restored database.
    assert_eq!(
        restored.state.files.root(),
        dir.path().join("backup.db.files").as_path()
    );
    for (id, bytes) in &files {
        let url = if id.is_empty() {
            thumbnail.clone()
        } else {
            format!("/api/v1/files/{id}/")
        };
        let (status, _, got) = restored.download(&url, &bob.token, &[]).await;
        assert_eq!(status, 200, "{url}");
        assert_eq!(&got, bytes, "{url}");
    }

    let (ok, _, stderr) = admin_async(
        vec![
            "backup".into(),
            "--db".into(),
            dir.path().join("missing.db").to_str().unwrap().into(),
            "--out".into(),
            dir.path().join("x.db").to_str().unwrap().into(),
        ],
        None,
    )
    .await;
    assert!(!ok && stderr.contains("does not exist"), "{stderr}");
}

async fn api(
    http: &reqwest::Client,
    addr: SocketAddr,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut req = http
        .request(method, format!("http://{addr}{path}"))
        .json(&body);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Token {t}"));
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn sigterm_under_load_exits_cleanly_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let cfg = quick_config(dir.path());
    let server = Spawned::start(&db, &cfg);
    let addr = server.addr;
    let http = reqwest::Client::new();
    let post = reqwest::Method::POST;
    let mut tokens = Vec::new();
    for name in ["alice", "bob"] {
        let password = format!("{name}-secret-pw");
        let (status, _) = api(
            &http,
            addr,
            post.clone(),
            "/api/v1/signup/",
            None,
            json!({"username": name, "password": password}),
        )
        .await;
        assert_eq!(status, 201);
        let (_, login) = api(
            &http,
            addr,
            post.clone(),
            "/api/v1/login/",
            None,
            json!({"username": name, "password": password}),
        )
        .await;
        tokens.push(login["token"].as_str().unwrap().to_string());
    }
    let (_, room) = api(
        &http,
        addr,
        post.clone(),
        "/api/v1/chats/",
        Some(&tokens[0]),
        json!({"members": [2]}),
    )
    .await;
    let room = room["room_id"].as_str().unwrap().to_string();

    // Acknowledged messages (id, content) arrive here from every sender.
    let (acks_tx, mut acks_rx) = tokio::sync::mpsc::unbounded_channel::<(i64, String)>();
    let mut senders = Vec::new();
    for (n, token) in tokens.iter().cycle().take(4).enumerate() {
        let url = format!("ws://{addr}/ws/chat/{room}/?token={token}");
        let acks = acks_tx.clone();
        senders.push(tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            let mut k = 0;
            loop {
                let client_id = format!("ws{n}-{k}");
                let frame =
                    json!({"action": "message", "content": client_id, "client_id": client_id});
                if ws.send(WsMessage::text(frame.to_string())).await.is_err() {
                    return None;
                }
                // Read until our acknowledgement, or the close.
                loop {
                    match tokio::time::timeout(WAIT, ws.next()).await {
                        Ok(Some(Ok(WsMessage::Text(t)))) => {
                            let v: Value = serde_json::from_str(t.as_str()).unwrap();
                            if v["type"] == "message" && v["message"]["client_id"] == client_id {
                                let id = v["message"]["id"].as_i64().unwrap();
                                let _ = acks.send((id, client_id.clone()));
                                break;
                            }
                        }
                        Ok(Some(Ok(WsMessage::Close(frame)))) => {
                            return frame.map(|f| u16::from(f.code));
                        }
                        Ok(Some(Ok(_))) => {}
                        Ok(Some(Err(_)) | None) | Err(_) => return None,
                    }
                }
                k += 1;
            }
        }));
    }
    for (n, token) in tokens.iter().enumerate() {
        let http = http.clone();
        let token = token.clone();
        let path = format!("/api/v1/chat/{room}/");
        let acks = acks_tx.clone();
        senders.push(tokio::spawn(async move {
            for k in 0.. {
                let content = format!("rest{n}-{k}");
                let sent = http
                    .post(format!("http://{addr}{path}"))
                    .header("Authorization", format!("Token {token}"))
                    .json(&json!({"content": content}))
                    .send()
                    .await;
                let Ok(res) = sent else { return None };
                if res.status() != 201 {
                    return None;
                }
                let Ok(m) = res.json::<Value>().await else {
                    return None;
                };
                let _ = acks.send((m["id"].as_i64().unwrap(), content));
            }
            None
        }));
    }
    drop(acks_tx);

    // Under load: signal once 500 messages were acknowledged.
    let mut acked = Vec::new();
    while acked.len() < 500 {
        let ack = tokio::time::timeout(WAIT, acks_rx.recv())
            .await
            .expect("senders stalled")
            .expect("senders stopped");
        acked.push(ack);
    }
    server.terminate();
    let status = server.exit_status(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status:?}");

    let mut close_codes = Vec::new();
    for sender in senders {
        close_codes.push(tokio::time::timeout(WAIT, sender).await.unwrap().unwrap());
    }
    while let Some(ack) = acks_rx.recv().await {
        acked.push(ack);
    }
    assert!(
        close_codes.iter().filter(|c| **c == Some(1001)).count() >= 1,
        "no socket was told to reconnect: {close_codes:?}"
    );
    let wal = std::fs::metadata(dir.path().join("chat.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the WAL was not checkpointed");

    // Restart on the same file: every acknowledged message is there, once.
    let server = Spawned::start(&db, &cfg);
    let mut stored: HashMap<i64, String> = HashMap::new();
    let mut after = 0;
    loop {
        let (status, page) = api(
            &http,
            server.addr,
            reqwest::Method::GET,
            &format!("/api/v1/chat/{room}/?after={after}&limit=200"),
            Some(&tokens[1]),
            Value::Null,
        )
        .await;
        assert_eq!(status, 200);
        let results = page["results"].as_array().unwrap();
        for m in results {
            let id = m["id"].as_i64().unwrap();
            stored.insert(id, m["content"].as_str().unwrap().to_string());
            after = id;
        }
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    for (id, content) in &acked {
        assert_eq!(
            stored.get(id),
            Some(content),
            "acknowledged message {id} was lost"
        );
    }
    let distinct: BTreeSet<&String> = stored.values().collect();
    assert_eq!(distinct.len(), stored.len(), "a message was stored twice");
    server.terminate();
    assert!(server.exit_status(Duration::from_secs(30)).await.success());
}
