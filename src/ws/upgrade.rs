//! The HTTP side of a socket: origin, token and membership are checked before the upgrade,
//! so refusals are plain HTTP errors; then the upgrade with buffers sized for many idle
//! sockets.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use warp::http::header::{HeaderMap, HeaderValue};
use warp::http::{Response, StatusCode};

use std::net::IpAddr;
use std::time::Duration;

use crate::admission::ConnTicket;
use crate::auth::{authenticate_token, ip_key, token_from_header};
use crate::chat::member_request;
use crate::config::LimitsConfig;
use crate::error::ApiError;
use crate::filters::{FromQuery, Params};
use crate::metrics::{Bound, METRICS};
use crate::model::Auth;
use crate::model::Seq;
use crate::ratelimit::retry_after_secs;
use crate::state::AppState;
use crate::state::ClientAddr;
use crate::store::api::Head;
use crate::store::rooms::RoomRef;

use super::events::Events;
use super::outbox::Outbox;
use super::session::{Resume, Session};
use super::subscription::Scope;

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// No `Origin` (a non-browser client), the page's own origin, or an allowlisted one.
pub(crate) fn origin_allowed(headers: &HeaderMap, cors: &crate::cors::Cors) -> bool {
    header(headers, "origin").is_none_or(|origin| cors.permits(origin, headers))
}

/// The handshake key if this is a well-formed WebSocket upgrade request.
pub(crate) fn websocket_key(headers: &HeaderMap) -> Option<&str> {
    let connection = header(headers, "connection")?;
    let upgrade = header(headers, "upgrade")?;
    let version = header(headers, "sec-websocket-version")?;
    let wants_upgrade = connection
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    (wants_upgrade && upgrade.eq_ignore_ascii_case("websocket") && version.trim() == "13")
        .then(|| header(headers, "sec-websocket-key"))
        .flatten()
}

/// Who is connecting: the address, and the connection's place under the TCP caps.
pub(crate) struct Peer {
    pub(crate) addr: Option<ClientAddr>,
    pub(crate) conn: Option<ConnTicket>,
}

/// `?token=&since=`. `since` is checked only after the token, so a stranger learns nothing
/// from its errors.
pub struct UpgradeQuery {
    token: Option<String>,
    since: Result<Option<Seq>, ApiError>,
    events: Result<Events, ApiError>,
}

impl FromQuery for UpgradeQuery {
    fn from_query(params: &Params) -> Result<UpgradeQuery, ApiError> {
        Ok(UpgradeQuery {
            token: params.get("token").map(str::to_string),
            since: params.non_negative("since").map(|s| s.map(Seq)),
            events: params.get("events").map_or(Ok(Events::ALL), Events::parse),
        })
    }
}

/// `GET /ws/chat/<room_id>/?token=&since=` (one room) and `GET /ws/?token=&since=` (every room
/// of the user): authenticates, checks membership and origin, then switches protocols.
pub(crate) async fn upgrade(
    room_id: Option<String>,
    headers: HeaderMap,
    query: Result<UpgradeQuery, ApiError>,
    on_upgrade: Option<OnUpgrade>,
    peer: Peer,
    state: AppState,
) -> Result<warp::reply::Response, ApiError> {
    let Peer { addr, conn } = peer;
    let UpgradeQuery {
        token: in_query,
        since,
        events,
    } = query?;
    // Before anything reaches the database: one address opening sockets in a loop is
    // refused here, whoever it claims to be.
    let ip = addr.map_or(IpAddr::from([0, 0, 0, 0]), |a| ip_key(a.0.ip()));
    refuse_past(
        state.limits.ws_connects_ip.take(&ip),
        Bound::WsConnectsPerIp,
    )?;
    let token = header(&headers, "authorization")
        .and_then(token_from_header)
        .or(in_query.as_deref());
    let revocations = state.connections.revocations();
    let (auth, scope, prefetched) = match room_id {
        Some(room_id) => {
            let (auth, room, prefetched) = room_upgrade_read(&state, token, room_id).await?;
            (auth, Scope::Room(room), Some(prefetched))
        }
        None => (authenticate_token(&state, token).await?, Scope::User, None),
    };
    if !origin_allowed(&headers, &state.cors) {
        return Err(ApiError::Forbidden("origin not allowed"));
    }
    let since = since?;
    let events = events?;
    let (Some(key), Some(on_upgrade)) = (websocket_key(&headers), on_upgrade) else {
        return Err(ApiError::UpgradeRequired(
            "this endpoint speaks WebSocket only",
        ));
    };
    refuse_past(
        state.limits.ws_connects_user.take(&auth.user.id),
        Bound::WsConnectsPerUser,
    )?;
    let slot = state.connections.acquire(&auth, &state.config.limits)?;
    let resume = match since {
        Some(since) => Some(Resume {
            since,
            _permit: state
                .replays
                .start(auth.user.id, &state.config.limits)
                .map_err(|_| ApiError::RateLimited {
                    retry_after_secs: REPLAY_RETRY_AFTER_SECS,
                })?,
        }),
        None => None,
    };
    if state.connections.revocations() != revocations {
        // A revocation ran while this connection was being set up and may have missed it.
        authenticate_token(&state, token).await?;
    }
    let accept = derive_accept_key(key.as_bytes());

    let config = socket_config(&state.config.limits);
    let user = auth.user;
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                let write = Duration::from_secs(state.config.limits.ws_write_timeout_secs);
                let out = Outbox::new(socket, write, events);
                Session::run(state, out, user, scope, resume, prefetched, slot).await;
                // The connection counts under the TCP caps until the session is over.
                drop(conn);
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });

    let mut response = Response::new(warp::hyper::body::Bytes::new().into());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert("connection", HeaderValue::from_static("upgrade"));
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    h.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&accept).map_err(ApiError::internal)?,
    );
    Ok(response)
}

/// The buffers and the message size bound of every socket the server accepts.
pub fn socket_config(limits: &LimitsConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        // tungstenite zero-fills the whole read buffer before every read, so all of it is
        // resident for every connection: 2 KiB holds any usual client frame in one read.
        .read_buffer_size(2 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(limits.max_ws_message_bytes))
        .max_frame_size(Some(limits.max_ws_message_bytes))
}

/// How long a client refused because too many replays are running is asked to wait.
const REPLAY_RETRY_AFTER_SECS: u64 = 1;

/// An upgrade's answer, a refusal counted in `chat_websocket_refusals_total` by its code.
pub(crate) fn counted(
    answer: Result<warp::reply::Response, ApiError>,
) -> Result<warp::reply::Response, ApiError> {
    answer.inspect_err(|e| METRICS.websocket_refused(e.code()))
}

/// A rate limiter's refusal as the 429 it is answered with, counted under `bound`.
fn refuse_past(taken: Result<(), std::time::Duration>, bound: Bound) -> Result<(), ApiError> {
    taken.map_err(|wait| {
        METRICS.refused(bound);
        ApiError::RateLimited {
            retry_after_secs: retry_after_secs(wait),
        }
    })
}

/// What a room socket's handshake read about the room, and when.
pub(crate) struct Prefetched {
    /// [`crate::hub::Hub::mark`] before the read.
    pub(crate) mark: Option<u64>,
    /// Where the room stood as of the read.
    pub(crate) last: Head,
}

/// Everything a room socket's handshake needs from the database in one trip: the token's
/// session, the membership and the room's newest message id.
pub(crate) async fn room_upgrade_read(
    state: &AppState,
    token: Option<&str>,
    room_id: String,
) -> Result<(Auth, RoomRef, Prefetched), ApiError> {
    let (digest, ()) = member_request(state, token, &room_id, Ok(())).await?;
    let mark = state.hub.mark();
    let (auth, room, last) = state.store.member_room(digest, room_id).await?;
    Ok((auth, room, Prefetched { mark, last }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origins_allowed_when_absent_same_or_listed() {
        use crate::cors::Cors;
        let none = Cors::new(&[], false);
        assert!(origin_allowed(&headers(&[("host", "a:8000")]), &none));
        assert!(origin_allowed(
            &headers(&[("host", "a:8000"), ("origin", "http://a:8000")]),
            &none
        ));
        assert!(!origin_allowed(
            &headers(&[("host", "a:8000"), ("origin", "https://a:8000")]),
            &none
        ));
        assert!(!origin_allowed(
            &headers(&[("host", "a:8000"), ("origin", "http://evil.example")]),
            &none
        ));
        let listed = Cors::new(&["http://evil.example".to_string()], false);
        assert!(origin_allowed(
            &headers(&[("host", "a:8000"), ("origin", "http://evil.example")]),
            &listed
        ));
    }
}
