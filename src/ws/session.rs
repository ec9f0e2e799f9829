//! One WebSocket connection from handshake to close: subscription, resume, the event loop,
//! de-duplication, batched timed writes and the client's actions.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::{Instant, Sleep, interval_at, sleep, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::chat::{self, Sending, mark_read, message_event, room_for_member, submit};
use crate::connections::ConnectionSlot;
use crate::error::{ApiError, ErrorCode};
use crate::frames::{HelloRoom, ServerFrame};
use crate::hub::{Event, EventKind, Frame};
use crate::model::{MessageId, RoomId, User};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::api::ReplayPage;
use crate::store::rooms::RoomRef;

use super::dedup::{Dedup, Verdict};
use super::protocol::{ClientFrame, Close, api_error_frame, diagnose, error_frame};
use super::upgrade::Prefetched;
use crate::hub::presence_event;

pub(crate) type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Most frames written per flush.
pub(crate) const MAX_BATCH: usize = 64;
/// How long presence frames may wait to be written together with the ones that follow them.
/// When many people join a room at once (everyone opening the app at nine), each member's
/// socket gets one write per window instead of one per arrival; anything else that is written
/// takes the waiting presence frames with it, in order.
pub(crate) const PRESENCE_DELAY: Duration = Duration::from_millis(100);
/// Messages per replay query.
pub(crate) const REPLAY_PAGE: u32 = 200;
/// Most messages a lagging connection is resynced with before it is told to reconnect.
pub(crate) const MAX_RESYNC: usize = 5_000;
/// Most sends a connection keeps waiting for their commit; past that it reads no more frames
/// until the oldest is done.
pub(crate) const MAX_IN_FLIGHT: usize = 32;

/// How long a closing session waits for the peer to answer its close frame.
pub(crate) const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a socket is still owed for the frames it sent, oldest first. Replies go out in the
/// order of the frames that caused them, even when a send is still waiting for its commit.
pub(crate) enum Owed {
    /// A message queued for the database: says nothing if new (the room channel brings the
    /// acknowledgement), returns the original for a repeated `client_id`, or an error.
    Send(Sending),
    /// A reply held back behind earlier sends.
    Reply(WsMessage),
}

/// Resolves when the oldest entry of `owed` is done, and removes it: to the reply it owes the
/// socket, if any. Pending while `owed` is empty. A send refused because the user is no longer
/// a member ends a room socket (`room_socket`) with [`Close::REMOVED`]; on `/ws/` it is a
/// `not_found` error like any room the user cannot see.
pub(crate) async fn oldest_settled(
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
pub(crate) fn removed() -> End {
    End::Close(Close::REMOVED)
}

/// Which events a socket follows.
pub(crate) enum Scope {
    /// One room: `/ws/chat/<room_id>/`.
    Room(RoomRef),
    /// Every room of the user: `/ws/`.
    User,
}

/// Why a session ended.
pub(crate) enum End {
    /// The peer went away or the socket failed: nothing more to say.
    Gone,
    /// Close with this code and reason.
    Close(Close),
}

/// Timeouts from the configuration.
pub(crate) struct Timeouts {
    ping: Duration,
    idle: Duration,
    write: Duration,
}

/// One WebSocket connection.
pub(crate) struct Session {
    state: AppState,
    socket: Socket,
    user: User,
    scope: Scope,
    timeouts: Timeouts,
    /// What this socket was sent, and so what it must not be sent again.
    dedup: Dedup,
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
pub(crate) async fn until(due: &mut Option<Pin<Box<Sleep>>>) {
    match due {
        Some(due) => due.await,
        None => std::future::pending().await,
    }
}

impl Session {
    pub(crate) async fn run(
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
        let room_socket = matches!(scope, Scope::Room(_));
        let dedup = Dedup::new(user.id, room_socket, since.unwrap_or(MessageId(0)));
        let mut session = Session {
            state,
            socket,
            user,
            scope,
            timeouts,
            dedup,
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
        if let End::Close(Close { code, reason }) = end {
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
            .map_err(|_| End::Close(Close::INTERNAL))
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
                        .map_err(|_| End::Close(Close::INTERNAL))?
                        // Removed between the handshake and the subscription.
                        .ok_or_else(removed)?,
                };
                if since.is_none() {
                    self.dedup.sent(last);
                }
                ServerFrame::RoomHello {
                    room_id: &room.public_id,
                    user: &self.user,
                    last_message_id: last,
                    online: &self.state.hub.online(room.id),
                }
                .to_json()
            }
            Scope::User => {
                let hub = self.state.hub.clone();
                let rooms = self
                    .state
                    .store
                    .room_heads_of(user)
                    .await
                    .map_err(|_| End::Close(Close::INTERNAL))?;
                let last = rooms
                    .iter()
                    .map(|(id, _)| *id)
                    .max()
                    .unwrap_or(MessageId(0));
                if since.is_none() {
                    self.dedup.sent(last);
                }
                let rooms: Vec<HelloRoom<'_>> = rooms
                    .iter()
                    .map(|(last, r)| HelloRoom {
                        room_id: &r.public_id,
                        last_message_id: *last,
                        online: hub.online(r.id),
                    })
                    .collect();
                ServerFrame::UserHello {
                    user: &self.user,
                    last_message_id: last,
                    rooms: &rooms,
                }
                .to_json()
            }
        };
        self.write(WsMessage::text(hello)).await?;
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

    /// Sends every stored message after the delivery mark, in order, up to about `max` of them;
    /// past that the client is told to reconnect with `since`.
    async fn replay(&mut self, max: usize) -> Result<(), End> {
        let mut sent = 0;
        loop {
            let after = self.dedup.last_sent();
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
                .map_err(|_| End::Close(Close::INTERNAL))?
                .ok_or_else(removed)?;
            for message in &page {
                let room = RoomId(0); // the frame is all that is written
                self.feed(message_event(room, message).frame).await?;
                self.dedup.sent(message.id);
            }
            self.flush().await?;
            sent += page.len();
            if !more {
                return Ok(());
            }
            if sent >= max {
                return Err(End::Close(Close::RESYNC));
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
                end = &mut stop => Err(End::Close(end.into())),
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
                    Err(RecvError::Closed) => Err(End::Close(Close::SHUTDOWN)),
                },
                () = until(&mut self.flush_due) => self.flush().await,
                () = self.slot.ended() => {
                    Err(End::Close(Close::SESSION_ENDED))
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

    /// Writes `first` and whatever else is already queued, then flushes once; if all of it is
    /// presence, the flush waits up to [`PRESENCE_DELAY`] for more.
    async fn deliver(&mut self, first: Event, events: &mut Receiver<Event>) -> Result<(), End> {
        let mut pending = 0;
        let mut urgent = false;
        let mut next = Some(first);
        while let Some(event) = next.take() {
            match self.dedup.judge(&event.kind) {
                Verdict::Deliver => {
                    urgent |= !matches!(event.kind, EventKind::Presence { .. });
                    self.feed(event.frame).await?;
                    pending += 1;
                }
                Verdict::Skip => {}
                Verdict::DeliverThenClose => {
                    self.feed(event.frame).await?;
                    self.flush().await?;
                    return Err(removed());
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
                        chat::typing(&self.state, &self.user, &room, typing);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            ClientFrame::Ping => {
                return self
                    .reply(WsMessage::text(ServerFrame::Pong.to_json()))
                    .await;
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => self.reply(api_error_frame(&e)).await,
        }
    }
}

pub(crate) fn close_for(e: &tokio_tungstenite::tungstenite::Error) -> End {
    use tokio_tungstenite::tungstenite::Error;
    use tokio_tungstenite::tungstenite::error::CapacityError;
    match e {
        Error::Capacity(CapacityError::MessageTooLong { .. }) => End::Close(Close::TOO_BIG),
        Error::Protocol(_) | Error::Utf8(_) => End::Close(Close::PROTOCOL_ERROR),
        _ => End::Gone,
    }
}
