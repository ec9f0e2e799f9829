//! HTTPS and WSS.

use crate::common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use common::{TestServer, WAIT, test_config};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

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
