//! Publish/subscribe: how committed changes and live signals (typing, presence) reach the
//! sockets that follow a room, and who is online where.
//!
//! [`Hub`] is the interface the features and the sockets use; [`LocalHub`] is the in-process
//! implementation (tokio broadcast channels, one per room and one per user with an all-rooms
//! socket). The interface promises no more than a multi-node backend can keep:
//!
//! - [`Hub::publish`] hands an event over and returns at once; delivery may happen later, on
//!   this node or on others. Events published to one room arrive in the order they were
//!   published. Callers never assume a subscriber has an event when `publish` returns.
//! - Subscribing and unsubscribing are asynchronous (a backend may have to tell a broker).
//! - A subscription can fall behind ([`Missed::Lagged`]); the socket then catches up from the
//!   database, which is the only source of truth.
//! - [`Hub::mark`] lets a reader trust a database read taken before it subscribed only where
//!   the backend can tell that nothing was published in between; a backend that cannot returns
//!   `None` and the reader reads again after subscribing.
//!
//! Events are serialized once by the publisher and shared, as the same bytes, by every
//! subscriber.

mod local;
mod presence;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

pub use crate::frames::Frame;
use crate::frames::ServerFrame;
use crate::model::{Message, RoomId, Seq, User, UserId};
pub use local::LocalHub;
pub use presence::PresenceDamper;

/// A hub operation's future.
pub type HubFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an event is, for subscribers that filter or track ids without parsing the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A stored change (a new message, an edit, a deletion) at this position.
    Change(Seq),
    Read,
    Typing {
        from: UserId,
    },
    Presence {
        user: UserId,
    },
    /// `user` was added to or removed from the room.
    Member {
        user: UserId,
        added: bool,
    },
    /// The receiving user was added to a room (user channels only).
    Room,
    /// A group was renamed or got an admin.
    RoomUpdated,
}

impl EventKind {
    /// Whether a reader of the database could miss this change between its read and its
    /// subscription: stored changes and removals.
    pub fn is_change(self) -> bool {
        matches!(
            self,
            EventKind::Change(_) | EventKind::Member { added: false, .. }
        )
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub room: RoomId,
    pub kind: EventKind,
    pub frame: Frame,
    /// A message whose reactions say `me` differently to each recipient: each socket writes
    /// its own `message_updated` from it instead of `frame` (which says `me: false`).
    pub personal: Option<Arc<Message>>,
    /// The frame for the sockets of the message's sender, with its `client_id`, which `frame`
    /// (for everyone else) leaves out.
    pub own: Option<(UserId, Frame)>,
}

impl Event {
    pub fn new(room: RoomId, kind: EventKind, frame: &ServerFrame<'_>) -> Event {
        Event {
            room,
            kind,
            frame: Frame::from(frame),
            personal: None,
            own: None,
        }
    }

    /// The frame this event is for `user`.
    pub fn frame_for(&self, user: UserId) -> Frame {
        match &self.personal {
            None => match &self.own {
                Some((sender, own)) if *sender == user => own.clone(),
                _ => self.frame.clone(),
            },
            Some(message) => {
                let mut message = Message::clone(message);
                message.seen_by(Some(user));
                Frame::from(&ServerFrame::MessageUpdated {
                    seq: message.seq,
                    message: &message,
                })
            }
        }
    }
}

/// Why a subscription yielded no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// The subscriber fell behind and events were dropped for it.
    Lagged,
    /// The hub is gone (the server is stopping).
    Closed,
}

/// A socket's stream of events.
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
}

impl Subscription {
    pub(crate) fn new(rx: broadcast::Receiver<Event>) -> Subscription {
        Subscription { rx }
    }

    /// The next event.
    pub async fn recv(&mut self) -> Result<Event, Missed> {
        self.rx.recv().await.map_err(|e| match e {
            RecvError::Lagged(_) => Missed::Lagged,
            RecvError::Closed => Missed::Closed,
        })
    }

    /// The next event if one is already waiting.
    pub fn try_recv(&mut self) -> Option<Result<Event, Missed>> {
        match self.rx.try_recv() {
            Ok(event) => Some(Ok(event)),
            Err(TryRecvError::Lagged(_)) => Some(Err(Missed::Lagged)),
            Err(TryRecvError::Closed) => Some(Err(Missed::Closed)),
            Err(TryRecvError::Empty) => None,
        }
    }
}

/// A room socket's subscription, returned by [`Hub::join_room`].
pub struct Joined {
    pub events: Subscription,
    /// True if the user just came online in the room.
    pub first: bool,
    /// [`Hub::mark`] at the moment of subscribing.
    pub mark: Option<u64>,
}

/// Delivery of events to the sockets that follow rooms; see the module documentation for what
/// an implementation promises.
pub trait Hub: Send + Sync {
    /// Hands `event` over for every subscriber of `room`: its room sockets and the all-rooms
    /// sockets of the users who follow it.
    fn publish(&self, room: RoomId, event: Event);

    /// Hands `event` over for `user`'s all-rooms sockets only.
    fn notify_user(&self, user: UserId, event: Event);

    /// Subscribes a room socket of `user` to `room`.
    fn join_room(&self, room: RoomId, user: UserId) -> HubFut<'_, Joined>;

    /// Ends a room socket; true if the user went offline in the room.
    fn leave_room(&self, room: RoomId, user: UserId) -> HubFut<'_, bool>;

    /// Subscribes an all-rooms socket of `user`; it follows no room until [`Hub::follow`].
    fn join_user(&self, user: UserId) -> HubFut<'_, Subscription>;

    /// Ends an all-rooms socket; returns the rooms in which the user went offline.
    fn leave_user(&self, user: UserId) -> HubFut<'_, Vec<RoomId>>;

    /// `user`'s all-rooms sockets follow `room` from now on (they joined it, or the socket just
    /// opened). True if the user came online in the room. Called from commit hooks, so it
    /// must not block.
    fn follow(&self, room: RoomId, user: UserId) -> bool;

    /// `user`'s all-rooms sockets stop following `room`. True if the user went offline in it.
    fn unfollow(&self, room: RoomId, user: UserId) -> bool;

    /// Users online in `room`, as this node knows them.
    fn online(&self, room: RoomId) -> Vec<UserId>;

    /// A count of the changes ([`EventKind::is_change`]) published so far, if this backend
    /// can tell. A reader that notes it before reading the database and finds it unchanged
    /// when it subscribes knows that its read is still current.
    fn mark(&self) -> Option<u64>;

    /// Rooms with at least one subscriber on this node.
    fn active_rooms(&self) -> usize;
}

/// `{"type":"presence"}`: a user's first socket to a room opened, or their last one closed.
pub fn presence_event(room: RoomId, public_id: &str, user: &User, online: bool) -> Event {
    Event::new(
        room,
        EventKind::Presence { user: user.id },
        &ServerFrame::Presence {
            room_id: public_id,
            user,
            online,
        },
    )
}
