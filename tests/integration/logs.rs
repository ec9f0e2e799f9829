//! The server's log never contains a token or a password: not from the Authorization header,
//! not from the WebSocket query string, not from failed attempts. This runs the real binary at
//! TRACE level, so every crate's log output is included, and reads what it prints.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

struct Server {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(dir: &std::path::Path) -> Server {
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            "[server]\nlog_format = \"json\"\n[auth]\nargon2_memory_kib = 64\nargon2_iterations = 1\n",
        )
        .unwrap();
        // The binary logs the port it was given, so give it a free one.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .args(["--db", ":memory:", "--log-level", "trace", "--port"])
            .arg(port.to_string())
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chat-server");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .expect("the server says it is listening");
            if line.contains("listening") {
                break;
            }
        }
        let addr = format!("127.0.0.1:{port}");
        Server {
            child,
            addr,
            lines,
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("http://{}{path}", self.addr));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn user(&self, name: &str) -> (i64, String) {
        let password = format!("{name}-secret-pw");
        let body = json!({"username": name, "password": password});
        let (status, user) = self
            .call("POST", "/api/v1/signup/", None, Some(body.clone()))
            .await;
        assert_eq!(status, 201, "{user}");
        let (status, login) = self.call("POST", "/api/v1/login/", None, Some(body)).await;
        assert_eq!(status, 200, "{login}");
        (
            user["id"].as_i64().unwrap(),
            login["token"].as_str().unwrap().to_string(),
        )
    }

    /// The WebSocket handshake's HTTP status (101 if it was accepted).
    async fn ws_status(&self, path_and_query: &str, origin: Option<&str>) -> u16 {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{}{path_and_query}", self.addr)
            .into_client_request()
            .unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((mut ws, res)) => {
                use futures_util::{SinkExt, StreamExt};
                ws.send(tokio_tungstenite::tungstenite::Message::text(
                    r#"{"action":"message","content":"hello","client_id":"c1"}"#,
                ))
                .await
                .unwrap();
                // Wait for the acknowledgement, so the send was logged if it ever is.
                loop {
                    let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
                        .await
                        .expect("a frame")
                        .expect("open")
                        .unwrap();
                    if frame
                        .to_text()
                        .unwrap_or("")
                        .contains("\"client_id\":\"c1\"")
                    {
                        break;
                    }
                }
                res.status().as_u16()
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn no_token_or_password_ever_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let (_, alice) = s.user("alice").await;
    let (bob_id, bob) = s.user("bob").await;
    let (status, room) = s
        .call(
            "POST",
            "/api/v1/chats/",
            Some(&alice),
            Some(json!({"members": [bob_id]})),
        )
        .await;
    assert_eq!(status, 201);
    let room = room["room_id"].as_str().unwrap().to_string();
    let forged = "ab".repeat(32);
    let mut secrets = vec![
        alice.clone(),
        bob.clone(),
        forged.clone(),
        "alice-secret-pw".to_string(),
        "wrong-password-guess".to_string(),
    ];

    // Header auth, good and bad, on REST.
    assert_eq!(
        s.call("GET", "/api/v1/me/", Some(&alice), None).await.0,
        200
    );
    assert_eq!(
        s.call("GET", "/api/v1/me/", Some(&forged), None).await.0,
        401
    );
    assert_eq!(
        s.call("GET", "/api/v1/me/", Some("short-garbage"), None)
            .await
            .0,
        401
    );
    // Token auth in the WebSocket query string: accepted, refused, and with a bad parameter.
    let path = format!("/ws/chat/{room}/");
    assert_eq!(
        s.ws_status(&format!("{path}?token={alice}"), None).await,
        101
    );
    assert_eq!(
        s.ws_status(&format!("{path}?token={forged}"), None).await,
        401
    );
    assert_eq!(
        s.ws_status(&format!("{path}?since=-5&token={bob}"), None)
            .await,
        400
    );
    let evil = Some("https://evil.example");
    assert_eq!(s.ws_status(&format!("/ws/?token={bob}"), evil).await, 403);
    // Failed and successful logins, both shapes.
    let guess = json!({"username": "alice", "password": "wrong-password-guess"});
    assert_eq!(
        s.call("POST", "/api/v1/login/", None, Some(guess)).await.0,
        401
    );
    let good = json!({"username": "alice", "password": "alice-secret-pw"});
    let (status, body) = s
        .call("POST", "/api/v1/api-token-auth/", None, Some(good))
        .await;
    assert_eq!(status, 200);
    secrets.push(body["token"].as_str().unwrap().to_string());
    // Revocation, and a revoked token used again.
    assert_eq!(
        s.call("POST", "/api/v1/logout/", Some(&bob), None).await.0,
        204
    );
    assert_eq!(s.call("GET", "/api/v1/me/", Some(&bob), None).await.0, 401);

    // A webhook: its secret is its URL's path, which the access log leaves out.
    let (status, group) = s
        .call(
            "POST",
            "/api/v1/chats/",
            Some(&alice),
            Some(json!({"members": [bob_id], "name": "builds"})),
        )
        .await;
    assert_eq!(status, 201);
    let hooks = format!("/api/v1/chat/{}/hooks/", group["room_id"].as_str().unwrap());
    let (status, hook) = s
        .call("POST", &hooks, Some(&alice), Some(json!({"name": "CI"})))
        .await;
    assert_eq!(status, 201, "{hook}");
    let url = hook["url"].as_str().unwrap().to_string();
    let body = Some(json!({"content": "build passed"}));
    assert_eq!(s.call("POST", &url, None, body.clone()).await.0, 201);
    let wrong = format!("/api/v1/hooks/{}/", "cd".repeat(32));
    assert_eq!(s.call("POST", &wrong, None, body).await.0, 404);
    secrets.push(hook["secret"].as_str().unwrap().to_string());
    secrets.push("cd".repeat(32));

    // Everything the server printed, up to a marker request that is logged last.
    assert_eq!(
        s.call("GET", "/api/v1/end-of-test", None, None).await.0,
        404
    );
    let mut log = String::new();
    loop {
        let line = s
            .lines
            .recv_timeout(Duration::from_secs(10))
            .expect("the marker request is logged");
        log.push_str(&line);
        log.push('\n');
        if line.contains("/api/v1/end-of-test") {
            break;
        }
    }
    // The capture works: requests were logged, with their paths, at every level.
    assert!(log.contains(&format!("/ws/chat/{room}/")), "{log}");
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "{log}");
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "{secret:?} appears in the log:\n{log}"
        );
    }
    // Not even part of a token: a prefix would narrow a brute-force search.
    for token in &secrets[..3] {
        assert!(!log.contains(&token[..16]), "a token prefix leaked:\n{log}");
    }
}
