//! `GET /ws/chat/<room_id>/`: the real-time room socket.
//!
//! The upgrade is done here rather than with `warp::ws()` so the socket's buffers can be sized
//! (tungstenite's default 128 KiB read buffer per connection would dominate memory). Auth,
//! membership and origin are checked before the upgrade, so refusals are plain HTTP errors.
//!
//! A session subscribes to the room before it reads anything from the database, then
//! de-duplicates by message id: a resume with `?since=` replays from the database and goes
//! live with no gap and no duplicate. Frames waiting in the queue are written in one flush.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::{Instant, interval_at, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message as WsMessage, handshake::derive_accept_key};
use warp::filters::BoxedFilter;
use warp::http::header::{HeaderMap, HeaderValue};
use warp::http::{Response, StatusCode};
use warp::{Filter, Reply};

use crate::app::{AppState, ConnectionSlot, with_state};
use crate::auth::{authenticate_token, token_from_header};
use crate::error::ApiError;
use crate::hub::{Event, EventKind, Frame};
use crate::messages::{mark_read, message_event, room_for_member, send};
use crate::model::{MessageId, User};
use crate::store::messages::{self as message_store, Page};
use crate::store::rooms::RoomRef;

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// How often the server pings an idle client.
const PING_EVERY: Duration = Duration::from_secs(30);
/// A client silent for this long (not even a pong) is considered dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// A write that cannot complete in this time means the client stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most frames written per flush.
const MAX_BATCH: usize = 64;
/// Messages per replay query.
const REPLAY_PAGE: u32 = 200;
/// Most messages a lagging connection is resynced with before it is told to reconnect.
const MAX_RESYNC: usize = 5_000;

/// Close code: the server could not keep this connection up to date; reconnect with
/// `?since=<last message id seen>`.
pub const CLOSE_RESYNC: u16 = 4000;

pub fn routes(state: &AppState) -> BoxedFilter<(warp::reply::Response,)> {
    warp::path!("ws" / "chat" / String)
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(with_state(state))
        .then(upgrade)
        .map(Reply::into_response)
        .boxed()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// No `Origin` (a non-browser client), the page's own origin, or an allowlisted one.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = header(headers, "origin") else {
        return true;
    };
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((origin_host, header(headers, "host")), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// The handshake key if this is a well-formed WebSocket upgrade request.
fn websocket_key(headers: &HeaderMap) -> Option<&str> {
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

/// `GET /ws/chat/<room_id>/?token=&since=`: authenticates, checks membership and origin, then
/// switches protocols.
async fn upgrade(
    room_id: String,
    headers: HeaderMap,
    query: HashMap<String, String>,
    on_upgrade: Option<OnUpgrade>,
    state: AppState,
) -> Result<warp::reply::Response, ApiError> {
    let token = header(&headers, "authorization")
        .and_then(token_from_header)
        .or(query.get("token").map(String::as_str));
    let auth = authenticate_token(&state, token).await?;
    let room = room_for_member(&state, room_id, &auth.user).await?;
    if !origin_allowed(&headers, &state.config.cors.allowed_origins) {
        return Err(ApiError::Forbidden("origin not allowed"));
    }
    let since = match query.get("since") {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(MessageId)
                .ok_or_else(|| ApiError::validation("since", "must be a message id"))?,
        ),
    };
    let (Some(key), Some(on_upgrade)) = (websocket_key(&headers), on_upgrade) else {
        return Err(ApiError::UpgradeRequired(
            "this endpoint speaks WebSocket only",
        ));
    };
    let max = state.config.limits.max_connections_per_user;
    let slot = state
        .connections
        .acquire(auth.user.id, max)
        .ok_or(ApiError::RateLimited {
            retry_after_secs: 5,
        })?;
    let accept = derive_accept_key(key.as_bytes());

    let limits = &state.config.limits;
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(limits.max_ws_message_bytes))
        .max_frame_size(Some(limits.max_ws_message_bytes));
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
                Session::run(state, socket, user, room, since, slot).await;
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

/// A frame from the client.
#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum ClientFrame {
    Message {
        content: String,
        client_id: Option<String>,
    },
    Read {
        message_id: i64,
    },
    Typing {
        typing: bool,
    },
    Ping,
}

const ACTIONS: [&str; 4] = ["message", "read", "typing", "ping"];

fn error_frame(code: &str, message: &str) -> WsMessage {
    WsMessage::text(json!({"type": "error", "code": code, "message": message}).to_string())
}

/// Why a session ended early.
enum End {
    /// The peer went away or the socket failed: nothing more to say.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

/// One WebSocket connection to one room.
struct Session {
    state: AppState,
    socket: Socket,
    user: User,
    room: RoomRef,
    /// Highest message id delivered on this socket: anything at or below is a duplicate.
    last_sent: MessageId,
    last_heard: Instant,
}

impl Session {
    async fn run(
        state: AppState,
        socket: Socket,
        user: User,
        room: RoomRef,
        since: Option<MessageId>,
        slot: ConnectionSlot,
    ) {
        let joined = state.hub.join(room.id, user.id);
        let mut events = joined.events;
        if joined.first {
            state
                .hub
                .publish(room.id, presence_event(&room, &user, true));
        }
        let mut session = Session {
            state,
            socket,
            user,
            room,
            last_sent: since.unwrap_or(MessageId(0)),
            last_heard: Instant::now(),
        };
        let end = match session.start(joined.online, since).await {
            Ok(()) => session.serve(&mut events).await,
            Err(end) => end,
        };
        drop(events);
        if let End::Close(code, reason) = end {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            let _ = timeout(WRITE_TIMEOUT, session.socket.close(Some(frame))).await;
        }
        let Session {
            state, user, room, ..
        } = session;
        if state.hub.leave(room.id, user.id) {
            state
                .hub
                .publish(room.id, presence_event(&room, &user, false));
        }
        drop(slot);
    }

    /// Sends `hello`, then replays what the client missed if it asked to resume.
    async fn start(
        &mut self,
        online: Vec<crate::model::UserId>,
        since: Option<MessageId>,
    ) -> Result<(), End> {
        let room_id = self.room.id;
        let last = self
            .state
            .store
            .read(move |c| message_store::last_id(c, room_id))
            .await
            .map_err(|_| End::Close(1011, "internal error"))?;
        let hello = json!({
            "type": "hello",
            "room_id": self.room.public_id,
            "user": self.user,
            "last_message_id": last,
            "online": online,
        });
        self.write(WsMessage::text(hello.to_string())).await?;
        match since {
            Some(_) => self.replay(usize::MAX).await,
            None => {
                self.last_sent = last;
                Ok(())
            }
        }
    }

    /// Sends every stored message after `last_sent`, in order, up to `max` of them.
    async fn replay(&mut self, max: usize) -> Result<(), End> {
        let mut sent = 0;
        loop {
            let room = self.room.clone();
            let after = self.last_sent;
            let (page, more) = self
                .state
                .store
                .read(move |c| message_store::page(c, &room, Page::After(after), REPLAY_PAGE))
                .await
                .map_err(|_| End::Close(1011, "internal error"))?;
            for message in &page {
                self.socket
                    .feed(WsMessage::Text(message_event(message).frame))
                    .await
                    .map_err(|_| End::Gone)?;
                self.last_sent = message.id;
            }
            self.flush().await?;
            sent += page.len();
            if !more {
                return Ok(());
            }
            if sent >= max {
                return Err(End::Close(
                    CLOSE_RESYNC,
                    "too far behind: reconnect with since",
                ));
            }
        }
    }

    async fn serve(&mut self, events: &mut tokio::sync::broadcast::Receiver<Event>) -> End {
        let mut ping = interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            let step = tokio::select! {
                frame = self.socket.next() => match frame {
                    Some(Ok(frame)) => {
                        self.last_heard = Instant::now();
                        self.on_frame(frame).await
                    }
                    Some(Err(e)) => Err(close_for(&e)),
                    None => Err(End::Gone),
                },
                event = events.recv() => match event {
                    Ok(event) => self.deliver(event, events).await,
                    Err(RecvError::Lagged(_)) => self.replay(MAX_RESYNC).await,
                    Err(RecvError::Closed) => Err(End::Close(1001, "server shutting down")),
                },
                _ = ping.tick() => {
                    if self.last_heard.elapsed() > IDLE_TIMEOUT {
                        Err(End::Gone)
                    } else {
                        self.write(WsMessage::Ping(Default::default())).await
                    }
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Whether this socket should see `event`, updating the de-duplication mark.
    fn wants(&mut self, event: &Event) -> bool {
        match event.kind {
            EventKind::Message(id) if id <= self.last_sent => false,
            EventKind::Message(id) => {
                self.last_sent = id;
                true
            }
            EventKind::Typing { from } => from != self.user.id,
            EventKind::Read | EventKind::Presence => true,
        }
    }

    /// Writes `first` and whatever else is already queued, then flushes once.
    async fn deliver(
        &mut self,
        first: Event,
        events: &mut tokio::sync::broadcast::Receiver<Event>,
    ) -> Result<(), End> {
        let mut pending = 0;
        let mut next = Some(first);
        while let Some(event) = next.take() {
            if self.wants(&event) {
                self.feed(event.frame).await?;
                pending += 1;
            }
            if pending >= MAX_BATCH {
                break;
            }
            next = match events.try_recv() {
                Ok(event) => Some(event),
                Err(TryRecvError::Lagged(_)) => {
                    self.flush().await?;
                    return self.replay(MAX_RESYNC).await;
                }
                Err(_) => None,
            };
        }
        self.flush().await
    }

    async fn feed(&mut self, frame: Frame) -> Result<(), End> {
        match timeout(WRITE_TIMEOUT, self.socket.feed(WsMessage::Text(frame))).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Gone),
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        match timeout(WRITE_TIMEOUT, self.socket.flush()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Gone),
        }
    }

    async fn write(&mut self, message: WsMessage) -> Result<(), End> {
        match timeout(WRITE_TIMEOUT, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Gone),
        }
    }

    async fn on_frame(&mut self, frame: WsMessage) -> Result<(), End> {
        match frame {
            WsMessage::Text(text) => self.on_text(text.as_str()).await,
            WsMessage::Binary(_) => {
                self.write(error_frame(
                    "unsupported_frame",
                    "binary frames are not supported; send JSON text frames",
                ))
                .await
            }
            WsMessage::Close(_) => Err(End::Gone),
            // Pings are answered by the protocol layer; pongs only prove liveness.
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => Ok(()),
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return self
                    .write(error_frame("invalid_json", &e.to_string()))
                    .await;
            }
        };
        let action = value.get("action").and_then(Value::as_str);
        match action {
            Some(a) if ACTIONS.contains(&a) => {}
            _ => {
                return self
                    .write(error_frame(
                        "unknown_action",
                        "action must be one of: message, read, typing, ping",
                    ))
                    .await;
            }
        }
        let frame: ClientFrame = match serde_json::from_value(value) {
            Ok(f) => f,
            Err(e) => {
                return self
                    .write(error_frame("invalid_frame", &e.to_string()))
                    .await;
            }
        };
        match frame {
            ClientFrame::Message { content, client_id } => {
                let room = self.room.clone();
                match send(&self.state, &self.user, room, &content, client_id).await {
                    // The new message comes back through the room's channel as the ack.
                    Ok((_, true)) => Ok(()),
                    // A repeated client_id: the original, to this socket only.
                    Ok((original, false)) => {
                        self.write(WsMessage::Text(message_event(&original).frame))
                            .await
                    }
                    Err(e) => self.write(api_error_frame(&e)).await,
                }
            }
            ClientFrame::Read { message_id } => {
                let found = if message_id > 0 {
                    mark_read(&self.state, &self.user, MessageId(message_id)).await
                } else {
                    Ok(None)
                };
                match found {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => {
                        self.write(error_frame("not_found", "no such message"))
                            .await
                    }
                    Err(e) => self.write(api_error_frame(&e)).await,
                }
            }
            ClientFrame::Typing { typing } => {
                let key = (self.user.id, self.room.id);
                if self.state.limits.typing.take(&key).is_ok() {
                    let event = Event::new(
                        EventKind::Typing { from: self.user.id },
                        &json!({
                            "type": "typing",
                            "room_id": self.room.public_id,
                            "user": self.user,
                            "typing": typing,
                        }),
                    );
                    self.state.hub.publish(self.room.id, event);
                }
                Ok(())
            }
            ClientFrame::Ping => self.write(WsMessage::text(r#"{"type":"pong"}"#)).await,
        }
    }
}

fn api_error_frame(e: &ApiError) -> WsMessage {
    let message = match e {
        ApiError::Validation(fields) => fields
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    };
    error_frame(e.code(), &message)
}

fn close_for(e: &tokio_tungstenite::tungstenite::Error) -> End {
    use tokio_tungstenite::tungstenite::Error;
    use tokio_tungstenite::tungstenite::error::CapacityError;
    match e {
        Error::Capacity(CapacityError::MessageTooLong { .. }) => {
            End::Close(1009, "message too big")
        }
        Error::Protocol(_) | Error::Utf8(_) => End::Close(1002, "protocol error"),
        _ => End::Gone,
    }
}

fn presence_event(room: &RoomRef, user: &User, online: bool) -> Event {
    Event::new(
        EventKind::Presence,
        &json!({
            "type": "presence",
            "room_id": room.public_id,
            "user": user,
            "online": online,
        }),
    )
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
        let none: Vec<String> = vec![];
        assert!(origin_allowed(&headers(&[("host", "a:8000")]), &none));
        assert!(origin_allowed(
            &headers(&[("host", "a:8000"), ("origin", "http://a:8000")]),
            &none
        ));
        assert!(!origin_allowed(
            &headers(&[("host", "a:8000"), ("origin", "http://evil.example")]),
            &none
        ));
        let listed = vec!["http://evil.example".to_string()];
        assert!(origin_allowed(
            &headers(&[("host", "a:8000"), ("origin", "http://evil.example")]),
            &listed
        ));
    }
}
