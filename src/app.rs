//! The application: shared state, the route table, and the accept loop that serves it.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_service::Service;
use warp::http::HeaderValue;
use warp::http::header::HeaderMap;
use warp::{Filter, Rejection, Reply};

use crate::auth::Passwords;
use crate::config::Config;
pub use crate::connections::{ConnectionSlot, Connections};
use crate::error::{ApiError, recover};
use crate::hub::Hub;
use crate::lifecycle::Lifecycle;
use crate::metrics::METRICS;
use crate::model::{RoomId, UserId};
use crate::ratelimit::{Buckets, LoginThrottle};
use crate::store::Store;

/// Everything a handler needs, behind one reference count: the filters clone it for every
/// request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Store,
    pub hub: Hub,
    pub limits: Arc<Limiters>,
    pub passwords: Arc<Passwords>,
    pub connections: Arc<Connections>,
    /// Which browser origins may use the API and open WebSockets.
    pub cors: crate::cors::Cors,
    /// Shutdown and forced session ends, which open WebSocket sessions listen to.
    pub lifecycle: Lifecycle,
}

/// The abuse limits of DESIGN.md section 4.
pub struct Limiters {
    pub sends: Buckets<UserId>,
    pub typing: Buckets<(UserId, RoomId)>,
    pub login: LoginThrottle,
}

impl AppState {
    /// Opens the database and builds the state the configuration describes.
    pub fn new(config: Config) -> anyhow::Result<AppState> {
        let passwords = Arc::new(Passwords::new(&config.auth)?);
        Self::with_passwords(config, passwords)
    }

    /// Like [`AppState::new`] with a given password hasher (tests use a cheap one).
    pub fn with_passwords(config: Config, passwords: Arc<Passwords>) -> anyhow::Result<AppState> {
        let store = Store::open(&config.server.db, config.server.read_connections)?;
        let l = &config.limits;
        let window = Duration::from_secs(l.login_window_secs);
        let limits = Limiters {
            sends: Buckets::new(l.send_rate_per_sec, f64::from(l.send_burst)),
            typing: Buckets::new(l.typing_per_sec, l.typing_per_sec.max(1.0)),
            login: LoginThrottle::new(
                l.login_failures_per_user_and_ip,
                l.login_failures_per_user,
                l.login_failures_per_ip,
                window,
                Duration::from_millis(l.login_slowdown_ms),
            ),
        };
        let tls = config.server.tls_cert.is_some();
        Ok(AppState(Arc::new(Shared {
            cors: crate::cors::Cors::new(&config.cors.allowed_origins, tls),
            hub: Hub::new(l.ws_queue_len),
            config: Arc::new(config),
            store,
            limits: Arc::new(limits),
            passwords,
            connections: Arc::default(),
            lifecycle: Lifecycle::new(),
        })))
    }
}

/// The peer address of the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

pub fn with_state(
    state: &AppState,
) -> impl Filter<Extract = (AppState,), Error = std::convert::Infallible> + Clone + use<> {
    let state = state.clone();
    warp::any().map(move || state.clone())
}

/// A JSON body of at most `max` bytes, parsed into `T`; bad JSON is a 400 `invalid_json`.
pub fn json_body<T: DeserializeOwned + Send>(
    max: u64,
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone + use<T> {
    warp::body::content_length_limit(max)
        .and(warp::body::bytes())
        .and_then(|body: Bytes| async move {
            serde_json::from_slice::<T>(&body)
                .map_err(|e| Rejection::from(ApiError::InvalidJson(e.to_string())))
        })
}

/// The query parameter `name` as a non-negative integer, if present.
pub fn non_negative_param(
    query: &HashMap<String, String>,
    name: &'static str,
) -> Result<Option<i64>, ApiError> {
    query
        .get(name)
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::validation(name, "must be a non-negative integer"))
        })
        .transpose()
}

/// Headers on every response.
fn security_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    h
}

/// The whole HTTP surface of the server.
pub fn routes(
    state: &AppState,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone + use<>
{
    let api = crate::auth::routes(state)
        .or(crate::users::routes(state))
        .unify()
        .or(crate::rooms::routes(state))
        .unify()
        .or(crate::messages::routes(state))
        .unify()
        .or(crate::ws::routes(state))
        .unify()
        .or(crate::ops::routes(state))
        .unify()
        .or(crate::web::routes(state))
        .unify();
    let log = warp::log::custom(|info| {
        // The path only: a WebSocket token may travel in the query string.
        tracing::info!(
            target: "chat_server::access",
            method = %info.method(),
            path = info.path(),
            status = info.status().as_u16(),
            micros = info.elapsed().as_micros() as u64,
        );
    });
    let api = crate::cors::guard(&state.cors).or(api).unify();
    crate::cors::wrap(&state.cors, api.recover(recover).unify())
        .with(warp::reply::with::headers(security_headers()))
        // Only where a route set none: the web client's page brings its own policy.
        .with(warp::reply::with::default_header(
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .with(log)
        .map(Reply::into_response)
}

/// How long shutdown waits for requests in flight and for sockets to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last writes to commit and the WAL checkpoint.
const CLOSE_DATABASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one connection over HTTP/1.1, with upgrades (WebSockets), until it ends; once
/// `stop` turns true it finishes the request in flight and closes. Request heads must arrive
/// within `header_timeout`, which also closes idle keep-alive connections.
///
/// HTTP/1.1 only, in clear text and over TLS (whose ALPN offers only `http/1.1`): HTTP/2 has
/// no such bound on idle connections, so a client opening with the HTTP/2 preface could
/// otherwise hold a connection open forever. It is answered as a malformed HTTP/1 request and
/// the connection is closed. (hyper-util's automatic builder would switch to HTTP/2 on the
/// preface even when told to speak HTTP/1 only.)
async fn serve_http1<I, S, B>(
    io: I,
    service: S,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Without a timer hyper never times out a request head: a client sending its headers a
    // byte at a time, or idling on keep-alive, would hold the connection forever.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let mut connection = std::pin::pin!(builder.serve_connection(io, service).with_upgrades());
    tokio::select! {
        result = &mut connection => return result,
        _ = stop.wait_for(|stop| *stop) => {}
    }
    connection.as_mut().graceful_shutdown();
    connection.await
}

/// Drives `connection`, but drops it if no request has started within `timeout`: hyper's
/// header timeout only starts once the client has sent something, so a client that connects
/// and stays silent would otherwise hold the connection forever. `None` if dropped.
async fn first_request_within<F: Future>(
    connection: F,
    served: &AtomicBool,
    timeout: Duration,
) -> Option<F::Output> {
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        output = &mut connection => Some(output),
        () = tokio::time::sleep(timeout) => {
            if served.load(Ordering::Relaxed) {
                Some(connection.await)
            } else {
                None
            }
        }
    }
}

/// Serves the application on `listener` (over TLS when the configuration names a certificate)
/// until `shutdown` completes. Then it stops accepting, tells WebSocket clients to reconnect
/// later (close code 1001), lets requests in flight finish, commits the writes already queued,
/// checkpoints the WAL and returns, each step within a bounded time.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = match (&state.config.server.tls_cert, &state.config.server.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
        _ => None,
    };
    let service = warp::service(routes(&state));
    let header_timeout = Duration::from_secs(state.config.limits.header_read_timeout_secs);
    // Turns true at shutdown; every connection holds a receiver until it is done, so the
    // sender's `closed` says when the last one finished.
    let (stop, stopping) = watch::channel(false);
    let deactivations = tokio::spawn(crate::lifecycle::watch_deactivations(state.clone()));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let open = METRICS.http_connections.track();
        METRICS.http_connections_total.inc();
        let service = service.clone();
        let served = Arc::new(AtomicBool::new(false));
        let first_request = served.clone();
        let handler =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                first_request.store(true, Ordering::Relaxed);
                req.extensions_mut().insert(ClientAddr(peer));
                // HEAD is GET without the body: routed as GET, and hyper, which remembers the
                // method it parsed, sends the headers (Content-Length included) but no body.
                if req.method() == warp::http::Method::HEAD {
                    *req.method_mut() = warp::http::Method::GET;
                }
                service.clone().call(req)
            });
        let stopping = stopping.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let connection =
                        serve_http1(TokioIo::new(stream), handler, header_timeout, stopping);
                    first_request_within(connection, &served, header_timeout).await
                }
                Some(tls) => {
                    let handshake =
                        tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, tls.accept(stream));
                    let stream = match handshake.await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            METRICS.tls_handshake_failures.inc();
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            METRICS.tls_handshake_failures.inc();
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let connection =
                        serve_http1(TokioIo::new(stream), handler, header_timeout, stopping);
                    first_request_within(connection, &served, header_timeout).await
                }
            };
            match result {
                Some(Ok(())) => {}
                Some(Err(e)) => tracing::debug!(error = %e, "connection ended with an error"),
                None => tracing::debug!(%peer, "no request within the header timeout"),
            }
            // An upgraded connection lives on in its WebSocket session; this counts until the
            // HTTP side is done with it.
            drop(open);
        });
    }
    drop(listener);
    drop(stopping);
    let _ = stop.send(true);
    tracing::info!("shutting down: no longer accepting connections");
    state.lifecycle.begin_shutdown();
    let drained = async {
        tokio::join!(stop.closed(), state.lifecycle.sessions_ended());
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::warn!(
            "some connections did not finish within {} s",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    deactivations.abort();
    match tokio::time::timeout(CLOSE_DATABASE_TIMEOUT, state.store.close()).await {
        Ok(Ok(())) => tracing::info!("database closed: writes committed, WAL checkpointed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "database close incomplete"),
        Err(_) => tracing::warn!("database writer did not finish in time"),
    }
    Ok(())
}
