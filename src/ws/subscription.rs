//! What a socket follows: subscribing (and the presence it announces), the `hello`, the replay
//! of what a resuming client missed, and the delivery of live events through de-duplication.

use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::dedup::Verdict;
use super::protocol::Close;
use super::session::{End, Resume, Session};
use super::upgrade::Prefetched;
use crate::chat::room_for_member;
use crate::error::ApiError;
use crate::frames::{HelloRoom, ServerFrame};
use crate::hub::{Event, EventKind, Frame, Missed, Subscription, presence_event};
use crate::metrics::{Bound, METRICS};
use crate::model::{MessageId, RoomId, Seq, User, UserId};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::api::{Head, ReplayPage};
use crate::store::replay::Replayed;
use crate::store::rooms::RoomRef;

/// Most frames written per flush.
pub(crate) const MAX_BATCH: usize = 64;
/// Messages per replay query.
pub(crate) const REPLAY_PAGE: u32 = 200;
/// Most messages a lagging connection is resynced with before it is told to reconnect.
pub(crate) const MAX_RESYNC: usize = 5_000;

/// Which events a socket follows.
pub(crate) enum Scope {
    /// One room: `/ws/chat/<room_id>/`.
    Room(RoomRef),
    /// Every room of the user: `/ws/`.
    User,
}

/// A socket's user and scope, and the hub and store calls that depend on them.
pub(crate) struct Following {
    pub(crate) state: AppState,
    pub(crate) user: User,
    pub(crate) scope: Scope,
}

/// A database failure ends the socket; it is logged like a failed REST request.
fn internal(e: StoreError) -> End {
    ApiError::from(e).record();
    End::Close(Close::INTERNAL)
}

impl Following {
    /// The room a frame acts on: the socket's own, or the frame's `room_id` on `/ws/`.
    pub(crate) async fn target_room(&self, room_id: Option<String>) -> Result<RoomRef, ApiError> {
        match (&self.scope, room_id) {
            (Scope::Room(room), _) => Ok(room.clone()),
            (Scope::User, Some(room_id)) => room_for_member(&self.state, room_id, &self.user).await,
            (Scope::User, None) => Err(ApiError::validation("room_id", "is required on /ws/")),
        }
    }

    /// Announces the user online in `room`, unless their offline there is still waiting out
    /// its grace period (then it is cancelled, and nobody saw them leave).
    fn arrived(&self, room: RoomId, public_id: &str) {
        if self.state.presence.arrived(room, self.user.id) {
            self.state
                .hub
                .publish(room, presence_event(room, public_id, &self.user, true));
        }
    }

    /// Announces the user offline in `rooms` once the grace period is over, in those they
    /// have not come back to by then.
    fn left(&self, rooms: Vec<RoomRef>) {
        let ids = rooms.iter().map(|r| r.id).collect();
        let state = self.state.clone();
        let user = self.user.clone();
        self.state.presence.left(self.user.id, ids, move |due| {
            for room in rooms.iter().filter(|r| due.contains(&r.id)) {
                // A socket that came back while this departure was being recorded.
                if state.hub.online(room.id).contains(&user.id) {
                    continue;
                }
                state.hub.publish(
                    room.id,
                    presence_event(room.id, &room.public_id, &user, false),
                );
            }
        });
    }

    /// Subscribes to the socket's events. Also returns the handshake's read of where the room
    /// stands if it is still current: nothing a reader could miss was published
    /// between that read and the subscription.
    pub(crate) async fn subscribe(
        &self,
        prefetched: Option<Prefetched>,
    ) -> Result<(Subscription, Option<Head>), End> {
        let hub = &self.state.hub;
        match &self.scope {
            Scope::Room(room) => {
                let joined = hub.join_room(room.id, self.user.id).await;
                if joined.first {
                    self.arrived(room.id, &room.public_id);
                }
                let current = prefetched
                    .filter(|p| p.mark.is_some() && p.mark == joined.mark)
                    .map(|p| p.last);
                Ok((joined.events, current))
            }
            Scope::User => {
                let events = hub.join_user(self.user.id).await;
                let rooms = self.my_rooms().await?;
                for room in &rooms {
                    if hub.follow(room.id, self.user.id) {
                        self.arrived(room.id, &room.public_id);
                    }
                }
                // A removal that committed while the rooms were read has already run its
                // hook; forget any room it took away.
                let current = self.my_rooms().await?;
                let gone: Vec<RoomRef> = rooms
                    .into_iter()
                    .filter(|r| !current.iter().any(|c| c.id == r.id))
                    .filter(|r| hub.unfollow(r.id, self.user.id))
                    .collect();
                self.left(gone);
                Ok((events, None))
            }
        }
    }

    pub(crate) async fn unsubscribe(&self) {
        let hub = &self.state.hub;
        match &self.scope {
            Scope::Room(room) => {
                if hub.leave_room(room.id, self.user.id).await {
                    self.left(vec![room.clone()]);
                }
            }
            Scope::User => {
                let offline = hub.leave_user(self.user.id).await;
                if offline.is_empty() {
                    return;
                }
                if let Ok(rooms) = self.my_rooms().await {
                    self.left(
                        rooms
                            .into_iter()
                            .filter(|r| offline.contains(&r.id))
                            .collect(),
                    );
                }
            }
        }
    }

    /// Who is online in `room`: subscribed, or gone so briefly that nobody was told.
    fn online(&self, room: RoomId) -> Vec<UserId> {
        let mut online = self.state.hub.online(room);
        for user in self.state.presence.lingering(room) {
            if !online.contains(&user) {
                online.push(user);
            }
        }
        online
    }

    async fn my_rooms(&self) -> Result<Vec<RoomRef>, End> {
        self.state
            .store
            .room_refs_of(self.user.id)
            .await
            .map_err(internal)
    }

    /// The `hello` frame and the newest change it reports. `current`: where the room stands,
    /// if the handshake's read of it is still current.
    async fn hello(&self, current: Option<Head>) -> Result<(String, Seq), End> {
        let user = self.user.id;
        match &self.scope {
            Scope::Room(room) => {
                let head = match current {
                    Some(head) => head,
                    None => self
                        .state
                        .store
                        .head_if_member(room.id, user)
                        .await
                        .map_err(internal)?
                        // Removed between the handshake and the subscription.
                        .ok_or(End::Close(Close::REMOVED))?,
                };
                let hello = ServerFrame::RoomHello {
                    room_id: &room.public_id,
                    user: &self.user,
                    last_message_id: head.id,
                    last_seq: head.seq,
                    online: &self.online(room.id),
                };
                Ok((hello.to_json(), head.seq))
            }
            Scope::User => {
                let rooms = self
                    .state
                    .store
                    .room_heads_of(user)
                    .await
                    .map_err(internal)?;
                let last_id = rooms.iter().map(|(h, _)| h.id).max();
                let last_seq = rooms.iter().map(|(h, _)| h.seq).max().unwrap_or(Seq(0));
                let rooms: Vec<HelloRoom<'_>> = rooms
                    .iter()
                    .map(|(head, r)| HelloRoom {
                        room_id: &r.public_id,
                        last_message_id: head.id,
                        last_seq: head.seq,
                        online: self.online(r.id),
                    })
                    .collect();
                let hello = ServerFrame::UserHello {
                    user: &self.user,
                    last_message_id: last_id.unwrap_or(MessageId(0)),
                    last_seq,
                    rooms: &rooms,
                };
                Ok((hello.to_json(), last_seq))
            }
        }
    }

    /// Up to a page of stored messages after `after`. Membership is read in the same snapshot
    /// as the page: a room socket whose user was removed gets nothing committed after the
    /// removal, however far behind it was (the removal's own event may have been among the
    /// events it lagged past).
    async fn replay_page(&self, after: Seq, limit: u32) -> Result<ReplayPage, End> {
        let room = match &self.scope {
            Scope::Room(room) => Some(room.clone()),
            Scope::User => None,
        };
        self.state
            .store
            .replay_page(room, self.user.id, after, limit)
            .await
            .map_err(internal)?
            .ok_or(End::Close(Close::REMOVED))
    }
}

impl Session {
    /// Sends `hello`, then replays what the client missed if it asked to resume, up to
    /// `limits.max_replay_messages`.
    pub(super) async fn start(
        &mut self,
        resume: Option<Resume>,
        current: Option<Head>,
    ) -> Result<(), End> {
        let (hello, last) = self.follow.hello(current).await?;
        if resume.is_none() {
            self.dedup.sent(last);
        }
        self.out.write(WsMessage::text(hello)).await?;
        if resume.is_some() {
            let max = self.follow.state.config.limits.max_replay_messages as usize;
            let replayed = self.replay(max, Close::REPLAY_LIMIT).await;
            if matches!(replayed, Err(End::Close(Close::REPLAY_LIMIT))) {
                METRICS.refused(Bound::ReplayLength);
            }
            replayed?;
        }
        drop(resume);
        Ok(())
    }

    /// Catches a socket that fell behind its event queue up from the database, if the
    /// replay caps leave room; else it is told to reconnect with `since`.
    pub(super) async fn resync(&mut self) -> Result<(), End> {
        METRICS.websocket_resyncs.inc();
        let state = &self.follow.state;
        let Ok(_permit) = state
            .replays
            .start(self.follow.user.id, &state.config.limits)
        else {
            return Err(End::Close(Close::RESYNC));
        };
        self.replay(MAX_RESYNC, Close::RESYNC).await
    }

    /// Sends every change after the delivery mark, in position order, up to `max` of them;
    /// past that the socket is closed with `past_max`, for the client to reconnect with
    /// `since`. A message's creation comes as `message`, a later change as `message_updated`,
    /// each showing the message as it is now; after each, the client has seen everything up to
    /// its `seq`. Memory stays at one page however long the replay.
    async fn replay(&mut self, max: usize, past_max: Close) -> Result<(), End> {
        let mut sent = 0;
        loop {
            let page = REPLAY_PAGE.min(u32::try_from(max - sent).unwrap_or(u32::MAX));
            let ReplayPage { changes, more } = self
                .follow
                .replay_page(self.dedup.last_sent(), page)
                .await?;
            let count = changes.len();
            for Replayed {
                seq,
                created,
                mut message,
            } in changes
            {
                // Rendered for this socket's user (`me` of reactions), once.
                message.seen_by(Some(self.follow.user.id));
                let frame = if created {
                    ServerFrame::Message {
                        seq,
                        message: &message,
                    }
                } else {
                    ServerFrame::MessageUpdated {
                        seq,
                        message: &message,
                    }
                };
                self.out.feed(Frame::from(&frame)).await?;
                self.dedup.sent(seq);
            }
            self.out.flush().await?;
            sent += count;
            if !more {
                return Ok(());
            }
            if sent >= max {
                return Err(End::Close(past_max));
            }
        }
    }

    /// Writes `first` and whatever else is already queued, then flushes once; if all of it is
    /// presence, the flush waits a little for more.
    pub(super) async fn deliver(
        &mut self,
        first: Event,
        events: &mut Subscription,
    ) -> Result<(), End> {
        let mut pending = 0;
        let mut urgent = false;
        let mut next = Some(first);
        while let Some(event) = next.take() {
            match self.dedup.judge(&event.kind) {
                Verdict::Deliver => {
                    urgent |= !matches!(event.kind, EventKind::Presence { .. });
                    self.out.feed(event.frame_for(self.follow.user.id)).await?;
                    pending += 1;
                }
                Verdict::Skip => {}
                Verdict::DeliverThenClose => {
                    self.out.feed(event.frame).await?;
                    self.out.flush().await?;
                    return Err(End::Close(Close::REMOVED));
                }
            }
            if pending >= MAX_BATCH {
                break;
            }
            next = match events.try_recv() {
                Some(Ok(event)) => Some(event),
                Some(Err(Missed::Lagged)) => {
                    self.out.flush().await?;
                    return Box::pin(self.resync()).await;
                }
                Some(Err(Missed::Closed)) | None => None,
            };
        }
        if urgent {
            self.out.flush().await
        } else {
            if pending > 0 {
                self.out.flush_soon();
            }
            Ok(())
        }
    }
}
