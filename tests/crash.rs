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

/// Files under `dir`, recursively.
fn files_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_in(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// `kill -9` in the middle of an upload: after the restart nothing of it is left (no row, no
/// file, nothing in `tmp/`), and every upload that was answered 201 is there and downloads.
#[tokio::test]
async fn an_upload_cut_by_kill_9_leaves_nothing_and_acknowledged_files_survive() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[auth]\nargon2_memory_kib = 64\nargon2_iterations = 1\n",
    )
    .unwrap();
    let (mut child, addr) = spawn_server(&db, &config);
    let client = TestServer::client_for(&addr);
    let alice = client.user("alice").await;
    let bob = client.user("bob").await;
    let room = client.room(&alice, &[&bob], None).await;
    let mut acked = Vec::new();
    for (name, bytes) in [
        ("a.png", common::png(300, 200)),
        ("b.txt", b"second".to_vec()),
        ("c.bin", vec![3u8; 100_000]),
    ] {
        acked.push((
            client.upload_id(&alice.token, name, bytes.clone()).await,
            bytes,
        ));
    }
    let (status, _) = client
        .post(
            &format!("/api/v1/chat/{room}/"),
            &alice.token,
            json!({"content": "files", "attachments": [acked[0].0]}),
        )
        .await;
    assert_eq!(status, 201);
    let files = dir.path().join("chat.db.files");
    let stored = files_in(&files.join("objects"));
    // Half of a 4 MB upload, then the crash while the server is writing it.
    let mut upload = tokio::net::TcpStream::connect(&addr).await.unwrap();
    upload
        .write_all(
            format!(
                "POST /api/v1/uploads/?filename=big.bin HTTP/1.1\r\nHost: x\r\n\
                 Authorization: Token {}\r\nContent-Length: 4000000\r\n\r\n",
                alice.token
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    upload.write_all(&vec![7u8; 2_000_000]).await.unwrap();
    let deadline = std::time::Instant::now() + common::WAIT;
    while !files_in(&files.join("tmp"))
        .iter()
        .any(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never reached tmp/"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(upload);

    let (mut child, addr) = spawn_server(&db, &config);
    let client = TestServer::client_for(&addr);
    assert!(files_in(&files.join("tmp")).is_empty());
    assert_eq!(files_in(&files.join("objects")), stored);
    for (id, bytes) in &acked {
        let (status, _, got) = client
            .download(&format!("/api/v1/files/{id}/"), &alice.token, &[])
            .await;
        assert_eq!((status, &got), (200, bytes), "{id}");
    }
    let (status, _, got) = client
        .download(&format!("/api/v1/files/{}/", acked[0].0), &bob.token, &[])
        .await;
    assert_eq!((status, got), (200, acked[0].1.clone()));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM uploads", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 3);
    child.kill().unwrap();
    child.wait().unwrap();
}
