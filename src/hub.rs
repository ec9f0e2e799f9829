//! Publish/subscribe: a per-room registry of tokio broadcast channels, and who is online where.
//!
//! Events are serialized once by the publisher and shared, as the same bytes, by every
//! subscriber. Nothing outside this module knows how delivery works, so a multi-node backend
//! (NATS, Redis) can replace it without touching the features.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::model::{MessageId, RoomId, UserId};

/// One serialized JSON frame, cheap to clone.
pub type Frame = Utf8Bytes;

/// What an event is, for subscribers that filter or track ids without parsing the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Message(MessageId),
    Read,
    Typing { from: UserId },
    Presence,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub frame: Frame,
}

impl Event {
    pub fn new(kind: EventKind, value: &impl serde::Serialize) -> Event {
        let json = serde_json::to_string(value).expect("events always serialize");
        Event {
            kind,
            frame: Frame::from(json),
        }
    }
}

struct RoomEntry {
    tx: broadcast::Sender<Event>,
    /// Open connections per user in this room.
    online: HashMap<UserId, u32>,
}

/// Cheap handle to the process-wide registry; clone freely.
#[derive(Clone)]
pub struct Hub {
    rooms: Arc<Mutex<HashMap<RoomId, RoomEntry>>>,
    capacity: usize,
}

/// A user's subscription to a room, returned by [`Hub::join`].
pub struct Joined {
    pub events: broadcast::Receiver<Event>,
    /// True if this is the user's first open connection to the room.
    pub first: bool,
    /// Users with an open connection to the room, this one included.
    pub online: Vec<UserId>,
}

impl Hub {
    /// `capacity` is how many events a subscriber may fall behind before it lags.
    pub fn new(capacity: usize) -> Hub {
        Hub {
            rooms: Arc::default(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RoomId, RoomEntry>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers `event` to every current subscriber of `room`.
    pub fn publish(&self, room: RoomId, event: Event) {
        if let Some(entry) = self.lock().get(&room) {
            let _ = entry.tx.send(event);
        }
    }

    /// Subscribes `user` to `room` and counts the connection as online.
    pub fn join(&self, room: RoomId, user: UserId) -> Joined {
        let mut rooms = self.lock();
        let entry = rooms.entry(room).or_insert_with(|| RoomEntry {
            tx: broadcast::channel(self.capacity).0,
            online: HashMap::new(),
        });
        let count = entry.online.entry(user).or_insert(0);
        *count += 1;
        Joined {
            events: entry.tx.subscribe(),
            first: *count == 1,
            online: entry.online.keys().copied().collect(),
        }
    }

    /// Ends one of `user`'s connections to `room`; true if it was the last one.
    pub fn leave(&self, room: RoomId, user: UserId) -> bool {
        let mut rooms = self.lock();
        let Some(entry) = rooms.get_mut(&room) else {
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
        if entry.online.is_empty() {
            rooms.remove(&room);
        }
        last
    }

    /// Rooms with at least one open connection.
    pub fn active_rooms(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_share_one_frame_and_presence_counts_connections() {
        let hub = Hub::new(16);
        let (room, alice, bob) = (RoomId(1), UserId(1), UserId(2));
        let mut a1 = hub.join(room, alice);
        assert!(a1.first);
        let a2 = hub.join(room, alice);
        assert!(!a2.first);
        let mut b = hub.join(room, bob);
        assert_eq!(b.online.len(), 2);

        hub.publish(
            room,
            Event::new(EventKind::Presence, &serde_json::json!({"x": 1})),
        );
        let ea = a1.events.recv().await.unwrap();
        let eb = b.events.recv().await.unwrap();
        assert_eq!(ea.frame.as_str(), r#"{"x":1}"#);
        // the same bytes, not a copy
        assert_eq!(ea.frame.as_str().as_ptr(), eb.frame.as_str().as_ptr());

        assert!(!hub.leave(room, alice));
        assert!(hub.leave(room, alice));
        assert!(hub.leave(room, bob));
        assert_eq!(hub.active_rooms(), 0);
    }
}
