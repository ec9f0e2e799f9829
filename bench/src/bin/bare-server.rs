//! `bare-server`: the ceiling every chat-server figure is compared with.
//!
//! A minimal WebSocket broadcast server on the same stack (hyper HTTP/1 upgrade, then
//! tokio-tungstenite with a 4 KiB read buffer): no auth, no database, no validation, no presence.
//! Rooms are named by the path `/ws/chat/<room>/`. A client frame with a `content` field is
//! wrapped in a message frame shaped and sized like chat-server's, serialized once and broadcast
//! to everyone in the room, the sender included. Queued frames are written in one flush, as in
//! chat-server; `--naive` writes and flushes every frame on its own instead, and
//! `--publish-thread` publishes from a dedicated OS thread as chat-server's database writer does.
//!
//! `GET /api/v1/chat/<room>/` answers a fixed history page of 50 messages, the ceiling for the
//! history benchmark.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// A bare WebSocket broadcast server: the benchmark's ceiling.
#[derive(Parser, Debug)]
struct Args {
    /// Port to listen on (127.0.0.1).
    #[arg(long)]
    port: u16,
    /// Write and flush each frame separately instead of batching queued frames.
    #[arg(long)]
    naive: bool,
    /// Publish from one dedicated OS thread, as chat-server publishes from its database writer
    /// thread, instead of from the sending connection's task on the async runtime.
    #[arg(long)]
    publish_thread: bool,
    /// Frames a connection may fall behind before it loses some (chat-server's default).
    #[arg(long, default_value_t = 1024)]
    queue: usize,
}

/// Most frames written per flush, as in chat-server.
const MAX_BATCH: usize = 64;

struct Shared {
    rooms: Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>,
    next_id: AtomicI64,
    page: Bytes,
    naive: bool,
    queue: usize,
    relay: Option<Mutex<std::sync::mpsc::Sender<Relayed>>>,
}

type Relayed = (broadcast::Sender<Utf8Bytes>, Utf8Bytes);

impl Shared {
    fn room(&self, name: &str) -> broadcast::Sender<Utf8Bytes> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms
            .entry(name.to_string())
            .or_insert_with(|| broadcast::channel(self.queue).0)
            .clone()
    }
}

#[derive(Deserialize)]
struct ClientFrame {
    content: Option<String>,
    client_id: Option<String>,
}

/// The fields and sizes of a chat-server message, with fixed values where it would look them up.
fn message_json(id: i64, room: &str, content: &str, client_id: Option<&str>) -> serde_json::Value {
    json!({
        "id": id,
        "room_id": room,
        "sender": "bench-user",
        "sender_id": 1,
        "content": content,
        "created": "2025-01-01T00:00:00.000Z",
        "updated": "2025-01-01T00:00:00.000Z",
        "is_read": false,
        "client_id": client_id,
    })
}

fn history_page() -> Bytes {
    let results: Vec<_> = (0..50)
        .map(|i| {
            message_json(
                1_000_000 - i,
                "0123456789abcdef",
                &format!("history message {i} lorem ipsum dolor sit amet consectetur"),
                None,
            )
        })
        .collect();
    let page = json!({"room_id": "0123456789abcdef", "results": results, "has_more": true});
    Bytes::from(page.to_string())
}

fn response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r
}

async fn handle(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/ws/chat/") {
        let room = rest.trim_end_matches('/').to_string();
        let Some(key) = req.headers().get("sec-websocket-key") else {
            return Ok(response(StatusCode::BAD_REQUEST, Bytes::new()));
        };
        let accept = derive_accept_key(key.as_bytes());
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let config = WebSocketConfig::default()
                    .read_buffer_size(4 * 1024)
                    .write_buffer_size(16 * 1024);
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                session(shared, room, socket).await;
            }
        });
        let mut r = response(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
        let h = r.headers_mut();
        h.insert("connection", "upgrade".parse().expect("static header"));
        h.insert("upgrade", "websocket".parse().expect("static header"));
        h.insert(
            "sec-websocket-accept",
            accept.parse().expect("accept key is a valid header"),
        );
        return Ok(r);
    }
    if path.starts_with("/api/v1/chat/") {
        let mut r = response(StatusCode::OK, shared.page.clone());
        r.headers_mut().insert(
            "content-type",
            "application/json".parse().expect("static header"),
        );
        return Ok(r);
    }
    Ok(response(StatusCode::NOT_FOUND, Bytes::new()))
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

async fn session(shared: Arc<Shared>, room: String, mut socket: Socket) {
    let tx = shared.room(&room);
    let mut events = tx.subscribe();
    if socket
        .send(Message::text(r#"{"type":"hello"}"#))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(ClientFrame { content: Some(content), client_id }) =
                        serde_json::from_str::<ClientFrame>(text.as_str())
                    {
                        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                        let frame = json!({
                            "type": "message",
                            "message": message_json(id, &room, &content, client_id.as_deref()),
                        });
                        let frame = Utf8Bytes::from(frame.to_string());
                        match &shared.relay {
                            Some(relay) => {
                                let relay = relay.lock().unwrap_or_else(|e| e.into_inner());
                                let _ = relay.send((tx.clone(), frame));
                            }
                            None => {
                                let _ = tx.send(frame);
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            event = events.recv() => match event {
                Ok(frame) => {
                    if deliver(&shared, &mut socket, &mut events, frame).await.is_err() {
                        return;
                    }
                }
                // A lagging client loses frames here; the load generator sees the gap.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
        }
    }
}

async fn deliver(
    shared: &Shared,
    socket: &mut Socket,
    events: &mut broadcast::Receiver<Utf8Bytes>,
    first: Utf8Bytes,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    if shared.naive {
        return socket.send(Message::Text(first)).await;
    }
    socket.feed(Message::Text(first)).await?;
    for _ in 1..MAX_BATCH {
        match events.try_recv() {
            Ok(frame) => socket.feed(Message::Text(frame)).await?,
            Err(TryRecvError::Lagged(_)) => continue,
            Err(_) => break,
        }
    }
    socket.flush().await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let relay = args.publish_thread.then(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Relayed>();
        std::thread::spawn(move || {
            for (room, frame) in rx {
                let _ = room.send(frame);
            }
        });
        Mutex::new(tx)
    });
    let shared = Arc::new(Shared {
        rooms: Mutex::default(),
        next_id: AtomicI64::new(1),
        page: history_page(),
        naive: args.naive,
        queue: args.queue,
        relay,
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("bare-server listening on {addr}");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!("bare-server: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(shared.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
