//! When the machine misbehaves: a full disk, queues past their bounds.

use crate::common;

use chat_server::metrics::METRICS;
use std::time::Duration;

use common::{TestServer, test_config};
use serde_json::{Value, json};

/// A request's status, `Retry-After` and JSON body.
async fn send(
    s: &TestServer,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Option<u64>, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = s
        .http
        .request(method, s.url(path))
        .header("authorization", format!("Token {token}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry, res.json().await.unwrap_or(Value::Null))
}

/// Caps the database at the pages it has now, as a full disk would: the next write that needs
/// one more page fails with SQLite's "database or disk is full".
async fn fill_the_disk(s: &TestServer, pages: Option<i64>) {
    s.sqlite
        .write(move |c| {
            let cap = match pages {
                Some(pages) => pages,
                None => c.query_row("PRAGMA page_count", [], |r| r.get(0))?,
            };
            c.pragma_update_and_check(None, "max_page_count", cap, |r| r.get::<_, i64>(0))?;
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_full_disk_answers_503_storage_full_keeps_reads_and_recovers_when_space_returns() {
    let mut config = test_config();
    config.limits.send_burst = 100_000;
    config.limits.send_rate_per_sec = 100_000.0;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let path = format!("/api/v1/chat/{room}/");
    let (mut ws, _) = s.ws(&room, &bob, "").await;
    let episodes = METRICS.storage_fault_episodes.get();

    fill_the_disk(&s, None).await;
    let mut acked = Vec::new();
    let mut refusals = 0;
    for i in 0..5000 {
        let body = json!({"content": format!("message {i} {}", "x".repeat(200))});
        let (status, retry, body) = send(&s, "POST", &path, &alice.token, Some(body)).await;
        match status {
            201 => acked.push(body["content"].as_str().unwrap().to_string()),
            503 => {
                assert_eq!(body["error"]["code"], "storage_full", "{body}");
                assert_eq!(retry, Some(10));
                refusals += 1;
                if refusals == 20 {
                    break;
                }
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(refusals, 20, "the capped database never filled up");

    // The load balancer hears of it; the socket's sends are refused the same way.
    let (status, retry, health) = send(&s, "GET", "/healthz", &alice.token, None).await;
    assert_eq!((status, retry), (503, Some(10)), "{health}");
    assert_eq!(health["database"], "storage_full");
    ws.send_json(json!({"action": "message", "content": "from the socket", "client_id": "w1"}))
        .await;
    let error = ws.next_of("error").await;
    assert_eq!(error["code"], "storage_full", "{error}");
    // Twenty refused posts and a refused frame are one episode.
    assert_eq!(METRICS.storage_fault_episodes.get(), episodes + 1);

    // Reads go on, and everything acknowledged is there.
    let (status, _, page) = send(&s, "GET", &format!("{path}?limit=100"), &bob.token, None).await;
    assert_eq!(status, 200, "{page}");
    let mut stored: Vec<String> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect();
    stored.reverse();
    let expected: Vec<String> = acked.iter().rev().take(100).rev().cloned().collect();
    assert_eq!(stored, expected);
    let (status, _, _) = send(&s, "GET", "/api/v1/me/", &bob.token, None).await;
    assert_eq!(status, 200);

    // Space returns: with no request at all, the server finds out by itself.
    fill_the_disk(&s, Some(1 << 30)).await;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let (status, _, _) = send(&s, "GET", "/healthz", &alice.token, None).await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/healthz stayed 503"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, _, _) = send(
        &s,
        "POST",
        &path,
        &alice.token,
        Some(json!({"content": "back"})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        ws.say("from the socket", "w1").await["content"],
        "from the socket"
    );
    let (_, _, page) = send(&s, "GET", &format!("{path}?limit=2"), &bob.token, None).await;
    // Newest first.
    assert_eq!(common::contents(&page), ["from the socket", "back"]);
    assert_eq!(METRICS.storage_fault_episodes.get(), episodes + 1);
}

/// Holds the writer thread inside a job until the returned sender is sent to or dropped.
async fn block_the_writer(s: &TestServer) -> std::sync::mpsc::Sender<()> {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel::<()>();
    let store = s.sqlite.clone();
    tokio::spawn(async move {
        store
            .write(move |_| {
                let _ = started.send(());
                let _ = wait.recv();
                Ok(())
            })
            .await
            .unwrap();
    });
    running.await.unwrap();
    release
}

#[tokio::test]
async fn past_the_write_queue_bound_requests_get_503_overloaded_at_once_and_nothing_queued_is_lost()
{
    // A file in WAL mode, where reads go on while a write transaction is open (in SQLite's
    // in-memory databases they wait for it).
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.server.db = dir.path().join("chat.db").to_str().unwrap().into();
    config.server.max_queued_writes = 3;
    config.limits.send_burst = 1000;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let path = format!("/api/v1/chat/{room}/");
    let (mut ws, _) = s.ws(&room, &alice, "").await;
    let overloaded = METRICS.rejected_count(chat_server::error::ErrorCode::Overloaded);

    let release = block_the_writer(&s).await;
    // Three posts wait for the writer...
    let mut waiting = Vec::new();
    for i in 0..3 {
        let client = TestServer::client_for(&s.addr.to_string());
        let (path, token) = (path.clone(), alice.token.clone());
        waiting.push(tokio::spawn(async move {
            let body = json!({"content": format!("queued {i}")});
            client.post(&path, &token, body).await
        }));
    }
    s.until("three writes are queued", |_| {
        s.sqlite.pressure().queued_writes == 3
    })
    .await;
    // ...and the fourth is refused without waiting, over REST and on the socket.
    let (status, retry, body) = send(
        &s,
        "POST",
        &path,
        &alice.token,
        Some(json!({"content": "refused"})),
    )
    .await;
    assert_eq!((status, retry), (503, Some(1)), "{body}");
    assert_eq!(body["error"]["code"], "overloaded");
    ws.send_json(json!({"action": "message", "content": "refused too", "client_id": "w1"}))
        .await;
    assert_eq!(ws.next_of("error").await["code"], "overloaded");
    // Reads are not held up by the writes.
    let (status, _, _) = send(&s, "GET", &format!("{path}?limit=10"), &bob.token, None).await;
    assert_eq!(status, 200);
    // Both refusals are counted (the process-wide counter also counts other tests' refusals).
    assert!(METRICS.rejected_count(chat_server::error::ErrorCode::Overloaded) >= overloaded + 2);

    release.send(()).unwrap();
    for post in waiting {
        assert_eq!(post.await.unwrap().0, 201);
    }
    let (_, _, page) = send(&s, "GET", &format!("{path}?after=0"), &bob.token, None).await;
    let mut contents = common::contents(&page);
    contents.sort();
    assert_eq!(contents, ["queued 0", "queued 1", "queued 2"]);
}

#[tokio::test]
async fn past_the_read_queue_bound_requests_get_503_overloaded_at_once() {
    let mut config = test_config();
    config.server.max_queued_reads = 1;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    // Both reader threads busy.
    let mut releases = Vec::new();
    for _ in 0..2 {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        releases.push(release);
        let store = s.sqlite.clone();
        let (started, running) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            store
                .read(move |_| {
                    let _ = started.send(());
                    let _ = wait.recv();
                    Ok(())
                })
                .await
        });
        running.await.unwrap();
    }
    let client = TestServer::client_for(&s.addr.to_string());
    let token = alice.token.clone();
    let waiting = tokio::spawn(async move { client.get("/api/v1/me/", &token).await });
    s.until("a read is queued", |_| {
        s.sqlite.pressure().queued_reads == 1
    })
    .await;
    let (status, retry, body) = send(&s, "GET", "/api/v1/chats/", &alice.token, None).await;
    assert_eq!((status, retry), (503, Some(1)), "{body}");
    assert_eq!(body["error"]["code"], "overloaded");
    drop(releases);
    assert_eq!(waiting.await.unwrap().0, 200);
}

/// Writes `bytes` one at a time, `every` apart, until they are out or the peer stops taking
/// them.
async fn trickle(stream: &mut tokio::net::tcp::OwnedWriteHalf, bytes: &[u8], every: Duration) {
    use tokio::io::AsyncWriteExt;
    for b in bytes {
        if stream.write_all(&[*b]).await.is_err() {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

#[tokio::test]
async fn a_body_sent_a_byte_at_a_time_is_cut_off_with_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = test_config();
    config.limits.body_read_timeout_secs = 1;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let body = json!({"content": "slowly"}).to_string();
    let head = format!(
        "POST /api/v1/chat/{room}/ HTTP/1.1\r\nHost: x\r\nAuthorization: Token {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        alice.token,
        body.len()
    );
    let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write.write_all(head.as_bytes()).await.unwrap();
    // A byte every 400 ms: the 20 bytes would take 8 s, the deadline is 1 s.
    let slow = tokio::spawn(async move {
        trickle(&mut write, body.as_bytes(), Duration::from_millis(400)).await;
        write
    });
    let mut answer = Vec::new();
    tokio::time::timeout(common::WAIT, read.read_to_end(&mut answer))
        .await
        .expect("the server cut the connection off")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    slow.abort();
    // Nothing was stored, and the server serves on.
    let (status, page) = s.get(&format!("/api/v1/chat/{room}/"), &bob.token).await;
    assert_eq!(status, 200);
    assert_eq!(common::contents(&page), Vec::<&str>::new());
}

/// Starts an upload of `len` bytes and sends `sent` of them in chunks of 100, one every
/// `every`, then waits for the answer without sending the rest.
async fn slow_upload(
    s: &TestServer,
    token: &str,
    len: usize,
    sent: usize,
    every: Duration,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "POST /api/v1/uploads/?filename=slow.bin HTTP/1.1\r\nHost: x\r\n\
         Authorization: Token {token}\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n"
    );
    let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write.write_all(head.as_bytes()).await.unwrap();
    let slow = tokio::spawn(async move {
        for _ in 0..sent / 100 {
            if write.write_all(&[b'z'; 100]).await.is_err() {
                break;
            }
            tokio::time::sleep(every).await;
        }
        // Holds the connection open, sending nothing more.
        std::future::pending::<()>().await;
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(common::WAIT, read.read_to_end(&mut answer))
        .await
        .expect("the server answered");
    slow.abort();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_slow_upload_may_take_longer_than_a_body_but_a_stalled_or_endless_one_is_cut_off() {
    let mut config = test_config();
    config.limits.body_read_timeout_secs = 1;
    config.limits.upload_timeout_secs = 3;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    // 15 chunks 200 ms apart: 3 s in all, past the 1-s body deadline, never 1 s apart.
    let answer = slow_upload(&s, &alice.token, 1500, 1500, Duration::from_millis(200)).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    // Half of it, then nothing: cut off once it has been silent for a second.
    let answer = slow_upload(&s, &alice.token, 1000, 500, Duration::from_millis(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    // Steady but endless: cut off at upload_timeout_secs.
    let answer = slow_upload(
        &s,
        &alice.token,
        100_000,
        100_000,
        Duration::from_millis(300),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let tmp = s.state.files.root().join("tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
}

#[tokio::test]
async fn a_websocket_frame_sent_a_byte_at_a_time_gets_the_socket_dropped() {
    let mut config = test_config();
    config.limits.ws_ping_interval_secs = 1;
    config.limits.ws_idle_timeout_secs = 2;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let (ws, _) = s.ws(&room, &alice, "").await;
    s.until("alice is connected", |st| st.connections.total() == 1)
        .await;
    // Under the WebSocket: a text frame header announcing 60 bytes, then a byte every 300 ms
    // (masked, as a client's frames are), never completing it.
    let tcp = ws.socket.into_inner();
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = tcp else {
        panic!("a plain socket")
    };
    let (mut read, mut write) = tcp.into_split();
    let mut frame = vec![0x81, 0x80 | 60, 1, 2, 3, 4];
    frame.extend(std::iter::repeat_n(b'a', 60));
    let slow = tokio::spawn(async move {
        trickle(&mut write, &frame, Duration::from_millis(300)).await;
        write
    });
    use tokio::io::AsyncReadExt;
    let mut rest = Vec::new();
    tokio::time::timeout(common::WAIT, read.read_to_end(&mut rest))
        .await
        .expect("the server dropped the socket")
        .ok();
    slow.abort();
    s.until("the socket's session ended", |st| {
        st.connections.total() == 0
    })
    .await;
}
