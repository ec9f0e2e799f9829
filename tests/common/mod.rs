//! Test helpers: a real server on 127.0.0.1:0, HTTP and WebSocket clients, and shortcuts for
//! the usual setup (sign up, log in, create a room).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use chat_server::{AppState, Config};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for an expected event before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// The `content` of every message of a history page (`{"results": [...]}`), in order.
pub fn contents(page: &Value) -> Vec<&str> {
    page["results"]
        .as_array()
        .expect("a history page has results")
        .iter()
        .map(|m| m["content"].as_str().expect("a message has content"))
        .collect()
}

/// `text` for a query string: everything but letters and digits percent-encoded.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Sends raw bytes to `addr` as they are (no client-side normalisation), half-closing the
/// connection after them if `close`, and reads the answer until the server closes: its
/// status and body.
pub async fn raw_http(addr: SocketAddr, request: &[u8], close: bool) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    if close {
        stream.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .expect("the server answers and closes");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// A running server; stops when dropped or with [`TestServer::stop`]. Dereferences to a
/// [`Client`] of it.
pub struct TestServer {
    client: Client,
    pub state: AppState,
    /// The server's SQLite store, for tests that read or change the database directly.
    pub sqlite: chat_server::store::Store,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::ops::Deref for TestServer {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// HTTP and WebSocket access to a server at `addr`.
pub struct Client {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
}

/// A configuration for tests: in-memory database unless changed.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.server.db = ":memory:".into();
    config.server.read_connections = 2;
    // Offline presence at once, so the tests that wait for it need not wait out the grace
    // period; the tests of the damping set their own.
    config.limits.presence_offline_delay_ms = 0;
    config
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(config: Config) -> TestServer {
        let sqlite =
            chat_server::store::Store::open_with(&config.server.db, config.server.store_options())
                .expect("open the database");
        let state = AppState::with_store(
            config,
            chat_server::passwords::cheap_passwords(),
            std::sync::Arc::new(sqlite.clone()),
        )
        .expect("build the server state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let run_state = state.clone();
        let task = tokio::spawn(async move {
            chat_server::run(run_state, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            client: Self::client_for(&addr.to_string()),
            state,
            sqlite,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A client for a server started some other way (a child process, say).
    pub fn client_for(addr: &str) -> Client {
        Client {
            addr: addr.parse().expect("a socket address"),
            http: reqwest::Client::new(),
        }
    }

    /// Waits, polling, until `done` holds; fails after [`WAIT`]. For server-side state a
    /// client cannot be told about (a socket's session has ended, say).
    pub async fn until(&self, what: &str, done: impl Fn(&AppState) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(&self.state) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Stops accepting and waits for the server loop to end.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Client {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request; returns the status and the JSON body (`Value::Null` if none).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Token {t}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call("GET", path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(token), Some(body)).await
    }

    /// Uploads `bytes` as a raw body named `filename`; the status and the answer.
    pub async fn upload(&self, token: &str, filename: &str, bytes: Vec<u8>) -> (u16, Value) {
        let name = percent_encode(filename);
        let res = self
            .http
            .post(self.url(&format!("/api/v1/uploads/?filename={name}")))
            .header("Authorization", format!("Token {token}"))
            .header("Content-Type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .expect("upload");
        let status = res.status().as_u16();
        (status, res.json().await.expect("a JSON answer"))
    }

    /// Uploads `bytes` and returns the new upload's id.
    pub async fn upload_id(&self, token: &str, filename: &str, bytes: Vec<u8>) -> String {
        let (status, upload) = self.upload(token, filename, bytes).await;
        assert_eq!(status, 201, "upload {filename}: {upload}");
        upload["id"].as_str().unwrap().to_string()
    }

    /// GET `path` with `token` and extra headers: the status, the headers and the bytes.
    pub async fn download(
        &self,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let mut req = self
            .http
            .get(self.url(path))
            .header("Authorization", format!("Token {token}"));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let res = req.send().await.expect("download");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        (status, headers, res.bytes().await.unwrap().to_vec())
    }

    /// Signs up `username` (password `<username>-secret-pw`) and logs in.
    pub async fn user(&self, username: &str) -> TestUser {
        let password = format!("{username}-secret-pw");
        let (status, user) = self
            .call(
                "POST",
                "/api/v1/signup/",
                None,
                Some(json!({"username": username, "password": password, "first_name": username})),
            )
            .await;
        assert_eq!(status, 201, "signup {username}: {user}");
        let (status, login) = self
            .call(
                "POST",
                "/api/v1/login/",
                None,
                Some(json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(status, 200, "login {username}: {login}");
        TestUser {
            id: user["id"].as_i64().unwrap(),
            username: username.to_string(),
            token: login["token"].as_str().unwrap().to_string(),
        }
    }

    /// Creates a room of `owner` with `others`; returns its id.
    pub async fn room(&self, owner: &TestUser, others: &[&TestUser], name: Option<&str>) -> String {
        let members: Vec<i64> = others.iter().map(|u| u.id).collect();
        let (status, room) = self
            .post(
                "/api/v1/chats/",
                &owner.token,
                json!({"members": members, "name": name}),
            )
            .await;
        assert!(status == 201 || status == 200, "create room: {room}");
        room["room_id"].as_str().unwrap().to_string()
    }

    /// Opens the room socket and returns it with its `hello` frame.
    pub async fn ws(&self, room: &str, user: &TestUser, query: &str) -> (Ws, Value) {
        self.connect(&format!("/ws/chat/{room}/"), user, query)
            .await
    }

    /// Opens the all-rooms socket `/ws/` and returns it with its `hello` frame.
    pub async fn ws_all(&self, user: &TestUser, query: &str) -> (Ws, Value) {
        self.connect("/ws/", user, query).await
    }

    async fn connect(&self, path: &str, user: &TestUser, query: &str) -> (Ws, Value) {
        let url = format!("ws://{}{path}?token={}{query}", self.addr, user.token);
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        Ws::with_hello(socket).await
    }

    /// Opens a WebSocket at `path_and_query` over a TCP connection whose receive buffer is a
    /// few KiB: a client that stops reading soon makes the server's writes wait, so that its
    /// events queue up on the server side. Returns it with its `hello` frame.
    pub async fn ws_small_window(&self, path_and_query: &str) -> (Ws, Value) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(self.addr).await.expect("tcp connect");
        let url = format!("ws://{}{path_and_query}", self.addr);
        let (socket, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("ws connect");
        Ws::with_hello(socket).await
    }

    /// A WebSocket handshake that should be refused: its status and `Retry-After`.
    pub async fn ws_refusal(&self, path: &str) -> (u16, Option<String>) {
        let url = format!("ws://{}{path}", self.addr);
        match tokio_tungstenite::connect_async(url).await {
            Ok(_) => panic!("handshake to {path} unexpectedly succeeded"),
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => (
                res.status().as_u16(),
                res.headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string()),
            ),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    /// The HTTP status of a WebSocket handshake that should be refused.
    pub async fn ws_refused(&self, path_and_query: &str, headers: &[(&str, &str)]) -> u16 {
        let mut req = format!("ws://{}{path_and_query}", self.addr)
            .into_client_request()
            .unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok(_) => panic!("handshake to {path_and_query} unexpectedly succeeded"),
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: i64,
    pub username: String,
    pub token: String,
}

pub struct Ws {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    /// Wraps a socket just opened and reads its `hello` frame.
    async fn with_hello(socket: WebSocketStream<MaybeTlsStream<TcpStream>>) -> (Ws, Value) {
        let mut ws = Ws { socket };
        let hello = ws.next_json().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        (ws, hello)
    }

    pub async fn send_json(&mut self, value: Value) {
        self.socket
            .send(WsMessage::text(value.to_string()))
            .await
            .unwrap();
    }

    /// Sends a text frame as is, for malformed input.
    pub async fn send_text(&mut self, text: &str) {
        self.socket.send(WsMessage::text(text)).await.unwrap();
    }

    /// The next text frame as JSON; fails after [`WAIT`].
    pub async fn next_json(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("socket closed")
                .expect("socket error");
            match frame {
                WsMessage::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Skips frames until one of type `kind` arrives.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let v = self.next_json().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Sends a message and waits for its acknowledgement (the copy carrying `client_id`).
    pub async fn say(&mut self, content: &str, client_id: &str) -> Value {
        self.send_json(json!({"action": "message", "content": content, "client_id": client_id}))
            .await;
        loop {
            let v = self.next_of("message").await;
            if v["message"]["client_id"] == client_id {
                return v["message"].clone();
            }
        }
    }

    /// Every text frame until the socket closes, as JSON, and the close code if one was sent.
    pub async fn until_closed(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut frames = Vec::new();
        loop {
            match tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("timed out waiting for close")
            {
                Some(Ok(WsMessage::Text(t))) => {
                    frames.push(serde_json::from_str(t.as_str()).unwrap());
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    return (frames, frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    eprintln!("socket error: {e}");
                    return (frames, None);
                }
                None => return (frames, None),
            }
        }
    }

    /// Waits for the socket to close; returns the close code if one was sent.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("timed out waiting for close")
            {
                Some(Ok(WsMessage::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// A PNG of `width` × `height` pixels (a gradient).
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A JPEG of `width` × `height` pixels carrying an EXIF segment whose bytes include `secret`
/// (where a camera puts GPS coordinates).
pub fn jpeg_with_exif(width: u32, height: u32, secret: &str) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, 90, (y % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    let jpeg = out.into_inner();
    // APP1 "Exif": a big-endian TIFF header, an empty IFD, then the secret.
    let mut exif = b"Exif\0\0MM\0*\0\0\0\x08\0\0\0\0\0\0".to_vec();
    exif.extend_from_slice(secret.as_bytes());
    let mut with = jpeg[..2].to_vec();
    with.extend_from_slice(&[0xFF, 0xE1]);
    with.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
    with.extend_from_slice(&exif);
    with.extend_from_slice(&jpeg[2..]);
    with
}
