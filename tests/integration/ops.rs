//! Operations: health and metrics endpoints, TLS, the OpenAPI document, shutdown, schema
//! upgrades, and the admin subcommands of the real binary.

use crate::common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use common::{TestServer, WAIT, test_config};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const BIN: &str = env!("CARGO_BIN_EXE_chat-server");

// ---------------------------------------------------------------------------------------------
// /healthz and /metrics

#[tokio::test]
async fn healthz_checks_the_database_and_fails_when_it_cannot_write_or_is_shutting_down() {
    let s = TestServer::start().await;
    let (status, body) = s.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["database"], "ok");
    assert!(body["schema_version"].as_i64().unwrap() >= 1);

    // A database whose writer has stopped is not healthy.
    s.state.store.close().await.unwrap();
    let (status, body) = s.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["database"], "database_error");

    let s = TestServer::start().await;
    s.state.lifecycle.begin_shutdown();
    let (status, body) = s.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["database"], "shutting_down");
}

/// Parses the Prometheus text format into `name{labels}` → value, checking every line.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value {line:?}"));
        assert!(
            name.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_'),
            "bad name {line:?}"
        );
        out.insert(name.to_string(), value);
    }
    out
}

async fn scrape(s: &TestServer) -> HashMap<String, f64> {
    let res = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"));
    parse_metrics(&res.text().await.unwrap())
}

#[tokio::test]
async fn metrics_count_sockets_rooms_messages_deliveries_latencies_and_rejections() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let before = scrape(&s).await;

    let (mut a, _) = s.ws(&room, &alice, "").await;
    let (mut b, _) = s.ws(&room, &bob, "").await;
    a.next_of("presence").await;
    for i in 0..3 {
        a.say(&format!("hello {i}"), &format!("m{i}")).await;
        b.next_of("message").await;
    }
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/login/",
            None,
            Some(json!({"username": "alice", "password": "wrong password"})),
        )
        .await;
    assert_eq!(status, 401);
    let after = scrape(&s).await;

    // Gauges belong to this server.
    assert_eq!(after["chat_websocket_connections"], 2.0);
    assert_eq!(after["chat_rooms_active"], 1.0);
    assert_eq!(after["chat_last_message_id"], 3.0);
    // Counters are process-wide (other tests run beside this one): check the growth.
    let grew = |name: &str| after[name] - before.get(name).copied().unwrap_or(0.0);
    assert!(grew("chat_messages_stored_total") >= 3.0);
    // 3 messages to 2 sockets, plus presence.
    assert!(grew("chat_deliveries_total") >= 6.0);
    assert!(grew("chat_send_seconds_count") >= 3.0);
    assert!(grew("chat_write_batch_seconds_count") >= 3.0);
    assert!(after["chat_send_seconds_bucket{le=\"+Inf\"}"] >= after["chat_send_seconds_count"]);
    assert!(grew("chat_rejected_requests_total{reason=\"invalid_credentials\"}") >= 1.0);
    assert!(after["chat_http_connections"] >= 1.0);

    drop((a, b));
}

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

    let methods = ["get", "post", "put", "patch", "delete"];
    let paths = doc["paths"].as_object().unwrap();
    let mut probed = 0;
    for (template, item) in paths {
        let path = template
            .replace("{room_id}", &room)
            .replace("{message_id}", &message_id)
            .replace("{user_id}", &carol.id.to_string());
        for method in methods {
            let documented = item.get(method);
            for variant in [path.clone(), path.trim_end_matches('/').to_string()] {
                if variant.is_empty() {
                    continue;
                }
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
        "/api/v1/messages/1/",
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
        let mut path = String::new();
        for segment in template.trim_end_matches('/').split('/').skip(1) {
            path.push('/');
            path.push_str(if segment.starts_with('{') {
                "{}"
            } else {
                segment
            });
        }
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
        .map(|r| {
            let path = r.path.trim_end_matches('/').split('/').skip(1).fold(
                String::new(),
                |mut p, segment| {
                    p.push('/');
                    p.push_str(if segment.starts_with('{') {
                        "{}"
                    } else {
                        segment
                    });
                    p
                },
            );
            (r.method.to_lowercase(), path)
        })
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

// ---------------------------------------------------------------------------------------------
// TLS

struct Pem {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    der: tokio_rustls::rustls::pki_types::CertificateDer<'static>,
}

fn self_signed() -> Pem {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    Pem {
        _dir: dir,
        cert,
        key,
        der: generated.cert.der().clone(),
    }
}

fn tls_client(trusted: Option<&Pem>) -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = trusted {
        roots.add(pem.der.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

#[tokio::test]
async fn tls_serves_https_and_wss_and_refuses_plaintext_and_untrusted_clients() {
    let pem = self_signed();
    let mut config = test_config();
    config.server.tls_cert = Some(pem.cert.clone());
    config.server.tls_key = Some(pem.key.clone());
    let s = TestServer::start_with(config).await;
    let connector = tls_client(Some(&pem));

    // HTTPS: a real request over TLS.
    let mut stream = tls_connect(s.addr, &connector).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""database":"ok""#), "{response}");

    // Set up users over HTTPS, then open a WSS room socket.
    let https = |method: &'static str, path: &'static str, body: Value| {
        let connector = connector.clone();
        let addr = s.addr;
        async move {
            let mut stream = tls_connect(addr, &connector).await.unwrap();
            let body = body.to_string();
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            let (_, body) = response.split_once("\r\n\r\n").unwrap();
            serde_json::from_str::<Value>(body).unwrap()
        }
    };
    https(
        "POST",
        "/api/v1/signup/",
        json!({"username": "alice", "password": "alice-secret-pw"}),
    )
    .await;
    https(
        "POST",
        "/api/v1/signup/",
        json!({"username": "bob", "password": "bob-secret-pw"}),
    )
    .await;
    let login = https(
        "POST",
        "/api/v1/login/",
        json!({"username": "alice", "password": "alice-secret-pw"}),
    )
    .await;
    let token = login["token"].as_str().unwrap().to_string();
    let stream = tls_connect(s.addr, &connector).await.unwrap();
    let room = {
        let mut stream = stream;
        let body = json!({"members": [2]}).to_string();
        let request = format!(
            "POST /api/v1/chats/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Authorization: Token {token}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (_, body) = response.split_once("\r\n\r\n").unwrap();
        serde_json::from_str::<Value>(body).unwrap()["room_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let stream = tls_connect(s.addr, &connector).await.unwrap();
    let url = format!("wss://localhost/ws/chat/{room}/?token={token}");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let hello = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let hello: Value = serde_json::from_str(hello.to_text().unwrap()).unwrap();
    assert_eq!(hello["type"], "hello");
    ws.send(WsMessage::text(
        json!({"action": "message", "content": "over wss", "client_id": "t1"}).to_string(),
    ))
    .await
    .unwrap();
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Ok(text) = frame.to_text() else { continue };
        let v: Value = serde_json::from_str(text).unwrap();
        if v["type"] == "message" {
            assert_eq!(v["message"]["content"], "over wss");
            break;
        }
    }

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(!buf.starts_with(b"HTTP/1.1 200"));

    // A client that does not trust the certificate cannot talk to it.
    let err = tls_connect(s.addr, &tls_client(None)).await;
    assert!(err.is_err(), "untrusted certificate was accepted");
}

#[tokio::test]
async fn a_bad_certificate_configuration_is_refused_at_startup() {
    let pem = self_signed();
    let other = self_signed();
    let mut config = test_config();
    config.server.tls_cert = Some(pem.cert.clone());
    config.server.tls_key = Some(other.key.clone());
    let state =
        chat_server::AppState::with_passwords(config, chat_server::passwords::cheap_passwords())
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = chat_server::run(state, listener, std::future::pending())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("does not fit"), "{err:#}");
}

// ---------------------------------------------------------------------------------------------
// Shutdown (in process)

#[tokio::test]
async fn shutdown_tells_sockets_to_reconnect_with_1001_and_checkpoints_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut config = test_config();
    config.server.db = db.to_str().unwrap().to_string();
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let (mut a, _) = s.ws(&room, &alice, "").await;
    let (mut b, _) = s.ws(&room, &bob, "").await;
    a.say("before shutdown", "s1").await;
    assert!(
        std::fs::metadata(dir.path().join("chat.db-wal"))
            .unwrap()
            .len()
            > 0
    );

    let stopping = tokio::spawn(s.stop());
    assert_eq!(a.closed().await, Some(1001));
    assert_eq!(b.closed().await, Some(1001));
    tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
    let wal = std::fs::metadata(dir.path().join("chat.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the WAL was not checkpointed");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let content: String = conn
        .query_row("SELECT content FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(content, "before shutdown");
}

// ---------------------------------------------------------------------------------------------
// Schema upgrades

/// The first released schema, frozen. `schema.sql` must keep it as migration 1 unchanged and
/// append later changes as new migrations.
const SCHEMA_V1: &str = include_str!("../fixtures/schema-v1.sql");

fn schema_objects(conn: &rusqlite::Connection) -> BTreeSet<(String, String, String)> {
    let mut stmt = conn
        .prepare("SELECT type, name, coalesce(sql, '') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        .unwrap();
    stmt.query_map([], |r| {
        let sql: String = r.get(2)?;
        Ok((
            r.get(0)?,
            r.get(1)?,
            sql.split_whitespace().collect::<Vec<_>>().join(" "),
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[tokio::test]
async fn a_database_from_the_first_released_schema_upgrades_with_its_data_intact() {
    let schema = include_str!("../../schema.sql");
    let migration_1 = schema
        .split("\n-- migration: ")
        .nth(1)
        .and_then(|m| m.split_once('\n'))
        .map(|(_, body)| body.trim())
        .unwrap();
    assert_eq!(
        migration_1,
        SCHEMA_V1.trim(),
        "migration 1 of schema.sql was edited after release: append a new migration instead"
    );
    let latest = schema.matches("\n-- migration: ").count() as i64;

    // A database as the first release left it, with data in every table.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    let passwords = chat_server::passwords::cheap_passwords();
    let hash = passwords.hash("alice-secret-pw").unwrap();
    let token = "ab".repeat(32);
    let digest = chat_server::auth::token_digest(&token);
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        let now = 1_700_000_000_000i64;
        conn.execute(
            "INSERT INTO users (id, username, username_key, password_hash, first_name, date_joined)
             VALUES (1, 'Alice', 'alice', ?1, 'Alice', ?2), (2, 'bob', 'bob', ?1, 'Bob', ?2)",
            rusqlite::params![hash, now],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO tokens (user_id, digest, created, expires_at) VALUES (1, ?1, ?2, ?3)",
            rusqlite::params![digest, now, i64::MAX],
        )
        .unwrap();
        conn.execute_batch(&format!(
            "INSERT INTO rooms (id, public_id, name, is_direct, direct_key, creator_id, created,
                                last_message_id, last_activity)
                 VALUES (1, 'oldroom1', NULL, 1, '1:2', 1, {now}, 3, {now});
             INSERT INTO room_members (room_id, user_id, last_read_id, joined)
                 VALUES (1, 1, 3, {now}), (1, 2, 1, {now});
             INSERT INTO messages (id, room_id, sender_id, content, created, updated, client_id)
                 VALUES (1, 1, 1, 'first', {now}, {now}, 'c1'),
                        (2, 1, 1, 'second', {now}, {now}, NULL),
                        (3, 1, 1, 'third', {now}, {now}, 'c3');"
        ))
        .unwrap();
    }

    let mut config = test_config();
    config.server.db = db.to_str().unwrap().to_string();
    let s = TestServer::start_with(config).await;

    // The old token still works; the room, its history and read marks survived.
    let (status, rooms) = s.get("/api/v1/chats/", &token).await;
    assert_eq!(status, 200, "{rooms}");
    assert_eq!(rooms[0]["room_id"], "oldroom1");
    assert_eq!(rooms[0]["last_message"]["content"], "third");
    let (_, history) = s.get("/api/v1/chat/oldroom1/?after=0", &token).await;
    let contents = common::contents(&history);
    assert_eq!(contents, ["first", "second", "third"]);
    // The old password works, and bob has two unread messages.
    let (status, login) = s
        .call(
            "POST",
            "/api/v1/login/",
            None,
            Some(json!({"username": "bob", "password": "alice-secret-pw"})),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let bob_token = login["token"].as_str().unwrap();
    let (_, rooms) = s.get("/api/v1/chats/", bob_token).await;
    assert_eq!(rooms[0]["unread_count"], 2);
    // Idempotency keys survived; new ids continue after the old ones.
    let (status, again) = s
        .post(
            "/api/v1/chat/oldroom1/",
            &token,
            json!({"content": "first", "client_id": "c1"}),
        )
        .await;
    assert_eq!((status, again["id"].as_i64()), (200, Some(1)));
    let (status, new) = s
        .post(
            "/api/v1/chat/oldroom1/",
            &token,
            json!({"content": "fourth"}),
        )
        .await;
    assert_eq!((status, new["id"].as_i64()), (201, Some(4)));
    s.stop().await;

    // The upgraded database has the current schema, exactly as a fresh one.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, latest);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let violations: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(violations, 0);
    let fresh = chat_server::store::open_memory_for_tests();
    assert_eq!(schema_objects(&conn), schema_objects(&fresh));
}

#[tokio::test]
async fn upgrading_rekeys_usernames_reports_collisions_and_every_account_still_logs_in() {
    // Accounts as releases that lower-cased names made them: "ΣΣ" (key "σς") and "σσ" now fold
    // to one key, as do "victim" and its fullwidth twin; "bob" and "b0b" look alike.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    let db_arg = db.to_str().unwrap().to_string();
    let passwords = chat_server::passwords::cheap_passwords();
    let names = ["ΣΣ", "σσ", "victim", "ｖｉｃｔｉｍ", "bob", "b0b", "Straße"];
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        for (i, name) in names.iter().enumerate() {
            let hash = passwords.hash(&format!("{i}-secret-pw")).unwrap();
            conn.execute(
                "INSERT INTO users (id, username, username_key, password_hash, date_joined)
                 VALUES (?1, ?2, ?3, ?4, 0)",
                rusqlite::params![i as i64 + 1, name, name.to_lowercase(), hash],
            )
            .unwrap();
        }
    }

    // The first program to open it migrates it and says what it found, on stderr.
    let (ok, stdout, stderr) = admin(&["user", "list", "--db", &db_arg], None);
    assert!(ok, "{stderr}");
    for name in names {
        assert!(stdout.contains(name), "{name} missing from {stdout}");
    }
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 3, "{stderr}");
    assert!(
        warnings[0].contains("fold to one key")
            && warnings[0].contains("older=\"ΣΣ\"")
            && warnings[0].contains("newer=\"σσ\""),
        "{stderr}"
    );
    assert!(
        warnings[1].contains("older=\"victim\"") && warnings[1].contains("newer=\"ｖｉｃｔｉｍ\""),
        "{stderr}"
    );
    assert!(
        warnings[2].contains("look alike")
            && warnings[2].contains("older=\"bob\"")
            && warnings[2].contains("newer=\"b0b\""),
        "{stderr}"
    );
    // Opening it again finds nothing to do.
    let (ok, _, stderr) = admin(&["user", "list", "--db", &db_arg], None);
    assert!(ok && !stderr.contains("WARN"), "{stderr}");

    let mut config = test_config();
    config.server.db = db_arg.clone();
    let s = TestServer::start_with(config).await;
    let login = |typed: &'static str, i: usize| {
        let s = &s;
        async move {
            let (status, body) = s
                .call(
                    "POST",
                    "/api/v1/login/",
                    None,
                    Some(json!({"username": typed, "password": format!("{i}-secret-pw")})),
                )
                .await;
            assert_eq!(status, 200, "{typed}: {body}");
            body["user"]["id"].as_i64().unwrap()
        }
    };
    // Every account logs in by its exact name...
    for (i, name) in names.iter().enumerate() {
        assert_eq!(login(name, i).await, i as i64 + 1, "{name}");
    }
    // ... and by any spelling of a key it owns.
    assert_eq!(login("σς", 0).await, 1);
    assert_eq!(login("VICTIM", 2).await, 3);
    assert_eq!(login("STRASSE", 6).await, 7);
    // New accounts meet the new rules against the old ones.
    for taken in ["Σσ", "𝐯𝐢𝐜𝐭𝐢𝐦", "BOB", "B0B", "strasse"] {
        let (status, body) = s
            .call(
                "POST",
                "/api/v1/signup/",
                None,
                Some(json!({"username": taken, "password": "a fine passphrase"})),
            )
            .await;
        assert_eq!(status, 409, "{taken}: {body}");
    }
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The real binary

/// Runs an admin subcommand to completion; returns (success, stdout, stderr).
fn admin(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn admin_async(args: Vec<String>, stdin: Option<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        admin(&args, stdin.as_deref())
    })
    .await
    .unwrap()
}

/// A config file that makes password hashing cheap and lifts the send rate limit, so tests of
/// the binary are quick and can put it under load.
fn quick_config(dir: &Path) -> PathBuf {
    let path = dir.join("quick.toml");
    std::fs::write(
        &path,
        "[auth]\nargon2_memory_kib = 64\nargon2_iterations = 1\n\n\
         [limits]\nsend_rate_per_sec = 100000.0\nsend_burst = 100000\n",
    )
    .unwrap();
    path
}

#[test]
fn print_config_prints_the_annotated_defaults() {
    let (ok, stdout, _) = admin(&["print-config"], None);
    assert!(ok);
    assert_eq!(stdout, include_str!("../../config.example.toml"));
    let parsed = chat_server::Config::from_toml(&stdout).unwrap();
    assert_eq!(
        format!("{parsed:?}"),
        format!("{:?}", chat_server::Config::default())
    );
}

#[tokio::test]
async fn admin_commands_manage_users_of_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let db_arg = db.to_str().unwrap().to_string();
    let cfg = quick_config(dir.path());
    let cfg_arg = cfg.to_str().unwrap().to_string();
    let mut config = test_config();
    config.server.db = db_arg.clone();
    let s = TestServer::start_with(config).await;
    let args = |rest: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = rest.iter().map(|a| a.to_string()).collect();
        v.extend([
            "--db".into(),
            db_arg.clone(),
            "--config".into(),
            cfg_arg.clone(),
        ]);
        v
    };
    let login = |username: &'static str, password: String| {
        let s = &s;
        async move {
            s.call(
                "POST",
                "/api/v1/login/",
                None,
                Some(json!({"username": username, "password": password})),
            )
            .await
        }
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

/// The real binary, serving; its log lines arrive on a channel.
struct Spawned {
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    _lines: std_mpsc::Receiver<String>,
}

impl Spawned {
    fn start(db: &Path, config: &Path) -> Spawned {
        let mut child = Command::new(BIN)
            .args(["--db", db.to_str().unwrap(), "--port", "0", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std_mpsc::channel();
        // Drain the log continuously so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let addr = loop {
            let line = rx
                .recv_timeout(WAIT)
                .expect("the server did not report its address");
            if line.contains("listening")
                && let Some(rest) = line.split("addr=").nth(1)
            {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        Spawned {
            pid: child.id(),
            child: Some(child),
            addr,
            _lines: rx,
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Waits for the process to exit; fails (and kills it) after `limit`.
    async fn exit_status(mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let waited = tokio::task::spawn_blocking(move || child.wait().unwrap());
        match tokio::time::timeout(limit, waited).await {
            Ok(status) => status.unwrap(),
            Err(_) => {
                self.signal("-KILL");
                panic!("the server did not exit within {limit:?}");
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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
