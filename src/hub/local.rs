//! The in-process hub: a per-room registry of tokio broadcast channels, per-user channels for
//! the all-rooms socket, and who is online where.
//!
//! A user with an all-rooms socket is registered in each room it follows; an event published
//! to a room goes to the room's channel and to the channel of every registered user, so that
//! socket sees all its rooms in publication order. Publication is synchronous here: when
//! `publish` returns, every subscriber's queue holds the event.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use super::{Event, Hub, HubFut, Joined, Subscription};
use crate::model::{RoomId, UserId};

struct RoomEntry {
    /// The channel of the room's sockets: made by the first, so that a room followed only by
    /// all-rooms sockets costs no queue (a user in thousands of rooms would otherwise hold a
    /// queue of `capacity` events for each).
    tx: Option<broadcast::Sender<Event>>,
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

/// The process-wide registry; share it behind an `Arc`.
pub struct LocalHub {
    inner: Arc<Mutex<Registry>>,
    capacity: usize,
}

impl Registry {
    fn room(&mut self, room: RoomId) -> &mut RoomEntry {
        self.rooms.entry(room).or_insert_with(|| RoomEntry {
            tx: None,
            online: HashMap::new(),
            user_subs: HashSet::new(),
        })
    }

    /// Counts one more presence of `user` in `room`; true if it is the first.
    fn online_up(&mut self, room: RoomId, user: UserId) -> bool {
        let count = self.room(room).online.entry(user).or_insert(0);
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
        // The room's last socket gone, its queue goes too.
        if entry.tx.as_ref().is_some_and(|tx| tx.receiver_count() == 0) {
            entry.tx = None;
        }
        if entry.online.is_empty() && entry.user_subs.is_empty() {
            self.rooms.remove(&room);
        }
        last
    }

    /// Routes `room`'s events to `user`'s channel; true if the user came online there.
    fn register(&mut self, room: RoomId, user: UserId) -> bool {
        let Some(u) = self.users.get_mut(&user) else {
            return false;
        };
        if !u.rooms.insert(room) {
            return false;
        }
        self.room(room).user_subs.insert(user);
        self.online_up(room, user)
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

impl LocalHub {
    /// `capacity` is how many events a subscriber may fall behind before it lags.
    pub fn new(capacity: usize) -> LocalHub {
        LocalHub {
            inner: Arc::default(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Every update leaves the registry consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn subscribe_room(&self, room: RoomId, user: UserId) -> Joined {
        let mut registry = self.lock();
        let first = registry.online_up(room, user);
        let capacity = self.capacity;
        let tx = registry
            .room(room)
            .tx
            .get_or_insert_with(|| broadcast::channel(capacity).0);
        let events = Subscription::new(tx.subscribe());
        Joined {
            events,
            first,
            mark: Some(registry.changes),
        }
    }

    fn subscribe_user(&self, user: UserId) -> Subscription {
        let mut registry = self.lock();
        let entry = registry.users.entry(user).or_insert_with(|| UserEntry {
            tx: broadcast::channel(self.capacity).0,
            sockets: 0,
            rooms: HashSet::new(),
        });
        entry.sockets += 1;
        Subscription::new(entry.tx.subscribe())
    }

    fn unsubscribe_user(&self, user: UserId) -> Vec<RoomId> {
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
}

impl Hub for LocalHub {
    fn publish(&self, room: RoomId, event: Event) {
        let mut registry = self.lock();
        if event.kind.is_change() {
            registry.changes += 1;
        }
        if let Some(entry) = registry.rooms.get(&room) {
            let mut delivered = 0;
            for user in &entry.user_subs {
                if let Some(u) = registry.users.get(user) {
                    delivered += u.tx.send(event.clone()).unwrap_or(0);
                }
            }
            if let Some(tx) = &entry.tx {
                delivered += tx.send(event).unwrap_or(0);
            }
            crate::metrics::METRICS.deliveries.add(delivered as u64);
        }
    }

    fn notify_user(&self, user: UserId, event: Event) {
        if let Some(u) = self.lock().users.get(&user) {
            let _ = u.tx.send(event);
        }
    }

    fn join_room(&self, room: RoomId, user: UserId) -> HubFut<'_, Joined> {
        let joined = self.subscribe_room(room, user);
        Box::pin(std::future::ready(joined))
    }

    fn leave_room(&self, room: RoomId, user: UserId) -> HubFut<'_, bool> {
        let last = self.lock().online_down(room, user);
        Box::pin(std::future::ready(last))
    }

    fn join_user(&self, user: UserId) -> HubFut<'_, Subscription> {
        let events = self.subscribe_user(user);
        Box::pin(std::future::ready(events))
    }

    fn leave_user(&self, user: UserId) -> HubFut<'_, Vec<RoomId>> {
        let offline = self.unsubscribe_user(user);
        Box::pin(std::future::ready(offline))
    }

    fn follow(&self, room: RoomId, user: UserId) -> bool {
        self.lock().register(room, user)
    }

    fn unfollow(&self, room: RoomId, user: UserId) -> bool {
        self.lock().unregister(room, user)
    }

    fn online(&self, room: RoomId) -> Vec<UserId> {
        self.lock()
            .rooms
            .get(&room)
            .map(|r| r.online.keys().copied().collect())
            .unwrap_or_default()
    }

    fn mark(&self) -> Option<u64> {
        Some(self.lock().changes)
    }

    fn active_rooms(&self) -> usize {
        self.lock().rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::ServerFrame;
    use crate::hub::{EventKind, Missed};
    use crate::model::{MessageId, Seq};

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
        let hub = LocalHub::new(16);
        let (room, alice, bob) = (RoomId(1), UserId(1), UserId(2));
        let mut a1 = hub.join_room(room, alice).await;
        assert!(a1.first);
        let a2 = hub.join_room(room, alice).await;
        assert!(!a2.first);
        let mut b = hub.join_room(room, bob).await;
        assert_eq!(hub.online(room).len(), 2);

        hub.publish(room, event(room, 1));
        let ea = a1.events.recv().await.unwrap();
        let eb = b.events.recv().await.unwrap();
        assert_eq!(ea.frame.as_str(), says(1));
        // the same bytes, not a copy
        assert_eq!(ea.frame.as_str().as_ptr(), eb.frame.as_str().as_ptr());

        assert!(!hub.leave_room(room, alice).await);
        assert!(hub.leave_room(room, alice).await);
        assert!(hub.leave_room(room, bob).await);
        assert_eq!(hub.active_rooms(), 0);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_it_lagged() {
        let hub = LocalHub::new(2);
        let room = RoomId(1);
        let mut joined = hub.join_room(room, UserId(1)).await;
        for n in 0..3 {
            hub.publish(room, event(room, n));
        }
        assert_eq!(
            joined.events.try_recv().unwrap().unwrap_err(),
            Missed::Lagged
        );
        assert_eq!(
            joined.events.try_recv().unwrap().unwrap().frame.as_str(),
            says(1)
        );
        assert_eq!(joined.events.recv().await.unwrap().frame.as_str(), says(2));
        assert!(joined.events.try_recv().is_none());
    }

    #[tokio::test]
    async fn the_mark_counts_messages_and_removals_published_anywhere() {
        let hub = LocalHub::new(16);
        let (room, other) = (RoomId(1), RoomId(2));
        let before = hub.mark().unwrap();
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
            hub.mark(),
            Some(before),
            "nothing a reader could miss went out"
        );
        // Even in a room nobody is subscribed to.
        hub.publish(
            other,
            Event::new(other, EventKind::Change(Seq(7)), &ServerFrame::Pong),
        );
        let removal = EventKind::Member {
            user: UserId(1),
            added: false,
        };
        hub.publish(other, Event::new(other, removal, &ServerFrame::Pong));
        assert_eq!(hub.mark(), Some(before + 2));
        assert_eq!(hub.join_room(room, UserId(1)).await.mark, Some(before + 2));
    }

    #[tokio::test]
    async fn user_channels_follow_membership_in_publication_order() {
        let hub = LocalHub::new(16);
        let (r1, r2, r3, alice) = (RoomId(1), RoomId(2), RoomId(3), UserId(1));
        let mut events = hub.join_user(alice).await;
        assert!(hub.follow(r1, alice));
        assert!(hub.follow(r2, alice));
        assert!(!hub.follow(r2, alice), "already following");
        hub.publish(r2, event(r2, 1));
        hub.publish(r1, event(r1, 2));
        hub.publish(r3, event(r3, 3)); // not a member: not delivered
        assert!(hub.follow(r3, alice));
        hub.publish(r3, event(r3, 4));
        assert!(hub.unfollow(r1, alice));
        hub.publish(r1, event(r1, 5)); // removed: not delivered
        let got: Vec<String> = (0..3)
            .map(|_| {
                events
                    .try_recv()
                    .unwrap()
                    .unwrap()
                    .frame
                    .as_str()
                    .to_string()
            })
            .collect();
        assert_eq!(got, [says(1), says(2), says(4)]);
        assert!(events.try_recv().is_none());

        // a room socket and the all-rooms socket count as one user online
        let room_socket = hub.join_room(r2, alice).await;
        assert!(!room_socket.first);
        let mut offline = hub.leave_user(alice).await;
        offline.sort();
        assert_eq!(offline, [r3]);
        assert!(hub.leave_room(r2, alice).await);
        assert_eq!(hub.active_rooms(), 0);
    }
}
