//! The application: shared state, the route table, and the accept loop that serves it.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tower_service::Service;
use warp::http::HeaderValue;
use warp::http::header::HeaderMap;
use warp::{Filter, Rejection, Reply};

use crate::auth::Passwords;
use crate::config::Config;
use crate::error::{ApiError, recover};
use crate::hub::Hub;
use crate::model::{RoomId, UserId};
use crate::ratelimit::{Buckets, FailureWindow};
use crate::store::Store;

/// Everything a handler needs, as cheap handles.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub hub: Hub,
    pub limits: Arc<Limiters>,
    pub passwords: Arc<Passwords>,
    pub connections: Arc<Connections>,
}

/// The abuse limits of DESIGN.md section 4.
pub struct Limiters {
    pub sends: Buckets<UserId>,
    pub typing: Buckets<(UserId, RoomId)>,
    pub login_by_user: FailureWindow<String>,
    pub login_by_ip: FailureWindow<IpAddr>,
}

/// Open WebSocket connections per user, to enforce the per-user cap.
#[derive(Default)]
pub struct Connections {
    per_user: Mutex<HashMap<UserId, u32>>,
}

/// Releases a connection slot when dropped.
pub struct ConnectionSlot {
    connections: Arc<Connections>,
    user: UserId,
}

impl Connections {
    /// Takes a slot for `user` unless it already holds `max`.
    pub fn acquire(self: &Arc<Self>, user: UserId, max: u32) -> Option<ConnectionSlot> {
        let mut map = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        let count = map.entry(user).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            connections: self.clone(),
            user,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut map = self
            .connections
            .per_user
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = map.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.user);
            }
        }
    }
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
            login_by_user: FailureWindow::new(l.login_failures_per_user, window),
            login_by_ip: FailureWindow::new(l.login_failures_per_ip, window),
        };
        Ok(AppState {
            hub: Hub::new(l.ws_queue_len),
            config: Arc::new(config),
            store,
            limits: Arc::new(limits),
            passwords,
            connections: Arc::default(),
        })
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
    api.recover(recover)
        .unify()
        .with(warp::reply::with::headers(security_headers()))
        // Only where a route set none: the web client's page brings its own policy.
        .with(warp::reply::with::default_header(
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .with(log)
        .map(Reply::into_response)
}

/// Serves the application on `listener` until `shutdown` completes, then stops accepting and
/// gives in-flight requests a bounded time to finish.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let service = warp::service(routes(&state));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
        let service = service.clone();
        let handler =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ClientAddr(peer));
                service.clone().call(req)
            });
        let connection = auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(TokioIo::new(stream), handler)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: no longer accepting connections");
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within 10 s");
    }
    Ok(())
}
