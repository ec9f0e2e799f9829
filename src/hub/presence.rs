//! Damped presence: a user's "offline" waits a short grace period after their last socket to a
//! room closed, and a reconnect within it cancels it, so that neither is announced. A client
//! that flaps (a phone between networks, or someone connecting and closing in a loop) costs
//! the other members nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::model::{RoomId, UserId};

/// The offlines waiting out their grace period.
pub struct PresenceDamper {
    delay: Duration,
    /// Each waiting offline, by the departure that scheduled it.
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// By room, then user: the departure whose offline waits.
    waiting: HashMap<RoomId, HashMap<UserId, u64>>,
    departures: u64,
}

impl Pending {
    /// Takes the waiting offline of `user` in `room`; only `departure`'s if given.
    fn take(&mut self, room: RoomId, user: UserId, departure: Option<u64>) -> bool {
        let Some(users) = self.waiting.get_mut(&room) else {
            return false;
        };
        let taken = match users.get(&user) {
            Some(d) if departure.is_none_or(|want| *d == want) => {
                users.remove(&user);
                true
            }
            _ => false,
        };
        if users.is_empty() {
            self.waiting.remove(&room);
        }
        taken
    }
}

impl PresenceDamper {
    pub fn new(delay: Duration) -> PresenceDamper {
        PresenceDamper {
            delay,
            pending: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A user's first socket in `room` subscribed: whether to announce them online. Not if
    /// their offline is still waiting: it is cancelled, and to the others they never left.
    pub fn arrived(&self, room: RoomId, user: UserId) -> bool {
        if self.delay.is_zero() {
            return true;
        }
        !self.lock().take(room, user, None)
    }

    /// The users whose offline in `room` is waiting: to everyone who saw them, they are still
    /// online, so a `hello` lists them too.
    pub fn lingering(&self, room: RoomId) -> Vec<UserId> {
        self.lock()
            .waiting
            .get(&room)
            .map(|users| users.keys().copied().collect())
            .unwrap_or_default()
    }

    /// A user's last socket left `rooms`: `announce` is called with those of them the user has
    /// not come back to once the grace period is over (at once if it is zero). `announce`
    /// should still check that the user is not online again: a reconnect may have raced the
    /// departure.
    pub fn left(
        self: &Arc<Self>,
        user: UserId,
        rooms: Vec<RoomId>,
        announce: impl FnOnce(Vec<RoomId>) + Send + 'static,
    ) {
        if rooms.is_empty() {
            return;
        }
        if self.delay.is_zero() {
            announce(rooms);
            return;
        }
        let departure = {
            let mut pending = self.lock();
            pending.departures += 1;
            let departure = pending.departures;
            for room in &rooms {
                pending
                    .waiting
                    .entry(*room)
                    .or_default()
                    .insert(user, departure);
            }
            departure
        };
        let delay = self.delay;
        let damper = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let due: Vec<RoomId> = {
                let mut pending = damper.lock();
                rooms
                    .into_iter()
                    .filter(|room| pending.take(*room, user, Some(departure)))
                    .collect()
            };
            if !due.is_empty() {
                announce(due);
            }
        });
    }

    /// Offlines waiting now.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Announce = Box<dyn FnOnce(Vec<RoomId>) + Send>;

    /// What was announced, and a maker of announcers that record into it.
    fn recorder() -> (Arc<Mutex<Vec<RoomId>>>, impl Fn() -> Announce) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let make = move || {
            let sink = sink.clone();
            Box::new(move |rooms: Vec<RoomId>| sink.lock().unwrap().extend(rooms)) as Announce
        };
        (seen, make)
    }

    #[tokio::test(start_paused = true)]
    async fn an_offline_waits_and_a_return_within_the_grace_cancels_it() {
        let damper = Arc::new(PresenceDamper::new(Duration::from_secs(3)));
        let (seen, announce) = recorder();
        let (a, b, user) = (RoomId(1), RoomId(2), UserId(7));
        assert!(damper.arrived(a, user), "a first arrival is announced");
        damper.left(user, vec![a, b], announce());
        assert_eq!(
            damper.lingering(a),
            vec![user],
            "still online to the others"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !damper.arrived(a, user),
            "back within the grace: nothing to announce"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            *seen.lock().unwrap(),
            vec![b],
            "only the room not returned to"
        );
        assert_eq!(damper.waiting(), 0);
        assert!(damper.lingering(b).is_empty());
        assert!(
            damper.arrived(b, user),
            "after the offline, an arrival is news again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_departure_owns_the_offline() {
        let damper = Arc::new(PresenceDamper::new(Duration::from_secs(3)));
        let (seen, announce) = recorder();
        let (room, user) = (RoomId(1), UserId(7));
        damper.left(user, vec![room], announce());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!damper.arrived(room, user));
        damper.left(user, vec![room], announce());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            seen.lock().unwrap().is_empty(),
            "the first departure was cancelled"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(*seen.lock().unwrap(), vec![room]);
    }

    #[test]
    fn without_a_delay_everything_is_announced_at_once() {
        let damper = Arc::new(PresenceDamper::new(Duration::ZERO));
        let (seen, announce) = recorder();
        damper.left(UserId(1), vec![RoomId(1)], announce());
        assert_eq!(*seen.lock().unwrap(), vec![RoomId(1)]);
        assert!(damper.arrived(RoomId(1), UserId(1)));
    }
}
