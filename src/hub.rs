//! Publish/subscribe: a per-room registry of tokio broadcast channels, per-user channels for
//! the all-rooms socket, and who is online where.
//!
//! Events are serialized once by the publisher and shared, as the same bytes, by every
//! subscriber. A user with an all-rooms socket is registered in each of their rooms; an event
//! published to a room goes to the room's channel and to the channel of every registered
//! user, so that socket sees all its rooms in publication order. Nothing outside this module
//! knows how delivery works, so a multi-node backend (NATS, Redis) can replace it without
//! touching the features.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::frames::ServerFrame;
use crate::model::{MessageId, RoomId, User, UserId};

/// One serialized JSON frame, cheap to clone.
pub type Frame = Utf8Bytes;

/// What an event is, for subscribers that filter or track ids without parsing the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Message(MessageId),
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
}

#[derive(Debug, Clone)]
pub struct Event {
    pub room: RoomId,
    pub kind: EventKind,
    pub frame: Frame,
}

impl Event {
    pub fn new(room: RoomId, kind: EventKind, frame: &ServerFrame<'_>) -> Event {
        let json = frame.to_json();
        Event {
            room,
            kind,
            frame: Frame::from(json),
        }
    }
}

struct RoomEntry {
    tx: broadcast::Sender<Event>,
    /// Per user: open room sockets, plus one if the user's all-rooms socket is registered.
    online: HashMap<UserId, u32>,
    /// Users whose all-rooms channel receives this room's events.
    user_subs: HashSet<UserId>,
}

struct UserEntry {
    tx: broadcast::Sender<Event>,
    sockets: u32,
    rooms: HashSet<RoomId>,
}

#[derive(Default)]
struct Registry {
    rooms: HashMap<RoomId, RoomEntry>,
    users: HashMap<UserId, UserEntry>,
    /// How many messages and member removals were published, anywhere.
    changes: u64,
}

/// Cheap handle to the process-wide registry; clone freely.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Mutex<Registry>>,
    capacity: usize,
}

/// A room socket's subscription, returned by [`Hub::join_room`].
pub struct Joined {
    pub events: broadcast::Receiver<Event>,
    /// True if the user just came online in the room.
    pub first: bool,
    /// [`Hub::changes`] at the moment of subscribing.
    pub changes: u64,
    /// Users online in the room, this one included.
    pub online: Vec<UserId>,
}

/// An all-rooms socket's subscription, returned by [`Hub::join_user`].
pub struct UserJoined {
    pub events: broadcast::Receiver<Event>,
    /// Rooms in which the user just came online.
    pub came_online: Vec<RoomId>,
}

impl Registry {
    fn room(&mut self, room: RoomId, capacity: usize) -> &mut RoomEntry {
        self.rooms.entry(room).or_insert_with(|| RoomEntry {
            tx: broadcast::channel(capacity).0,
            online: HashMap::new(),
            user_subs: HashSet::new(),
        })
    }

    /// Counts one more presence of `user` in `room`; true if it is the first.
    fn online_up(&mut self, room: RoomId, user: UserId, capacity: usize) -> bool {
        let count = self.room(room, capacity).online.entry(user).or_insert(0);
        *count += 1;
        *count == 1
    }

    /// Counts one presence less; true if it was the last. Forgets rooms nobody watches.
    fn online_down(&mut self, room: RoomId, user: UserId) -> bool {
        let Some(entry) = self.rooms.get_mut(&room) else {
            return false;
        };
        let last = match entry.online.get_mut(&user) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                entry.online.remove(&user);
                true
            }
            None => false,
        };
        if entry.online.is_empty() && entry.user_subs.is_empty() {
            self.rooms.remove(&room);
        }
        last
    }

    /// Routes `room`'s events to `user`'s channel; true if the user came online there.
    fn register(&mut self, room: RoomId, user: UserId, capacity: usize) -> bool {
        let Some(u) = self.users.get_mut(&user) else {
            return false;
        };
        if !u.rooms.insert(room) {
            return false;
        }
        self.room(room, capacity).user_subs.insert(user);
        self.online_up(room, user, capacity)
    }

    /// Stops routing `room`'s events to `user`; true if the user went offline there.
    fn unregister(&mut self, room: RoomId, user: UserId) -> bool {
        let registered = self
            .users
            .get_mut(&user)
            .is_some_and(|u| u.rooms.remove(&room));
        if !registered {
            return false;
        }
        if let Some(entry) = self.rooms.get_mut(&room) {
            entry.user_subs.remove(&user);
        }
        self.online_down(room, user)
    }
}

impl Hub {
    /// `capacity` is how many events a subscriber may fall behind before it lags.
    pub fn new(capacity: usize) -> Hub {
        Hub {
            inner: Arc::default(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Every update leaves the registry consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers `event` to every current subscriber of `room`, room sockets and all-rooms
    /// sockets alike.
    pub fn publish(&self, room: RoomId, event: Event) {
        let mut registry = self.lock();
        if matches!(
            event.kind,
            EventKind::Message(_) | EventKind::Member { added: false, .. }
        ) {
            registry.changes += 1;
        }
        if let Some(entry) = registry.rooms.get(&room) {
            let mut delivered = 0;
            for user in &entry.user_subs {
                if let Some(u) = registry.users.get(user) {
                    delivered += u.tx.send(event.clone()).unwrap_or(0);
                }
            }
            delivered += entry.tx.send(event).unwrap_or(0);
            crate::metrics::METRICS.deliveries.add(delivered as u64);
        }
    }

    /// Delivers `event` to `user`'s all-rooms sockets only.
    pub fn notify_user(&self, user: UserId, event: Event) {
        if let Some(u) = self.lock().users.get(&user) {
            let _ = u.tx.send(event);
        }
    }

    /// Subscribes a room socket of `user` to `room`.
    pub fn join_room(&self, room: RoomId, user: UserId) -> Joined {
        let mut registry = self.lock();
        let first = registry.online_up(room, user, self.capacity);
        let entry = registry.room(room, self.capacity);
        let events = entry.tx.subscribe();
        let online = entry.online.keys().copied().collect();
        Joined {
            events,
            first,
            online,
            changes: registry.changes,
        }
    }

    /// How many messages and member removals have been published so far. A reader that
    /// notes this before reading the database and finds it unchanged when it subscribes
    /// knows that its read is still current: nothing it could have missed went out between.
    pub fn changes(&self) -> u64 {
        self.lock().changes
    }

    /// Ends a room socket; true if the user went offline in the room.
    pub fn leave_room(&self, room: RoomId, user: UserId) -> bool {
        self.lock().online_down(room, user)
    }

    /// Subscribes an all-rooms socket of `user`, registering the user in `rooms`.
    pub fn join_user(&self, user: UserId, rooms: &[RoomId]) -> UserJoined {
        let mut registry = self.lock();
        let entry = registry.users.entry(user).or_insert_with(|| UserEntry {
            tx: broadcast::channel(self.capacity).0,
            sockets: 0,
            rooms: HashSet::new(),
        });
        entry.sockets += 1;
        let events = entry.tx.subscribe();
        let came_online = rooms
            .iter()
            .copied()
            .filter(|room| registry.register(*room, user, self.capacity))
            .collect();
        UserJoined {
            events,
            came_online,
        }
    }

    /// Ends an all-rooms socket; returns the rooms in which the user went offline.
    pub fn leave_user(&self, user: UserId) -> Vec<RoomId> {
        let mut registry = self.lock();
        let Some(entry) = registry.users.get_mut(&user) else {
            return Vec::new();
        };
        entry.sockets -= 1;
        if entry.sockets > 0 {
            return Vec::new();
        }
        let rooms: Vec<RoomId> = entry.rooms.iter().copied().collect();
        let offline = rooms
            .into_iter()
            .filter(|room| registry.unregister(*room, user))
            .collect();
        registry.users.remove(&user);
        offline
    }

    /// The rooms `user`'s all-rooms sockets currently follow.
    pub fn user_rooms(&self, user: UserId) -> Vec<RoomId> {
        self.lock()
            .users
            .get(&user)
            .map(|u| u.rooms.iter().copied().collect())
            .unwrap_or_default()
    }

    /// `user` joined `room`: their all-rooms sockets follow it from now on. True if the user
    /// came online in the room.
    pub fn add_member(&self, room: RoomId, user: UserId) -> bool {
        self.lock().register(room, user, self.capacity)
    }

    /// `user` left `room`: their all-rooms sockets stop following it. True if the user went
    /// offline in the room.
    pub fn remove_member(&self, room: RoomId, user: UserId) -> bool {
        self.lock().unregister(room, user)
    }

    /// Users online in `room`.
    pub fn online(&self, room: RoomId) -> Vec<UserId> {
        self.lock()
            .rooms
            .get(&room)
            .map(|r| r.online.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Rooms with at least one subscriber.
    pub fn active_rooms(&self) -> usize {
        self.lock().rooms.len()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An event whose frame says `n`.
    fn event(room: RoomId, n: i64) -> Event {
        Event::new(
            room,
            EventKind::Presence { user: UserId(0) },
            &ServerFrame::Read {
                room_id: "r",
                user_id: UserId(0),
                message_id: MessageId(n),
            },
        )
    }

    fn says(n: i64) -> String {
        format!(r#"{{"type":"read","room_id":"r","user_id":0,"message_id":{n}}}"#)
    }

    #[tokio::test]
    async fn subscribers_share_one_frame_and_presence_counts_connections() {
        let hub = Hub::new(16);
        let (room, alice, bob) = (RoomId(1), UserId(1), UserId(2));
        let mut a1 = hub.join_room(room, alice);
        assert!(a1.first);
        let a2 = hub.join_room(room, alice);
        assert!(!a2.first);
        let mut b = hub.join_room(room, bob);
        assert_eq!(b.online.len(), 2);

        hub.publish(room, event(room, 1));
        let ea = a1.events.recv().await.unwrap();
        let eb = b.events.recv().await.unwrap();
        assert_eq!(ea.frame.as_str(), says(1));
        // the same bytes, not a copy
        assert_eq!(ea.frame.as_str().as_ptr(), eb.frame.as_str().as_ptr());

        assert!(!hub.leave_room(room, alice));
        assert!(hub.leave_room(room, alice));
        assert!(hub.leave_room(room, bob));
        assert_eq!(hub.active_rooms(), 0);
    }

    #[test]
    fn changes_count_messages_and_removals_published_anywhere() {
        let hub = Hub::new(16);
        let (room, other) = (RoomId(1), RoomId(2));
        let before = hub.changes();
        let kinds = [
            EventKind::Presence { user: UserId(1) },
            EventKind::Typing { from: UserId(1) },
            EventKind::Read,
            EventKind::Member {
                user: UserId(1),
                added: true,
            },
        ];
        for kind in kinds {
            hub.publish(other, Event::new(other, kind, &ServerFrame::Pong));
        }
        assert_eq!(
            hub.changes(),
            before,
            "nothing a reader could miss went out"
        );
        // Even in a room nobody is subscribed to.
        hub.publish(
            other,
            Event::new(other, EventKind::Message(MessageId(7)), &ServerFrame::Pong),
        );
        let removal = EventKind::Member {
            user: UserId(1),
            added: false,
        };
        hub.publish(other, Event::new(other, removal, &ServerFrame::Pong));
        assert_eq!(hub.changes(), before + 2);
        assert_eq!(hub.join_room(room, UserId(1)).changes, before + 2);
    }

    #[tokio::test]
    async fn user_channels_follow_membership_in_publication_order() {
        let hub = Hub::new(16);
        let (r1, r2, r3, alice) = (RoomId(1), RoomId(2), RoomId(3), UserId(1));
        let mut joined = hub.join_user(alice, &[r1, r2]);
        assert_eq!(joined.came_online.len(), 2);
        hub.publish(r2, event(r2, 1));
        hub.publish(r1, event(r1, 2));
        hub.publish(r3, event(r3, 3)); // not a member: not delivered
        assert!(hub.add_member(r3, alice));
        hub.publish(r3, event(r3, 4));
        assert!(hub.remove_member(r1, alice));
        hub.publish(r1, event(r1, 5)); // removed: not delivered
        let got: Vec<String> = (0..3)
            .map(|_| joined.events.try_recv().unwrap().frame.as_str().to_string())
            .collect();
        assert_eq!(got, [says(1), says(2), says(4)]);
        assert!(joined.events.try_recv().is_err());

        // a room socket and the all-rooms socket count as one user online
        let room_socket = hub.join_room(r2, alice);
        assert!(!room_socket.first);
        let mut offline = hub.leave_user(alice);
        offline.sort();
        assert_eq!(offline, [r3]);
        assert!(hub.leave_room(r2, alice));
        assert_eq!(hub.active_rooms(), 0);
    }
}
