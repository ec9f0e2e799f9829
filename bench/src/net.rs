//! Client connections: a small keep-alive HTTP/1.1 client for the API, and WebSocket
//! connections bound to one of many loopback source addresses, so tens of thousands of
//! connections never run out of ephemeral ports.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Source addresses used: 127.0.0.2 ..= 127.0.0.201, each with its own ephemeral port range.
const SOURCE_ADDRESSES: u32 = 200;

static NEXT_SOURCE: AtomicU32 = AtomicU32::new(0);

/// Connects to `server` from the next loopback source address in turn.
pub async fn connect_tcp(server: SocketAddr) -> Result<TcpStream> {
    let n = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % SOURCE_ADDRESSES;
    connect_tcp_from(server, Ipv4Addr::new(127, 0, 0, 2 + n as u8)).await
}

/// Connects to `server` from one given loopback source address: a client that must be seen
/// by the server as one address (an attacker's, a probe's), outside the rotating range.
pub async fn connect_tcp_from(server: SocketAddr, source: Ipv4Addr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    // Lets a new socket reuse a port whose previous connection is still in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let stream = socket
        .connect(server)
        .await
        .with_context(|| format!("connecting {source} -> {server}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

pub type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket to `path` (with its query string) on `server`.
pub async fn connect_ws(server: SocketAddr, path: &str) -> Result<Ws> {
    handshake(connect_tcp(server).await?, server, path).await
}

/// Opens a WebSocket from one given loopback source address. A refused handshake's error
/// holds the server's response (`tungstenite::Error::Http`), for its status and `Retry-After`.
pub async fn connect_ws_from(server: SocketAddr, path: &str, source: Ipv4Addr) -> Result<Ws> {
    handshake(connect_tcp_from(server, source).await?, server, path).await
}

async fn handshake(stream: TcpStream, server: SocketAddr, path: &str) -> Result<Ws> {
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0);
    let url = format!("ws://{server}{path}");
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .context("websocket handshake")?;
    Ok(ws)
}

/// One keep-alive HTTP/1.1 connection.
pub struct Http {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Http {
    pub async fn connect(server: SocketAddr) -> Result<Http> {
        Http::over(connect_tcp(server).await?, server).await
    }

    /// A connection from one given loopback source address.
    pub async fn connect_from(server: SocketAddr, source: Ipv4Addr) -> Result<Http> {
        Http::over(connect_tcp_from(server, source).await?, server).await
    }

    async fn over(stream: TcpStream, server: SocketAddr) -> Result<Http> {
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Http {
            sender,
            host: server.to_string(),
        })
    }

    /// Whether the server has closed the connection (an idle keep-alive one, say).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends one request and reads the whole response.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes)> {
        let (status, _, bytes) = self.request_with_headers(method, path, token, body).await?;
        Ok((status, bytes))
    }

    /// Sends one request and reads the whole response, its headers included.
    pub async fn request_with_headers(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        match body {
            Some(v) => {
                let body = Bytes::from(v.to_string());
                self.send(method, path, token, Some("application/json"), body)
                    .await
            }
            None => self.send(method, path, token, None, Bytes::new()).await,
        }
    }

    /// Sends one request with a body of `content_type` as it is (an upload's bytes, say) and
    /// reads the whole response, its headers included.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        self.sender.ready().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        if let Some(token) = token {
            req = req.header("authorization", format!("Token {token}"));
        }
        if let Some(content_type) = content_type {
            req = req.header("content-type", content_type);
        }
        let response = self.sender.send_request(req.body(Full::new(body))?).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, headers, bytes))
    }

    /// A JSON request that must succeed; the parsed response.
    pub async fn json(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<Value> {
        let (status, bytes) = self.request(method, path, token, Some(body)).await?;
        if !status.is_success() {
            bail!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}
