//! Which events a socket is sent: the de-duplication by position in the sequence of changes
//! that makes a resume gap-free and duplicate-free, and the events a user need not hear about
//! themselves.

use crate::hub::EventKind;
use crate::model::{Seq, UserId};

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Deliver,
    Skip,
    /// Write it, then close: the user was removed from the socket's room.
    DeliverThenClose,
}

/// The delivery mark of one socket.
pub(crate) struct Dedup {
    user: UserId,
    /// A room socket closes when its user is removed; `/ws/` only loses that room.
    room_socket: bool,
    /// Highest position delivered: any change at or below it is a duplicate. Positions grow
    /// server-wide and each channel carries events in commit order, so one mark serves a
    /// single room and all rooms alike.
    last_sent: Seq,
}

impl Dedup {
    pub(crate) fn new(user: UserId, room_socket: bool, last_sent: Seq) -> Dedup {
        Dedup {
            user,
            room_socket,
            last_sent,
        }
    }

    pub(crate) fn last_sent(&self) -> Seq {
        self.last_sent
    }

    /// Records a change written outside the event stream (a replay from the database).
    pub(crate) fn sent(&mut self, seq: Seq) {
        self.last_sent = seq;
    }

    /// Judges an event from the channel, moving the mark past a message that is delivered.
    pub(crate) fn judge(&mut self, kind: &EventKind) -> Verdict {
        match *kind {
            EventKind::Change(seq) if seq <= self.last_sent => Verdict::Skip,
            EventKind::Change(seq) => {
                self.last_sent = seq;
                Verdict::Deliver
            }
            // Nobody needs to hear that they themselves are typing or online.
            EventKind::Typing { from: user } | EventKind::Presence { user }
                if user == self.user =>
            {
                Verdict::Skip
            }
            EventKind::Member { user, added: false } if user == self.user && self.room_socket => {
                Verdict::DeliverThenClose
            }
            _ => Verdict::Deliver,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: UserId = UserId(1);
    const OTHER: UserId = UserId(2);

    #[test]
    fn messages_at_or_below_the_mark_are_duplicates() {
        let mut d = Dedup::new(ME, true, Seq(5));
        assert_eq!(d.judge(&EventKind::Change(Seq(4))), Verdict::Skip);
        assert_eq!(d.judge(&EventKind::Change(Seq(5))), Verdict::Skip);
        assert_eq!(d.judge(&EventKind::Change(Seq(6))), Verdict::Deliver);
        assert_eq!(d.last_sent(), Seq(6));
        assert_eq!(d.judge(&EventKind::Change(Seq(6))), Verdict::Skip);
        // A replay moves the mark: the live copy of a replayed message is dropped.
        d.sent(Seq(9));
        assert_eq!(d.judge(&EventKind::Change(Seq(8))), Verdict::Skip);
        assert_eq!(d.judge(&EventKind::Change(Seq(10))), Verdict::Deliver);
    }

    #[test]
    fn a_user_does_not_hear_their_own_typing_or_presence() {
        let mut d = Dedup::new(ME, false, Seq(0));
        assert_eq!(d.judge(&EventKind::Typing { from: ME }), Verdict::Skip);
        assert_eq!(d.judge(&EventKind::Presence { user: ME }), Verdict::Skip);
        assert_eq!(
            d.judge(&EventKind::Typing { from: OTHER }),
            Verdict::Deliver
        );
        assert_eq!(
            d.judge(&EventKind::Presence { user: OTHER }),
            Verdict::Deliver
        );
        assert_eq!(d.judge(&EventKind::Read), Verdict::Deliver);
        assert_eq!(d.judge(&EventKind::Room), Verdict::Deliver);
    }

    #[test]
    fn removal_closes_a_room_socket_and_not_the_all_rooms_one() {
        let removed_me = EventKind::Member {
            user: ME,
            added: false,
        };
        let mut room = Dedup::new(ME, true, Seq(0));
        assert_eq!(room.judge(&removed_me), Verdict::DeliverThenClose);
        let mut all = Dedup::new(ME, false, Seq(0));
        assert_eq!(all.judge(&removed_me), Verdict::Deliver);
        let removed_other = EventKind::Member {
            user: OTHER,
            added: false,
        };
        assert_eq!(room.judge(&removed_other), Verdict::Deliver);
        let added_me = EventKind::Member {
            user: ME,
            added: true,
        };
        assert_eq!(room.judge(&added_me), Verdict::Deliver);
    }
}
