//! `GET /ws/chat/<room_id>/`: the real-time room socket.
//!
//! The upgrade is done here rather than with `warp::ws()` so the socket's buffers can be sized
//! (tungstenite's default 128 KiB read buffer per connection would dominate memory). Auth,
//! membership and origin are checked before the upgrade, so refusals are plain HTTP errors.
//!
//! A room socket's handshake reads the token, the membership and the room's newest message id
//! in one trip to the database. The session then subscribes, and trusts that read only if no
//! message and no removal was published in between; otherwise it reads again, after
//! subscribing. Delivery de-duplicates by message id: a resume with `?since=` replays from the
//! database and goes live with no gap and no duplicate. Frames waiting in the queue are
//! written in one flush.
//!
//! A session does not wait for one message's commit before reading the next frame: each send
//! is validated, rate-limited and queued for the writer in frame order (so one socket's
//! messages are stored in the order it sent them), and up to `MAX_IN_FLIGHT` wait for their
//! commit at once. Replies to the socket (errors, the original of a repeated `client_id`,
//! `pong`) still go out in the order of the frames that caused them.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::{Instant, Sleep, interval_at, sleep, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message as WsMessage, handshake::derive_accept_key};
use warp::filters::BoxedFilter;
use warp::http::header::{HeaderMap, HeaderValue};
use warp::http::{Response, StatusCode};
use warp::{Filter, Reply};

use crate::auth::{authenticate_token, token_from_header};
use crate::connections::ConnectionSlot;
use crate::error::{ApiError, ErrorCode};
use crate::filters::{non_negative_param, with_state};
use crate::hub::{Event, EventKind, Frame};
use crate::messages::{Sending, mark_read, member_request, message_event, room_for_member, submit};
use crate::model::Auth;
use crate::model::{MessageId, RoomId, User};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::api::ReplayPage;
use crate::store::rooms::RoomRef;

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Most frames written per flush.
const MAX_BATCH: usize = 64;
/// How long presence frames may wait to be written together with the ones that follow them.
/// When many people join a room at once (everyone opening the app at nine), each member's
/// socket gets one write per window instead of one per arrival; anything else that is written
/// takes the waiting presence frames with it, in order.
const PRESENCE_DELAY: Duration = Duration::from_millis(100);
/// Messages per replay query.
const REPLAY_PAGE: u32 = 200;
/// Most messages a lagging connection is resynced with before it is told to reconnect.
const MAX_RESYNC: usize = 5_000;
/// Most sends a connection keeps waiting for their commit; past that it reads no more frames
/// until the oldest is done.
const MAX_IN_FLIGHT: usize = 32;

/// How long a closing session waits for the peer to answer its close frame.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Close code: the server could not keep this connection up to date; reconnect with
/// `?since=<last message id seen>`.
pub const CLOSE_RESYNC: u16 = 4000;
/// Close code: the user is not, or no longer, a member of the room.
pub const CLOSE_REMOVED: u16 = 4003;
/// Close code: the token this socket was opened with was revoked or expired; log in again.
pub const CLOSE_SESSION_ENDED: u16 = 4001;

pub fn routes(state: &AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let room = warp::path!("ws" / "chat" / String)
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(with_state(state))
        .then(|room_id, headers, query, on_upgrade, state| {
            upgrade(Some(room_id), headers, query, on_upgrade, state)
        })
        .map(Reply::into_response);
    let user = warp::path!("ws")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(with_state(state))
        .then(|headers, query, on_upgrade, state| upgrade(None, headers, query, on_upgrade, state))
        .map(Reply::into_response);
    room.or(user).unify().boxed()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// No `Origin` (a non-browser client), the page's own origin, or an allowlisted one.
fn origin_allowed(headers: &HeaderMap, cors: &crate::cors::Cors) -> bool {
    header(headers, "origin").is_none_or(|origin| cors.permits(origin, headers))
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

/// `GET /ws/chat/<room_id>/?token=&since=` (one room) and `GET /ws/?token=&since=` (every room
/// of the user): authenticates, checks membership and origin, then switches protocols.
async fn upgrade(
    room_id: Option<String>,
    headers: HeaderMap,
    query: HashMap<String, String>,
    on_upgrade: Option<OnUpgrade>,
    state: AppState,
) -> Result<warp::reply::Response, ApiError> {
    let token = header(&headers, "authorization")
        .and_then(token_from_header)
        .or(query.get("token").map(String::as_str));
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
    let since = non_negative_param(&query, "since")?.map(MessageId);
    let (Some(key), Some(on_upgrade)) = (websocket_key(&headers), on_upgrade) else {
        return Err(ApiError::UpgradeRequired(
            "this endpoint speaks WebSocket only",
        ));
    };
    let slot = state.connections.acquire(&auth, &state.config.limits)?;
    if state.connections.revocations() != revocations {
        // A revocation ran while this connection was being set up and may have missed it.
        authenticate_token(&state, token).await?;
    }
    let accept = derive_accept_key(key.as_bytes());

    let limits = &state.config.limits;
    let config = WebSocketConfig::default()
        // tungstenite zero-fills the whole read buffer before every read, so all of it is
        // resident for every connection: 2 KiB holds any usual client frame in one read.
        .read_buffer_size(2 * 1024)
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
                Session::run(state, socket, user, scope, since, prefetched, slot).await;
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

/// What a room socket's handshake read about the room, and when.
struct Prefetched {
    /// [`crate::hub::Hub::changes`] before the read.
    changes: u64,
    /// The room's newest message id as of the read.
    last: MessageId,
}

/// Everything a room socket's handshake needs from the database in one trip: the token's
/// session, the membership and the room's newest message id.
async fn room_upgrade_read(
    state: &AppState,
    token: Option<&str>,
    room_id: String,
) -> Result<(Auth, RoomRef, Prefetched), ApiError> {
    let (digest, ()) = member_request(state, token, &room_id, Ok(())).await?;
    let changes = state.hub.changes();
    let (auth, room, last) = state.store.member_room(digest, room_id).await?;
    Ok((auth, room, Prefetched { changes, last }))
}

/// A frame from the client. Unknown fields (such as a forged `sender_id`) are ignored.
#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum ClientFrame {
    Message {
        content: String,
        client_id: Option<String>,
        room_id: Option<String>,
    },
    Read {
        message_id: i64,
    },
    Typing {
        typing: bool,
        room_id: Option<String>,
    },
    Ping,
}

const ACTIONS: [&str; 4] = ["message", "read", "typing", "ping"];

fn error_frame(code: ErrorCode, message: &str) -> WsMessage {
    WsMessage::text(json!({"type": "error", "code": code.as_str(), "message": message}).to_string())
}

/// What a socket is still owed for the frames it sent, oldest first. Replies go out in the
/// order of the frames that caused them, even when a send is still waiting for its commit.
enum Owed {
    /// A message queued for the database: says nothing if new (the room channel brings the
    /// acknowledgement), returns the original for a repeated `client_id`, or an error.
    Send(Sending),
    /// A reply held back behind earlier sends.
    Reply(WsMessage),
}

/// Resolves when the oldest entry of `owed` is done, and removes it: to the reply it owes the
/// socket, if any. Pending while `owed` is empty. A send refused because the user is no longer
/// a member ends a room socket (`room_socket`) with [`CLOSE_REMOVED`]; on `/ws/` it is a
/// `not_found` error like any room the user cannot see.
async fn oldest_settled(
    owed: &mut VecDeque<Owed>,
    room_socket: bool,
) -> Result<Option<WsMessage>, End> {
    poll_fn(|cx| {
        let Some(front) = owed.front_mut() else {
            return Poll::Pending;
        };
        let reply = match front {
            Owed::Send(sending) => match std::task::ready!(Pin::new(sending).poll(cx)) {
                // The new message comes back through the channel as the ack.
                Ok((_, true)) => Ok(None),
                // A repeated client_id: the original, to this socket only.
                Ok((original, false)) => Ok(Some(WsMessage::Text(
                    message_event(RoomId(0), &original).frame,
                ))),
                Err(StoreError::NotMember) if room_socket => Err(removed()),
                Err(e) => Ok(Some(api_error_frame(&ApiError::from(e)))),
            },
            Owed::Reply(_) => match owed.pop_front() {
                Some(Owed::Reply(reply)) => return Poll::Ready(Ok(Some(reply))),
                _ => unreachable!("the front entry is a reply"),
            },
        };
        owed.pop_front();
        Poll::Ready(reply)
    })
    .await
}

/// How a room socket ends once its user is found not to be a member any more.
fn removed() -> End {
    End::Close(CLOSE_REMOVED, "removed from the room")
}

/// Which events a socket follows.
enum Scope {
    /// One room: `/ws/chat/<room_id>/`.
    Room(RoomRef),
    /// Every room of the user: `/ws/`.
    User,
}

/// Why a session ended.
enum End {
    /// The peer went away or the socket failed: nothing more to say.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

/// Timeouts from the configuration.
struct Timeouts {
    ping: Duration,
    idle: Duration,
    write: Duration,
}

/// One WebSocket connection.
struct Session {
    state: AppState,
    socket: Socket,
    user: User,
    scope: Scope,
    timeouts: Timeouts,
    /// Highest message id delivered on this socket: anything at or below is a duplicate.
    /// Ids grow server-wide and each channel carries events in commit order, so one mark
    /// serves a single room and all rooms alike.
    last_sent: MessageId,
    last_heard: Instant,
    /// Held for the life of the connection; ends it when its token is revoked.
    slot: ConnectionSlot,
    /// Sends in flight and replies waiting behind them, in frame order. Allocated on the first
    /// pipelined send, so idle connections do not pay for it.
    owed: VecDeque<Owed>,
    /// When the presence frames buffered but not yet written are due; `None` when nothing
    /// waits.
    flush_due: Option<Pin<Box<Sleep>>>,
}

/// Resolves when `due` is reached; never if there is nothing due.
async fn until(due: &mut Option<Pin<Box<Sleep>>>) {
    match due {
        Some(due) => due.await,
        None => std::future::pending().await,
    }
}

impl Session {
    async fn run(
        state: AppState,
        socket: Socket,
        user: User,
        scope: Scope,
        since: Option<MessageId>,
        prefetched: Option<Prefetched>,
        slot: ConnectionSlot,
    ) {
        let l = &state.config.limits;
        let timeouts = Timeouts {
            ping: Duration::from_secs(l.ws_ping_interval_secs),
            idle: Duration::from_secs(l.ws_idle_timeout_secs),
            write: Duration::from_secs(l.ws_write_timeout_secs),
        };
        let mut session = Session {
            state,
            socket,
            user,
            scope,
            timeouts,
            last_sent: since.unwrap_or(MessageId(0)),
            last_heard: Instant::now(),
            slot,
            owed: VecDeque::new(),
            flush_due: None,
        };
        // Subscribe first, then read: nothing committed in between can be missed.
        let end = match Box::pin(session.subscribe(prefetched)).await {
            Ok((mut events, current)) => {
                let end = match Box::pin(session.start(since, current)).await {
                    Ok(()) => session.serve(&mut events).await,
                    Err(end) => end,
                };
                drop(events);
                Box::pin(session.unsubscribe()).await;
                end
            }
            Err(end) => end,
        };
        if let End::Close(code, reason) = end {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            let _ = timeout(session.timeouts.write, session.socket.close(Some(frame))).await;
            // The closing handshake: read (and drop) what the peer still sends until its own
            // close frame. Closing the TCP connection with unread input would make the kernel
            // reset it, and a reset can destroy the close frame before the client reads it.
            let drain = async { while let Some(Ok(_)) = session.socket.next().await {} };
            let _ = timeout(CLOSE_HANDSHAKE_TIMEOUT, drain).await;
        }
    }

    fn presence(&self, room: RoomId, public_id: &str, online: bool) {
        self.state
            .hub
            .publish(room, presence_event(room, public_id, &self.user, online));
    }

    /// Subscribes to the socket's events. Also returns the handshake's read of the room's
    /// newest message id if it is still current: no message or removal was published between
    /// that read and the subscription, so nothing can fall between them.
    async fn subscribe(
        &mut self,
        prefetched: Option<Prefetched>,
    ) -> Result<(Receiver<Event>, Option<MessageId>), End> {
        let hub = self.state.hub.clone();
        match &self.scope {
            Scope::Room(room) => {
                let joined = hub.join_room(room.id, self.user.id);
                if joined.first {
                    self.presence(room.id, &room.public_id, true);
                }
                let current = prefetched
                    .filter(|p| p.changes == joined.changes)
                    .map(|p| p.last);
                Ok((joined.events, current))
            }
            Scope::User => {
                let joined = hub.join_user(self.user.id, &[]);
                let rooms = self.my_rooms().await?;
                for room in &rooms {
                    if hub.add_member(room.id, self.user.id) {
                        self.presence(room.id, &room.public_id, true);
                    }
                }
                // A removal that committed while the rooms were read has already run its
                // hook; forget any room it took away.
                let current = self.my_rooms().await?;
                for room in rooms
                    .iter()
                    .filter(|r| !current.iter().any(|c| c.id == r.id))
                {
                    if hub.remove_member(room.id, self.user.id) {
                        self.presence(room.id, &room.public_id, false);
                    }
                }
                Ok((joined.events, None))
            }
        }
    }

    async fn unsubscribe(&mut self) {
        let hub = self.state.hub.clone();
        match &self.scope {
            Scope::Room(room) => {
                if hub.leave_room(room.id, self.user.id) {
                    self.presence(room.id, &room.public_id, false);
                }
            }
            Scope::User => {
                let offline = hub.leave_user(self.user.id);
                if offline.is_empty() {
                    return;
                }
                if let Ok(rooms) = self.my_rooms().await {
                    for room in rooms.iter().filter(|r| offline.contains(&r.id)) {
                        self.presence(room.id, &room.public_id, false);
                    }
                }
            }
        }
    }

    /// The user's rooms. Takes `&mut self` only so the future stays `Send`.
    async fn my_rooms(&mut self) -> Result<Vec<RoomRef>, End> {
        let user = self.user.id;
        self.state
            .store
            .room_refs_of(user)
            .await
            .map_err(|_| End::Close(1011, "internal error"))
    }

    /// Sends `hello`, then replays what the client missed if it asked to resume. `current`:
    /// the room's newest message id, if the handshake's read of it is still current.
    async fn start(
        &mut self,
        since: Option<MessageId>,
        current: Option<MessageId>,
    ) -> Result<(), End> {
        let user = self.user.id;
        let hello = match &self.scope {
            Scope::Room(room) => {
                let room_id = room.id;
                let last = match current {
                    Some(last) => last,
                    None => self
                        .state
                        .store
                        .last_id_if_member(room_id, user)
                        .await
                        .map_err(|_| End::Close(1011, "internal error"))?
                        // Removed between the handshake and the subscription.
                        .ok_or(End::Close(CLOSE_REMOVED, "not a member of this room"))?,
                };
                if since.is_none() {
                    self.last_sent = last;
                }
                json!({
                    "type": "hello",
                    "room_id": room.public_id,
                    "user": self.user,
                    "last_message_id": last,
                    "online": self.state.hub.online(room.id),
                })
            }
            Scope::User => {
                let hub = self.state.hub.clone();
                let rooms = self
                    .state
                    .store
                    .room_heads_of(user)
                    .await
                    .map_err(|_| End::Close(1011, "internal error"))?;
                let last = rooms
                    .iter()
                    .map(|(id, _)| *id)
                    .max()
                    .unwrap_or(MessageId(0));
                if since.is_none() {
                    self.last_sent = last;
                }
                let rooms: Vec<Value> = rooms
                    .iter()
                    .map(|(last, r)| {
                        json!({
                            "room_id": r.public_id,
                            "last_message_id": last,
                            "online": hub.online(r.id),
                        })
                    })
                    .collect();
                json!({
                    "type": "hello",
                    "user": self.user,
                    "last_message_id": last,
                    "rooms": rooms,
                })
            }
        };
        self.write(WsMessage::text(hello.to_string())).await?;
        if since.is_some() {
            self.replay(usize::MAX).await?;
        }
        Ok(())
    }

    /// Catches a socket that fell behind its event queue up from the database.
    async fn resync(&mut self) -> Result<(), End> {
        crate::metrics::METRICS.websocket_resyncs.inc();
        self.replay(MAX_RESYNC).await
    }

    /// Sends every stored message after `last_sent`, in order, up to about `max` of them;
    /// past that the client is told to reconnect with `since`.
    async fn replay(&mut self, max: usize) -> Result<(), End> {
        let mut sent = 0;
        loop {
            let after = self.last_sent;
            let user = self.user.id;
            let room = match &self.scope {
                Scope::Room(room) => Some(room.clone()),
                Scope::User => None,
            };
            // Membership is read in the same snapshot as the page: a room socket whose user was
            // removed gets nothing committed after the removal, however far behind it was
            // (the removal's own event may have been among the events it lagged past).
            let ReplayPage {
                messages: page,
                more,
            } = self
                .state
                .store
                .replay_page(room, user, after, REPLAY_PAGE)
                .await
                .map_err(|_| End::Close(1011, "internal error"))?
                .ok_or_else(removed)?;
            for message in &page {
                let room = RoomId(0); // the frame is all that is written
                self.feed(message_event(room, message).frame).await?;
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

    async fn serve(&mut self, events: &mut Receiver<Event>) -> End {
        let mut ping = interval_at(Instant::now() + self.timeouts.ping, self.timeouts.ping);
        // Shutdown (1001) or the user's deactivation (1008) ends the session.
        let mut stop = std::pin::pin!(self.state.lifecycle.session_end(self.user.id));
        let room_socket = matches!(self.scope, Scope::Room(_));
        loop {
            let step = tokio::select! {
                (code, reason) = &mut stop => Err(End::Close(code, reason)),
                reply = oldest_settled(&mut self.owed, room_socket), if !self.owed.is_empty() => {
                    match reply {
                        Ok(Some(reply)) => self.write(reply).await,
                        Ok(None) => Ok(()),
                        Err(end) => Err(end),
                    }
                }
                // A full pipeline is the back-pressure: read nothing until the oldest is done.
                frame = self.socket.next(), if self.owed.len() < MAX_IN_FLIGHT => match frame {
                    Some(Ok(frame)) => {
                        self.last_heard = Instant::now();
                        Box::pin(self.on_frame(frame)).await
                    }
                    Some(Err(e)) => Err(close_for(&e)),
                    None => Err(End::Gone),
                },
                event = events.recv() => match event {
                    Ok(event) => self.deliver(event, events).await,
                    Err(RecvError::Lagged(_)) => Box::pin(self.resync()).await,
                    Err(RecvError::Closed) => Err(End::Close(1001, "server shutting down")),
                },
                () = until(&mut self.flush_due) => self.flush().await,
                () = self.slot.ended() => {
                    Err(End::Close(CLOSE_SESSION_ENDED, "session ended: log in again"))
                }
                _ = ping.tick() => {
                    if self.owed.is_empty() {
                        // Give back what a burst of sends allocated.
                        self.owed.shrink_to_fit();
                    }
                    if self.last_heard.elapsed() > self.timeouts.idle {
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

    /// Whether this socket should see `event`, updating the de-duplication mark; `Err` if
    /// the event ends the session after it is written.
    fn wants(&mut self, event: &Event) -> Result<bool, End> {
        Ok(match event.kind {
            EventKind::Message(id) if id <= self.last_sent => false,
            EventKind::Message(id) => {
                self.last_sent = id;
                true
            }
            // Nobody needs to hear that they themselves are typing or online.
            EventKind::Typing { from: user } | EventKind::Presence { user } => user != self.user.id,
            EventKind::Member { user, added: false }
                if user == self.user.id && matches!(self.scope, Scope::Room(_)) =>
            {
                return Err(removed());
            }
            EventKind::Read | EventKind::Member { .. } | EventKind::Room => true,
        })
    }

    /// Writes `first` and whatever else is already queued, then flushes once; if all of it is
    /// presence, the flush waits up to [`PRESENCE_DELAY`] for more.
    async fn deliver(&mut self, first: Event, events: &mut Receiver<Event>) -> Result<(), End> {
        let mut pending = 0;
        let mut urgent = false;
        let mut next = Some(first);
        while let Some(event) = next.take() {
            match self.wants(&event) {
                Ok(true) => {
                    urgent |= !matches!(event.kind, EventKind::Presence { .. });
                    self.feed(event.frame).await?;
                    pending += 1;
                }
                Ok(false) => {}
                Err(end) => {
                    self.feed(event.frame).await?;
                    self.flush().await?;
                    return Err(end);
                }
            }
            if pending >= MAX_BATCH {
                break;
            }
            next = match events.try_recv() {
                Ok(event) => Some(event),
                Err(TryRecvError::Lagged(_)) => {
                    self.flush().await?;
                    return Box::pin(self.resync()).await;
                }
                Err(_) => None,
            };
        }
        if urgent {
            self.flush().await
        } else {
            if pending > 0 && self.flush_due.is_none() {
                self.flush_due = Some(Box::pin(sleep(PRESENCE_DELAY)));
            }
            Ok(())
        }
    }

    async fn feed(&mut self, frame: Frame) -> Result<(), End> {
        match timeout(
            self.timeouts.write,
            self.socket.feed(WsMessage::Text(frame)),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Gone),
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        self.flush_due = None;
        match timeout(self.timeouts.write, self.socket.flush()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Gone),
        }
    }

    /// Writes `message` and everything buffered before it.
    async fn write(&mut self, message: WsMessage) -> Result<(), End> {
        self.flush_due = None;
        match timeout(self.timeouts.write, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Gone),
        }
    }

    async fn on_frame(&mut self, frame: WsMessage) -> Result<(), End> {
        match frame {
            WsMessage::Text(text) => self.on_text(text.as_str()).await,
            WsMessage::Binary(_) => {
                self.reply(error_frame(
                    ErrorCode::UnsupportedFrame,
                    "binary frames are not supported; send JSON text frames",
                ))
                .await
            }
            WsMessage::Close(_) => Err(End::Gone),
            // Pings are answered by the protocol layer; pongs only prove liveness.
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => Ok(()),
        }
    }

    /// The room a frame acts on: the socket's own, or the frame's `room_id` on `/ws/`.
    async fn target_room(&mut self, room_id: Option<String>) -> Result<RoomRef, ApiError> {
        match (&self.scope, room_id) {
            (Scope::Room(room), _) => Ok(room.clone()),
            (Scope::User, Some(room_id)) => room_for_member(&self.state, room_id, &self.user).await,
            (Scope::User, None) => Err(ApiError::validation("room_id", "is required on /ws/")),
        }
    }

    /// Writes a reply to a frame now, or, if sends from earlier frames are still in flight,
    /// after them.
    async fn reply(&mut self, message: WsMessage) -> Result<(), End> {
        if self.owed.is_empty() {
            self.write(message).await
        } else {
            self.owed.push_back(Owed::Reply(message));
            Ok(())
        }
    }

    /// Waits for every send in flight and answers what is owed, so a frame with other effects
    /// acts after the messages sent before it, as if they had been sent one at a time.
    async fn settle_all(&mut self) -> Result<(), End> {
        let room_socket = matches!(self.scope, Scope::Room(_));
        while !self.owed.is_empty() {
            if let Some(reply) = oldest_settled(&mut self.owed, room_socket).await? {
                self.write(reply).await?;
            }
        }
        Ok(())
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        // A well-formed frame, the usual case, is parsed once; anything else is parsed again
        // step by step to say what is wrong with it.
        let frame = match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => frame,
            Err(_) => match diagnose(text) {
                Ok(frame) => frame,
                Err(error) => return self.reply(error).await,
            },
        };
        let result = match frame {
            ClientFrame::Message {
                content,
                client_id,
                room_id,
            } => match self.target_room(room_id).await {
                // Validated, rate-limited and queued now, in frame order; the outcome is
                // answered when the commit is done, in frame order too.
                Ok(room) => match submit(&self.state, &self.user, room, &content, client_id) {
                    Ok(sending) => {
                        self.owed.push_back(Owed::Send(sending));
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            ClientFrame::Read { message_id } => {
                self.settle_all().await?;
                let found = if message_id > 0 {
                    mark_read(&self.state, &self.user, MessageId(message_id)).await
                } else {
                    Ok(None)
                };
                match found {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err(ApiError::NotFound),
                    Err(e) => Err(e),
                }
            }
            ClientFrame::Typing { typing, room_id } => {
                self.settle_all().await?;
                match self.target_room(room_id).await {
                    Ok(room) => {
                        self.typing(&room, typing);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            ClientFrame::Ping => return self.reply(WsMessage::text(r#"{"type":"pong"}"#)).await,
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => self.reply(api_error_frame(&e)).await,
        }
    }

    /// Tells the other members; extra events over the rate are dropped.
    fn typing(&self, room: &RoomRef, typing: bool) {
        let key = (self.user.id, room.id);
        if self.state.limits.typing.take(&key).is_err() {
            return;
        }
        let event = Event::new(
            room.id,
            EventKind::Typing { from: self.user.id },
            &json!({
                "type": "typing",
                "room_id": room.public_id,
                "user": self.user,
                "typing": typing,
            }),
        );
        self.state.hub.publish(room.id, event);
    }
}

/// Why `text` is not a valid frame, as the error frame for it; or the frame, for input that
/// the direct parse refused but the step-by-step one accepts (a repeated key: the last wins).
fn diagnose(text: &str) -> Result<ClientFrame, WsMessage> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| error_frame(ErrorCode::InvalidJson, &e.to_string()))?;
    let action = value.get("action").and_then(Value::as_str);
    if !action.is_some_and(|a| ACTIONS.contains(&a)) {
        return Err(error_frame(
            ErrorCode::UnknownAction,
            "action must be one of: message, read, typing, ping",
        ));
    }
    serde_json::from_value(value).map_err(|e| error_frame(ErrorCode::InvalidFrame, &e.to_string()))
}

/// The `error` frame for `e`, counted and (if internal) logged like an HTTP error reply.
fn api_error_frame(e: &ApiError) -> WsMessage {
    e.record();
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

/// `{"type":"presence"}`: a user's first socket to a room opened, or their last one closed.
pub fn presence_event(room: RoomId, public_id: &str, user: &User, online: bool) -> Event {
    Event::new(
        room,
        EventKind::Presence { user: user.id },
        &json!({
            "type": "presence",
            "room_id": public_id,
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
    fn frames_parse_the_same_whichever_way_they_are_parsed() {
        let message = r#"{"action":"message","content":"hi","client_id":"c","sender_id":9}"#;
        assert!(matches!(
            serde_json::from_str::<ClientFrame>(message),
            Ok(ClientFrame::Message { content, client_id: Some(c), room_id: None })
                if content == "hi" && c == "c"
        ));
        // The direct parse refuses a repeated key; the step-by-step one takes the last.
        let repeated = r#"{"action":"message","content":"a","content":"b"}"#;
        assert!(serde_json::from_str::<ClientFrame>(repeated).is_err());
        assert!(matches!(
            diagnose(repeated),
            Ok(ClientFrame::Message { content, .. }) if content == "b"
        ));
        let code = |text: &str| match diagnose(text) {
            Err(WsMessage::Text(t)) => serde_json::from_str::<Value>(t.as_str()).unwrap()["code"]
                .as_str()
                .unwrap()
                .to_string(),
            _ => panic!("{text} is not an error"),
        };
        assert_eq!(code("{"), "invalid_json");
        assert_eq!(code(r#"{"action":"shout"}"#), "unknown_action");
        assert_eq!(
            code(r#"{"action":"read","message_id":"x"}"#),
            "invalid_frame"
        );
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
