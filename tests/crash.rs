//! Durability against a crash: everything a client saw acknowledged survives `kill -9`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::{TestServer, Ws};
use serde_json::json;

/// Starts the real binary on a free port and returns it with its address.
fn spawn_server(db: &std::path::Path, config: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["--port", "0", "--log-level", "info", "--db"])
        .arg(db)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start chat-server");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if line.contains("chat-server listening") {
            let start = line.find("addr=").expect("addr in log line") + 5;
            let rest = &line[start..];
            break rest[..rest.find(' ').unwrap_or(rest.len())].to_string();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

#[tokio::test]
async fn acknowledged_messages_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[auth]\nargon2_memory_kib = 64\nargon2_iterations = 1\n\
         [limits]\nsend_rate_per_sec = 100000.0\nsend_burst = 100000\n\
         [server]\nlog_format = \"text\"\n",
    )
    .unwrap();

    let (mut child, addr) = spawn_server(&db, &config);
    let client = TestServer::client_for(&addr);
    let alice = client.user("alice").await;
    let bob = client.user("bob").await;
    let room = client.room(&alice, &[&bob], None).await;
    let (mut ws, _): (Ws, _) = client.ws(&room, &alice, "").await;
    let mut acked = Vec::new();
    for i in 0..200 {
        acked.push(
            ws.say(&format!("m{i}"), &format!("c{i}")).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    // More sends in flight while the process dies: none of them was acknowledged, so any
    // outcome is fine for them, but every acknowledged one must be there.
    for i in 200..260 {
        ws.send_json(
            json!({"action": "message", "content": format!("m{i}"), "client_id": format!("c{i}")}),
        )
        .await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let (mut child, addr) = spawn_server(&db, &config);
    let client = TestServer::client_for(&addr);
    let (status, page) = client
        .get(
            &format!("/api/v1/chat/{room}/?after=0&limit=200"),
            &alice.token,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let stored: Vec<i64> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(stored, acked);
    child.kill().unwrap();
    child.wait().unwrap();
}
